//! Fidelity and hygiene: private repository files, times outside 1677-2262, metadata that can
//! only partly be restored, sockets, files that change while they are read, damaged key slots,
//! and one JSON document per command. Real repositories through the real CLI (and the engine
//! API where a test must act in the middle of a backup).

mod support;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use support::{bytes, Env};

/// The user tests run as when they need not to be root.
const NOBODY: u32 = 65534;

fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let ts = libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    // SAFETY: valid path and a two-element timespec array.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [ts, ts].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        r,
        0,
        "utimensat {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn out(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every file and directory under `root` with a mode other than 0600 (files) or 0700
/// (directories), and how many entries were looked at.
fn not_private(root: &Path) -> (Vec<String>, usize) {
    let mut bad = Vec::new();
    let mut seen = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        seen += 1;
        let mode = m.permissions().mode() & 0o7777;
        let want = if m.is_dir() { 0o700 } else { 0o600 };
        if mode != want {
            bad.push(format!("{} is {mode:o}", p.display()));
        }
        if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    (bad, seen)
}

// ---------------------------------------------------------------------------------------------
// 17. Private repository files
// ---------------------------------------------------------------------------------------------

/// After init, backups, a second key, forget and prune, every file of a local repository is
/// 0600 and every directory 0700 (key slots cannot be copied by other local users).
#[test]
fn local_repository_files_are_private_after_init_backup_and_prune() {
    let e = Env::new();
    let src = e.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), bytes(1, 2_000_000)).unwrap();
    fs::write(src.join("b"), b"small").unwrap();
    e.init();
    let (bad, _) = not_private(&e.repo());
    assert!(bad.is_empty(), "after init: {bad:#?}");
    e.cmd(&["backup", src.to_str().unwrap()]).assert().success();
    fs::write(src.join("a"), bytes(2, 2_000_000)).unwrap();
    e.cmd(&["backup", src.to_str().unwrap()]).assert().success();
    let pw = e.path("pw2");
    fs::write(&pw, "second\n").unwrap();
    e.cmd(&["key", "add", "--new-password-file", pw.to_str().unwrap()])
        .assert()
        .success();
    e.cmd(&["forget", "--keep-last", "1", "--prune"])
        .assert()
        .success();
    let v = e.json(&["prune", "--max-unused", "0"], 0);
    let (bad, seen) = not_private(&e.repo());
    assert!(bad.is_empty(), "after backup and prune: {bad:#?}");
    let packs = walk_files(&e.repo().join("data")).len();
    assert!(
        packs >= 1 && seen > 260,
        "{packs} packs, {seen} entries; {v}"
    );
    assert_eq!(walk_files(&e.repo().join("keys")).len(), 2);
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The same over SFTP, on a real OpenSSH server.
#[test]
fn sftp_repository_files_are_private() {
    if support::sshd::skip() {
        return;
    }
    let s = support::sshd::sshd();
    let repo = s.url("private");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), bytes(3, 1_500_000)).unwrap();
    s.hf(&repo, &["init", "--pack-size-mib", "1"])
        .assert()
        .success();
    s.hf(&repo, &["backup", src.to_str().unwrap()])
        .assert()
        .success();
    fs::write(src.join("a"), bytes(4, 1_500_000)).unwrap();
    s.hf(&repo, &["backup", src.to_str().unwrap()])
        .assert()
        .success();
    s.hf(&repo, &["forget", "--keep-last", "1", "--prune"])
        .assert()
        .success();
    let (bad, seen) = not_private(&s.path("private"));
    assert!(bad.is_empty(), "{bad:#?}");
    assert!(
        walk_files(&s.path("private").join("data")).len() >= 2,
        "{seen}"
    );
    support::check_and_restore_latest(&|a| s.hf(&repo, a), tmp.path(), &src);
}

// ---------------------------------------------------------------------------------------------
// 18. Times outside 1677-2262
// ---------------------------------------------------------------------------------------------

