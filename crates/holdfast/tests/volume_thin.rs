//! Thin logical volumes: only the blocks the thin pool maps are read. Real thin pool metadata
//! is written with `thin_restore` from an XML description and read back with `thin_dump`
//! (thin-provisioning-tools, no device-mapper needed), through the same reader a backup of a
//! thin volume uses; a volume backed up through those extents restores with its mapped blocks
//! and zeros elsewhere. The round trip on a real thin pool needs device-mapper (`#[ignore]`d).

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command as Std;
use std::sync::Arc;
use std::time::Instant;

use holdfast_policy::sources::volume::{backup_volume, Allocation};
use holdfast_policy::sources::volume_thin;
use serde_json::Value;

mod support;
use support::scratch::Scratch as W;

const MIB: u64 = 1 << 20;
/// 128 sectors: LVM's default thin pool chunk (64 KiB).
const BLOCK: u64 = 64 * 1024;

fn sh(cmd: &str) -> String {
    let o = Std::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `(origin_block, data_block, length)`; length 0: a single block.
type Mapping = (u64, u64, u64);

/// Pool metadata XML: each device `(dev_id, mappings)`, a mapping `(origin_block, data_block,
/// length)` written as a `range_mapping`, or a `single_mapping` when its length is 0.
fn pool_xml(devices: &[(u64, Vec<Mapping>)]) -> String {
    let mut x = String::from("<superblock uuid=\"\" time=\"1\" transaction=\"3\" flags=\"0\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"100000\">\n");
    for (id, maps) in devices {
        let n: u64 = maps.iter().map(|m| m.2.max(1)).sum();
        x.push_str(&format!("  <device dev_id=\"{id}\" mapped_blocks=\"{n}\" transaction=\"0\" creation_time=\"0\" snap_time=\"1\">\n"));
        for (o, d, l) in maps {
            if *l == 0 {
                x.push_str(&format!(
                    "    <single_mapping origin_block=\"{o}\" data_block=\"{d}\" time=\"0\"/>\n"
                ));
            } else {
                x.push_str(&format!("    <range_mapping origin_begin=\"{o}\" data_begin=\"{d}\" length=\"{l}\" time=\"0\"/>\n"));
            }
        }
        x.push_str("  </device>\n");
    }
    x.push_str("</superblock>\n");
    x
}

/// Binary pool metadata made by thin_restore from `xml` (into a preallocated file, as the
/// tool requires).
fn restore_metadata(dir: &Path, xml: &str) -> PathBuf {
    let (x, meta) = (dir.join("pool.xml"), dir.join("meta.bin"));
    fs::write(&x, xml).unwrap();
    File::create(&meta).unwrap().set_len(8 * MIB).unwrap();
    sh(&format!(
        "thin_restore -i '{}' -o '{}'",
        x.display(),
        meta.display()
    ));
    meta
}

/// The mapped byte ranges of `dev` in the metadata file, through holdfast's thin_dump reader.
fn dump(meta: &Path, dev: u64, size: u64) -> Result<Vec<(u64, u64)>, volume_thin::ThinError> {
    let m = meta.to_str().unwrap();
    volume_thin::dump(&["--dev-id", &dev.to_string(), "-f", "xml", m], dev, size)
}

#[test]
fn metadata_written_by_thin_restore_reads_back_as_the_exact_extents() {
    let d = tempfile::tempdir().unwrap();
    // Device 1: a range, an adjacent single in another data block (thin_dump cannot merge
    // it, holdfast must), a lone single, two adjacent ranges, a range at the very end.
    // Device 2: singles only, one of them adjacent to a range.
    let xml = pool_xml(&[
        (
            1,
            vec![
                (0, 0, 3),
                (3, 50, 0),
                (10, 60, 0),
                (20, 70, 4),
                (24, 90, 2),
                (1020, 200, 4),
            ],
        ),
        (7, vec![(5, 300, 0), (6, 310, 2), (100, 320, 0)]),
    ]);
    let meta = restore_metadata(d.path(), &xml);
    let size = 1024 * BLOCK;
    assert_eq!(
        dump(&meta, 1, size).unwrap(),
        vec![
            (0, 4 * BLOCK),
            (10 * BLOCK, 11 * BLOCK),
            (20 * BLOCK, 26 * BLOCK),
            (1020 * BLOCK, 1024 * BLOCK)
        ]
    );
    assert_eq!(
        dump(&meta, 7, size).unwrap(),
        vec![(5 * BLOCK, 8 * BLOCK), (100 * BLOCK, 101 * BLOCK)]
    );
    // A device smaller than its mappings, an absent device, and metadata that is not
    // metadata are refused with the cause.
    let e = dump(&meta, 1, 1000 * BLOCK).unwrap_err().to_string();
    assert!(e.contains("past the end"), "{e}");
    let e = dump(&meta, 3, size).unwrap_err().to_string();
    assert!(e.contains("no thin device 3"), "{e}");
    let junk = d.path().join("junk.bin");
    fs::write(&junk, vec![0x5a; 8 * MIB as usize]).unwrap();
    let e = dump(&junk, 1, size).unwrap_err().to_string();
    assert!(e.contains("thin_dump") && e.contains("failed"), "{e}");
}

fn random(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn summaries(w: &W) -> Vec<Value> {
    let r = w.path("repo");
    let v = w.json(&["--repo", r.to_str().unwrap(), "snapshots"], 0);
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.get("summary")
                .unwrap_or(&s["snapshot"]["summary"])
                .clone()
        })
        .collect()
}

