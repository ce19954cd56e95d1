//! Continuous protection of SQLite sources, end to end on real files with the real binary: a
//! writer process (the `sqlite3` shell, kept open, fed one timestamped INSERT every 100 ms)
//! while `holdfast replicate` runs; the writer killed and the database deleted; restores to
//! the latest and to several earlier times; checkpoints and WAL restarts by the application
//! and by holdfast; a stalled replicator and an idle database, seen through the window.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use holdfast_core::snapshot::{self, SnapshotEntry};
use holdfast_policy::config::Workload;
use holdfast_policy::sources::pitr::Window;
use serde_json::Value;

struct W {
    dir: tempfile::TempDir,
}

impl W {
    fn new(log: &str) -> W {
        let w = W {
            dir: tempfile::tempdir().unwrap(),
        };
        let db = w.db();
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, ts TEXT NOT NULL, pad BLOB);",
        )
        .unwrap();
        drop(c);
        let toml = format!(
            "[repository.local]\nurl = \"repo\"\npassword-env = \"TEST_REPO_PW\"\n\n[class.critical]\nrpo = \"1m\"\nrto = \"10m\"\nkeep = {{ last = 20 }}\n\n[[source]]\nname = \"db\"\nkind = \"sqlite\"\npath = \"{}\"\nclass = \"critical\"\nmode = \"continuous\"\n{log}",
            db.display()
        );
        fs::write(w.path("holdfast.toml"), toml).unwrap();
        w
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn db(&self) -> PathBuf {
        self.path("app.db")
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("holdfast"));
        c.env("TEST_REPO_PW", "pw")
            .env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .env("HOLDFAST_CONFIG", self.path("holdfast.toml"))
            .env("HOLDFAST_STATE_DIR", self.path("state"))
            .env_remove("HOLDFAST_NOW")
            .current_dir(self.dir.path())
            .args(args);
        c
    }
    /// `holdfast replicate` in the background (its output in replicate.log).
    fn replicate(&self) -> Child {
        let log = fs::File::create(self.path("replicate.log")).unwrap();
        self.cmd(&["replicate", "--for", "5m"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }
    fn log(&self) -> String {
        fs::read_to_string(self.path("replicate.log")).unwrap_or_default()
    }
    /// `restore --source db --at AT --target FILE --json`: the JSON, or the error text.
    fn restore(&self, at: &str, target: &Path) -> Result<Value, String> {
        let o = self
            .cmd(&[
                "--json",
                "restore",
                "--source",
                "db",
                "--at",
                at,
                "--target",
                target.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        if o.status.success() {
            Ok(serde_json::from_slice(&o.stdout).unwrap())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }
    /// The window of source `db`, as status computes it: its complete recovery points and
    /// its log batches, through the kind's `Continuous::window`.
    fn window(&self) -> Window {
        let w = Workload::load(&self.path("holdfast.toml")).unwrap();
        let storage = Arc::new(holdfast_backend_local::LocalStorage::new(self.path("repo")));
        let repo = holdfast_core::Repository::open(storage, b"pw").unwrap();
        let (all, damaged) = snapshot::load_all(&repo).unwrap();
        assert!(damaged.is_empty(), "{damaged:?}");
        let s = w.source("db").unwrap();
        let c = s.driver().continuous().expect("continuous");
        let bases: Vec<&SnapshotEntry> = all
            .iter()
            .filter(|x| x.snapshot.complete && x.snapshot.source.as_deref() == Some("db"))
            .collect();
        let batches = holdfast_core::logs::batches(&all, "db", c.log_kind());
        c.window(&bases, &batches)
    }
    /// Frames pieces shipped and their bytes (raw WAL frames, before compression).
    fn shipped(&self) -> (usize, u64) {
        let storage = Arc::new(holdfast_backend_local::LocalStorage::new(self.path("repo")));
        let repo = holdfast_core::Repository::open(storage, b"pw").unwrap();
        let (all, _) = snapshot::load_all(&repo).unwrap();
        let p: Vec<u64> = all
            .iter()
            .flat_map(|e| e.snapshot.log.iter().flat_map(|l| &l.pieces))
            .filter(|p| p.size > 0)
            .map(|p| p.size)
            .collect();
        (p.len(), p.iter().sum())
    }
    /// How many WALs (distinct salts) the shipped pieces are in.
    fn wals(&self) -> usize {
        let storage = Arc::new(holdfast_backend_local::LocalStorage::new(self.path("repo")));
        let repo = holdfast_core::Repository::open(storage, b"pw").unwrap();
        let (all, _) = snapshot::load_all(&repo).unwrap();
        let mut salts = std::collections::BTreeSet::new();
        for e in &all {
            for p in e.snapshot.log.iter().flat_map(|l| &l.pieces) {
                if let (Some(a), Some(b)) = (p.meta.get("salt1"), p.meta.get("salt2")) {
                    salts.insert((a.clone(), b.clone()));
                }
            }
        }
        salts.len()
    }
    fn wait_for_window(&self, what: &str, ok: impl Fn(&Window) -> bool) -> Window {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if self.path("repo/config").exists() {
                let w = self.window();
                if ok(&w) {
                    return w;
                }
            }
            assert!(Instant::now() < until, "{what}: never\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The application: one long-running `sqlite3` shell holding the database open, fed one
/// INSERT of the current time every 100 ms (with a busy timeout, as applications that share
/// a database have).
struct Writer {
    child: Child,
    stop: Arc<AtomicBool>,
    feeder: Option<std::thread::JoinHandle<ChildStdin>>,
}

impl Writer {
    fn start(db: &Path) -> Writer {
        let mut child = Command::new("sqlite3")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("the sqlite3 shell (Debian package sqlite3) is needed for this test");
        let mut stdin = child.stdin.take().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let feeder = std::thread::spawn(move || {
            writeln!(stdin, ".timeout 10000").unwrap();
            while !s.load(Ordering::Relaxed) {
                let sql = "INSERT INTO t(ts) VALUES (strftime('%Y-%m-%dT%H:%M:%fZ','now'));";
                if writeln!(stdin, "{sql}")
                    .and_then(|_| stdin.flush())
                    .is_err()
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            stdin
        });
        Writer {
            child,
            stop,
            feeder: Some(feeder),
        }
    }
    /// SIGKILL: the writer dies as in a crash.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.feeder.take().unwrap().join();
    }
    /// Stop writing and let the shell exit.
    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.feeder.take().unwrap().join().unwrap());
        assert!(self.child.wait().unwrap().success());
    }
}

fn rows(db: &Path) -> Vec<(i64, DateTime<Utc>)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let ic: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ic, "ok", "{}", db.display());
    let mut st = c.prepare("SELECT id, ts FROM t ORDER BY id").unwrap();
    let out = st
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .map(|r| {
            let (id, ts) = r.unwrap();
            (
                id,
                DateTime::parse_from_rfc3339(&ts)
                    .unwrap()
                    .with_timezone(&Utc),
            )
        })
        .collect();
    out
}

fn walk(p: &Path) -> u64 {
    fs::read_dir(p).map_or(0, |d| {
        d.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

fn stop(mut c: Child) {
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    c.wait().unwrap();
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn a_killed_writer_and_a_deleted_database_restore_to_latest_and_to_earlier_times() {
    let w = W::new("");
    let writer = Writer::start(&w.db());
    let rep = w.replicate();
    let t0 = Utc::now();
    std::thread::sleep(Duration::from_secs(10));
    writer.kill();
    let killed = Utc::now();
    let before = rows(&w.db());
    for p in [w.db(), w.path("app.db-wal"), w.path("app.db-shm")] {
        let _ = fs::remove_file(p);
    }
    // Give the replicator two rounds to notice (it must not claim anything after this).
    std::thread::sleep(Duration::from_secs(2));
    stop(rep);
    assert!(w.log().contains("does not exist any more"), "{}", w.log());
    assert!(before.len() >= 60, "{} rows written", before.len());
    let (n, bytes) = w.shipped();
    let repo_bytes: u64 = walk(&w.path("repo"));
    eprintln!(
        "{} rows in {} frames pieces, {} bytes of frames ({} per piece); repository {} bytes",
        before.len(),
        n,
        bytes,
        bytes / n.max(1) as u64,
        repo_bytes
    );

    let out = w.path("latest.db");
    let r = w
        .restore("latest", &out)
        .unwrap_or_else(|e| panic!("{e}\n{}", w.log()));
    let got = rows(&out);
    let (last_before, last_got) = (before.last().unwrap(), got.last().unwrap());
    let loss = last_before.1 - last_got.1;
    eprintln!(
        "latest: {} of {} rows, loss {} ms (killed at {killed}), reached {}",
        got.len(),
        before.len(),
        loss.num_milliseconds(),
        r["reached"]
    );
    assert_eq!(
        got[..],
        before[..got.len()],
        "a prefix of what was committed"
    );
    assert!(loss <= chrono::Duration::milliseconds(2000), "lost {loss}");
    // `reached` is a true claim: every row at or before it is there.
    let reached = time(&r["reached"]);
    assert!(before.iter().filter(|x| x.1 <= reached).count() <= got.len());

    // Earlier times: every row committed by T - interval - one round (measured: at most
    // 1.1 s; 2 s asserted, for slow machines) and none after T.
    let w_ = w.window();
    assert!(w_.whole(), "{w_:?}");
    let (from, to) = (w_.from.unwrap(), w_.to.unwrap());
    assert!(
        from >= t0 - chrono::Duration::seconds(1) && to <= killed,
        "{w_:?}"
    );
    for (i, frac) in [0.2, 0.45, 0.7, 0.93].iter().enumerate() {
        let t = from
            + chrono::Duration::milliseconds(((to - from).num_milliseconds() as f64 * frac) as i64);
        let out = w.path(&format!("at-{i}.db"));
        let r = w.restore(&t.to_rfc3339(), &out).unwrap();
        let got = rows(&out);
        let reached = time(&r["reached"]);
        assert!(reached <= t, "reached {reached} after the target {t}");
        let late: Vec<_> = got.iter().filter(|x| x.1 > t).collect();
        assert!(late.is_empty(), "rows after {t}: {late:?}");
        let want: Vec<_> = before
            .iter()
            .filter(|x| x.1 <= t - chrono::Duration::milliseconds(2000))
            .collect();
        assert!(
            got.len() >= want.len(),
            "{t}: {} rows, want {}",
            got.len(),
            want.len()
        );
        assert_eq!(got[..], before[..got.len()]);
        eprintln!(
            "at {t}: {} rows, newest {} ms before the target, reached {} ms before",
            got.len(),
            (t - got.last().unwrap().1).num_milliseconds(),
            (t - reached).num_milliseconds()
        );
    }
    // Before the window, after it: refused, never a wrong database.
    let e = w
        .restore(
            &(from - chrono::Duration::seconds(30)).to_rfc3339(),
            &w.path("early.db"),
        )
        .unwrap_err();
    assert!(e.contains("before the oldest snapshot"), "{e}");
    let e = w
        .restore(
            &(to + chrono::Duration::seconds(30)).to_rfc3339(),
            &w.path("late.db"),
        )
        .unwrap_err();
    assert!(e.contains("cannot be restored exactly"), "{e}");
    assert!(!w.path("late.db").exists());
}

#[test]
fn checkpoints_and_wal_restarts_by_the_application_and_by_holdfast_lose_nothing() {
    let w = W::new("");
    let writer = Writer::start(&w.db());
    let rep = w.replicate();
    w.wait_for_window("the first pieces", |x| x.pieces >= 3);
    let app = rusqlite::Connection::open(w.db()).unwrap();
    app.busy_timeout(Duration::from_secs(10)).unwrap();
    // The application checkpoints and truncates the WAL itself, twice.
    for _ in 0..2 {
        let (busy, _, _): (i64, i64, i64) = app
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        eprintln!("application TRUNCATE checkpoint: busy = {busy}");
        std::thread::sleep(Duration::from_millis(1500));
    }
    // Then grows the WAL past 1000 pages, so that holdfast checkpoints it.
    for _ in 0..6 {
        app.execute_batch(
            "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 300)
             INSERT INTO t(ts, pad) SELECT strftime('%Y-%m-%dT%H:%M:%fZ','now'), randomblob(3000) FROM n; COMMIT;",
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(700));
    }
    std::thread::sleep(Duration::from_secs(2));
    drop(app);
    writer.finish();
    std::thread::sleep(Duration::from_millis(2500));
    stop(rep);
    let log = w.log();
    let wals = w.wals();
    assert!(wals >= 3, "the WAL restarted: {wals} WALs shipped\n{log}");
    assert!(
        log.contains("checkpoint (PASSIVE)"),
        "holdfast checkpointed\n{log}"
    );
    let wal_len = fs::metadata(w.path("app.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    eprintln!("{wals} WALs (restarts + 1), WAL file now {wal_len} bytes");
    let win = w.window();
    assert!(win.whole(), "{win:?}\n{log}");
    assert_eq!(win.bases, 1, "one generation: continuity was kept\n{log}");
    let out = w.path("latest.db");
    w.restore("latest", &out).unwrap();
    let want = rows(&w.db());
    assert!(want.len() > 1800, "{}", want.len());
    assert_eq!(rows(&out), want, "every row, in order");
    let pads = |p: &Path| -> Vec<Option<Vec<u8>>> {
        let c = rusqlite::Connection::open(p).unwrap();
        let mut st = c.prepare("SELECT pad FROM t ORDER BY id").unwrap();
        let v = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        v
    };
    assert_eq!(pads(&out), pads(&w.db()), "the same bytes");
}

#[test]
fn an_idle_database_heartbeats_and_a_stalled_replicator_shows() {
    let w = W::new("[source.log]\ninterval = \"1s\"\nheartbeat = \"2s\"\n");
    let rep = w.replicate();
    let first = w
        .wait_for_window("a generation", |x| x.to.is_some())
        .to
        .unwrap();
    // Idle: no write at all, yet the window moves with the heartbeats.
    let idle = w.wait_for_window("a heartbeat", |x| {
        x.to.unwrap() >= first + chrono::Duration::seconds(4)
    });
    assert!(idle.whole(), "{idle:?}");
    assert!(Utc::now() - idle.to.unwrap() < chrono::Duration::seconds(4));
    // Stalled (SIGSTOP), with a writer committing: the window does not move.
    let writer = Writer::start(&w.db());
    unsafe { libc::kill(rep.id() as i32, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(300));
    let stalled = w.window().to.unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let later = w.window();
    assert_eq!(
        later.to.unwrap(),
        stalled,
        "a stalled replicator claims nothing"
    );
    assert!(
        Utc::now() - stalled > chrono::Duration::seconds(5),
        "its age shows the stall"
    );
    // Resumed: it catches up with what was written meanwhile.
    unsafe { libc::kill(rep.id() as i32, libc::SIGCONT) };
    let resumed = w.wait_for_window("catching up", |x| {
        x.to.unwrap() > Utc::now() - chrono::Duration::seconds(3)
    });
    assert!(resumed.whole(), "{resumed:?}");
    let mut rep = rep;
    rep.kill().unwrap();
    rep.wait().unwrap();
    // Killed: the window stays where the last stored piece put it, while the writer goes on.
    let dead = w.window().to.unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(w.window().to.unwrap(), dead);
    // Started again: it continues the same generation (the WAL was not restarted meanwhile),
    // so the window has no hole.
    let rep = w.replicate();
    w.wait_for_window("catching up again", |x| {
        x.to.unwrap() > Utc::now() - chrono::Duration::seconds(3)
    });
    writer.finish();
    std::thread::sleep(Duration::from_millis(2500));
    stop(rep);
    let log = w.log();
    assert!(log.contains("resumed at WAL offset"), "{log}");
    let win = w.window();
    assert!(win.whole() && win.bases == 1, "{win:?}\n{log}");
    let out = w.path("latest.db");
    w.restore("latest", &out).unwrap();
    let want = rows(&w.db());
    assert!(want.len() > 50, "{}", want.len());
    assert_eq!(rows(&out), want);
}
