//! Path sources with `snapshot = "btrfs"` on a real btrfs file system on a loop device: the
//! files are read from a read-only subvolume snapshot taken after the `pre` hook (two files a
//! writer keeps changing restore mutually consistent), recorded under their original paths,
//! and no snapshot is left behind: after a success, a failed backup, and a SIGKILL (the next
//! run deletes it and warns). Also `snapshot = "lvm"` on a path that is not on a logical volume
//! (the LVM round trip needs device-mapper, which this kernel lacks: it is `#[ignore]`d, and
//! fails, naming why, when run without it). Needs root and btrfs-progs (scripts/test.sh installs it): every
//! test fails, rather than passes, without them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command as Std;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

const MIB: usize = 1 << 20;

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

/// A btrfs file system on a loop device, mounted, with the subvolume `app`; unmounted and
/// detached on drop.
struct Btrfs {
    mnt: PathBuf,
    dev: String,
}

impl Btrfs {
    fn new(dir: &Path) -> Btrfs {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the btrfs tests need root (losetup, mount, btrfs subvolume)"
        );
        let img = dir.join("btrfs.img");
        fs::File::create(&img).unwrap().set_len(512 << 20).unwrap();
        sh(&format!("mkfs.btrfs -q '{}'", img.display()));
        let dev = sh(&format!("losetup -f --show '{}'", img.display()));
        let mnt = dir.join("mnt");
        fs::create_dir_all(&mnt).unwrap();
        let b = Btrfs { mnt, dev };
        sh(&format!("mount '{}' '{}'", b.dev, b.mnt.display()));
        sh(&format!("btrfs subvolume create '{}'", b.app().display()));
        b
    }
    fn app(&self) -> PathBuf {
        self.mnt.join("app")
    }
    /// Leftover holdfast snapshots anywhere on the file system.
    fn leftovers(&self) -> Vec<String> {
        sh(&format!("btrfs subvolume list '{}'", self.mnt.display()))
            .lines()
            .filter(|l| l.contains(".holdfast-snapshot-"))
            .map(String::from)
            .collect()
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        let ok = Std::new("umount").arg(&self.mnt).status();
        if !ok.is_ok_and(|s| s.success()) {
            let _ = Std::new("umount").arg("-l").arg(&self.mnt).status();
        }
        let _ = Std::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

mod support;
use support::scratch::Scratch as W;

impl W {
    /// One path source `app` over `paths`, with `extra` keys.
    fn source(&self, paths: &[&Path], extra: &str) {
        let paths: Vec<String> = paths
            .iter()
            .map(|p| format!("{:?}", p.display().to_string()))
            .collect();
        let toml = format!(
            "[repository.local]\nurl = \"repo\"\npassword-env = \"TEST_REPO_PW\"\n\n[class.critical]\nrpo = \"15m\"\nrto = \"10m\"\nkeep = {{ last = 20 }}\n\n[[source]]\nname = \"app\"\nkind = \"path\"\npaths = [{}]\nclass = \"critical\"\nstrategy = \"backup\"\n{extra}\n",
            paths.join(", ")
        );
        fs::write(self.path("holdfast.toml"), toml).unwrap();
    }
    /// protect the source: its backup job record and standard error.
    fn protect(&self) -> (Value, String) {
        let o = self
            .cmd(&["--json", "protect", "--source", "app"])
            .env("HOLDFAST_NOW", self.next_run().to_rfc3339())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{err}"));
        let job = v["protect"][0]["jobs"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}\n{err}"))
            .iter()
            .find(|j| j["job"] == "backup")
            .cloned()
            .unwrap_or_else(|| panic!("no backup job: {v}\n{err}"));
        (job, err)
    }
    fn snapshots(&self) -> Vec<Value> {
        let (out, _) = self.run(&["--json", "--repo", "repo", "snapshots"], 0);
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
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

/// `n` MiB of incompressible data at `p`, so that reading it takes a while.
fn big(p: &Path, n: usize) {
    let mut f = fs::File::create(p).unwrap();
    for i in 0..n {
        f.write_all(&random(i as u64 + 7, MIB)).unwrap();
    }
    f.sync_all().unwrap();
}

fn write_atomic(dir: &Path, name: &str, v: u64) {
    let tmp = dir.join(format!("{name}.tmp"));
    fs::write(&tmp, v.to_string()).unwrap();
    fs::rename(&tmp, dir.join(name)).unwrap();
}

struct StopOnDrop(Arc<AtomicBool>);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The application writes the same counter to a.txt then b.txt, over and over; its `pre`
/// hook quiesces it (it stops between pairs and says so), and it resumes as soon as the
/// snapshot exists, so it keeps writing while the backup reads. The restored pair matches, is
/// the pair of the moment of the snapshot, and sits at its original path.
#[test]
fn snapshot_under_a_writer_restores_consistent_files_at_their_original_paths() {
    let w = W::new();
    let fs_ = Btrfs::new(w.dir.path());
    let app = fs_.app();
    let data = app.join("data");
    fs::create_dir_all(&data).unwrap();
    big(&app.join("big.bin"), 48);
    write_atomic(&data, "a.txt", 0);
    write_atomic(&data, "b.txt", 0);
    let (pause, paused) = (w.path("pause"), w.path("paused"));
    w.source(
        &[&app],
        &format!(
            "snapshot = \"btrfs\"\npre = \"touch '{}'; while [ ! -e '{}' ]; do sleep 0.01; done\"\n",
            pause.display(),
            paused.display()
        ),
    );
    w.run(&["--repo", "repo", "init"], 0);
    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(stop.clone());
    let during = Arc::new(AtomicU64::new(0));
    let (s2, d2, dd) = (stop.clone(), data.clone(), during.clone());
    let snap_dir = app.join(".holdfast-snapshot-app");
    let writer = std::thread::spawn(move || {
        let (mut i, mut at_pause) = (0u64, None);
        while !s2.load(Ordering::Relaxed) {
            i += 1;
            write_atomic(&d2, "a.txt", i);
            write_atomic(&d2, "b.txt", i);
            if pause.exists() && at_pause.is_none() {
                // Quiesced: say so, and wait for the snapshot to exist.
                at_pause = Some(i);
                fs::write(&paused, b"").unwrap();
                let t = Instant::now();
                while !snap_dir.exists() && t.elapsed() < Duration::from_secs(60) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            } else if snap_dir.exists() {
                dd.fetch_add(1, Ordering::Relaxed);
            }
        }
        (i, at_pause)
    });
    std::thread::sleep(Duration::from_millis(200));
    let (job, err) = w.protect();
    stop.store(true, Ordering::Relaxed);
    let (last, at_pause) = writer.join().unwrap();
    assert_eq!(job["state"], "completed", "{job}\n{err}");
    let at_pause = at_pause.expect("the pre hook never quiesced the writer");
    assert!(
        last > at_pause,
        "the writer wrote nothing after the snapshot"
    );
    let during = during.load(Ordering::Relaxed);
    assert!(
        during > 0,
        "the writer wrote no pair while the snapshot existed"
    );
    assert!(fs_.leftovers().is_empty(), "{:?}", fs_.leftovers());
    assert!(!app.join(".holdfast-snapshot-app").exists());
    assert!(!w.path("state/btrfs/app").exists(), "the record is removed");

    // The snapshot records the original path, and its tree holds no snapshot directory.
    let snaps = w.snapshots();
    assert_eq!(snaps.len(), 1);
    let first = snaps[0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", snaps[0]))
        .to_string();
    assert_eq!(
        snaps[0]["summary"]["files_changed_while_read"], 0,
        "{}",
        snaps[0]
    );
    assert_eq!(
        snaps[0]["paths"],
        serde_json::json!([app.display().to_string()]),
        "{}",
        snaps[0]
    );
    let (ls, _) = w.run(&["--repo", "repo", "ls", "latest"], 0);
    assert!(ls.contains("a.txt") && ls.contains("big.bin"), "{ls}");
    assert!(!ls.contains(".holdfast-snapshot"), "{ls}");

    // The next run reads only what changed (the parent is matched by the original path, and
    // a snapshot keeps each file's inode and times): not big.bin again.
    let (job, err) = w.protect();
    assert_eq!(job["state"], "completed", "{job}\n{err}");
    let snaps = w.snapshots();
    let s = &snaps.last().unwrap()["summary"];
    assert!(s["bytes_read"].as_u64().unwrap() < MIB as u64, "{s}");
    assert_eq!(s["files_unmodified"], 1, "{s}");
    assert!(fs_.leftovers().is_empty());

    // Restored to its original place: the pair matches, as of the snapshot.
    fs::remove_dir_all(&data).unwrap();
    fs::remove_file(app.join("big.bin")).unwrap();
    let (out, err) = w.run(
        &[
            "restore",
            &first,
            "--source",
            "app",
            "--target",
            fs_.mnt.to_str().unwrap(),
            "--replace",
        ],
        0,
    );
    let a = fs::read_to_string(data.join("a.txt")).unwrap();
    let b = fs::read_to_string(data.join("b.txt")).unwrap();
    assert_eq!(a, b, "{out}{err}");
    assert_eq!(
        a,
        at_pause.to_string(),
        "the pair of the moment the writer was quiesced (last {last}, {during} pairs while the snapshot existed; {out}{err})"
    );
    assert_eq!(fs::read(app.join("big.bin")).unwrap().len(), 48 * MIB);
    assert!(!app.join(".holdfast-snapshot-app").exists());
}

/// A backup that fails after the snapshot was taken deletes it; a path not on btrfs and a
/// nested subvolume are refused, naming the fix.
#[test]
fn failed_backup_leaves_no_snapshot_and_wrong_places_are_refused() {
    let w = W::new();
    let fs_ = Btrfs::new(w.dir.path());
    let app = fs_.app();
    fs::write(app.join("f"), b"x").unwrap();
    w.source(&[&app], "snapshot = \"btrfs\"\n");
    // The backup fails after the snapshot was taken: the engine cannot register its session
    // in the repository (its sessions directory is replaced by a file).
    w.run(&["--repo", "repo", "init"], 0);
    let sessions = w.path("repo/sessions");
    fs::remove_dir_all(&sessions).unwrap();
    fs::write(&sessions, b"in the way").unwrap();
    let (job, err) = w.protect();
    fs::remove_file(&sessions).unwrap();
    fs::create_dir(&sessions).unwrap();
    assert!(
        job.to_string().contains("sessions"),
        "the engine failed: {job}\n{err}"
    );
    assert_eq!(job["state"], "failed", "{job}\n{err}");
    assert!(fs_.leftovers().is_empty(), "{:?}", fs_.leftovers());
    assert!(!w.path("state/btrfs/app").exists());

    // Not btrfs.
    let plain = w.path("plain");
    fs::create_dir_all(&plain).unwrap();
    w.source(&[&plain], "snapshot = \"btrfs\"\n");
    let (job, err) = w.protect();
    let text = format!("{job}{err}");
    assert!(
        text.contains("is not on a btrfs file system") && text.contains("drop snapshot"),
        "{text}"
    );

    // A nested subvolume would be an empty directory in the snapshot: refused, or excluded.
    sh(&format!(
        "btrfs subvolume create '{}'",
        app.join("inner").display()
    ));
    fs::write(app.join("inner/g"), b"y").unwrap();
    w.source(&[&app], "snapshot = \"btrfs\"\n");
    let (job, err) = w.protect();
    let text = format!("{job}{err}");
    assert_eq!(job["state"], "failed", "{text}");
    assert!(
        text.contains("is a btrfs subvolume of its own") && text.contains("inner"),
        "{text}"
    );
    assert!(fs_.leftovers().is_empty());
    w.source(&[&app], "snapshot = \"btrfs\"\nexclude = [\"inner\"]\n");
    let (job, err) = w.protect();
    assert_eq!(job["state"], "completed", "{job}\n{err}");
    assert!(fs_.leftovers().is_empty());
}

/// A run killed while its snapshot exists leaves it; the next run deletes it, warns, and
/// leaves none.
#[test]
fn sigkill_mid_backup_leaves_a_snapshot_the_next_run_deletes_with_a_warning() {
    let w = W::new();
    let fs_ = Btrfs::new(w.dir.path());
    let app = fs_.app();
    big(&app.join("big.bin"), 200);
    w.source(&[&app], "snapshot = \"btrfs\"\n");
    w.run(&["--repo", "repo", "init"], 0);
    #[allow(deprecated)]
    let bin = assert_cmd::cargo::cargo_bin("holdfast");
    let mut child = Std::new(bin)
        .args(["protect", "--source", "app"])
        .env("TEST_REPO_PW", "pw")
        .env("HOLDFAST_INSECURE_TEST_KDF", "1")
        .env("HOLDFAST_CONFIG", w.path("holdfast.toml"))
        .env("HOLDFAST_STATE_DIR", w.path("state"))
        .current_dir(w.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let snap = app.join(".holdfast-snapshot-app");
    let t = Instant::now();
    while !snap.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "never took the snapshot"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before its snapshot was seen"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the backup ended before it was killed"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(fs_.leftovers().len(), 1, "the killed run left its snapshot");
    assert!(w.path("state/btrfs/app").exists(), "and its record");

    let (job, err) = w.protect();
    assert!(
        err.contains("WARNING")
            && err.contains("was interrupted")
            && err.contains(".holdfast-snapshot-app"),
        "{err}"
    );
    assert_eq!(job["state"], "completed_with_warnings", "{job}");
    assert!(job.to_string().contains("was deleted now"), "{job}");
    assert!(fs_.leftovers().is_empty(), "{:?}", fs_.leftovers());
    assert!(!w.path("state/btrfs/app").exists());
    // The run after that is clean again.
    let (job, err) = w.protect();
    assert_eq!(job["state"], "completed", "{job}\n{err}");
    assert!(!err.contains("WARNING"), "{err}");
}

/// `discover` finds the subvolume, uncovered until a path source names its mount path (a
/// path inside it protects only part of it).
#[test]
fn discover_reports_the_subvolume_covered_only_by_a_source_of_its_path() {
    let w = W::new();
    let fs_ = Btrfs::new(w.dir.path());
    let app = fs_.app();
    fs::create_dir_all(app.join("data")).unwrap();
    let find = || -> Value {
        let (out, _) = w.run(&["--json", "discover"], 0);
        let list: Value = serde_json::from_str(&out).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .find(|f| f["location"] == app.display().to_string())
            .cloned()
            .unwrap_or_else(|| panic!("{} not found: {list}", app.display()))
    };
    w.source(&[&app.join("data")], "snapshot = \"btrfs\"\n");
    let f = find();
    assert_eq!(f["kind"], "btrfs-subvolume", "{f}");
    assert!(f["protected_by"].is_null(), "{f}");
    w.source(&[&app], "snapshot = \"btrfs\"\n");
    assert_eq!(find()["protected_by"], "app");
}

/// `snapshot = "lvm"` on a path source needs a file system on a logical volume (this machine's
/// kernel has no device-mapper, so the LVM round trip cannot run here): elsewhere the job fails,
/// naming the fix, and stores nothing.
#[test]
fn lvm_snapshot_of_a_path_not_on_a_logical_volume_fails_clearly() {
    let w = W::new();
    let data = w.path("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), b"x").unwrap();
    w.source(&[&data], "snapshot = \"lvm\"\n");
    w.run(&["--repo", "repo", "init"], 0);
    let (job, err) = w.protect();
    let text = format!("{job}{err}");
    assert_eq!(job["state"], "failed", "{text}");
    assert!(
        text.contains("not on an LVM logical volume") && text.contains("drop snapshot"),
        "{text}"
    );
    assert!(w.snapshots().is_empty(), "nothing is stored");
    // snapshot-size without an LVM snapshot is refused when the file is read.
    w.source(&[&data], "snapshot = \"btrfs\"\nsnapshot-size = \"1G\"\n");
    let (_, err) = w.run(&["plan"], 2);
    assert!(
        err.contains("snapshot-size needs snapshot = \"lvm\""),
        "{err}"
    );
}

/// Whether this kernel has device-mapper (LVM needs it).
fn device_mapper() -> Result<(), String> {
    if Path::new("/dev/mapper/control").exists() {
        return Ok(());
    }
    Err("this kernel has no device-mapper (no /dev/mapper/control; modprobe dm_mod), so LVM snapshots cannot be tested here".into())
}

/// `snapshot = "lvm"` on a path source: ext4 on a logical volume on a loop device; the files
/// are read from a read-only mount of an LVM snapshot, recorded under their original paths,
/// and restore there; the snapshot and its mount are gone afterwards, and a stale mounted
/// snapshot is unmounted and removed by the next run. It needs device-mapper, which the CI
/// machine's kernel lacks, so it is ignored (the suite's summary counts it as skipped, never
/// as passed); run it with `cargo test --test btrfs -- --ignored` on a host that has it.
/// Without device-mapper it FAILS, naming why.
#[test]
#[ignore = "needs device-mapper (the CI kernel has none); run with --ignored on a host that has it"]
fn lvm_snapshot_of_a_path_source_is_read_mounted_and_removed() {
    if let Err(why) = device_mapper() {
        panic!("{why}: this test needs a kernel with device-mapper (dm_mod and dm_snapshot)");
    }
    let w = W::new();
    let img = w.path("pv.img");
    fs::File::create(&img).unwrap().set_len(256 << 20).unwrap();
    let pv = sh(&format!("losetup -f --show '{}'", img.display()));
    let vg = format!("hfpvg{}", std::process::id());
    let mnt = w.path("lv.mnt");
    struct Vg(String, PathBuf, String, PathBuf);
    impl Drop for Vg {
        fn drop(&mut self) {
            let _ = Std::new("umount").arg(&self.3).status();
            let _ = Std::new("umount").arg(&self.1).status();
            let _ = Std::new("vgremove").args(["-f", &self.0]).status();
            let _ = Std::new("losetup").arg("-d").arg(&self.2).status();
        }
    }
    let _vg = Vg(
        vg.clone(),
        mnt.clone(),
        pv.clone(),
        w.path("state/lvm-mount/app"),
    );
    sh(&format!("pvcreate -q '{pv}' && vgcreate -q {vg} '{pv}'"));
    sh(&format!("lvcreate -q -y -L 96M -n data {vg}"));
    let lv = format!("/dev/{vg}/data");
    sh(&format!("mkfs.ext4 -q -F '{lv}'"));
    fs::create_dir_all(&mnt).unwrap();
    sh(&format!("mount '{lv}' '{}'", mnt.display()));
    let data = mnt.join("data");
    fs::create_dir_all(&data).unwrap();
    for i in 0..20u64 {
        fs::write(data.join(format!("f{i}")), random(i, 4096)).unwrap();
    }
    w.source(&[&data], "snapshot = \"lvm\"\nsnapshot-size = \"32M\"\n");
    w.run(&["--repo", "repo", "init"], 0);
    let (job, err) = w.protect();
    assert_eq!(job["state"], "completed", "{job}\n{err}");
    let lvs = sh(&format!("lvs --noheadings -o lv_name {vg}"));
    assert!(
        !lvs.contains("holdfast-snap"),
        "the snapshot was removed: {lvs}"
    );
    let snaps = w.snapshots();
    assert_eq!(
        snaps[0]["paths"],
        serde_json::json!([data.display().to_string()])
    );
    fs::remove_dir_all(&data).unwrap();
    w.run(
        &[
            "restore",
            "--source",
            "app",
            "--target",
            mnt.to_str().unwrap(),
            "--replace",
        ],
        0,
    );
    for i in 0..20u64 {
        assert_eq!(
            fs::read(data.join(format!("f{i}"))).unwrap(),
            random(i, 4096)
        );
    }
    // A run killed while its snapshot was mounted: the record, the snapshot and its mount
    // are left.
    sh(&format!(
        "lvcreate -q -s -L 16M -n holdfast-snap-app {vg}/data"
    ));
    fs::create_dir_all(w.path("state/lvm")).unwrap();
    fs::write(w.path("state/lvm/app"), format!("{vg}/holdfast-snap-app\n")).unwrap();
    let at = w.path("state/lvm-mount/app");
    fs::create_dir_all(&at).unwrap();
    sh(&format!(
        "mount -o ro,noload '/dev/{vg}/holdfast-snap-app' '{}'",
        at.display()
    ));
    let (job, err) = w.protect();
    assert!(
        err.contains("was unmounted now") && err.contains("was removed now"),
        "{err}"
    );
    assert_eq!(job["state"], "completed_with_warnings", "{job}");
    let lvs = sh(&format!("lvs --noheadings -o lv_name {vg}"));
    assert!(!lvs.contains("holdfast-snap"), "{lvs}");
}
