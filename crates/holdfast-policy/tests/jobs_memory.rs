//! Job logic without the binary: `protect`, `drill` and `status` on an in-memory repository
//! (`MemoryStorage`), with faults injected by `Faulty`: a backup whose snapshot cannot be stored
//! is a failed job and no recovery point, and the verdicts follow.

use std::fs;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use holdfast_core::keys::KdfParams;
use holdfast_core::progress::NoProgress;
use holdfast_core::records::JobState;
use holdfast_core::repo::InitOptions;
use holdfast_core::Repository;
use holdfast_policy::compliance::Verdict;
use holdfast_policy::config::{RepositoryConfig, Workload};
use holdfast_policy::jobs::{self, Action, Env, JobError};
use holdfast_policy::observe;
use holdfast_storage::{Faults, Faulty, MemoryStorage, ObjectKind, PutMode, Storage};

const PW: &[u8] = b"jobs on memory";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap()
}

struct Fx {
    dir: tempfile::TempDir,
    store: Arc<Faulty>,
    w: Workload,
}

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("data")).unwrap();
        fs::write(dir.path().join("data/ledger.csv"), "1,apple\n").unwrap();
        let text = "[repository.mem]\nurl = \"memory\"\n\n[class.critical]\nrpo = \"15m\"\nrto = \"10m\"\nkeep = { last = 5 }\n\n[[source]]\nname = \"ledger\"\nkind = \"path\"\npath = \"data\"\nclass = \"critical\"\nstrategy = \"backup\"\n";
        let w = Workload::parse(&dir.path().join("holdfast.toml"), text).unwrap();
        let mem: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let store = Arc::new(Faulty::new(mem));
        Repository::init(
            store.clone(),
            PW,
            &InitOptions {
                kdf: KdfParams::insecure_for_tests(),
                ..Default::default()
            },
        )
        .unwrap();
        Fx { dir, store, w }
    }

    fn with_env<T>(&self, now: DateTime<Utc>, f: impl FnOnce(&Env) -> T) -> T {
        let store = self.store.clone();
        let open = move |_: &str, _: &RepositoryConfig| -> Result<Repository, JobError> {
            Ok(Repository::open(store.clone(), PW)?)
        };
        let env = Env {
            workload: &self.w,
            now,
            open: &open,
            state_dir: self.dir.path().join("state"),
            progress: &NoProgress,
        };
        f(&env)
    }
}

#[test]
fn protect_runs_what_is_due_and_a_snapshot_that_cannot_be_stored_is_a_failed_job() {
    let fx = Fx::new();
    // First protect: due, runs, one recovery point; RPO met.
    let lines = fx.with_env(t0(), jobs::protect).unwrap();
    assert_eq!(lines[0].action, Action::Ran, "{:?}", lines[0]);
    let backup = lines[0].jobs.iter().find(|j| j.job == "backup").unwrap();
    assert_eq!(backup.state, JobState::Completed, "{backup:?}");
    let st = fx.with_env(t0() + Duration::minutes(1), observe::status);
    assert_eq!(st.sources[0].status.rpo, Verdict::Met);
    // A minute later: not due, nothing written.
    let puts = fx.store.counts().puts;
    let lines = fx
        .with_env(t0() + Duration::minutes(1), jobs::protect)
        .unwrap();
    assert!(
        matches!(lines[0].action, Action::NotDue { .. }),
        "{:?}",
        lines[0]
    );
    assert_eq!(
        fx.store.counts().puts,
        puts,
        "a source that is not due writes nothing"
    );
    // Due again, but the snapshot cannot be stored: a failed job, no recovery point.
    fs::write(fx.dir.path().join("data/ledger.csv"), "1,apple\n2,pear\n").unwrap();
    fx.store
        .arm(Faults::default().fail_nth_put_of(ObjectKind::Snapshot, 1));
    let later = t0() + Duration::minutes(20);
    let lines = fx.with_env(later, jobs::protect).unwrap();
    let backup = lines[0].jobs.iter().find(|j| j.job == "backup").unwrap();
    assert_eq!(backup.state, JobState::Failed, "{backup:?}");
    assert!(backup.snapshot.is_none());
    fx.store.heal();
    // The newest recovery point is still the first one: at 20 minutes the RPO is breached.
    let st = fx.with_env(later, observe::status);
    assert_eq!(
        st.sources[0].status.rpo,
        Verdict::Breached,
        "{:?}",
        st.sources[0].status
    );
    assert!(!st.ok());
    // And the repository still checks clean.
    let repo = Repository::open(fx.store.clone(), PW).unwrap();
    let c = holdfast_core::check::check(&repo, holdfast_core::check::ReadData::All, &NoProgress)
        .unwrap();
    assert!(c.ok(), "{:?}", c.errors);
}

#[test]
fn a_drill_on_memory_restores_validates_and_a_damaged_pack_fails_it() {
    let fx = Fx::new();
    fx.with_env(t0(), jobs::protect).unwrap();
    let scratch = fx.dir.path().join("scratch");
    let d = fx
        .with_env(t0() + Duration::minutes(2), |e| {
            holdfast_policy::drills::drill(e, "ledger", false, &scratch)
        })
        .unwrap();
    assert!(d.passed, "{d:?}");
    assert_eq!(d.files, 1);
    let st = fx.with_env(t0() + Duration::minutes(3), observe::status);
    assert_eq!(
        st.sources[0].status.rto,
        Verdict::Met,
        "{:?}",
        st.sources[0].status
    );
    // Damage every pack inside its first blob: the next drill fails and status says so.
    for p in fx.store.list(ObjectKind::Pack).unwrap() {
        let mut b = fx.store.get(ObjectKind::Pack, &p.name).unwrap();
        b[30] ^= 0xff;
        fx.store
            .put(ObjectKind::Pack, &p.name, &b, PutMode::Overwrite)
            .unwrap();
    }
    let d = fx.with_env(t0() + Duration::minutes(4), |e| {
        holdfast_policy::drills::drill(e, "ledger", false, &scratch)
    });
    match d {
        Ok(d) => assert!(!d.passed, "{d:?}"),
        Err(e) => panic!("a damaged pack is a failed drill, not an error: {e}"),
    }
    let st = fx.with_env(t0() + Duration::minutes(5), observe::status);
    assert_eq!(st.sources[0].status.rto, Verdict::Breached);
}