/// A "thin volume" image of `blocks` blocks, every one written (junk where unmapped: a real
/// thin device reads zeros there, so reading it would show), the mappings `maps` (as in
/// [`pool_xml`]), backed up through the thin extents thin_dump gives for it, restored with
/// the CLI: returns the scratch fixture, the restored image's path, the expected image's,
/// and the seconds the backup took.
fn thin_round_trip(blocks: u64, maps: Vec<Mapping>) -> (W, PathBuf, PathBuf, f64) {
    let w = W::new();
    let size = blocks * BLOCK;
    let (img, want) = (w.path("thin.img"), w.path("want.img"));
    let (f, g) = (File::create(&img).unwrap(), File::create(&want).unwrap());
    g.set_len(size).unwrap();
    let mapped = |b: u64| maps.iter().any(|&(o, _, l)| (o..o + l.max(1)).contains(&b));
    let mut junk = vec![0xa5u8; BLOCK as usize];
    for b in 0..blocks {
        if mapped(b) {
            let data = random(b + 1, BLOCK as usize);
            f.write_all_at(&data, b * BLOCK).unwrap();
            g.write_all_at(&data, b * BLOCK).unwrap();
        } else {
            junk[..8].copy_from_slice(&b.to_le_bytes());
            f.write_all_at(&junk, b * BLOCK).unwrap();
        }
    }
    f.sync_all().unwrap();
    drop((f, g));
    let meta = restore_metadata(w.dir.path(), &pool_xml(&[(1, maps.clone()), (2, vec![])]));
    let ranges = dump(&meta, 1, size).unwrap();

    w.sources(&format!(
        "[[source]]\nname = \"thin\"\nkind = \"volume\"\npath = \"{}\"\nclass = \"critical\"\nstrategy = \"backup\"\n",
        img.display()
    ));
    w.run(&["--repo", "repo", "init"], 0);
    let storage: Arc<dyn holdfast_storage::Storage> =
        Arc::new(holdfast_backend_local::LocalStorage::new(w.path("repo")));
    let repo = holdfast_core::Repository::open(storage, b"pw").unwrap();
    let opts = holdfast_core::stream::StreamOptions {
        dir: "thin".into(),
        label: "volume:thin".into(),
        source: Some("thin".into()),
        tags: Vec::new(),
        time: None,
        log: None,
    };
    let t = Instant::now();
    let (_, warnings) = backup_volume(
        &repo,
        &img,
        &opts,
        "thin.img",
        &holdfast_core::progress::NoProgress,
        Allocation::Known(ranges),
        Box::new(|| Ok(())),
    )
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(warnings.is_empty(), "{warnings:?}");
    let out = w.path("out.img");
    w.run(
        &[
            "restore",
            "--source",
            "thin",
            "--target",
            out.to_str().unwrap(),
        ],
        0,
    );
    (w, out, want, secs)
}

#[test]
fn a_thin_volume_is_read_only_where_mapped_and_restores_zeros_elsewhere() {
    // 64 MiB of 64 KiB blocks: mapped runs at the start, a lone block, an adjacent pair of
    // runs, the last blocks; junk everywhere else.
    let maps = vec![
        (0, 0, 8),
        (8, 40, 0),
        (300, 50, 0),
        (500, 60, 16),
        (516, 90, 16),
        (1016, 200, 8),
    ];
    let mapped_blocks = 8 + 1 + 1 + 16 + 16 + 8;
    let (w, out, want, _) = thin_round_trip(1024, maps);
    let s = summaries(&w);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0]["total_bytes"], 1024 * BLOCK, "{s:?}");
    // Exactly the mapped blocks were read (the short gap between blocks 0..9 is 0, so the
    // merge of short holes adds nothing here).
    assert_eq!(s[0]["bytes_read"], mapped_blocks * BLOCK, "{s:?}");
    let a = fs::read(&out).unwrap();
    let b = fs::read(&want).unwrap();
    assert_eq!(a.len(), b.len());
    let differ = (0..a.len() / BLOCK as usize)
        .filter(|i| {
            let r = i * BLOCK as usize..(i + 1) * BLOCK as usize;
            a[r.clone()] != b[r]
        })
        .collect::<Vec<_>>();
    assert!(
        differ.is_empty(),
        "restored blocks {differ:?} differ from the expected image (mapped data, zeros elsewhere)"
    );
    // The unmapped part was restored as holes, not written.
    let allocated = fs::metadata(&out).unwrap().blocks() * 512;
    assert!(
        allocated < (mapped_blocks + 16) * BLOCK,
        "restored image allocates {allocated}"
    );
    w.run(&["--repo", "repo", "check", "--read-data"], 0);
}

