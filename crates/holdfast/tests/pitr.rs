//! Point-in-time recovery, what every kind shares: `restore --at` and `holdfast replicate`
//! refuse what they cannot do, with an error that names the cause and the fix, and never
//! exit 0 for a source that has no continuous protection.

mod support;
use support::workload::W;

const FILES: &str = r#"
[[source]]
name = "files"
kind = "path"
path = "data"
class = "critical"
strategy = "backup"
"#;

fn workload() -> W {
    let w = W::new(FILES);
    std::fs::create_dir_all(w.path("data")).unwrap();
    std::fs::write(w.path("data/a"), b"a").unwrap();
    // Exit 4: backed up, but never drilled (the RTO is not measured).
    w.run(&mut w.cmd(&["protect"]), 4);
    w
}

#[test]
fn restore_at_a_time_needs_continuous_protection() {
    let w = workload();
    let (_, err) = w.run(
        &mut w.cmd(&[
            "restore", "--source", "files", "--at", "latest", "--target", "out",
        ]),
        1,
    );
    assert!(err.contains("--at needs continuous protection"), "{err}");
    assert!(!w.path("out").exists(), "nothing was restored");
    let (_, err) = w.run(
        &mut w.cmd(&[
            "restore",
            "--source",
            "files",
            "--lsn",
            "0/3000000",
            "--target",
            "out",
        ]),
        1,
    );
    assert!(err.contains("--at needs continuous protection"), "{err}");
}

#[test]
fn a_time_that_is_no_time_is_refused_with_the_formats() {
    let w = workload();
    let (_, err) = w.run(
        &mut w.cmd(&[
            "restore",
            "--source",
            "files",
            "--at",
            "yesterday",
            "--target",
            "out",
        ]),
        1,
    );
    assert!(err.contains("is no time"), "{err}");
    assert!(
        err.contains("2m ago"),
        "the error shows a form that works: {err}"
    );
    // --at and a snapshot id are two different recovery points: refused by the parser.
    let o = w
        .cmd(&["restore", "latest", "--source", "files", "--at", "latest"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn replicate_refuses_a_workload_without_a_log_to_ship() {
    let w = workload();
    let (_, err) = w.run(&mut w.cmd(&["replicate", "--rounds", "1"]), 1);
    assert!(
        err.contains("no source of the workload ships a log"),
        "{err}"
    );
    let (_, err) = w.run(
        &mut w.cmd(&["replicate", "--source", "files", "--rounds", "1"]),
        1,
    );
    assert!(err.contains("it ships no log"), "{err}");
    // An unknown name is a usage error, as for every other --source.
    let (_, err) = w.run(
        &mut w.cmd(&["replicate", "--source", "nosuch", "--rounds", "1"]),
        2,
    );
    assert!(err.contains("nosuch"), "{err}");
}

/// The archiver's `wal-push` and `protect` may both create the repository at once: the one
/// that finds the other's creation under way waits for its config and opens it, instead of
/// failing on a directory "not empty and holding no repository".
#[test]
fn a_repository_another_process_is_creating_is_waited_for_and_opened() {
    let w = W::new(FILES);
    std::fs::create_dir_all(w.path("data")).unwrap();
    std::fs::write(w.path("data/a"), b"a").unwrap();
    // A complete repository made elsewhere with the workload's password...
    let made = w.path("made");
    let mut c = w.cmd(&["--repo", made.to_str().unwrap(), "init"]);
    c.env("HOLDFAST_PASSWORD", "pw");
    w.run(&mut c, 0);
    // ...copied into place without its config: another creator, half done.
    let repo = w.path("repo");
    let o = std::process::Command::new("cp")
        .arg("-a")
        .arg(&made)
        .arg(&repo)
        .output()
        .unwrap();
    assert!(o.status.success());
    std::fs::remove_file(repo.join("config")).unwrap();
    let finish = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        std::fs::copy(made.join("config"), repo.join("config")).unwrap();
    });
    let o = w.cmd(&["--json", "protect"]).output().unwrap();
    finish.join().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("\"completed\""),
        "protect backed up into the repository the other process made: {out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A continuous source's log batches travel with its base backups to the class's copy
/// repository, and status judges the copy by its newest batch.
#[test]
fn log_batches_are_copied_with_the_base_backups() {
    let w = W::new(
        r#"
[repository.offsite]
url = "offsite"
password-env = "TEST_REPO_PW"

[class.copied]
rpo = "15m"
rto = "10m"
keep = { last = 5 }
copies = ["offsite"]

[[source]]
name = "db"
kind = "sqlite"
path = "app.db"
class = "copied"
strategy = "backup"
repository = "local"
mode = "continuous"
"#,
    );
    let c = rusqlite::Connection::open(w.path("app.db")).unwrap();
    c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    w.run(&mut w.cmd(&["replicate", "--rounds", "2"]), 0);
    c.execute_batch("INSERT INTO t VALUES (2);").unwrap();
    w.run(&mut w.cmd(&["replicate", "--rounds", "2"]), 0);
    // protect: the base backup is not due, but the copy is behind: it copies.
    let v = w.json_any(&["protect"]);
    assert!(v.to_string().contains("copied and verified"), "{v}");
    let offsite = w.json(
        &["--repo", w.path("offsite").to_str().unwrap(), "snapshots"],
        0,
    );
    let batches = offsite
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["log"]["source"] == "db")
        .count();
    assert!(batches >= 2, "the log batches are in the copy: {offsite}");
    let status = w.json_any(&["status", "--no-discover"]);
    let s = support::workload::source(&status, "db");
    assert_eq!(s["status"]["copies"], "met", "{s}");
}
