//! End-to-end tests of the `holdfast` command line on real directories.

mod support;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use support::{assert_same_tree, bytes, Env};

fn set_mtime_ns(p: &Path, secs: i64, nsec: i64) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let ts = libc::timespec {
        tv_sec: secs,
        tv_nsec: nsec,
    };
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [ts, ts].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

/// A tree with every kind of entry a restore must reproduce.
fn rich_tree(root: &Path) {
    fs::create_dir_all(root.join("dir/empty")).unwrap();
    fs::create_dir_all(root.join("dir/deep/er")).unwrap();
    fs::write(root.join("small.txt"), b"hello holdfast\n").unwrap();
    fs::write(root.join("empty-file"), b"").unwrap();
    fs::write(root.join("dir/deep/er/big.bin"), bytes(1, 3_000_000)).unwrap();
    fs::write(
        root.join("dir/compressible.txt"),
        "line of text\n".repeat(100_000),
    )
    .unwrap();
    // Hard links.
    fs::write(root.join("dir/h1"), b"linked content").unwrap();
    fs::hard_link(root.join("dir/h1"), root.join("h2")).unwrap();
    // Symlinks: relative, absolute, dangling.
    symlink("small.txt", root.join("link-rel")).unwrap();
    symlink("/etc/hostname", root.join("link-abs")).unwrap();
    symlink("does/not/exist", root.join("link-dangling")).unwrap();
    // Permissions, setuid, ownership.
    fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(root.join("private"), b"secret").unwrap();
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::lchown(root.join("private"), Some(1234), Some(5678)).unwrap();
    // A name that is not UTF-8.
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9-latin1");
    fs::write(root.join(odd), b"odd name").unwrap();
    // Extended attributes.
    xattr::set(
        root.join("small.txt"),
        "user.holdfast.test",
        b"value\x00\xff",
    )
    .unwrap();
    // Sparse file: 64 MiB with 4 KiB of data in the middle.
    let f = fs::File::create(root.join("sparse")).unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&bytes(2, 4096), 32 << 20).unwrap();
    drop(f);
    // Fifo and a character device (we run as root).
    let c = std::ffi::CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o640) }, 0);
    let c = std::ffi::CString::new(root.join("null-dev").as_os_str().as_bytes()).unwrap();
    assert_eq!(
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) },
        0,
        "mknod needs root"
    );
    // Nanosecond mtimes, directories last.
    set_mtime_ns(&root.join("small.txt"), 1_600_000_000, 123_456_789);
    set_mtime_ns(&root.join("link-rel"), 1_500_000_000, 987_654_321);
    set_mtime_ns(&root.join("dir/empty"), 1_400_000_000, 5);
    set_mtime_ns(&root.join("dir"), 1_300_000_000, 999_999_999);
}

#[test]
fn round_trip_keeps_content_and_metadata() {
    let e = Env::new();
    let src = e.path("src");
    rich_tree(&src);
    e.init();
    let b = e.json(&["backup", src.to_str().unwrap()], 0);
    assert_eq!(b["complete"], true);
    let out = e.path("out");
    e.cmd(&["restore", "latest", out.to_str().unwrap()])
        .assert()
        .success();
    assert_same_tree(&src, &out.join("src"));
    // The sparse file came back sparse: far fewer blocks than its length.
    let m = fs::metadata(out.join("src/sparse")).unwrap();
    assert_eq!(m.len(), 64 << 20);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "sparse file restored with {} blocks",
        m.blocks()
    );
    e.cmd(&["check", "--read-data"]).assert().success();
}

#[test]
fn incremental_backup_reads_only_changes() {
    let e = Env::new();
    let src = e.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..50 {
        fs::write(src.join(format!("f{i}")), bytes(i, 10_000)).unwrap();
    }
    e.init();
    let s = src.to_str().unwrap();
    let first = e.json(&["backup", s], 0);
    assert_eq!(first["summary"]["files_new"], 50);
    let second = e.json(&["backup", s], 0);
    assert_eq!(second["summary"]["files_unmodified"], 50);
    assert_eq!(second["summary"]["bytes_read"], 0);
    assert_eq!(second["summary"]["blobs_added"], 0);
    fs::write(src.join("f3"), bytes(99, 10_000)).unwrap();
    fs::write(src.join("new"), b"new file").unwrap();
    let third = e.json(&["backup", s], 0);
    assert_eq!(third["summary"]["files_changed"], 1);
    assert_eq!(third["summary"]["files_new"], 1);
    assert_eq!(third["summary"]["files_unmodified"], 49);
    assert_eq!(third["summary"]["bytes_read"], 10_008);
    // --force reads everything again but stores nothing new.
    let forced = e.json(&["backup", "--force", s], 0);
    assert_eq!(forced["summary"]["bytes_read"], 500_008);
    assert_eq!(forced["summary"]["blobs_added"], 0);
}

