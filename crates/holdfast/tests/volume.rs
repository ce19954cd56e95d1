//! Volume sources on real loop devices and sparse image files: allocated extents only, holes
//! kept on restore, incremental runs, size checks, drills, `backup` on a block device, and a
//! frozen ext4 file system under a writer (also killed while frozen). Needs root (losetup,
//! mount, fsfreeze): every test fails, rather than passes, without it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command as Std;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

const MIB: u64 = 1 << 20;

mod support;
use support::scratch::Scratch as W;

impl W {
    /// The fixture, as root, with an empty workload.
    fn as_root() -> W {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the volume tests need root (loop devices, mount, fsfreeze)"
        );
        let w = W::new();
        w.sources("");
        w
    }
    fn volume(&self, name: &str, path: &Path, extra: &str) {
        self.sources(&format!(
            "[[source]]\nname = \"{name}\"\nkind = \"volume\"\npath = \"{}\"\nclass = \"critical\"\nstrategy = \"backup\"\n{extra}\n",
            path.display()
        ));
    }
    /// protect one source; its backup job record (the exit code says compliance, which a
    /// new source without a drill does not meet yet).
    fn protect(&self, source: &str) -> Value {
        self.protect_as(source, None).0
    }
    /// Summaries of the snapshots, oldest first.
    fn summaries(&self) -> Vec<Value> {
        let r = self.path("repo");
        let v = self.json(&["--repo", r.to_str().unwrap(), "snapshots"], 0);
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
}

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

/// A loop device attached to a file, detached on drop.
struct Loop(PathBuf);

