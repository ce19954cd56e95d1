//! Garbage collection against damaged or abandoned state, through the real `holdfast` binary on
//! real directories: an unreadable session record, a killed backup on this host, temporary
//! files of killed writes, and a damaged gc plan. None of them may block prune for good, keep
//! its garbage, or make backups fail; each is reported by `check` and by `prune`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod support;
use support::run::{self, path, write_random_files, Run};

const PASSWORD: &str = "gc faults: correct horse battery staple";

fn cmd(repo: &Path) -> std::process::Command {
    run::cmd(repo, PASSWORD, &[])
}

fn hf(repo: &Path, args: &[&str]) -> Run {
    run::run(cmd(repo), args, Duration::from_secs(180))
}

/// A repository with one snapshot of `files` random files of `size` bytes, then forgotten: all
/// its packs are garbage for the next prune.
fn repo_with_garbage(t: &TempDir, files: usize, size: usize) -> PathBuf {
    let repo = t.path().join("repo");
    hf(&repo, &["init", "--pack-size-mib", "1"]).ok();
    let src = t.path().join("src");
    write_random_tree(&src, files, size, 1);
    hf(&repo, &["backup", path(&src)]).ok();
    hf(&repo, &["forget", "--keep-last", "0"]).ok();
    repo
}

fn write_random_tree(root: &Path, files: usize, size: usize, seed: u64) {
    write_random_files(root, "f", files, size, seed);
}