/// A file and a directory dated 2400 (beyond nanoseconds in an i64) back up without a false
/// "changed while it was read", are unmodified in the next backup, and restore to the exact
/// nanosecond.
#[test]
fn times_beyond_2262_are_kept_exactly_without_false_warnings() {
    let e = Env::new();
    let src = e.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/future"), b"from the future").unwrap();
    fs::write(src.join("d/big-future"), bytes(5, 1_200_000)).unwrap();
    // 2400-01-02T03:04:05.123456789Z and 2300-06-01.
    let (sec, nsec) = (13_569_563_045i64, 123_456_789i64);
    set_mtime(&src.join("d/future"), sec, nsec);
    set_mtime(&src.join("d/big-future"), sec + 1, 1);
    set_mtime(&src.join("d"), 10_418_198_400, 999_999_999);
    e.init();
    let s = src.to_str().unwrap();
    let first = e.json(&["backup", s], 0);
    assert_eq!(first["complete"], true, "{first}");
    assert_eq!(first["warnings"], serde_json::json!([]), "{first}");
    assert!(first["changed_while_read"].as_array().unwrap().is_empty());
    let again = e.json(&["backup", s], 0);
    assert_eq!(again["summary"]["files_unmodified"], 2, "{again}");
    assert_eq!(again["summary"]["bytes_read"], 0, "{again}");
    let ls = e.json(&["ls", "latest"], 0);
    let future = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["path"].as_str().unwrap().ends_with("/d/future"))
        .unwrap()
        .clone();
    assert_eq!(future["mtime_sec"], sec, "{future}");
    assert_eq!(future["mtime_nsec"], nsec, "{future}");
    let target = e.path("out");
    e.cmd(&["restore", "latest", target.to_str().unwrap()])
        .assert()
        .success();
    let m = fs::metadata(target.join("src/d/future")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (sec, nsec));
    let m = fs::metadata(target.join("src/d/big-future")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (sec + 1, 1));
    let m = fs::metadata(target.join("src/d")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (10_418_198_400, 999_999_999));
    support::assert_same_tree(&src, &target.join("src"));
}

// ---------------------------------------------------------------------------------------------
// 19. Metadata that can only partly be restored
// ---------------------------------------------------------------------------------------------

/// `holdfast` run as nobody (not root), with HOLDFAST_* passed through.
fn as_nobody(e: &Env, args: &[&str]) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
        ])
        .arg(assert_cmd::cargo::cargo_bin("holdfast"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOLDFAST_PASSWORD", support::PASSWORD)
        .env("HOLDFAST_INSECURE_TEST_KDF", "1")
        .arg("--repo")
        .arg(e.repo())
        .args(args)
        .output()
        .unwrap()
}

fn chown_tree(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
    if fs::symlink_metadata(p).unwrap().is_dir() {
        for e in fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// Restoring as a user who may not set a `trusted.` attribute: the file still gets its mode,
/// its mtime and its `user.` attribute (on a file and on a directory), the attribute that
/// could not be set is named, and the restore ends with warnings (exit 3).
#[test]
fn restore_as_non_root_sets_what_it_can_and_names_what_it_cannot() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test sets trusted.* attributes as root"
    );
    let e = Env::new();
    let src = e.path("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    let f = src.join("dir/file");
    fs::write(&f, b"content").unwrap();
    for p in [&f, &src.join("dir")] {
        xattr::set(p, "trusted.holdfast", b"root only").unwrap();
        xattr::set(p, "user.holdfast", b"anyone").unwrap();
    }
    fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(src.join("dir"), fs::Permissions::from_mode(0o750)).unwrap();
    set_mtime(&f, 1_500_000_000, 42);
    set_mtime(&src.join("dir"), 1_400_000_000, 7);
    e.init();
    e.cmd(&["backup", src.to_str().unwrap()]).assert().success();
    // nobody must reach the repository and own the target's parent.
    fs::set_permissions(e.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    chown_tree(&e.repo(), NOBODY);
    let target = e.path("out");
    fs::create_dir(&target).unwrap();
    chown_tree(&target, NOBODY);
    let o = as_nobody(&e, &["restore", "latest", target.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", out(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for p in ["src/dir/file", "src/dir"] {
        assert!(
            err.lines().any(|l| l.contains(&format!(
                "{p}: restored, but its extended attribute trusted.holdfast not set"
            ))),
            "{p}: {}",
            out(&o)
        );
    }
    let rf = target.join("src/dir/file");
    assert_eq!(fs::read(&rf).unwrap(), b"content");
    let m = fs::metadata(&rf).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_500_000_000, 42));
    assert_eq!(m.uid(), NOBODY);
    let rd = target.join("src/dir");
    let m = fs::metadata(&rd).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o750);
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_400_000_000, 7));
    for p in [&rf, &rd] {
        assert_eq!(
            xattr::get(p, "user.holdfast").unwrap().as_deref(),
            Some(&b"anyone"[..]),
            "{}",
            p.display()
        );
        assert_eq!(xattr::get(p, "trusted.holdfast").unwrap(), None);
    }
}

// ---------------------------------------------------------------------------------------------
// 20. Sockets, changing files, damaged key slots, one JSON document
// ---------------------------------------------------------------------------------------------

