//! Continuous PostgreSQL protection, the restore side: a real PostgreSQL server archiving
//! through the built `holdfast wal-push` (archive_timeout = 1 s) under a writer inserting a
//! row every 100 ms, restored with `holdfast restore --at TIME|latest --start` (which starts
//! the restored server with restore_command = holdfast wal-fetch). Needs the PostgreSQL server
//! programs (scripts/test.sh installs them): the tests fail without them.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use holdfast_policy::sources::pg_scratch;
use serde_json::Value;

mod support;
use support::pgarch::{as_pg, root, ArchivedPg, SOURCE};

fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A scratch server archiving into a repository, with a workload naming it.
struct Pg(ArchivedPg);

impl std::ops::Deref for Pg {
    type Target = ArchivedPg;
    fn deref(&self) -> &ArchivedPg {
        &self.0
    }
}

/// A restored server started by `holdfast restore --start`.
struct Restored {
    data: PathBuf,
    port: u16,
    json: Value,
}

impl Drop for Restored {
    fn drop(&mut self) {
        let bin = pg_scratch::bindir().unwrap();
        let _ = as_pg(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

impl Restored {
    fn psql(&self, q: &str) -> String {
        let o = Command::new("psql")
            .args(["-X", "-At", "-h"])
            .arg(&self.data)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                q,
            ])
            .output()
            .unwrap();
        ok(&o, q)
    }
    fn rows(&self) -> Vec<i64> {
        lines_to_ints(&self.psql("SELECT n FROM ticks ORDER BY n"))
    }
    fn reached(&self) -> Option<DateTime<Utc>> {
        self.json["reached"]
            .as_str()
            .map(|s| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
    }
}

fn lines_to_ints(s: &str) -> Vec<i64> {
    s.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().unwrap())
        .collect()
}

impl Pg {
    fn new() -> Pg {
        let pg = Pg(ArchivedPg::new(
            "restore-test-password",
            "verify = \"SELECT count(*) > 0 FROM ticks\"\n",
        ));
        // The repository first: archiving starts as soon as the server restarts.
        let o = pg.on_repo(&["init"]).output().unwrap();
        ok(&o, "init");
        pg.archive(&["archive_timeout = '1s'", "track_commit_timestamp = on"]);
        pg.psql("CREATE TABLE ticks (n bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())");
        pg
    }

    /// Insert row `n` and commit it, then switch WAL segments and wait until everything is
    /// archived. Two psql calls: in one `-c "INSERT ...; SELECT pg_switch_wal()"` both run in
    /// one implicit transaction, so the commit record would land after the switch, in the
    /// segment still open, and reach the archive only when `archive_timeout` closes it.
    fn commit_and_switch(&self, n: i32) {
        self.psql(&format!("INSERT INTO ticks (n) VALUES ({n})"));
        self.psql("SELECT pg_switch_wal()");
        self.wait_archived();
    }

    /// Wait until PostgreSQL has nothing left to archive.
    fn wait_archived(&self) {
        self.0.wait_archived(Duration::from_secs(30));
    }

    /// A base backup through `protect`.
    fn base(&self) {
        let o = self
            .holdfast(&["--json", "protect", "--source", SOURCE])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("\"completed\""),
            "{out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// `restore --at AT --target DIR --start` (exit 0 expected), the server left running;
    /// `archive`: whether it archives into the source's log (it becomes the source's server).
    fn restore(&self, at: &str, dir: &str, archive: bool) -> Restored {
        self.restore_on(None, at, dir, archive)
    }

    /// [`Pg::restore`], run as host `on` (another host than the archiver's), restoring the
    /// archiver's points (`--host pg-host`).
    fn restore_on(&self, on: Option<&str>, at: &str, dir: &str, archive: bool) -> Restored {
        let data = self.dir.join(dir);
        let mut args = vec![
            "--json",
            "restore",
            "--source",
            SOURCE,
            "--at",
            at,
            "--target",
            data.to_str().unwrap(),
            "--start",
        ];
        if !archive {
            args.push("--no-archive");
        }
        let mut c = self.holdfast(&args);
        if let Some(h) = on {
            c.env("HOLDFAST_HOSTNAME", h).args(["--host", "pg-host"]);
        }
        let o = c.output().unwrap();
        let out = ok(&o, &format!("restore --at {at}"));
        let json: Value = serde_json::from_str(&out).unwrap();
        let done = json["done"].to_string();
        let port: u16 = done
            .split("runs on port ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {done}"));
        Restored { data, port, json }
    }

