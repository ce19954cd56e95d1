//! Continuous PostgreSQL protection, the archive side: a real PostgreSQL server whose
//! `archive_command` is the built `holdfast wal-push`, against a real repository. Needs the
//! PostgreSQL server programs (scripts/test.sh installs them): the tests fail without them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use holdfast_policy::sources::pg_wal::{self, WalSettings};
use serde_json::Value;

mod support;
use support::pgarch::{root, ArchivedPg, SOURCE};

/// A scratch server archiving into a repository through `holdfast wal-push`.
struct Arch(ArchivedPg);

impl std::ops::Deref for Arch {
    type Target = ArchivedPg;
    fn deref(&self) -> &ArchivedPg {
        &self.0
    }
}

impl Arch {
    fn new(queue_max: &str) -> Arch {
        let a = Arch(ArchivedPg::new(
            "archive-test-password",
            &format!("\n[source.log]\nqueue-max = \"{queue_max}\"\n"),
        ));
        a.archive(&[]);
        a
    }

    fn wal_state(&self) -> PathBuf {
        self.state().join("wal").join(SOURCE)
    }

    fn pg_wal(&self) -> PathBuf {
        self.server.data_dir().join("pg_wal")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.holdfast(args).output().unwrap()
    }

    /// Write a little and switch to a new segment, `n` times.
    fn switch(&self, n: usize) {
        self.psql("CREATE TABLE IF NOT EXISTS t (i int, at timestamptz default now())");
        for i in 0..n {
            self.psql(&format!(
                "INSERT INTO t (i) VALUES ({i}); SELECT pg_switch_wal()"
            ));
        }
    }

    /// The source's log batches as JSON (through the CLI).
    fn batch_json(&self) -> Vec<Value> {
        let o = self.on_repo(&["--json", "snapshots"]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|s| s["log"]["source"] == SOURCE && s["log"]["kind"] == "pg-wal")
            .cloned()
            .collect()
    }