/// Whether this kernel has device-mapper (LVM needs it).
fn device_mapper() -> Result<(), String> {
    if Path::new("/dev/mapper/control").exists() {
        return Ok(());
    }
    Err(
        "this kernel has no device-mapper (no /dev/mapper/control; modprobe dm_mod dm_thin_pool)"
            .into(),
    )
}

/// A real thin pool on a loop device: a thin volume with a few MiB written, backed up (plain
/// and through a thin LVM snapshot): only about the written bytes are read, the restored image
/// equals the volume, no metadata snapshot stays reserved and no LVM snapshot is left. Needs
/// device-mapper (dm_thin_pool), which the CI kernel lacks: ignored, so the summary counts it
/// as skipped, never passed; run with `cargo test --test volume_thin -- --ignored` as root on
/// a host that has it. Without device-mapper it FAILS, naming why.
#[test]
#[ignore = "needs device-mapper (the CI kernel has none); run with --ignored on a host that has it"]
fn a_real_thin_volume_reads_its_mapped_blocks_plain_and_through_a_thin_snapshot() {
    if let Err(why) = device_mapper() {
        panic!("{why}: this test needs a kernel with device-mapper and dm_thin_pool");
    }
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root (losetup, lvm)");
    let w = W::new();
    let img = w.path("pv.img");
    File::create(&img).unwrap().set_len(512 * MIB).unwrap();
    let pv = sh(&format!("losetup -f --show '{}'", img.display()));
    let vg = format!("hfthin{}", std::process::id());
    struct Vg(String, String);
    impl Drop for Vg {
        fn drop(&mut self) {
            let _ = Std::new("vgremove").args(["-f", &self.0]).status();
            let _ = Std::new("losetup").args(["-d", &self.1]).status();
        }
    }
    let _vg = Vg(vg.clone(), pv.clone());
    sh(&format!("pvcreate -q '{pv}' && vgcreate -q {vg} '{pv}'"));
    sh(&format!(
        "lvcreate -q -y --type thin-pool -L 256M --chunksize 64k -n pool {vg}"
    ));
    sh(&format!("lvcreate -q -y -V 1G -T {vg}/pool -n data"));
    let lv = PathBuf::from(format!("/dev/{vg}/data"));
    let dev = fs::OpenOptions::new().write(true).open(&lv).unwrap();
    for (i, at) in [0u64, 100 * MIB, 700 * MIB + 65536, 1024 * MIB - MIB]
        .iter()
        .enumerate()
    {
        dev.write_all_at(&random(i as u64 + 7, MIB as usize), *at)
            .unwrap();
    }
    dev.sync_all().unwrap();
    drop(dev);
    let held = || {
        // The thin-pool status's sixth field is the held metadata root ("-": none).
        sh(&format!("dmsetup status {vg}-pool-tpool"))
            .split_whitespace()
            .nth(6)
            .unwrap_or("")
            .to_string()
    };
    for (i, extra) in ["", "snapshot = \"lvm\""].iter().enumerate() {
        w.sources(&format!(
            "[[source]]\nname = \"thin\"\nkind = \"volume\"\npath = \"{}\"\nclass = \"critical\"\nstrategy = \"backup\"\n{extra}\n",
            lv.display()
        ));
        if i == 0 {
            w.run(&["--repo", "repo", "init"], 0);
        }
        let (job, _) = w.protect_as("thin", None);
        assert_eq!(job["state"], "completed", "{job}");
        assert!(!job.to_string().contains("WARNING"), "{job}");
        let s = summaries(&w);
        let read = s[i]["bytes_read"].as_u64().unwrap();
        assert!(
            (4 * MIB..6 * MIB).contains(&read),
            "read {read} bytes of a 1 GiB thin volume with 4 MiB written"
        );
        assert_eq!(held(), "-", "the metadata snapshot was released");
        let lvs = sh(&format!("lvs --noheadings -o lv_name {vg}"));
        assert!(!lvs.contains("holdfast-snap"), "{lvs}");
        let out = w.path(&format!("out{i}.img"));
        w.run(
            &[
                "restore",
                "--source",
                "thin",
                "--target",
                out.to_str().unwrap(),
            ],
            0,
        );
        sh(&format!("cmp '{}' '{}'", out.display(), lv.display()));
    }
}