    /// The source's window as `status` reports it.
    fn window(&self) -> Value {
        let o = self.holdfast(&["--json", "status"]).output().unwrap();
        let v: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stderr)));
        find_key(&v, "window").unwrap_or_else(|| panic!("no window in {v}"))
    }

    /// The source's log batches: snapshot id → piece names.
    fn batches(&self) -> BTreeMap<String, Vec<String>> {
        let o = self.on_repo(&["--json", "snapshots"]).output().unwrap();
        let v: Value = serde_json::from_str(&ok(&o, "snapshots")).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|s| s["log"]["source"] == SOURCE)
            .map(|s| {
                let names = s["log"]["pieces"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["name"].as_str().unwrap().to_string())
                    .collect();
                (s["id"].as_str().unwrap().to_string(), names)
            })
            .collect()
    }

    /// The rows whose transaction committed at or before `t`, by the source's own clock.
    fn committed_by(&self, t: DateTime<Utc>) -> Vec<i64> {
        lines_to_ints(&self.psql(&format!(
            "SELECT n FROM ticks WHERE pg_xact_commit_timestamp(xmin) <= '{}' ORDER BY n",
            t.to_rfc3339()
        )))
    }
}

fn find_key(v: &Value, k: &str) -> Option<Value> {
    match v {
        Value::Object(m) => m
            .get(k)
            .filter(|x| x.is_object())
            .cloned()
            .or_else(|| m.values().find_map(|x| find_key(x, k))),
        Value::Array(a) => a.iter().find_map(|x| find_key(x, k)),
        _ => None,
    }
}

/// Inserts row n = 1, 2, ... every 100 ms, each its own transaction; remembers the rows that
/// committed (psql returned success) with the time the insert returned.
type Committed = Arc<Mutex<Vec<(i64, DateTime<Utc>)>>>;