    /// The source's log batches: id → (piece name → BLAKE3).
    fn batches(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.batch_json()
            .iter()
            .map(|s| {
                let pieces = s["log"]["pieces"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| {
                        (
                            p["name"].as_str().unwrap().to_string(),
                            p["blake3"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect();
                (s["id"].as_str().unwrap().to_string(), pieces)
            })
            .collect()
    }

    fn archived(&self) -> BTreeMap<String, String> {
        self.batches().into_values().flatten().collect()
    }

    fn health(&self, queue_max: u64) -> pg_wal::ArchiveHealth {
        let s = WalSettings {
            queue_max,
            ..Default::default()
        };
        pg_wal::archive_health(&self.state(), SOURCE, &s)
    }
}

fn b3(p: &Path) -> String {
    blake3::hash(&fs::read(p).unwrap()).to_hex().to_string()
}

/// Segment number on timeline 1 (16 MiB segments: 256 per log file).
fn segno(name: &str) -> u64 {
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    log * 256 + seg
}

fn assert_no_gap(archived: &BTreeMap<String, String>) {
    let segs: Vec<u64> = archived
        .keys()
        .filter(|n| pg_wal::classify(n) == Some(pg_wal::WalFileKind::Segment))
        .map(|n| segno(n))
        .collect();
    assert!(!segs.is_empty());
    for w in segs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "a gap in the archive: {segs:?}");
    }
}

#[test]
fn every_archived_file_is_in_the_repository_with_the_base_backup_and_its_label() {
    let a = Arch::new("1GiB");
    // A base backup (the repository is created by it) while the server archives.
    let o = a.run(&["--json", "protect", "--source", SOURCE]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("\"completed\""),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    a.switch(4);
    a.psql("SELECT pg_switch_wal()");
    a.wait_archived(Duration::from_secs(30));
    let archived = a.archived();
    // Everything PostgreSQL counts as archived is in the repository, with its bytes.
    let done = a.marked(".done");
    assert!(done.len() >= 5, "{done:?}");
    for n in &done {
        let got = archived
            .get(n)
            .unwrap_or_else(|| panic!("{n} was acknowledged but is not in the repository"));
        let p = a.pg_wal().join(n);
        if p.exists() {
            assert_eq!(got, &b3(&p), "{n}");
        }
    }
    let stat = a.psql("SELECT archived_count, failed_count FROM pg_stat_archiver");
    let (count, failed) = stat.split_once('|').unwrap();
    assert_eq!(failed, "0", "{stat}");
    assert!(count.parse::<usize>().unwrap() >= done.len());
    assert_eq!(
        count.parse::<usize>().unwrap(),
        archived.len(),
        "{archived:?}"
    );
    // The backup history file names the base backup by the agreed label.
    let backup = archived
        .keys()
        .find(|n| pg_wal::classify(n) == Some(pg_wal::WalFileKind::Backup))
        .expect("the base backup's history file is archived")
        .clone();
    let text = fs::read_to_string(a.pg_wal().join(&backup)).unwrap();
    let label = text.lines().find(|l| l.starts_with("LABEL: ")).unwrap();
    assert!(
        label.starts_with(&format!("LABEL: holdfast {SOURCE} 20")),
        "{text}"
    );
    assert!(label.ends_with('Z') && label.contains('.'), "{label}");
    assert_no_gap(&archived);
    // Segments say when they end, never after now, and which cluster they come from.
    let sysid = a.psql("SELECT system_identifier FROM pg_control_system()");
    let now = chrono::Utc::now();
    for b in a.batch_json() {
        for p in b["log"]["pieces"].as_array().unwrap() {
            assert_eq!(p["meta"]["system_identifier"], sysid.as_str(), "{p}");
            if pg_wal::classify(p["name"].as_str().unwrap()) == Some(pg_wal::WalFileKind::Segment) {
                assert_eq!(p["meta"]["segment_size"], "16777216", "{p}");
                let t: chrono::DateTime<chrono::Utc> =
                    p["last_time"].as_str().unwrap().parse().unwrap();
                assert!(t <= now, "{p}");
            }
        }
    }
    let h = a.health(1 << 30);
    assert!(
        !h.failing() && !h.over_limit && h.waiting_files == 0,
        "{h:?}"
    );
}

#[test]
fn pushing_again_succeeds_for_the_same_bytes_and_fails_loudly_for_others() {
    let a = Arch::new("1GiB");
    a.switch(2);
    a.wait_archived(Duration::from_secs(30));
    let archived = a.archived();
    let name = archived.keys().next().unwrap().clone();
    let copy_dir = a.dir.join("copy");
    fs::create_dir(&copy_dir).unwrap();
    let copy = copy_dir.join(&name);
    fs::copy(a.pg_wal().join(&name), &copy).unwrap();
    if root() {
        Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(&copy_dir)
            .status()
            .unwrap();
    }
    let batches = a.batches().len();
    // Recorded locally: answered at once.
    let o = a.run(&[
        "--json",
        "wal-push",
        "--source",
        SOURCE,
        copy.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["already"].clone(), v["opened_repository"].clone()),
        (true.into(), false.into()),
        "{v}"
    );
    // Without the local record: the repository answers, nothing is stored.
    fs::remove_file(a.wal_state().join(format!("{name}.ok"))).unwrap();
    let o = a.run(&[
        "--json",
        "wal-push",
        "--source",
        SOURCE,
        copy.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["already"].clone(), v["opened_repository"].clone()),
        (true.into(), true.into()),
        "{v}"
    );
    assert_eq!(a.batches().len(), batches, "nothing new was stored");
    // Other bytes under the same name: refused, naming both hashes, whether recorded or not.
    let mut bytes = fs::read(&copy).unwrap();
    bytes[100] ^= 0xff;
    fs::write(&copy, &bytes).unwrap();
    let here = blake3::hash(&bytes).to_hex().to_string();
    for forget_record in [false, true] {
        if forget_record {
            let _ = fs::remove_file(a.wal_state().join(format!("{name}.ok")));
        }
        let o = a.run(&["wal-push", "--source", SOURCE, copy.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{err}");
        assert!(
            err.contains(&here) && err.contains(&archived[&name]),
            "{err}"
        );
        assert!(err.contains("already archived with other bytes"), "{err}");
    }
    assert_eq!(a.batches().len(), batches);
    assert_eq!(
        a.archived()[&name],
        archived[&name],
        "the archived copy is untouched"
    );
    // Not a WAL file: refused.
    let o = a.run(&[
        "wal-push",
        "--source",
        SOURCE,
        a.dir.join("pw").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a WAL file name"));
}

#[test]
fn ready_segments_go_in_one_batch_and_later_calls_return_without_a_new_one() {
    let a = Arch::new("1GiB");
    a.switch(1);
    a.wait_archived(Duration::from_secs(30));
    // Hold archiving back while the server writes several segments.
    a.set_archive_command("false");
    a.switch(6);
    std::thread::sleep(Duration::from_millis(500));
    let waiting = a.marked(".ready");
    assert!(waiting.len() >= 6, "{waiting:?}");
    let before: BTreeSet<String> = a.batches().into_keys().collect();
    let t = Instant::now();
    a.set_archive_command(&a.archive_command());
    a.wait_archived(Duration::from_secs(60));
    let took = t.elapsed();
    let batches = a.batches();
    let new: Vec<_> = batches
        .iter()
        .filter(|(id, _)| !before.contains(*id))
        .map(|(_, b)| b)
        .collect();
    let big = new.iter().map(|b| b.len()).max().unwrap();
    assert!(
        big >= waiting.len(),
        "the ready segments share one batch: {new:?}"
    );
    assert!(
        new.len() < waiting.len(),
        "{} batches for {} files",
        new.len(),
        waiting.len()
    );
    for n in &waiting {
        assert!(a.archived().contains_key(n), "{n}");
    }
    eprintln!(
        "catch-up: {} files in {} batches, {:.2}s ({:.1} files/s)",
        waiting.len(),
        new.len(),
        took.as_secs_f64(),
        waiting.len() as f64 / took.as_secs_f64()
    );
    assert_no_gap(&a.archived());
}

#[test]
fn a_store_outage_acknowledges_nothing_shows_at_once_and_catches_up_without_a_gap() {
    let a = Arch::new("32MiB");
    a.switch(1);
    a.wait_archived(Duration::from_secs(30));
    let repo = a.dir.join("repo");
    let set_mode = |mode: u32| {
        for e in walk(&repo) {
            let m = if e.is_dir() {
                mode | 0o100
            } else {
                mode & 0o444
            };
            fs::set_permissions(&e, fs::Permissions::from_mode(m)).unwrap();
        }
    };
    let archived_before = a.archived();
    set_mode(0o555); // the archiver (postgres) can no longer write
    a.switch(3);
    // PostgreSQL retries; each push fails.
    // PostgreSQL retries (every second, three times, and at each new segment); each push
    // fails and records what waits.
    let t = Instant::now();
    while a.health(32 << 20).waiting_files < 3 {
        assert!(
            t.elapsed() < Duration::from_secs(70),
            "{:?}",
            a.health(32 << 20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_ne!(a.psql("SELECT failed_count FROM pg_stat_archiver"), "0");
    let h = a.health(32 << 20);
    assert!(h.failing(), "{h:?}");
    assert!(
        h.last_error.as_deref().unwrap_or("").contains("repository"),
        "{h:?}"
    );
    assert!(h.waiting_files >= 3 && h.waiting_bytes >= 3 << 24, "{h:?}");
    assert!(
        h.over_limit,
        "48 MiB waiting over a 32 MiB queue-max: {h:?}"
    );
    let failing = fs::read_to_string(a.wal_state().join("failing.json")).unwrap();
    assert!(failing.contains("since"), "{failing}");
    // Nothing was acknowledged that is not stored: every .done file was archived before.
    let done = a.marked(".done");
    for n in &done {
        assert!(
            archived_before.contains_key(n),
            "{n} acknowledged during the outage"
        );
    }
    assert!(a.marked(".ready").len() >= 3);
    // status says so at once, as an RPO failure, with the cause and what waits.
    let o = a.run(&["--json", "status", "--no-discover"]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let st = &v["sources"][0]["status"];
    assert_eq!(st["rpo"], "breached", "{st}");
    let problems = st["problems"].to_string();
    assert!(
        problems.contains("shipping the change log has failed"),
        "{problems}"
    );
    assert!(problems.contains("more than queue-max"), "{problems}");
    // The outage ends: the archive catches up, whole.
    set_mode(0o755);
    a.wait_archived(Duration::from_secs(90));
    let h = a.health(32 << 20);
    assert!(!h.failing() && !h.over_limit, "{h:?}");
    assert!(!a.wal_state().join("failing.json").exists());
    let after = a.archived();
    for n in a.marked(".done") {
        assert!(after.contains_key(&n), "{n}");
    }
    assert_no_gap(&after);
    let check = |config: &str| a.on_repo(&["--config", config, "check"]).output().unwrap();
    // Every object checks clean...
    let o = check("/nonexistent/holdfast.toml");
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // ...but with the workload, check also proves the chain: WAL with no base backup to
    // replay it onto restores nothing, and says so.
    let o = check(a.dir.join("holdfast.toml").to_str().unwrap());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("no base backup"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = vec![p.to_path_buf()];
    if p.is_dir() {
        for e in fs::read_dir(p).unwrap().flatten() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

#[test]
fn wal_fetch_delivers_prefetches_and_tells_missing_from_failing() {
    let a = Arch::new("1GiB");
    a.switch(5);
    a.wait_archived(Duration::from_secs(30));
    let archived = a.archived();
    let segs: Vec<String> = archived
        .keys()
        .filter(|n| pg_wal::classify(n) == Some(pg_wal::WalFileKind::Segment))
        .cloned()
        .collect();
    assert!(segs.len() >= 5, "{segs:?}");
    let out = a.dir.join("restore");
    fs::create_dir(&out).unwrap();
    if root() {
        Command::new("chown")
            .arg("postgres:")
            .arg(&out)
            .status()
            .unwrap();
    }
    let fetch = |name: &str| {
        let dest = out.join("RECOVERYXLOG");
        let _ = fs::remove_file(&dest);
        let o = a.run(&[
            "--json",
            "wal-fetch",
            "--source",
            SOURCE,
            name,
            dest.to_str().unwrap(),
        ]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        (
            o.status.code(),
            v,
            dest,
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // From the repository, with the next pieces fetched ahead.
    let (code, v, dest, err) = fetch(&segs[0]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(b3(&dest), archived[&segs[0]]);
    assert_eq!(v["from_spool"], false, "{v}");
    assert!(v["prefetched"].as_u64().unwrap() >= 3, "{v}");
    // The next one needs no repository: it comes from the spool, with the right bytes.
    let (code, v, dest, err) = fetch(&segs[1]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(v["from_spool"], true, "{v}");
    assert_eq!(b3(&dest), archived[&segs[1]]);
    // A damaged spooled piece is never handed over: it is fetched again from the repository.
    let spooled = a.wal_state().join("fetch").join(&segs[2]);
    assert!(spooled.exists());
    fs::write(&spooled, b"not a segment").unwrap();
    let (code, v, dest, err) = fetch(&segs[2]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(v["from_spool"], false, "{v}");
    assert_eq!(b3(&dest), archived[&segs[2]]);
    // Not archived: exit 1 (the end of recovery), %p untouched.
    for missing in ["0000000100000000000000FE", "00000009.history"] {
        let (code, _, dest, err) = fetch(missing);
        assert_eq!(code, Some(1), "{missing}: {err}");
        assert!(!dest.exists());
    }
    // The repository cannot be read: exit 126, so PostgreSQL aborts recovery rather than
    // ending it early.
    let snaps = a.dir.join("repo/snapshots");
    fs::set_permissions(&snaps, fs::Permissions::from_mode(0o000)).unwrap();
    let (code, _, dest, err) = fetch(&segs[0]);
    fs::set_permissions(&snaps, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(code, Some(126), "{err}");
    assert!(
        err.contains("wal-fetch") && err.contains("repository"),
        "{err}"
    );
    assert!(!dest.exists());
}

/// `plan` asks a continuous source's server whether it archives into holdfast: before
/// archive_mode and archive_command are set, the source cannot be protected as declared.
#[test]
fn plan_names_a_server_that_does_not_archive_into_holdfast() {
    let pg = ArchivedPg::new("plan-test-password", "");
    let plan = |code: i32| {
        let o = pg
            .holdfast(&["--json", "plan", "--no-discover"])
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(code),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let out = plan(4);
    assert!(out.contains("source-cannot-be-backed-up"), "{out}");
    assert!(out.contains("archive_mode = off"), "{out}");
    assert!(
        out.contains("not archived into holdfast for source pg"),
        "{out}"
    );
    pg.archive(&[]);
    let out = plan(0);
    assert!(!out.contains("archive_mode"), "{out}");
    assert!(!out.contains("not archived into holdfast"), "{out}");
}
