//! Records that scale: job and drill records written by the real writer (`records::save`) are
//! compacted into rollups, so reading them costs a bounded number of requests however many were
//! written; nothing a control needs is lost, a crash or a concurrent compaction counts nothing
//! twice, and a damaged rollup is reported and leaves its predecessor standing.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use holdfast_backend_local::LocalStorage;
use holdfast_core::keys::KdfParams;
use holdfast_core::records::{self, DrillRecord, JobRecord, JobState, Record};
use holdfast_core::repo::InitOptions;
use holdfast_core::rollup::{self, COMPACT_AT};
use holdfast_core::Repository;
use holdfast_storage::{ObjectInfo, ObjectKind, PutMode, Result, Storage, StorageError};

/// A local store that counts reads and listings and can refuse deletes (a writer without
/// delete permission, or one that crashes right after writing its rollup).
#[derive(Debug)]
struct Counting {
    inner: LocalStorage,
    gets: AtomicUsize,
    lists: AtomicUsize,
    deny_delete: AtomicBool,
}

impl Storage for Counting {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn put(&self, kind: ObjectKind, name: &str, data: &[u8], mode: PutMode) -> Result<()> {
        self.inner.put(kind, name, data, mode)
    }
    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(kind, name)
    }
    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get_range(kind, name, offset, len)
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list(kind)
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        if self.deny_delete.load(Ordering::SeqCst) {
            return Err(StorageError::PermissionDenied {
                op: format!("deleting {kind} {name}"),
                location: self.location(),
                fix: "a test store that refuses deletes".into(),
            });
        }
        self.inner.delete(kind, name)
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
}