impl Loop {
    fn new(file: &Path) -> Loop {
        Loop(PathBuf::from(sh(&format!(
            "losetup -f --show '{}'",
            file.display()
        ))))
    }
    fn s(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Std::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// A mount, thawed and unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(dev: &str, at: &Path, opts: &str) -> Mount {
        fs::create_dir_all(at).unwrap();
        sh(&format!("mount {opts} '{dev}' '{}'", at.display()));
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Std::new("fsfreeze")
            .arg("--unfreeze")
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status();
        let ok = Std::new("umount").arg(&self.0).status();
        if !ok.is_ok_and(|s| s.success()) {
            // Busy (a writer of a failed test still running): detach it lazily.
            let _ = Std::new("umount").arg("-l").arg(&self.0).status();
        }
    }
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

/// A sparse image of `size` bytes with 1 MiB of random data at each offset.
fn sparse_image(p: &Path, size: u64, at: &[u64]) {
    let f = File::create(p).unwrap();
    f.set_len(size).unwrap();
    for (i, o) in at.iter().enumerate() {
        f.write_all_at(&random(i as u64 + 1, MIB as usize), *o)
            .unwrap();
    }
    f.sync_all().unwrap();
}

fn allocated(p: &Path) -> u64 {
    fs::metadata(p).unwrap().blocks() * 512
}

fn same(a: &Path, b: &Path) -> bool {
    Std::new("cmp")
        .arg("-s")
        .arg(a)
        .arg(b)
        .status()
        .unwrap()
        .success()
}

#[test]
fn sparse_image_reads_used_bytes_restores_sparse_and_stores_only_changes() {
    let w = W::as_root();
    let img = w.path("disk.img");
    let size = 512 * MIB;
    sparse_image(&img, size, &[0, 100 * MIB, 300 * MIB + 4096]);
    w.volume(
        "disk",
        &img,
        &format!(
            "verify = \"cmp \\\"$HOLDFAST_DRILL_IMAGE\\\" '{}'\"",
            img.display()
        ),
    );
    w.run(&["--repo", "repo", "init"], 0);
    let job = w.protect("disk");
    assert_eq!(job["state"], "completed", "{job}");
    let s = w.summaries();
    assert_eq!(s[0]["total_bytes"], size, "{s:?}");
    let read = s[0]["bytes_read"].as_u64().unwrap();
    assert!(
        (3 * MIB..8 * MIB).contains(&read),
        "read {read} of a 3 MiB-used image"
    );
    let added = s[0]["bytes_added"].as_u64().unwrap();
    assert!(added < 6 * MIB, "added {added}");

    // Restore into a new image: the same bytes, holes kept.
    let out = w.path("out.img");
    w.run(
        &[
            "restore",
            "--source",
            "disk",
            "--target",
            out.to_str().unwrap(),
        ],
        0,
    );
    assert!(same(&img, &out));
    assert_eq!(fs::metadata(&out).unwrap().len(), size);
    assert!(
        allocated(&out) < 8 * MIB,
        "restored image allocates {}",
        allocated(&out)
    );
    // An existing image is not overwritten without --replace.
    let (_, err) = w.run(
        &[
            "restore",
            "--source",
            "disk",
            "--target",
            out.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("--replace"), "{err}");

    // Change 64 KiB: the next run adds about one chunk, not the volume.
    let f = OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&random(99, 65536), 100 * MIB + 300_000)
        .unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(w.protect("disk")["state"], "completed");
    let s = w.summaries();
    let added = s[1]["bytes_added"].as_u64().unwrap();
    assert!(added < 3 * MIB, "an incremental run added {added} bytes");
    w.run(
        &[
            "restore",
            "--source",
            "disk",
            "--target",
            out.to_str().unwrap(),
            "--replace",
        ],
        0,
    );
    assert!(same(&img, &out), "the replaced image is the newest volume");

    // The drill restores into a scratch image and runs verify on it.
    let d = w.json(&["drill", "disk"], 0);
    assert!(d.to_string().contains("verify: ok"), "{d}");
    w.volume("disk", &img, "verify = \"false\"");
    let o = w.cmd(&["--json", "drill", "disk"]).output().unwrap();
    assert_ne!(o.status.code(), Some(0), "a failing verify fails the drill");
    w.run(&["--repo", "repo", "check", "--read-data"], 0);
}

#[test]
fn device_restore_checks_size_and_replace() {
    let w = W::as_root();
    let img = w.path("vol.img");
    sparse_image(&img, 64 * MIB, &[0, 10 * MIB, 63 * MIB]);
    w.volume("vol", &img, "");
    w.run(&["--repo", "repo", "init"], 0);
    assert_eq!(w.protect("vol")["state"], "completed");
    let small = w.path("small.img");
    File::create(&small).unwrap().set_len(32 * MIB).unwrap();
    let small = Loop::new(&small);
    let (_, err) = w.run(&["restore", "--source", "vol", "--target", small.s()], 1);
    assert!(err.contains("at least as large"), "{err}");
    // A device full of old bytes: refused without --replace, then overwritten, holes zeroed.
    let big = w.path("big.img");
    fs::write(&big, vec![0xAAu8; 64 * MIB as usize]).unwrap();
    let big_dev = Loop::new(&big);
    let (_, err) = w.run(&["restore", "--source", "vol", "--target", big_dev.s()], 1);
    assert!(err.contains("--replace"), "{err}");
    w.run(
        &[
            "restore",
            "--source",
            "vol",
            "--target",
            big_dev.s(),
            "--replace",
        ],
        0,
    );
    sh("sync");
    assert!(
        same(&img, &big_dev.0),
        "the device holds the volume, zeros where holes were"
    );
}

#[test]
fn plain_backup_of_a_block_device_refuses_and_device_contents_backs_it_up() {
    let w = W::as_root();
    let img = w.path("dev.img");
    sparse_image(&img, 32 * MIB, &[MIB, 20 * MIB]);
    let dev = Loop::new(&img);
    let r = w.path("repo");
    let r = r.to_str().unwrap();
    w.run(&["--repo", r, "init"], 0);
    let (_, err) = w.run(&["--repo", r, "backup", dev.s()], 2);
    assert!(
        err.contains("block device") && err.contains("--device-contents"),
        "{err}"
    );
    assert_eq!(w.summaries().len(), 0, "nothing was stored");
    w.run(&["--repo", r, "backup", "--device-contents", dev.s()], 0);
    let s = w.summaries();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0]["total_bytes"], 32 * MIB, "{s:?}");
    let out = w.path("out");
    w.run(
        &["--repo", r, "restore", "latest", out.to_str().unwrap()],
        0,
    );
    let name = dev.0.file_name().unwrap().to_str().unwrap().to_string();
    let restored = out.join(&name).join(format!("{name}.img"));
    assert!(same(&img, &restored), "{}", restored.display());
}