struct Writer {
    stop: Arc<AtomicBool>,
    done: Committed,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(pg: &Pg, from: i64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(Mutex::new(Vec::new()));
        let conn = pg.server.conn();
        let (s2, d2) = (stop.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let mut n = from;
            while !s2.load(Ordering::Relaxed) {
                let o = Command::new("psql")
                    .env("PGHOST", conn.host.as_deref().unwrap())
                    .env("PGPORT", conn.port.unwrap().to_string())
                    .env("PGUSER", "postgres")
                    .args(["-X", "-At", "-d", "postgres", "-c"])
                    .arg(format!("INSERT INTO ticks (n) VALUES ({n})"))
                    .output();
                if o.is_ok_and(|o| o.status.success()) {
                    d2.lock().unwrap().push((n, Utc::now()));
                    n += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Writer {
            stop,
            done,
            thread: Some(thread),
        }
    }
    /// How many rows were committed so far.
    fn written(&self) -> usize {
        self.done.lock().unwrap().len()
    }
    fn stop(&mut self) -> Vec<(i64, DateTime<Utc>)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.done.lock().unwrap().clone()
    }
}

/// A little pgbench beside the writer (more WAL, other transactions).
fn pgbench(pg: &Pg, seconds: u32) -> std::process::Child {
    let conn = pg.server.conn();
    let env = |c: &mut Command| {
        c.env("PGHOST", conn.host.as_deref().unwrap())
            .env("PGPORT", conn.port.unwrap().to_string())
            .env("PGUSER", "postgres");
    };
    let mut init = Command::new("pgbench");
    env(&mut init);
    ok(
        &init
            .args(["-i", "-s", "1", "-q", "postgres"])
            .output()
            .unwrap(),
        "pgbench -i",
    );
    let mut run = Command::new("pgbench");
    env(&mut run);
    run.args([
        "-n",
        "-c",
        "2",
        "-R",
        "50",
        "-T",
        &seconds.to_string(),
        "postgres",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap()
}

#[test]
fn restore_at_a_time_returns_exactly_the_rows_committed_by_then() {
    let pg = Pg::new();
    let mut bench = pgbench(&pg, 6);
    pg.base();
    let mut w = Writer::start(&pg, 1);
    let start = Utc::now();
    std::thread::sleep(Duration::from_secs(6));
    // A loaded machine spawns psql slowly: write for longer rather than fewer rows.
    while w.written() < 40 && Utc::now() - start < chrono::Duration::seconds(60) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let rows = w.stop();
    let end = Utc::now();
    let _ = bench.wait();
    pg.psql("SELECT pg_switch_wal()");
    pg.wait_archived();
    assert!(rows.len() >= 40, "the writer wrote {} rows", rows.len());
    let window = pg.window();
    assert!(window["gaps"].as_array().unwrap().is_empty(), "{window}");
    // Targets at fixed fractions of the writing time; a restore reaches the last commit at
    // or before its target, at most one gap between the writer's commits (plus a second)
    // before it.
    let at = |f: f64| {
        start + chrono::Duration::milliseconds(((end - start).num_milliseconds() as f64 * f) as i64)
    };
    let gap =
        rows.windows(2).map(|p| p[1].1 - p[0].1).max().unwrap() + chrono::Duration::seconds(1);
    for (i, t) in [at(0.25), at(0.54), at(0.85)].into_iter().enumerate() {
        let want = pg.committed_by(t);
        assert!(!want.is_empty() && want.len() < rows.len(), "{t}: {want:?}");
        let clock = Instant::now();
        let r = pg.restore(&t.to_rfc3339(), &format!("at{i}"), false);
        let took = clock.elapsed();
        assert_eq!(r.rows(), want, "restore --at {t}");
        // The instant reached is the last commit replayed: at or before the target.
        let reached = r.reached().expect("a transaction was replayed");
        assert!(reached <= t, "reached {reached}, target {t}");
        assert!(
            t - reached < gap,
            "reached {reached}, target {t}, gap {gap}"
        );
        assert_eq!(r.psql("SELECT pg_is_in_recovery()"), "f", "promoted");
        eprintln!(
            "restore --at {t}: {} rows, reached {reached}, in {took:?}",
            want.len()
        );
    }
    // The end of the window, after the last commit: PostgreSQL finds no commit after the
    // target and refuses to end recovery; every commit up to it was replayed, so holdfast
    // goes on to the end of the archive and checks it got there.
    let to = DateTime::parse_from_rfc3339(window["to"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let r = pg.restore(&to.to_rfc3339(), "at-end", false);
    assert_eq!(r.rows(), pg.committed_by(to));
    assert_eq!(r.rows().len(), rows.len());
    assert!(
        r.json["done"]
            .to_string()
            .contains("no commit after the target is archived"),
        "{}",
        r.json
    );
    drop(r);
    // On another host: that host has no points of its own, so it names the host to ask for;
    // with --host it restores the archiver's base backup and WAL (wal-fetch --host).
    let t = at(0.54);
    let o = pg
        .holdfast(&[
            "restore",
            "--source",
            SOURCE,
            "--at",
            &t.to_rfc3339(),
            "--target",
            pg.dir.join("elsewhere").to_str().unwrap(),
        ])
        .env("HOLDFAST_HOSTNAME", "host-b")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(!pg.dir.join("elsewhere").exists(), "nothing was restored");
    let r = pg.restore_on(Some("host-b"), &t.to_rfc3339(), "elsewhere", false);
    assert_eq!(
        r.rows(),
        pg.committed_by(t),
        "restore --at {t} on another host"
    );
    assert!(
        r.json["done"].to_string().contains("--host pg-host"),
        "the restore_command fetches the archiver's WAL: {}",
        r.json
    );
    drop(r);
    // Before the base backup ended: refused, naming the window.
    let o = pg
        .holdfast(&[
            "restore",
            "--source",
            SOURCE,
            "--at",
            &(start - chrono::Duration::minutes(5)).to_rfc3339(),
            "--target",
            pg.dir.join("early").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("recoverable window is any time from"), "{err}");
    assert!(!pg.dir.join("early").exists(), "nothing was restored");
    // The restored copies did not archive (--no-archive): the source's log is still whole.
    let window = pg.window();
    assert!(window["gaps"].as_array().unwrap().is_empty(), "{window}");
    assert!(!pg
        .batches()
        .values()
        .flatten()
        .any(|n| n.ends_with(".history")));
}

#[test]
fn latest_after_kill_9_and_a_lost_data_directory_loses_at_most_archive_timeout() {
    let pg = Pg::new();
    pg.base();
    let mut w = Writer::start(&pg, 1);
    std::thread::sleep(Duration::from_secs(4));
    // kill -9 the postmaster and its children, by pid, then lose the data directory.
    let data = pg.server.data_dir();
    let pm: i32 = fs::read_to_string(data.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let children: Vec<i32> = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit(')')
                        .next()?
                        .split_whitespace()
                        .nth(1)?
                        .parse::<i32>()
                        .ok()
                })
                == Some(pm)
        })
        .collect();
    // SAFETY: kill with pids this test's server owns.
    unsafe {
        libc::kill(pm, libc::SIGKILL);
        for c in &children {
            libc::kill(*c, libc::SIGKILL);
        }
    }
    let killed = Utc::now();
    let rows = w.stop();
    let last = *rows.iter().rfind(|(_, t)| *t <= killed).unwrap();
    fs::remove_dir_all(&data).unwrap();
    let clock = Instant::now();
    let r = pg.restore("latest", "latest", true);
    let took = clock.elapsed();
    let got = r.rows();
    let max = *got.last().expect("rows were recovered");
    // Every row recovered is one that committed, in order, without holes.
    assert_eq!(got, (1..=max).collect::<Vec<_>>());
    assert!(max <= rows.last().unwrap().0);
    let lost_rows = last.0 - max;
    let lost = last.1 - rows.iter().find(|(n, _)| *n == max).unwrap().1;
    eprintln!(
        "restore --at latest after kill -9: lost {lost_rows} rows ({lost}), restore took {took:?}"
    );
    // archive_timeout is 1 s; the segment it closed is then pushed (a second process start and
    // a repository write): allow that much on top.
    assert!(
        lost <= chrono::Duration::milliseconds(2500),
        "lost {lost} ({lost_rows} rows)"
    );
}

#[test]
fn restoring_again_after_a_promote_follows_the_new_timeline() {
    let pg = Pg::new();
    pg.base();
    for n in 1..=3 {
        pg.psql(&format!("INSERT INTO ticks (n) VALUES ({n})"));
    }
    let lsn = pg.psql("SELECT pg_current_wal_insert_lsn()");
    std::thread::sleep(Duration::from_millis(300));
    let t = Utc::now();
    std::thread::sleep(Duration::from_millis(300));
    for n in 4..=5 {
        pg.psql(&format!("INSERT INTO ticks (n) VALUES ({n})"));
    }
    pg.psql("SELECT pg_switch_wal()");
    pg.wait_archived();
    pg.server.stop();
    // By LSN, beside the source (no archiving): rows 1 to 3 committed before it.
    let mut args = vec![
        "--json",
        "restore",
        "--source",
        SOURCE,
        "--lsn",
        &lsn,
        "--start",
        "--no-archive",
    ];
    let by_lsn = pg.dir.join("by-lsn");
    args.extend(["--target", by_lsn.to_str().unwrap()]);
    let out = ok(&pg.holdfast(&args).output().unwrap(), "restore --lsn");
    let json: Value = serde_json::from_str(&out).unwrap();
    let port = json["done"]
        .to_string()
        .split("runs on port ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let r0 = Restored {
        data: by_lsn,
        port,
        json,
    };
    assert_eq!(r0.rows(), vec![1, 2, 3], "{}", r0.json);
    drop(r0);
    // Restored to t, promoted: timeline 2, which archives its history file and its WAL.
    let r1 = pg.restore(&t.to_rfc3339(), "first", true);
    assert_eq!(r1.rows(), vec![1, 2, 3]);
    assert_eq!(
        r1.psql("SELECT timeline_id FROM pg_control_checkpoint()"),
        "2"
    );
    for n in [100, 101] {
        r1.psql(&format!("INSERT INTO ticks (n) VALUES ({n})"));
    }
    r1.psql("SELECT pg_switch_wal()");
    let t0 = Instant::now();
    while !pg.batches().values().flatten().any(|n| n == "00000002.history")
        || r1.psql("SELECT coalesce(last_archived_wal LIKE '00000002%' AND length(last_archived_wal) = 24, false) FROM pg_stat_archiver") != "t"
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "timeline 2 is not archived");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(r1);
    let r2 = pg.restore("latest", "second", false);
    assert_eq!(
        r2.rows(),
        vec![1, 2, 3, 100, 101],
        "timeline 2, not timeline 1's rows 4 and 5: {}\n{}",
        r2.json,
        fs::read_to_string(pg.dir.join("second.holdfast-recovery.log")).unwrap_or_default()
    );
    assert_eq!(
        r2.psql("SELECT timeline_id FROM pg_control_checkpoint()"),
        "3"
    );
    let window = pg.window();
    assert!(window["gaps"].as_array().unwrap().is_empty(), "{window}");
}

#[test]
fn deleting_an_archived_wal_batch_opens_a_gap_naming_its_segment() {
    let pg = Pg::new();
    pg.base();
    for n in 1..=6 {
        pg.commit_and_switch(n);
    }
    let window = pg.window();
    assert!(window["gaps"].as_array().unwrap().is_empty(), "{window}");
    assert!(window["to"].is_string(), "{window}");
    // A batch holding only segments, neither the first nor the last one archived.
    let batches = pg.batches();
    let segs: Vec<(&String, &Vec<String>)> = batches
        .iter()
        .filter(|(_, names)| names.iter().all(|n| n.len() == 24))
        .collect();
    let mut by_first: Vec<_> = segs
        .iter()
        .map(|(id, names)| {
            (
                names.iter().min().unwrap().clone(),
                (*id).clone(),
                names.len(),
            )
        })
        .collect();
    by_first.sort();
    assert!(by_first.len() >= 4, "{batches:?}");
    let (missing, id, count) = by_first[by_first.len() - 2].clone();
    fs::remove_file(pg.dir.join("repo/snapshots").join(&id)).unwrap();
    let window = pg.window();
    let gaps = window["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{window}");
    assert_eq!(gaps[0]["missing"], missing.as_str(), "{window}");
    assert_eq!(gaps[0]["count"], count as u64, "{window}");
    // And a restore past the gap is refused, naming the segment.
    let o = pg
        .holdfast(&[
            "restore",
            "--source",
            SOURCE,
            "--at",
            &Utc::now().to_rfc3339(),
            "--target",
            pg.dir.join("past").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&missing), "{err}");
    // Latest too: it would lose what the archive holds after the gap.
    let o = pg
        .holdfast(&[
            "restore",
            "--source",
            SOURCE,
            "--at",
            "latest",
            "--target",
            pg.dir.join("past").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("latest is not recoverable: {missing} is missing")),
        "{err}"
    );
    assert!(!pg.dir.join("past").exists(), "nothing was restored");
    // status fails the control that proves the chain, naming the segment and the span lost,
    // and the history reports the batch that vanished outside holdfast.
    let o = pg.holdfast(&["--json", "status"]).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let control = v["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "log-chain-whole")
        .unwrap_or_else(|| panic!("no log-chain-whole control in {v}"));
    assert_eq!(control["passed"], false, "{control}");
    assert_eq!(control["failing"][0], SOURCE, "{control}");
    let problems = v["sources"][0]["status"]["problems"].to_string();
    assert!(
        problems.contains(&format!("change log gap: {missing} missing")),
        "{problems}"
    );
    assert!(
        v["alarms"].to_string().contains(&id[..8]),
        "{}",
        v["alarms"]
    );
    // check, given the workload, fails on the gap too (every object left checks clean).
    let o = pg.on_repo(&["check"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("change log gap: {missing} missing")),
        "{out}"
    );
}

#[test]
fn a_drill_restores_a_random_instant_of_the_window_on_a_scratch_server() {
    let pg = Pg::new();
    // A row before the base backup: the verify query (`count(*) > 0`) holds at every instant
    // of the window, its very start included, so a failed drill is the restore's fault.
    pg.psql("INSERT INTO ticks (n) VALUES (-1)");
    pg.base();
    let mut w = Writer::start(&pg, 1);
    std::thread::sleep(Duration::from_secs(3));
    w.stop();
    pg.psql("SELECT pg_switch_wal()");
    pg.wait_archived();
    // As root when the test runs as root: the drill then runs the scratch server as the owner
    // of the restored files.
    let mut drill = pg.holdfast(&["--json", "drill", SOURCE]);
    if root() {
        let mut c = Command::new(env!("CARGO_BIN_EXE_holdfast"));
        for (k, v) in drill.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.current_dir(&pg.dir).args(["--json", "drill", SOURCE]);
        drill = c;
    }
    let o = drill.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let v: Value = serde_json::from_str(&out)
        .unwrap_or_else(|_| panic!("{out}\n{}", String::from_utf8_lossy(&o.stderr)));
    let d = find_key(&v, "drills")
        .or_else(|| v.as_array().and_then(|a| a.first().cloned()))
        .unwrap_or(v.clone());
    let text = v.to_string();
    assert!(text.contains("drilled point-in-time recovery to"), "{text}");
    assert!(text.contains("verify query returned \\\"t\\\""), "{text}");
    assert!(text.contains("\"passed\":true"), "{text}\n{d}");
    eprintln!("drill: {text}");
    // The drill never archives into the source's log: no timeline 2.
    assert!(!pg
        .batches()
        .values()
        .flatten()
        .any(|n| n.ends_with(".history")));
}

/// Retention of a continuous source: the class keeps one base backup; the older base and the
/// WAL batches only it needed go, the chain from the kept base stays whole, and a restore to
/// the newest change still returns every row.
#[test]
fn retention_removes_the_wal_only_older_base_backups_needed() {
    let pg = Pg::new();
    let toml = pg.dir.join("holdfast.toml");
    let body = fs::read_to_string(&toml).unwrap();
    fs::write(
        &toml,
        body.replace("keep = { last = 5 }", "keep = { last = 1 }")
            + "\n[source.log]\nbase-every = \"1s\"\n",
    )
    .unwrap();
    pg.base();
    for n in 1..=3 {
        pg.commit_and_switch(n);
    }
    let before = pg.batches();
    std::thread::sleep(Duration::from_millis(1100));
    // The second base backup, then retention: the first base and its WAL go.
    pg.base();
    for n in 4..=5 {
        pg.commit_and_switch(n);
    }
    let after = pg.batches();
    let gone: Vec<_> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    assert!(
        !gone.is_empty(),
        "old WAL batches were removed: {before:?} / {after:?}"
    );
    for id in &gone {
        assert!(
            before[*id]
                .iter()
                .all(|n| n.len() == 24 || n.ends_with(".backup")),
            "only segments and backup history go, never a timeline history: {:?}",
            before[*id]
        );
    }
    let window = pg.window();
    assert!(window["gaps"].as_array().unwrap().is_empty(), "{window}");
    assert!(
        window["problems"].as_array().unwrap().is_empty(),
        "{window}"
    );
    assert_eq!(window["bases"], 1, "{window}");
    let r = pg.restore("latest", "after-retention", false);
    assert_eq!(r.rows(), vec![1, 2, 3, 4, 5]);
}