struct Fx {
    _dir: tempfile::TempDir,
    store: Arc<Counting>,
    repo: Repository,
}

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Counting {
            inner: LocalStorage::new(dir.path().join("repo")),
            gets: AtomicUsize::new(0),
            lists: AtomicUsize::new(0),
            deny_delete: AtomicBool::new(false),
        });
        let opts = InitOptions {
            kdf: KdfParams::insecure_for_tests(),
            ..Default::default()
        };
        let repo = Repository::init(store.clone(), b"pw", &opts).unwrap();
        Fx {
            _dir: dir,
            store,
            repo,
        }
    }
    fn records_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("repo/records")
    }
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.records_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
    fn rollups(&self) -> Vec<String> {
        self.names()
            .into_iter()
            .filter(|n| rollup::is_rollup_name(n))
            .collect()
    }
    /// Requests made by `f`: (reads, listings).
    fn cost<T>(&self, f: impl FnOnce() -> T) -> (T, usize, usize) {
        let (g, l) = (
            self.store.gets.load(Ordering::SeqCst),
            self.store.lists.load(Ordering::SeqCst),
        );
        let t = f();
        (
            t,
            self.store.gets.load(Ordering::SeqCst) - g,
            self.store.lists.load(Ordering::SeqCst) - l,
        )
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn job(src: &str, i: i64, state: JobState) -> Record {
    Record::Job(JobRecord {
        source: src.into(),
        job: "backup".into(),
        started: t0() + Duration::minutes(i),
        seconds: 1.0 + i as f64,
        state,
        snapshot: None,
        messages: vec![format!("run {i}")],
        host: "h1".into(),
    })
}

fn drill(src: &str, i: i64, passed: bool) -> Record {
    Record::Drill(DrillRecord {
        source: src.into(),
        kind: "restore".into(),
        snapshot: None,
        started: t0() + Duration::minutes(i),
        seconds: 100.0 + i as f64,
        passed,
        files: 1,
        bytes: 2,
        messages: vec![],
        host: "h1".into(),
    })
}

/// The newest job of `src` in `state` and the newest drill of `src`, as read.
fn newest(rs: &[Record], src: &str, state: JobState) -> (Option<DateTime<Utc>>, Option<f64>) {
    let j = rs
        .iter()
        .filter_map(|r| match r {
            Record::Job(j) if j.source == src && j.state == state => Some(j.started),
            _ => None,
        })
        .max();
    let d = rs
        .iter()
        .filter_map(|r| match r {
            Record::Drill(d) if d.source == src => Some((d.started, d.seconds)),
            _ => None,
        })
        .max_by_key(|x| x.0)
        .map(|x| x.1);
    (j, d)
}

fn no_duplicates(rs: &[Record]) {
    let mut seen = HashSet::new();
    for r in rs {
        let k = match r {
            Record::Job(j) => format!("job {} {}", j.source, j.started),
            Record::Drill(d) => format!("drill {} {}", d.source, d.started),
            _ => continue,
        };
        assert!(seen.insert(k.clone()), "{k} read twice");
    }
}

#[test]
fn reading_costs_a_bounded_number_of_requests_however_many_records_were_written() {
    let fx = Fx::new();
    let lock = records::set_retention_lock(&fx.repo, 86_400, false, t0()).unwrap();
    let sources: Vec<String> = (0..10).map(|i| format!("src{i}")).collect();
    // 1,500 jobs over 10 sources through the real writer: mostly completed, a failure and a
    // missed run early on, and a drill now and then.
    for i in 0..150i64 {
        for s in &sources {
            let state = match i {
                3 => JobState::Failed,
                4 => JobState::Expired,
                _ => JobState::Completed,
            };
            records::save(&fx.repo, &job(s, i, state)).unwrap();
            if i % 40 == 0 {
                records::save(&fx.repo, &drill(s, i, i != 120)).unwrap();
            }
        }
    }
    let objects = fx.names().len();
    assert!(
        objects <= COMPACT_AT + 8,
        "{objects} objects in records/ after 1,540 records were written"
    );
    let ((rs, bad), gets, lists) = fx.cost(|| records::load_checked(&fx.repo).unwrap());
    assert!(bad.is_empty(), "{bad:?}");
    assert!(
        gets <= COMPACT_AT + 8 && lists == 1,
        "{gets} reads and {lists} listings to read the records"
    );
    no_duplicates(&rs);
    for s in &sources {
        // Last success, last failure, last missed run and the last drill with its duration.
        assert_eq!(
            newest(&rs, s, JobState::Completed),
            (Some(t0() + Duration::minutes(149)), Some(220.0)),
            "{s}"
        );
        assert_eq!(
            newest(&rs, s, JobState::Failed).0,
            Some(t0() + Duration::minutes(3))
        );
        assert_eq!(
            newest(&rs, s, JobState::Expired).0,
            Some(t0() + Duration::minutes(4))
        );
        let failed_drill = rs.iter().any(|r| {
            matches!(r, Record::Drill(d) if d.source == *s && !d.passed && d.started == t0() + Duration::minutes(120))
        });
        assert!(failed_drill, "{s}: the failed drill was lost");
    }
    // The retention lock is read on every pass and is never folded away.
    let (got, gets, _) = fx.cost(|| records::retention_lock(&fx.repo).unwrap());
    assert_eq!(got.map(|l| l.min_age_seconds), Some(lock.min_age_seconds));
    assert!(
        gets <= COMPACT_AT + 8,
        "{gets} reads for the retention lock"
    );
}

#[test]
fn a_writer_that_cannot_delete_still_reads_a_bounded_number_and_counts_nothing_twice() {
    let fx = Fx::new();
    // As if every compaction crashed right after writing its rollup.
    fx.store.deny_delete.store(true, Ordering::SeqCst);
    for i in 0..200 {
        records::save(&fx.repo, &job("db", i, JobState::Completed)).unwrap();
    }
    assert!(fx.names().len() > 200, "nothing was deleted");
    assert!(!fx.rollups().is_empty(), "rollups were written");
    let ((rs, bad), gets, _) = fx.cost(|| records::load_checked(&fx.repo).unwrap());
    assert!(bad.is_empty(), "{bad:?}");
    no_duplicates(&rs);
    // Covered records are not read again: the live rollups and fewer than COMPACT_AT others.
    assert!(
        gets <= COMPACT_AT + fx.rollups().len(),
        "{gets} reads with {} rollups",
        fx.rollups().len()
    );
    assert_eq!(
        newest(&rs, "db", JobState::Completed).0,
        Some(t0() + Duration::minutes(199))
    );
    // With delete permission back, the next compaction removes everything covered.
    fx.store.deny_delete.store(false, Ordering::SeqCst);
    let c = rollup::compact(&fx.repo, Utc::now()).unwrap().unwrap();
    assert!(c.deleted >= 200, "{c:?}");
    assert!(fx.names().len() <= 3, "{:?}", fx.names());
    // What was read before, less what retention drops: the newest KEEP_JOBS runs.
    let (rs2, _) = records::load_checked(&fx.repo).unwrap();
    assert_eq!(
        rs2,
        rs[rs.len() - rollup::KEEP_JOBS..],
        "compaction changed what is read"
    );
}

#[test]
fn concurrent_compactions_both_count_and_nothing_twice() {
    let fx = Fx::new();
    for i in 0..20 {
        records::save(&fx.repo, &job("db", i, JobState::Completed)).unwrap();
    }
    rollup::compact(&fx.repo, Utc::now()).unwrap().unwrap();
    for i in 20..30 {
        records::save(&fx.repo, &drill("db", i, true)).unwrap();
    }
    // Two hosts compact the same state at once: each sees the records and the first rollup,
    // neither sees the other's rollup.
    let before: Vec<(String, Vec<u8>)> = fx
        .names()
        .into_iter()
        .map(|n| {
            let b = fs::read(fx.records_dir().join(&n)).unwrap();
            (n, b)
        })
        .collect();
    let a = rollup::compact(&fx.repo, Utc::now()).unwrap().unwrap();
    let a_bytes = fs::read(fx.records_dir().join(&a.rollup)).unwrap();
    fs::remove_file(fx.records_dir().join(&a.rollup)).unwrap();
    for (n, b) in &before {
        fs::write(fx.records_dir().join(n), b).unwrap();
    }
    records::save(&fx.repo, &job("db", 30, JobState::Failed)).unwrap();
    let b = rollup::compact(&fx.repo, Utc::now()).unwrap().unwrap();
    fs::write(fx.records_dir().join(&a.rollup), a_bytes).unwrap();
    assert_ne!(a.rollup, b.rollup);
    let (rs, bad) = records::load_checked(&fx.repo).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    no_duplicates(&rs);
    let drills = rs.iter().filter(|r| matches!(r, Record::Drill(_))).count();
    assert_eq!(drills, 10);
    assert_eq!(
        newest(&rs, "db", JobState::Failed).0,
        Some(t0() + Duration::minutes(30))
    );
    // The next compaction supersedes both, and reads the same.
    rollup::compact(&fx.repo, Utc::now()).unwrap().unwrap();
    let (rs2, _) = records::load_checked(&fx.repo).unwrap();
    assert_eq!(rs2, rs);
}

fn flip_last_byte(p: &Path) {
    let mut b = fs::read(p).unwrap();
    *b.last_mut().unwrap() ^= 1;
    fs::write(p, b).unwrap();
}

#[test]
fn a_damaged_rollup_is_reported_and_its_predecessor_still_stands() {
    let fx = Fx::new();
    for i in 0..20 {
        records::save(&fx.repo, &job("db", i, JobState::Completed)).unwrap();
    }
    rollup::compact(&fx.repo, Utc::now()).unwrap().unwrap();
    for i in 20..25 {
        records::save(&fx.repo, &job("db", i, JobState::Completed)).unwrap();
    }
    let newest_rollup = rollup::compact(&fx.repo, Utc::now())
        .unwrap()
        .unwrap()
        .rollup;
    flip_last_byte(&fx.records_dir().join(&newest_rollup));
    let (rs, bad) = records::load_checked(&fx.repo).unwrap();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains(&newest_rollup), "{bad:?}");
    // The first rollup's jobs are still there: the source did not "never run".
    assert_eq!(
        newest(&rs, "db", JobState::Completed).0,
        Some(t0() + Duration::minutes(19))
    );
    // Any unreadable record may be a retention lock: forget must refuse.
    let e = records::retention_lock(&fx.repo).unwrap_err();
    assert!(
        matches!(e, holdfast_core::Error::RetentionLockUnverifiable { .. }),
        "{e}"
    );
    // A rollup renamed to another sequence number is damaged too.
    let first = fx
        .rollups()
        .into_iter()
        .find(|n| *n != newest_rollup)
        .unwrap();
    let renamed = format!("{:016x}{}", 99, &first[16..]);
    fs::rename(
        fx.records_dir().join(&first),
        fx.records_dir().join(&renamed),
    )
    .unwrap();
    let (_, bad) = records::load_checked(&fx.repo).unwrap();
    assert!(
        bad.iter()
            .any(|b| b.contains(&renamed) && b.contains("sequence")),
        "{bad:?}"
    );
}