/// Stops a writer thread when a test ends, also by a panic.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Files a writer writes: each file's content is a function of its name.
fn content(i: u64) -> Vec<u8> {
    random(i + 1000, 4096 + (i as usize % 7) * 10_000)
}

fn ext4(w: &W, name: &str, size: u64) -> (Loop, Mount, PathBuf) {
    let img = w.path(&format!("{name}.img"));
    File::create(&img).unwrap().set_len(size).unwrap();
    let dev = Loop::new(&img);
    sh(&format!("mkfs.ext4 -q -F '{}'", dev.s()));
    let mnt = w.path(&format!("{name}.mnt"));
    let m = Mount::new(dev.s(), &mnt, "");
    (dev, m, mnt)
}

#[test]
fn frozen_ext4_under_a_writer_restores_to_a_clean_matching_file_system() {
    let w = W::as_root();
    let (dev, _m, mnt) = ext4(&w, "fs", 128 * MIB);
    w.volume(
        "fs",
        &dev.0,
        &format!(
            "freeze = \"{}\"\nverify = \"e2fsck -fn \\\"$HOLDFAST_DRILL_IMAGE\\\"\"",
            mnt.display()
        ),
    );
    w.run(&["--repo", "repo", "init"], 0);
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_panic = StopOnDrop(stop.clone());
    let (s2, m2) = (stop.clone(), mnt.clone());
    let writer = std::thread::spawn(move || {
        let mut i = 0u64;
        while !s2.load(Ordering::Relaxed) {
            let tmp = m2.join(format!("f{i}.tmp"));
            fs::write(&tmp, content(i)).unwrap();
            fs::rename(&tmp, m2.join(format!("f{i}"))).unwrap();
            if i.is_multiple_of(50) {
                let _ = fs::remove_file(m2.join(format!("f{}", i / 2)));
            }
            i += 1;
        }
        i
    });
    std::thread::sleep(Duration::from_millis(500));
    let job = w.protect("fs");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert_eq!(job["state"], "completed", "{job}");
    assert!(written > 10, "the writer wrote {written} files");
    assert!(
        !w.path("state/frozen/fs").exists(),
        "the freeze record is removed"
    );

    let out = w.path("restored.img");
    w.run(
        &[
            "restore",
            "--source",
            "fs",
            "--target",
            out.to_str().unwrap(),
        ],
        0,
    );
    sh(&format!("e2fsck -fn '{}'", out.display()));
    let ro = w.path("restored.mnt");
    let _rm = Mount::new(out.to_str().unwrap(), &ro, "-o ro,loop,noload");
    let mut n = 0;
    for e in fs::read_dir(&ro).unwrap() {
        let e = e.unwrap();
        let f = e.file_name().to_string_lossy().into_owned();
        if let Some(i) = f.strip_prefix('f').and_then(|i| i.parse::<u64>().ok()) {
            assert_eq!(fs::read(e.path()).unwrap(), content(i), "{f}");
            n += 1;
        }
    }
    assert!(n > 5, "only {n} files in the restored file system");
    let d = w.json(&["drill", "fs"], 0);
    assert!(d.to_string().contains("verify: ok"), "{d}");
}

