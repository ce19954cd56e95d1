//! The replicator driven round by round on a real database file and a repository in memory
//! (with injected store failures): periodic snapshots inside a generation, holdfast's own
//! checkpoints, a store that fails or whose answer is lost, and restores to each round's
//! time holding exactly the rows committed before it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use holdfast_core::keys::KdfParams;
use holdfast_core::progress::NoProgress;
use holdfast_core::repo::InitOptions;
use holdfast_core::snapshot::{self, SnapshotEntry};
use holdfast_core::Repository;
use holdfast_storage::{Faults, Faulty, MemoryStorage, ObjectKind, Storage};

use super::*;
use crate::sources::pitr::{Continuous, PitrRestore, RecoveryTarget, Replicator};
use crate::sources::Conn;

fn rows(db: &std::path::Path) -> Vec<i64> {
    let c = rusqlite::Connection::open(db).unwrap();
    let ic: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ic, "ok");
    let mut st = c.prepare("SELECT id FROM t ORDER BY id").unwrap();
    let v = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    v
}

struct Fx {
    dir: tempfile::TempDir,
    store: Arc<Faulty>,
    repo: Repository,
    cfg: SqliteWal,
}

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, pad BLOB);",
        )
        .unwrap();
        let mem: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let store = Arc::new(Faulty::new(mem));
        let opts = InitOptions {
            kdf: KdfParams::insecure_for_tests(),
            ..Default::default()
        };
        let repo = Repository::init(store.clone(), b"pw", &opts).unwrap();
        let cfg = SqliteWal {
            name: "db".into(),
            path: db,
            interval: Duration::from_secs(1),
            heartbeat: Duration::from_secs(60),
            snapshot_every: Duration::from_secs(3600),
            verify: Some("SELECT count(*) >= 3 FROM t".into()),
        };
        Fx {
            dir,
            store,
            repo,
            cfg,
        }
    }
    fn entries(&self) -> (Vec<SnapshotEntry>, Vec<SnapshotEntry>) {
        let (all, _) = snapshot::load_all(&self.repo).unwrap();
        let bases = all
            .iter()
            .filter(|e| e.snapshot.complete && e.snapshot.source.as_deref() == Some("db"))
            .cloned()
            .collect();
        let logs = all
            .into_iter()
            .filter(|e| e.snapshot.log.is_some())
            .collect();
        (bases, logs)
    }
    fn window(&self) -> Window {
        let (b, l) = self.entries();
        let bases: Vec<&SnapshotEntry> = b.iter().collect();
        let batches: Vec<_> = l
            .iter()
            .map(|e| (e, e.snapshot.log.as_ref().unwrap()))
            .collect();
        self.cfg.window(&bases, &batches)
    }
    fn restore(
        &self,
        target: RecoveryTarget,
        name: &str,
    ) -> Result<(PitrRestored, Vec<i64>), String> {
        let (bases, logs) = self.entries();
        let into = self.dir.path().join(name);
        let r = self
            .cfg
            .restore_at(&PitrRestore {
                repo: &self.repo,
                source: "db",
                workload: std::path::Path::new("/nonexistent/holdfast.toml"),
                bases: &bases,
                logs: &logs,
                host: None,
                target: &target,
                into: into.to_str(),
                replace: false,
                conn: &Conn::default(),
                start: false,
                archive: false,
                progress: &NoProgress,
            })
            .map_err(|e| e.to_string())?;
        Ok((r, rows(&into)))
    }
}