#[test]
fn compaction_leaves_locks_and_damaged_records_alone() {
    let fx = Fx::new();
    records::save(&fx.repo, &job("db", 0, JobState::Completed)).unwrap();
    let damaged = fx.names()[0].clone();
    flip_last_byte(&fx.records_dir().join(&damaged));
    for i in 1..100 {
        records::save(&fx.repo, &job("db", i, JobState::Completed)).unwrap();
    }
    assert!(!fx.rollups().is_empty());
    assert!(
        fx.names().contains(&damaged),
        "a damaged record was deleted: it may be a lock"
    );
    let e = records::retention_lock(&fx.repo).unwrap_err();
    assert!(e.to_string().contains(&damaged), "{e}");
    // Once the damaged record is removed (the operator knows it was no lock) and a lock is
    // set, the lock survives further compactions and the jobs are all there.
    fs::remove_file(fx.records_dir().join(&damaged)).unwrap();
    records::set_retention_lock(&fx.repo, 7 * 86_400, true, t0()).unwrap();
    for i in 100..150 {
        records::save(&fx.repo, &job("db", i, JobState::Completed)).unwrap();
    }
    let l = records::retention_lock(&fx.repo).unwrap().unwrap();
    assert!(l.compliance && l.min_age_seconds == 7 * 86_400);
    let (rs, _) = records::load_checked(&fx.repo).unwrap();
    assert_eq!(
        newest(&rs, "db", JobState::Completed).0,
        Some(t0() + Duration::minutes(149))
    );
}