#[test]
fn sigkill_while_frozen_is_thawed_by_the_next_run() {
    let w = W::as_root();
    let (dev, _m, mnt) = ext4(&w, "k", 384 * MIB);
    // Enough data that reading it takes a while.
    let mut f = File::create(mnt.join("big")).unwrap();
    for i in 0..256 {
        f.write_all(&random(i, MIB as usize)).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    w.volume("k", &dev.0, &format!("freeze = \"{}\"", mnt.display()));
    w.run(&["--repo", "repo", "init"], 0);
    #[allow(deprecated)]
    let bin = assert_cmd::cargo::cargo_bin("holdfast");
    let mut child = Std::new(bin)
        .args(["protect", "--source", "k"])
        .env("TEST_REPO_PW", "pw")
        .env("HOLDFAST_INSECURE_TEST_KDF", "1")
        .env("HOLDFAST_CONFIG", w.path("holdfast.toml"))
        .env("HOLDFAST_STATE_DIR", w.path("state"))
        .current_dir(w.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rec = w.path("state/frozen/k");
    let t = Instant::now();
    // The record names the watchdog once the freeze is about to happen.
    while !fs::read_to_string(&rec)
        .map(|s| s.lines().nth(1).is_some_and(|l| !l.is_empty()))
        .unwrap_or(false)
    {
        assert!(t.elapsed() < Duration::from_secs(60), "never froze");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before it froze"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    // It was killed while frozen: a write blocks (until the next run thaws it).
    let mut probe = Std::new("sh")
        .arg("-c")
        .arg(format!("echo x > '{}'", mnt.join("probe").display()))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        probe.try_wait().unwrap().is_none(),
        "the file system was frozen after the kill"
    );
    let o = w
        .cmd(&["--json", "protect", "--source", "k"])
        .env("HOLDFAST_NOW", w.next_run().to_rfc3339())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("WARNING") && err.contains("frozen"), "{err}");
    assert!(!rec.exists());
    let t = Instant::now();
    while probe.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the file system is still frozen after the next run"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(mnt.join("probe").exists());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v.to_string().contains("\"completed\""), "{v}");
}

/// Whether this kernel has device-mapper (LVM needs it).
fn device_mapper() -> Result<(), String> {
    if Path::new("/dev/mapper/control").exists() {
        return Ok(());
    }
    Err("this kernel has no device-mapper (no /dev/mapper/control; modprobe dm_mod), so LVM snapshots cannot be tested here".into())
}