#[test]
fn excludes_dry_run_and_tags() {
    let e = Env::new();
    let src = e.path("src");
    fs::create_dir_all(src.join("cache")).unwrap();
    fs::create_dir_all(src.join("keep")).unwrap();
    fs::write(src.join("cache/x"), b"x").unwrap();
    fs::write(src.join("keep/a.log"), b"log").unwrap();
    fs::write(src.join("keep/a.txt"), b"txt").unwrap();
    fs::write(src.join("keep/b.tmp"), b"tmp").unwrap();
    let ex = e.path("excludes");
    fs::write(&ex, "# comment\n\n*.tmp\n").unwrap();
    e.init();
    let s = src.to_str().unwrap();
    let dry = e.json(&["backup", "--dry-run", s], 0);
    assert!(dry["snapshot"].is_null());
    assert_eq!(e.json(&["snapshots"], 0).as_array().unwrap().len(), 0);
    let cache_glob = format!("{s}/cache");
    e.json(
        &[
            "backup",
            "--tag",
            "nightly",
            "-e",
            "*.log",
            "-e",
            &cache_glob,
            "--exclude-file",
            ex.to_str().unwrap(),
            s,
        ],
        0,
    );
    let ls = e.json(&["ls", "latest"], 0);
    let paths: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["/src", "/src/keep", "/src/keep/a.txt"]);
    let snaps = e.json(&["snapshots", "--tag", "nightly"], 0);
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_eq!(snaps[0]["tags"][0], "nightly");
}