fn packs(repo: &Path) -> usize {
    let mut n = 0;
    for d in fs::read_dir(repo.join("data")).unwrap() {
        n += fs::read_dir(d.unwrap().path()).unwrap().count();
    }
    n
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Set a file's modification time `minutes` into the past.
fn age(file: &Path, minutes: u32) {
    let st = std::process::Command::new("touch")
        .arg("-d")
        .arg(format!("{minutes} minutes ago"))
        .arg(file)
        .status()
        .expect("running touch");
    assert!(st.success());
}

fn check_warnings(repo: &Path) -> Vec<String> {
    let r = hf(repo, &["--json", "check"]).ok();
    r.json()["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn unreadable_session_blocks_prune_only_for_the_staleness_window() {
    let t = TempDir::new().unwrap();
    let repo = repo_with_garbage(&t, 3, 400_000);
    let before = packs(&repo);
    assert!(before > 0);
    let name = "ab".repeat(32);
    let bad = repo.join("sessions").join(&name);
    fs::write(&bad, b"not a session record").unwrap();

    // Fresh: it might be a writer we cannot see, so nothing is deleted, and both check and
    // prune name it.
    let w = check_warnings(&repo);
    assert!(
        w.iter()
            .any(|w| w.contains(&name) && w.contains("holds back")),
        "check does not report the unreadable session: {w:?}"
    );
    let p = hf(&repo, &["prune"]).ok();
    assert!(p.stdout.contains(&name), "prune does not name it:\n{p}");
    assert_eq!(packs(&repo), before, "{p}");

    // Older than the window: it is dead; prune removes it and the garbage.
    age(&bad, 20);
    let p = hf(&repo, &["--json", "prune"]).ok();
    let j = p.json();
    assert_eq!(j["unreadable_sessions_removed"][0], name.as_str(), "{p}");
    assert!(!bad.exists());
    assert_eq!(packs(&repo), 0, "{p}");
    assert!(j["bytes_freed"].as_u64().unwrap() > 0, "{p}");
    hf(&repo, &["check", "--read-data"]).ok();

    // A fresh one goes with the explicit fix.
    fs::write(&bad, b"\x00\x01").unwrap();
    let p = hf(&repo, &["prune", "--remove-unreadable-sessions"]).ok();
    assert!(!bad.exists(), "{p}");
    assert!(p.stdout.contains(&name), "{p}");
}

#[test]
fn killed_backup_on_this_host_does_not_block_prune() {
    let t = TempDir::new().unwrap();
    let repo = t.path().join("repo");
    hf(&repo, &["init", "--pack-size-mib", "1"]).ok();
    let src = t.path().join("src");
    write_random_tree(&src, 16, 4 << 20, 2);
    let mut c = cmd(&repo);
    c.arg("backup")
        .arg(&src)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    // Kill it once it has stored some packs.
    let deadline = Instant::now() + Duration::from_secs(120);
    while packs(&repo) < 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup finished before it could be killed"
        );
        assert!(Instant::now() < deadline, "no pack appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        files_in(&repo.join("sessions")).len(),
        1,
        "the killed backup left its session"
    );
    let left = packs(&repo);
    // Its process is provably gone on this host: prune needs no 15-minute wait.
    let p = hf(&repo, &["--json", "prune"]).ok();
    let j = p.json();
    assert!(j["waiting"].as_array().unwrap().is_empty(), "{p}");
    assert_eq!(j["stale_sessions_removed"], 1, "{p}");
    assert_eq!(j["packs_deleted"].as_u64().unwrap() as usize, left, "{p}");
    assert_eq!(packs(&repo), 0);
    assert!(files_in(&repo.join("sessions")).is_empty());
    hf(&repo, &["check", "--read-data"]).ok();
}

#[test]
fn prune_removes_old_temporary_files_and_check_reports_them() {
    let t = TempDir::new().unwrap();
    let repo = repo_with_garbage(&t, 1, 10_000);
    let tmp = repo.join("tmp");
    let old = tmp.join("0123456789abcdef01234567.tmp");
    fs::write(&old, vec![7u8; 300_000]).unwrap();
    age(&old, 30);
    // A file a writer may still be writing.
    let fresh = tmp.join("fedcba9876543210fedcba98.tmp");
    fs::write(&fresh, vec![7u8; 1000]).unwrap();

    let w = check_warnings(&repo);
    assert!(
        w.iter()
            .any(|w| w.contains("tmp/ holds 1 file(s)") && w.contains("292.97 KiB")),
        "check does not report the old temporary file: {w:?}"
    );
    let dry = hf(&repo, &["--json", "prune", "--dry-run"]).ok();
    assert_eq!(dry.json()["tmp_files_removed"], 1, "{dry}");
    assert!(old.exists(), "a dry run removed a file");
    let p = hf(&repo, &["--json", "prune"]).ok();
    let j = p.json();
    assert_eq!(j["tmp_files_removed"], 1, "{p}");
    assert_eq!(j["tmp_bytes_removed"], 300_000, "{p}");
    assert!(!old.exists());
    assert!(fresh.exists(), "a fresh temporary file was removed");
    let w = check_warnings(&repo);
    assert!(!w.iter().any(|w| w.contains("tmp/")), "{w:?}");
}

#[test]
fn damaged_gc_plan_is_ignored_by_backups_and_removed_by_prune() {
    let t = TempDir::new().unwrap();
    let repo = repo_with_garbage(&t, 2, 300_000);
    let name = "cd".repeat(32);
    let plan = repo.join("gc").join(&name);
    fs::write(&plan, b"damaged plan").unwrap();

    let w = check_warnings(&repo);
    assert!(
        w.iter().any(|w| w.contains(&name) && w.contains("prune")),
        "check does not report the damaged plan: {w:?}"
    );
    let src2 = t.path().join("src2");
    write_random_tree(&src2, 1, 5000, 3);
    let b = hf(&repo, &["backup", path(&src2)]).ok();
    assert!(b.stderr.contains(&name), "the backup does not warn: {b}");
    let p = hf(&repo, &["--json", "prune"]).ok();
    let j = p.json();
    assert_eq!(j["unreadable_plans_removed"][0], name.as_str(), "{p}");
    assert!(j["packs_deleted"].as_u64().unwrap() > 0, "{p}");
    assert!(!plan.exists());
    hf(&repo, &["check", "--read-data"]).ok();
}