/// LVM: a logical volume on a loop device, with ext4 under a writer, backed up through an
/// LVM snapshot that is removed afterwards; a snapshot a killed run left is removed by the next
/// run. It needs device-mapper, which the CI machine's kernel lacks, so it is ignored, and the
/// suite's summary counts it as skipped (never as passed); on a host with device-mapper run it
/// with `cargo test --test volume -- --ignored`. Run without device-mapper it FAILS, naming why.
#[test]
#[ignore = "needs device-mapper (the CI kernel has none); run with --ignored on a host that has it"]
fn lvm_snapshot_is_read_and_removed_and_a_stale_one_is_removed() {
    if let Err(why) = device_mapper() {
        panic!("{why}: this test needs a kernel with device-mapper (dm_mod and dm_snapshot)");
    }
    let w = W::as_root();
    let img = w.path("pv.img");
    File::create(&img).unwrap().set_len(256 * MIB).unwrap();
    let pv = Loop::new(&img);
    let vg = format!("hfvg{}", std::process::id());
    sh(&format!(
        "pvcreate -q '{}' && vgcreate -q {vg} '{}'",
        pv.s(),
        pv.s()
    ));
    struct Vg(String, PathBuf);
    impl Drop for Vg {
        fn drop(&mut self) {
            let _ = Std::new("umount").arg(&self.1).status();
            let _ = Std::new("vgremove").args(["-f", &self.0]).status();
        }
    }
    let mnt = w.path("lv.mnt");
    let _vg = Vg(vg.clone(), mnt.clone());
    sh(&format!("lvcreate -q -y -L 96M -n data {vg}"));
    let lv = PathBuf::from(format!("/dev/{vg}/data"));
    sh(&format!("mkfs.ext4 -q -F '{}'", lv.display()));
    fs::create_dir_all(&mnt).unwrap();
    sh(&format!("mount '{}' '{}'", lv.display(), mnt.display()));
    for i in 0..20 {
        fs::write(mnt.join(format!("f{i}")), content(i)).unwrap();
    }
    w.volume("lv", &lv, "snapshot = \"lvm\"\nsnapshot-size = \"32M\"");
    w.run(&["--repo", "repo", "init"], 0);
    let job = w.protect("lv");
    assert_eq!(job["state"], "completed", "{job}");
    let lvs = sh(&format!("lvs --noheadings -o lv_name {vg}"));
    assert!(
        !lvs.contains("holdfast-snap"),
        "the snapshot was removed: {lvs}"
    );
    let out = w.path("lv.restored");
    w.run(
        &[
            "restore",
            "--source",
            "lv",
            "--target",
            out.to_str().unwrap(),
        ],
        0,
    );
    sh(&format!("e2fsck -fn '{}'", out.display()));
    // A run killed while its snapshot existed: the record and the snapshot are left.
    sh(&format!(
        "lvcreate -q -s -L 16M -n holdfast-snap-lv {vg}/data"
    ));
    fs::create_dir_all(w.path("state/lvm")).unwrap();
    fs::write(w.path("state/lvm/lv"), format!("{vg}/holdfast-snap-lv\n")).unwrap();
    let o = w
        .cmd(&["--json", "protect", "--source", "lv"])
        .env("HOLDFAST_NOW", w.next_run().to_rfc3339())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("WARNING") && err.contains("was removed now"),
        "{err}"
    );
    let lvs = sh(&format!("lvs --noheadings -o lv_name {vg}"));
    assert!(!lvs.contains("holdfast-snap"), "{lvs}");
}

/// `snapshot = "lvm"` on something that is not a logical volume fails the job with the cause
/// and stores nothing (this runs everywhere, device-mapper or not).
#[test]
fn lvm_snapshot_of_a_plain_image_fails_the_job_and_stores_nothing() {
    let w = W::as_root();
    let img = w.path("plain.img");
    sparse_image(&img, 8 * MIB, &[0]);
    w.volume("p", &img, "snapshot = \"lvm\"");
    w.run(&["--repo", "repo", "init"], 0);
    let job = w.protect("p");
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job.to_string().contains("is not an LVM logical volume"),
        "{job}"
    );
    assert_eq!(w.summaries().len(), 0);
    assert!(!w.path("state/lvm/p").exists());
    w.volume("p", &img, "snapshot = \"zfs\"");
    let (_, err) = w.run(&["plan"], 2);
    assert!(err.contains("not supported for a volume"), "{err}");
}

/// A freeze that outlives freeze-timeout is thawed by the watchdog while the device is read:
/// that capture is not consistent, so the job fails and no recovery point is recorded.
#[test]
fn a_freeze_longer_than_its_timeout_records_no_recovery_point() {
    let w = W::as_root();
    let (dev, _m, mnt) = ext4(&w, "t", 192 * MIB);
    let mut f = File::create(mnt.join("big")).unwrap();
    for i in 0..96 {
        f.write_all(&random(i, MIB as usize)).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    w.volume(
        "t",
        &dev.0,
        &format!("freeze = \"{}\"\nfreeze-timeout = \"1s\"", mnt.display()),
    );
    w.run(&["--repo", "repo", "init"], 0);
    let t = Instant::now();
    let job = w.protect("t");
    assert!(
        t.elapsed() > Duration::from_secs(1),
        "the read was too fast to outlive the timeout; the test proves nothing"
    );
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job.to_string().contains("freeze-timeout"), "{job}");
    assert_eq!(w.summaries().len(), 0, "no recovery point");
    assert!(!w.path("state/frozen/t").exists());
    fs::write(mnt.join("after"), b"thawed").unwrap();
}