#[test]
fn restore_include_and_non_empty_target() {
    let e = Env::new();
    let src = e.path("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::create_dir_all(src.join("c")).unwrap();
    fs::write(src.join("a/b/f"), b"f").unwrap();
    fs::write(src.join("c/g"), b"g").unwrap();
    e.init();
    e.cmd(&["backup", src.to_str().unwrap()]).assert().success();
    let out = e.path("out");
    e.cmd(&[
        "restore",
        "latest",
        out.to_str().unwrap(),
        "--include",
        "src/a",
    ])
    .assert()
    .success();
    assert_eq!(fs::read(out.join("src/a/b/f")).unwrap(), b"f");
    assert!(!out.join("src/c").exists());
    // Non-empty target: refused without --overwrite, and nothing changed.
    fs::write(out.join("src/a/b/f"), b"local edit").unwrap();
    let o = e
        .cmd(&["restore", "latest", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--overwrite"));
    assert_eq!(fs::read(out.join("src/a/b/f")).unwrap(), b"local edit");
    e.cmd(&["restore", "latest", out.to_str().unwrap(), "--overwrite"])
        .assert()
        .success();
    assert_eq!(fs::read(out.join("src/a/b/f")).unwrap(), b"f");
    // An include that is not in the snapshot is an error, not an empty success.
    let o = e
        .cmd(&[
            "restore",
            "latest",
            e.path("o2").to_str().unwrap(),
            "-i",
            "src/nope",
        ])
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
    // The original absolute path works as an include too.
    let abs = format!("{}/c", src.display());
    e.cmd(&[
        "restore",
        "latest",
        e.path("o3").to_str().unwrap(),
        "-i",
        &abs,
    ])
    .assert()
    .success();
    assert_eq!(fs::read(e.path("o3/src/c/g")).unwrap(), b"g");
}

#[test]
fn snapshots_ls_diff_stats() {
    let e = Env::new();
    let src = e.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("same"), b"same").unwrap();
    fs::write(src.join("changes"), b"v1").unwrap();
    fs::write(src.join("goes"), b"bye").unwrap();
    e.init();
    let s = src.to_str().unwrap();
    let a = e.json(&["backup", s], 0)["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    fs::write(src.join("changes"), b"v2").unwrap();
    fs::remove_file(src.join("goes")).unwrap();
    fs::write(src.join("comes"), b"hi").unwrap();
    let b = e.json(&["backup", s], 0)["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let d = e.json(&["diff", &a[..8], &b[..8]], 0);
    let mut changes: Vec<String> = d
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["change"].as_str().unwrap(),
                c["path"].as_str().unwrap()
            )
        })
        .collect();
    changes.sort();
    assert!(changes.contains(&"+ /src/comes".to_string()), "{changes:?}");
    assert!(changes.contains(&"- /src/goes".to_string()), "{changes:?}");
    assert!(
        changes.contains(&"M /src/changes".to_string()),
        "{changes:?}"
    );
    assert!(!changes.iter().any(|c| c.ends_with("/same")), "{changes:?}");
    let st = e.json(&["stats"], 0);
    assert_eq!(st["snapshots"]["snapshots"], 2);
    assert_eq!(st["snapshots"]["files"], 6);
    let one = e.json(&["stats", "latest"], 0);
    assert_eq!(one["snapshots"]["restore_size"], 8);
    // Ambiguous and unknown ids are clear errors.
    let o = e.cmd(&["ls", "zzzz"]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("no snapshot matches"));
    let ls = e.cmd(&["ls", "latest", "src/changes"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&ls.stdout).trim(), "/src/changes");
}

#[test]
fn forget_and_prune_reclaim_space() {
    let e = Env::new();
    let src = e.path("src");
    fs::create_dir_all(&src).unwrap();
    e.cmd(&["init", "--pack-size-mib", "1"]).assert().success();
    let s = src.to_str().unwrap();
    for i in 0..4u64 {
        fs::write(src.join("data"), bytes(i, 2_000_000)).unwrap();
        let t = format!("2026-01-0{}T12:00:00Z", i + 1);
        e.cmd(&["backup", s])
            .env("HOLDFAST_NOW", &t)
            .assert()
            .success();
    }
    let size = |p: &Path| -> u64 { walk_size(p) };
    let before = size(&e.repo().join("data"));
    let dry = e.json(&["forget", "--keep-last", "1", "--dry-run"], 0);
    assert_eq!(
        dry["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["reasons"].as_array().unwrap().is_empty())
            .count(),
        3
    );
    assert_eq!(e.json(&["snapshots"], 0).as_array().unwrap().len(), 4);
    // No rule at all is refused.
    let o = e.cmd(&["forget"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    e.cmd(&["forget", "--keep-last", "1", "--prune"])
        .assert()
        .success();
    assert_eq!(e.json(&["snapshots"], 0).as_array().unwrap().len(), 1);
    let after = size(&e.repo().join("data"));
    assert!(
        after * 3 < before,
        "prune freed too little: {before} -> {after}"
    );
    e.cmd(&["check", "--read-data"]).assert().success();
    let out = e.path("out");
    e.cmd(&["restore", "latest", out.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(fs::read(out.join("src/data")).unwrap(), bytes(3, 2_000_000));
}

fn walk_size(p: &Path) -> u64 {
    let mut n = 0;
    for e in fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        n += if m.is_dir() {
            walk_size(&e.path())
        } else {
            m.len()
        };
    }
    n
}

#[test]
fn key_management() {
    let e = Env::new();
    e.init();
    let pwfile = e.path("pw2");
    fs::write(&pwfile, "second password\n").unwrap();
    e.cmd(&[
        "key",
        "add",
        "--new-password-file",
        pwfile.to_str().unwrap(),
    ])
    .assert()
    .success();
    let keys = e.json(&["key", "list"], 0);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    // The new password opens the repository, through a password file and a password command.
    e.cmd(&["snapshots"])
        .env_remove("HOLDFAST_PASSWORD")
        .env("HOLDFAST_PASSWORD_FILE", &pwfile)
        .assert()
        .success();
    e.cmd(&["snapshots"])
        .env_remove("HOLDFAST_PASSWORD")
        .env("HOLDFAST_PASSWORD_COMMAND", "echo second password")
        .assert()
        .success();
    // The slot in use and the last slot cannot be removed.
    let current = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let o = e.cmd(&["key", "remove", &current[..8]]).output().unwrap();
    assert!(!o.status.success());
    // passwd replaces the current slot.
    e.cmd(&["key", "passwd"])
        .env("HOLDFAST_NEW_PASSWORD", "third")
        .assert()
        .success();
    let o = e.cmd(&["snapshots"]).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(12),
        "old password must no longer open"
    );
    e.cmd(&["snapshots"])
        .env("HOLDFAST_PASSWORD", "third")
        .assert()
        .success();
    e.cmd(&["key", "remove", &other[..8]])
        .env("HOLDFAST_PASSWORD", "third")
        .assert()
        .success();
    let o = e
        .cmd(&["snapshots"])
        .env_remove("HOLDFAST_PASSWORD")
        .env("HOLDFAST_PASSWORD_FILE", &pwfile)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(12));
    let o = e
        .cmd(&["--json", "key", "list"])
        .env("HOLDFAST_PASSWORD", "third")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
}

#[test]
fn repository_and_password_from_environment() {
    let e = Env::new();
    e.init();
    let mut c = assert_cmd::Command::cargo_bin("holdfast").unwrap();
    c.env("HOLDFAST_REPOSITORY", e.repo())
        .env("HOLDFAST_PASSWORD", support::PASSWORD)
        .arg("snapshots")
        .assert()
        .success();
    let mut c = assert_cmd::Command::cargo_bin("holdfast").unwrap();
    let o = c.env_clear().arg("snapshots").output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("HOLDFAST_REPOSITORY"));
}

#[test]
fn concurrent_backups_both_succeed() {
    let e = Env::new();
    e.cmd(&["init", "--pack-size-mib", "1"]).assert().success();
    let mut srcs = Vec::new();
    for k in 0..2u64 {
        let src = e.path(&format!("src{k}"));
        fs::create_dir_all(&src).unwrap();
        for i in 0..20u64 {
            // Half the files are shared between the two sources: both writers store them.
            let seed = if i % 2 == 0 { i } else { 1000 * (k + 1) + i };
            fs::write(src.join(format!("f{i}")), bytes(seed, 300_000)).unwrap();
        }
        srcs.push(src);
    }
    let children: Vec<_> = srcs
        .iter()
        .map(|s| {
            std::process::Command::new(assert_cmd::cargo::cargo_bin("holdfast"))
                .env("HOLDFAST_PASSWORD", support::PASSWORD)
                .env("HOLDFAST_INSECURE_TEST_KDF", "1")
                .arg("--repo")
                .arg(e.repo())
                .arg("backup")
                .arg(s)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(e.json(&["snapshots"], 0).as_array().unwrap().len(), 2);
    e.cmd(&["check", "--read-data"]).assert().success();
    for (k, s) in srcs.iter().enumerate() {
        let out = e.path(&format!("out{k}"));
        let snaps = e.json(&["snapshots"], 0);
        let id = snaps
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["paths"][0] == s.to_str().unwrap())
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        e.cmd(&["restore", &id, out.to_str().unwrap()])
            .assert()
            .success();
        assert_same_tree(s, &out.join(s.file_name().unwrap()));
    }
}

#[test]
fn prune_beside_a_running_backup_deletes_nothing_it_needs() {
    let e = Env::new();
    e.cmd(&["init", "--pack-size-mib", "1"]).assert().success();
    let old = e.path("old");
    fs::create_dir_all(&old).unwrap();
    fs::write(old.join("x"), bytes(7, 3_000_000)).unwrap();
    e.cmd(&["backup", old.to_str().unwrap()]).assert().success();
    // The new source shares the old data: a backup running now may deduplicate against it.
    let src = e.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("x"), bytes(7, 3_000_000)).unwrap();
    for i in 0..40u64 {
        fs::write(src.join(format!("n{i}")), bytes(100 + i, 500_000)).unwrap();
    }
    e.cmd(&["forget", "--keep-last", "0"]).assert().success();
    let mut backup = std::process::Command::new(assert_cmd::cargo::cargo_bin("holdfast"))
        .env("HOLDFAST_PASSWORD", support::PASSWORD)
        .env("HOLDFAST_INSECURE_TEST_KDF", "1")
        .arg("--repo")
        .arg(e.repo())
        .arg("backup")
        .arg(&src)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Prune repeatedly while the backup runs.
    let mut prunes = 0;
    while backup.try_wait().unwrap().is_none() {
        e.cmd(&["prune", "--max-unused", "0"]).assert().success();
        prunes += 1;
    }
    assert!(backup.wait().unwrap().success());
    assert!(prunes > 0);
    e.cmd(&["prune", "--max-unused", "0"]).assert().success();
    e.cmd(&["check", "--read-data"]).assert().success();
    let out = e.path("out");
    e.cmd(&["restore", "latest", out.to_str().unwrap()])
        .assert()
        .success();
    assert_same_tree(&src, &out.join("src"));
}

#[test]
fn exit_codes_for_common_mistakes() {
    let e = Env::new();
    // No repository: exit 10, and the message says how to create one.
    let o = e.cmd(&["snapshots"]).output().unwrap();
    assert_eq!(o.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&o.stderr).contains("holdfast init"));
    // An inline limit past its bound is refused, and creates nothing.
    let o = e.cmd(&["init", "--inline-max", "16385"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("inline limit 16385"));
    let o = e.cmd(&["snapshots"]).output().unwrap();
    assert_eq!(o.status.code(), Some(10));
    e.init();
    // Init twice is refused and leaves the repository usable.
    assert!(!e.cmd(&["init"]).output().unwrap().status.success());
    // Wrong password: exit 12.
    let o = e
        .cmd(&["snapshots"])
        .env("HOLDFAST_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(12));
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong password"));
    // A backup path that does not exist.
    let o = e
        .cmd(&["backup", "/nonexistent/holdfast-test"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/holdfast-test"));
    e.cmd(&["check"]).assert().success();
}

#[test]
fn growing_and_rotated_logs_are_cheap_to_back_up_again() {
    let e = Env::new();
    let logs = e.path("logs");
    fs::create_dir_all(&logs).unwrap();
    // A 30 MB log of varied lines (chunk boundaries depend on the repository's random seed, so
    // the file is large enough that the changed tail is always a small part of it).
    let line = |i: u64| {
        format!(
            "2026-01-01T00:00:{:02}Z host app[{}]: request {} took {} ms\n",
            i % 60,
            i % 977,
            i * 7919 % 1_000_003,
            i % 113
        )
    };
    let mut text = String::new();
    let mut i = 0u64;
    while text.len() < 30_000_000 {
        text.push_str(&line(i));
        i += 1;
    }
    fs::write(logs.join("app.log"), &text).unwrap();
    e.init();
    let s = logs.to_str().unwrap();
    let first = e.json(&["backup", s], 0);
    let full = first["summary"]["bytes_added"].as_u64().unwrap();
    // It grows by 100 KB: only the tail is new.
    let mut more = String::new();
    while more.len() < 100_000 {
        more.push_str(&line(i));
        i += 1;
    }
    use std::io::Write;
    fs::OpenOptions::new()
        .append(true)
        .open(logs.join("app.log"))
        .unwrap()
        .write_all(more.as_bytes())
        .unwrap();
    let grown = e.json(&["backup", s], 0);
    let added = grown["summary"]["bytes_added"].as_u64().unwrap();
    assert!(
        added * 4 < full,
        "appending 100 KB to a 30 MB log stored {added} bytes (first backup {full})"
    );
    // Rotation: the log is renamed and a new one started; the renamed file adds no data.
    fs::rename(logs.join("app.log"), logs.join("app.log.1")).unwrap();
    fs::write(logs.join("app.log"), b"fresh\n").unwrap();
    let rotated = e.json(&["backup", s], 0);
    // app.log.1 is new (its content known), app.log changed (a new inode with new content).
    assert_eq!(rotated["summary"]["files_new"], 1);
    assert_eq!(rotated["summary"]["files_changed"], 1);
    assert!(
        rotated["summary"]["blobs_added"].as_u64().unwrap() <= 3,
        "{rotated}"
    );
    // Compressed rotation: stored once, then unchanged.
    let gz = std::process::Command::new("gzip")
        .arg("-k")
        .arg(logs.join("app.log.1"))
        .status()
        .unwrap();
    assert!(gz.success());
    e.json(&["backup", s], 0);
    let again = e.json(&["backup", s], 0);
    assert_eq!(again["summary"]["bytes_read"], 0);
    assert_eq!(again["summary"]["blobs_added"], 0);
}

#[test]
fn copy_to_another_repository_with_other_keys() {
    let e = Env::new();
    let src = e.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), bytes(1, 2_000_000)).unwrap();
    fs::write(src.join("b"), b"small").unwrap();
    e.init();
    e.json(&["backup", src.to_str().unwrap()], 0);
    let other = e.path("offsite");
    let mut c = assert_cmd::Command::cargo_bin("holdfast").unwrap();
    c.env("HOLDFAST_PASSWORD", "offsite password")
        .env("HOLDFAST_INSECURE_TEST_KDF", "1")
        .arg("--repo")
        .arg(&other)
        .arg("init")
        .assert()
        .success();
    let copy = |expect_copied: usize| {
        let mut c = assert_cmd::Command::cargo_bin("holdfast").unwrap();
        let o = c
            .env("HOLDFAST_FROM_PASSWORD", support::PASSWORD)
            .env("HOLDFAST_TO_PASSWORD", "offsite password")
            .env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .args([
                "--json",
                "copy",
                "--from",
                e.repo().to_str().unwrap(),
                "--to",
                other.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["copied"].as_array().unwrap().len(), expect_copied, "{v}");
        v
    };
    let first = copy(1);
    assert!(first["bytes_added"].as_u64().unwrap() > 1_000_000);
    // Nothing to do the second time; after a small change only the new data travels.
    let again = copy(0);
    assert_eq!(again["already_present"], 1);
    fs::write(src.join("b"), b"changed").unwrap();
    e.json(&["backup", src.to_str().unwrap()], 0);
    let second = copy(1);
    assert!(second["bytes_added"].as_u64().unwrap() < 10_000, "{second}");
    // The copy restores equal to the source, with the other repository's password.
    let out = e.path("out");
    let mut c = assert_cmd::Command::cargo_bin("holdfast").unwrap();
    c.env("HOLDFAST_PASSWORD", "offsite password")
        .arg("--repo")
        .arg(&other)
        .args(["restore", "latest", out.to_str().unwrap()])
        .assert()
        .success();
    assert_same_tree(&src, &out.join("src"));
    let mut c = assert_cmd::Command::cargo_bin("holdfast").unwrap();
    c.env("HOLDFAST_PASSWORD", "offsite password")
        .arg("--repo")
        .arg(&other)
        .args(["check", "--read-data"])
        .assert()
        .success();
}

#[test]
fn retention_lock_keeps_young_snapshots_and_compliance_cannot_be_lowered() {
    let e = Env::new();
    let src = e.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    e.init();
    for day in 1..=3 {
        let t = format!("2026-01-0{day}T00:00:00Z");
        e.cmd(&["backup", src.to_str().unwrap()])
            .env("HOLDFAST_NOW", &t)
            .assert()
            .success();
    }
    e.cmd(&["retention-lock", "--min-age", "36h", "--compliance"])
        .assert()
        .success();
    // At 2026-01-04 00:00 the lock protects the snapshots of the 3rd (and not older ones).
    let out = e
        .cmd(&["--json", "forget", "--keep-last", "1"])
        .env("HOLDFAST_NOW", "2026-01-04T00:00:00Z")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reasons: Vec<String> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reasons"].to_string())
        .collect();
    assert_eq!(
        e.json(&["snapshots"], 0).as_array().unwrap().len(),
        1,
        "{reasons:?}"
    );
    // With the lock far longer, nothing young can be forgotten.
    e.cmd(&["retention-lock", "--min-age", "3650d", "--compliance"])
        .assert()
        .success();
    e.cmd(&["backup", src.to_str().unwrap()]).assert().success();
    e.cmd(&["forget", "--keep-last", "1"]).assert().success();
    assert_eq!(e.json(&["snapshots"], 0).as_array().unwrap().len(), 2);
    // Compliance mode cannot be lowered.
    let o = e
        .cmd(&["retention-lock", "--min-age", "1d"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot be lowered"));
    let l = e.json(&["retention-lock"], 0);
    assert_eq!(l["min_age_seconds"], 3650 * 86_400);
    assert_eq!(l["compliance"], true);
}