#[test]
fn rounds_with_snapshots_checkpoints_and_failed_stores_restore_exactly_each_rounds_rows() {
    let fx = Fx::new();
    let app = rusqlite::Connection::open(&fx.cfg.path).unwrap();
    app.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut rep = SqliteReplicator::new(fx.cfg.clone());
    rep.checkpoint_pages = 8;
    // (time after the round, rows committed before it)
    let mut marks: Vec<(DateTime<Utc>, usize)> = Vec::new();
    let mut n = 0usize;
    let mut messages = Vec::new();
    let mut landed = false;
    for round in 0..14 {
        // No write before rounds 9 (a heartbeat is due) and 10.
        for _ in 0..if round == 9 || round == 10 {
            0
        } else {
            round % 3 + 1
        } {
            n += 1;
            app.execute(
                "INSERT INTO t(id, pad) VALUES (?1, randomblob(1500))",
                [n as i64],
            )
            .unwrap();
        }
        // A periodic snapshot at rounds 5 and 10; failed stores at rounds 7 (refused) and
        // 9 (a heartbeat, stored, but the answer lost: it is sent again unchanged, not
        // numbered again).
        rep.cfg.heartbeat = Duration::from_secs(if round == 9 { 0 } else { 60 });
        rep.cfg.snapshot_every =
            Duration::from_secs(if round == 5 || round == 10 { 0 } else { 3600 });
        match round {
            7 => fx.store.arm(Faults::new().fail_nth_put(1)),
            9 => fx
                .store
                .arm(Faults::new().lose_nth_put_ack_of(ObjectKind::Snapshot, 1)),
            _ => fx.store.heal(),
        }
        let before = fx.entries().1.len();
        let r = rep.round(&fx.repo);
        fx.store.heal();
        if round == 9 {
            landed = fx.entries().1.len() > before;
        }
        match (round, r) {
            (7 | 9, Err(e)) => messages.push(format!("round {round} failed: {e}")),
            (7 | 9, Ok(s)) => panic!("round {round} should have failed: {s:?}"),
            (_, Ok(s)) => {
                messages.extend(s.messages);
                std::thread::sleep(Duration::from_millis(5));
                marks.push((Utc::now(), n));
            }
            (_, Err(e)) => panic!("round {round}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let all = messages.join("\n");
    assert!(all.contains("periodic snapshot"), "{all}");
    assert!(all.contains("checkpoint (PASSIVE)"), "{all}");
    let w = fx.window();
    assert!(w.whole(), "{w:?}\n{all}");
    assert_eq!(w.bases, 3, "the start and two periodic snapshots: {w:?}");
    let (_, got) = fx.restore(RecoveryTarget::Latest, "latest.db").unwrap();
    assert_eq!(got, (1..=n as i64).collect::<Vec<_>>());
    // After the last round nothing is shipped yet: refused, never a silent "latest".
    let (last, _) = marks.pop().unwrap();
    let e = fx
        .restore(RecoveryTarget::Time(last), "late.db")
        .unwrap_err();
    assert!(e.contains("cannot be restored exactly"), "{e}");
    for (i, (t, want)) in marks.iter().enumerate() {
        let (r, got) = fx
            .restore(RecoveryTarget::Time(*t), &format!("at{i}.db"))
            .unwrap();
        assert_eq!(got.len(), *want, "at mark {i} ({t}): {:?}", r.done);
        assert!(r.reached.unwrap() <= *t);
    }
    // A drill at an instant inside the window passes; with a verify query that fails, or a
    // target the log does not reach, it does not.
    let (from, to) = (w.from.unwrap(), w.to.unwrap());
    let mid = from + (to - from) / 2;
    let drill = |cfg: &SqliteWal, t: DateTime<Utc>, name: &str| {
        let (bases, logs) = fx.entries();
        let into = fx.dir.path().join(name);
        cfg.drill_into(&PitrRestore {
            repo: &fx.repo,
            source: "db",
            workload: std::path::Path::new("/nonexistent/holdfast.toml"),
            bases: &bases,
            logs: &logs,
            host: None,
            target: &RecoveryTarget::Time(t),
            into: into.to_str(),
            replace: false,
            conn: &Conn::default(),
            start: false,
            archive: false,
            progress: &NoProgress,
        })
    };
    let d = drill(&fx.cfg, mid, "drill1.db").unwrap();
    assert!(d.passed, "{:?}", d.messages);
    assert!(
        d.messages
            .iter()
            .any(|m| m.contains("verify query returned")),
        "{:?}",
        d.messages
    );
    let strict = SqliteWal {
        verify: Some("SELECT count(*) > 100000 FROM t".into()),
        ..fx.cfg.clone()
    };
    assert!(!drill(&strict, mid, "drill2.db").unwrap().passed);
    assert!(drill(&fx.cfg, to + chrono::Duration::seconds(5), "drill3.db").is_err());
    // WAL restarts happened (holdfast's checkpoints) and the chain went through them.
    let (_, logs) = fx.entries();
    let salts: std::collections::BTreeSet<_> = logs
        .iter()
        .flat_map(|e| &e.snapshot.log.as_ref().unwrap().pieces)
        .filter_map(|p| p.meta.get("salt2").cloned())
        .collect();
    assert!(salts.len() >= 3, "{salts:?}\n{all}");
    assert!(landed, "round 9's batch landed although its store failed");
}