/// A rollup deleted on the store (the newest, which holds the latest outcomes) must not make
/// status report older outcomes in silence: this host remembers the highest rollup it has seen,
/// so a records/ without it is reported (and the retention lock fails closed) until the loss is
/// accepted.
#[test]
fn a_deleted_newest_rollup_is_reported_not_read_as_older_outcomes() {
    let fx = Fx::new();
    for round in 0..3 {
        for i in 0..10 {
            let n = round * 10 + i;
            records::save(&fx.repo, &drill("db", n, round < 2)).unwrap();
        }
        rollup::compact(&fx.repo, Utc::now()).unwrap().unwrap();
    }
    let (_, bad) = records::load_checked(&fx.repo).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    // The two newest rollups hold the failed drills of the third round: without them the
    // oldest one says the last drill passed.
    let mut all = fx.rollups();
    all.sort();
    for n in &all[1..] {
        fs::remove_file(fx.records_dir().join(n)).unwrap();
    }
    let (_, bad) = records::load_checked(&fx.repo).unwrap();
    assert!(
        bad.iter()
            .any(|b| b.contains("rollup number") && b.contains("accept-loss")),
        "{bad:?}"
    );
    assert!(
        records::retention_lock(&fx.repo).is_err(),
        "the lock fails closed"
    );
    // After investigating, the loss is accepted and reading is clean again.
    let a = holdfast_core::history::audit(&fx.repo).unwrap();
    holdfast_core::history::accept_loss(&fx.repo, &a).unwrap();
    let (_, bad) = records::load_checked(&fx.repo).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
}