/// A socket is recorded by backup and reported by restore (it cannot be recreated): the
/// restore names it and exits 3, and everything else is restored.
#[test]
fn sockets_are_reported_on_restore() {
    let e = Env::new();
    let src = e.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("file"), b"data").unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(src.join("app.sock")).unwrap();
    e.init();
    let b = e.json(&["backup", src.to_str().unwrap()], 0);
    assert_eq!(b["summary"]["others"], 1, "{b}");
    let ls = e.json(&["ls", "latest"], 0);
    assert!(
        ls.as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "socket" && n["path"].as_str().unwrap().ends_with("/app.sock")),
        "{ls}"
    );
    let target = e.path("out");
    let o = e
        .cmd(&["--json", "restore", "latest", target.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", out(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["result"]["sockets"], 1, "{v}");
    assert_eq!(v["result"]["files"], 1, "{v}");
    let errors = v["result"]["errors"].to_string();
    assert!(
        errors.contains("app.sock") && errors.contains("Unix socket"),
        "{errors}"
    );
    assert_eq!(fs::read(target.join("src/file")).unwrap(), b"data");
    assert!(!target.join("src/app.sock").exists());
}

/// A file written to during every read is stored as last read, marked in its tree, in the
/// snapshot and in the summary; the snapshot is not complete and backup exits 3; `snapshots`
/// and `ls` show it.
#[test]
fn a_file_that_keeps_changing_while_read_is_marked_and_exits_3() {
    let e = Env::new();
    let src = e.path("src");
    fs::create_dir_all(&src).unwrap();
    let busy = src.join("busy.db");
    fs::write(&busy, bytes(6, 24_000_000)).unwrap();
    fs::write(src.join("quiet"), b"quiet").unwrap();
    e.init();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, busy) = (stop.clone(), busy.clone());
        std::thread::spawn(move || {
            use std::os::unix::fs::FileExt;
            let f = fs::OpenOptions::new().write(true).open(&busy).unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                f.write_all_at(&i.to_le_bytes(), (i * 4099) % 23_000_000)
                    .unwrap();
                i += 1;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    let o = e
        .cmd(&["--json", "backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", out(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["complete"], false, "{v}");
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    let cwr = v["changed_while_read"].as_array().unwrap();
    assert_eq!(cwr.len(), 1, "{v}");
    assert!(cwr[0].as_str().unwrap().contains("busy.db"), "{v}");
    assert_eq!(v["summary"]["files_changed_while_read"], 1, "{v}");
    // snapshots: the flag and the list, in JSON and in the table.
    let snaps = e.json(&["snapshots"], 0);
    assert_eq!(snaps[0]["complete"], false);
    assert_eq!(snaps[0]["changed_while_read"].as_array().unwrap().len(), 1);
    let table = e.cmd(&["snapshots"]).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("INCOMPLETE: 1 changed while read"),
        "{table}"
    );
    // ls marks the file, and only it.
    let ls = e.json(&["ls", "latest"], 0);
    let marked: Vec<_> = ls
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["changed_while_read"] == true)
        .map(|n| n["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(marked.len(), 1, "{ls}");
    assert!(marked[0].ends_with("/busy.db"), "{marked:?}");
    let plain = e.cmd(&["ls", "latest"]).output().unwrap();
    let plain = String::from_utf8_lossy(&plain.stdout);
    let line = plain.lines().find(|l| l.contains("busy.db")).unwrap();
    assert!(line.contains("CHANGED WHILE READ"), "{plain}");
    assert!(!plain
        .lines()
        .any(|l| l.contains("quiet") && l.contains("CHANGED")));
    // The repository is sound: what was stored checks clean.
    e.cmd(&["check", "--read-data"]).assert().success();
}

/// Engine API: a file that changes once during its read (the change is made from the progress
/// callback, in the middle of the backup) is read again; the snapshot is complete and holds
/// the new content, with the new mtime.
#[test]
fn a_file_changed_once_while_read_is_read_again_and_stored_whole() {
    use holdfast_core::backup::{backup, BackupOptions};
    use holdfast_core::progress::Progress;
    use holdfast_core::repo::InitOptions;
    use holdfast_core::restore::{restore, RestoreOptions};
    use holdfast_core::Repository;

    struct ChangeOnce {
        path: PathBuf,
        done: AtomicBool,
    }
    impl Progress for ChangeOnce {
        fn inc(&self, _files: u64, bytes: u64) {
            // The first content read: change the file under the reader, once.
            if bytes > 0 && !self.done.swap(true, Ordering::SeqCst) {
                fs::write(&self.path, bytes_for_change()).unwrap();
                set_mtime(&self.path, 1_700_000_000, 5);
            }
        }
    }
    fn bytes_for_change() -> Vec<u8> {
        bytes(8, 3_000_000)
    }

    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let f = src.join("file");
    fs::write(&f, bytes(7, 3_000_000)).unwrap();
    let storage = Arc::new(holdfast_backend_local::LocalStorage::new(
        t.path().join("repo"),
    ));
    let opts = InitOptions {
        kdf: holdfast_core::keys::KdfParams::insecure_for_tests(),
        ..Default::default()
    };
    let repo = Repository::init(storage, b"pw", &opts).unwrap();
    let p = ChangeOnce {
        path: f.clone(),
        done: AtomicBool::new(false),
    };
    let out = backup(
        &repo,
        &BackupOptions {
            paths: vec![src.clone()],
            threads: 1,
            ..Default::default()
        },
        &p,
    )
    .unwrap();
    assert!(p.done.load(Ordering::SeqCst), "the file was never changed");
    let s = &out.snapshot;
    assert!(s.complete, "{:?} {:?}", s.changed_while_read, s.warnings);
    assert!(s.changed_while_read.is_empty() && s.warnings.is_empty());
    assert_eq!(s.summary.files_changed_while_read, 0);
    let (index, _) = repo.load_index().unwrap();
    let (all, _) = holdfast_core::snapshot::load_all(&repo).unwrap();
    let target = t.path().join("out");
    let r = restore(
        &repo,
        &index,
        all.last().unwrap(),
        &RestoreOptions {
            target: target.clone(),
            ..Default::default()
        },
        &holdfast_core::progress::NoProgress,
    )
    .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(fs::read(target.join("src/file")).unwrap() == bytes_for_change());
    let m = fs::metadata(target.join("src/file")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_700_000_000, 5));
}

/// A damaged key slot is named, and is not called a wrong password; a wrong password is still
/// called that when every slot is well formed.
#[test]
fn damaged_key_slots_are_named_and_not_called_a_wrong_password() {
    let e = Env::new();
    e.init();
    let pw = e.path("pw2");
    fs::write(&pw, "second password\n").unwrap();
    let before: Vec<_> = walk_files(&e.repo().join("keys"));
    e.cmd(&["key", "add", "--new-password-file", pw.to_str().unwrap()])
        .assert()
        .success();
    let second = walk_files(&e.repo().join("keys"))
        .into_iter()
        .find(|p| !before.contains(p))
        .unwrap();
    let name = second.file_name().unwrap().to_str().unwrap().to_string();
    // Intact slots, wrong password: exit 12, "wrong password".
    let o = e
        .cmd(&["snapshots"])
        .env("HOLDFAST_PASSWORD", "nope")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(12), "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong password"));
    // The second slot truncated: its password cannot open, and the error names the slot.
    let raw = fs::read(&second).unwrap();
    fs::write(&second, &raw[..raw.len() / 2]).unwrap();
    let o = e
        .cmd(&["snapshots"])
        .env("HOLDFAST_PASSWORD", "second password")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(!err.contains("wrong password"), "{err}");
    assert!(
        err.contains(&format!("key slot {name} is malformed")),
        "{err}"
    );
    assert!(err.contains("1 intact slot(s) did not open"), "{err}");
    // The first password still opens (the damaged slot is skipped).
    e.cmd(&["snapshots"]).assert().success();
    // A slot whose Argon2 cost is forged huge is refused before deriving, by name.
    let mut v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    v["params"]["m_cost"] = serde_json::json!(4_000_000_000u64);
    fs::write(&second, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = e
        .cmd(&["snapshots"])
        .env("HOLDFAST_PASSWORD", "second password")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(err.contains(&name) && err.contains("exceed"), "{err}");
    // No slot at all is not a wrong password either.
    for k in walk_files(&e.repo().join("keys")) {
        fs::remove_file(k).unwrap();
    }
    let o = e.cmd(&["snapshots"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(err.contains("no key slots"), "{err}");
}

/// `--json forget --prune` prints one JSON document, with the prune report in it.
#[test]
fn json_forget_with_prune_prints_one_document() {
    let e = Env::new();
    let src = e.path("src");
    fs::create_dir_all(&src).unwrap();
    e.init();
    for i in 0..2 {
        fs::write(src.join("f"), bytes(10 + i, 1_000_000)).unwrap();
        e.cmd(&["backup", src.to_str().unwrap()]).assert().success();
    }
    // `Env::json` parses all of stdout as one value: two documents fail it.
    let v = e.json(&["forget", "--keep-last", "1", "--prune"], 0);
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 2, "{v}");
    assert!(v["prune"]["packs_deleted"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["dry_run"], false);
    e.cmd(&["check", "--read-data"]).assert().success();
}
