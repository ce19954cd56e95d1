//! Host reports (heartbeats) written by the real writer (`records::save`) are compacted like
//! jobs and drills: however many a host writes, `records/` stays small and the newest report of
//! every host survives; a report out of bounds is refused on write and skipped on read.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use holdfast_backend_local::LocalStorage;
use holdfast_core::keys::KdfParams;
use holdfast_core::records::{self, HostReport, HostSource, JobRecord, JobState, Record};
use holdfast_core::repo::InitOptions;
use holdfast_core::rollup::{self, COMPACT_AT, KEEP_HOSTS};
use holdfast_core::Repository;
use holdfast_storage::ObjectKind;

fn repo() -> (tempfile::TempDir, Repository) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStorage::new(dir.path().join("repo")));
    let opts = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        ..Default::default()
    };
    let repo = Repository::init(store, b"pw", &opts).unwrap();
    (dir, repo)
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn report(host: &str, i: i64) -> HostReport {
    HostReport {
        host: host.into(),
        at: t0() + Duration::minutes(5 * i),
        interval_seconds: 300,
        program: "holdfast test".into(),
        retired: None,
        sources: vec![HostSource {
            name: "db".into(),
            class: Some("critical".into()),
            strategy: Some("backup".into()),
            shared: false,
            continuous: false,
            rpo_seconds: Some(900),
            rto_seconds: Some(600),
            drill_every_seconds: None,
            recoverable_to: None,
            rpo_met: Some(true),
            rto_met: Some(false),
        }],
    }
}

fn hosts(rs: &[Record]) -> Vec<&HostReport> {
    rs.iter()
        .filter_map(|r| match r {
            Record::Host(h) => Some(h),
            _ => None,
        })
        .collect()
}

#[test]
fn heartbeats_of_many_hosts_stay_few_and_the_newest_of_each_survives() {
    let (_d, repo) = repo();
    let n = 150;
    for i in 0..n {
        for h in ["a", "b", "c"] {
            records::save(&repo, &Record::Host(report(h, i))).unwrap();
        }
        if i % 10 == 0 {
            let j = JobRecord {
                source: "db".into(),
                job: "backup".into(),
                started: t0() + Duration::minutes(5 * i),
                seconds: 1.0,
                state: JobState::Completed,
                snapshot: None,
                messages: vec![],
                host: "a".into(),
            };
            records::save(&repo, &Record::Job(j)).unwrap();
        }
    }
    let listed = repo.storage().list(ObjectKind::Record).unwrap();
    let rollups = listed
        .iter()
        .filter(|o| rollup::is_rollup_name(&o.name))
        .count();
    assert!(
        listed.len() < COMPACT_AT + 3,
        "{} objects in records/ after {} heartbeats ({rollups} rollups)",
        listed.len(),
        3 * n
    );
    let (rs, bad) = records::load_checked(&repo).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let hs = hosts(&rs);
    for h in ["a", "b", "c"] {
        let mine: Vec<_> = hs.iter().filter(|r| r.host == h).collect();
        assert!(
            mine.len() <= KEEP_HOSTS + COMPACT_AT,
            "{} reports of {h} kept",
            mine.len()
        );
        let newest = mine.iter().map(|r| r.at).max().unwrap();
        assert_eq!(newest, report(h, n - 1).at, "the newest report of {h}");
        assert_eq!(
            mine.iter().find(|r| r.at == newest).unwrap().sources,
            report(h, 0).sources,
            "its content survives compaction"
        );
    }
    // The jobs interleaved with the heartbeats are all still there (15 < KEEP_JOBS would drop
    // some: the newest of them must be present).
    let newest_job = rs
        .iter()
        .filter_map(|r| match r {
            Record::Job(j) => Some(j.started),
            _ => None,
        })
        .max();
    assert_eq!(newest_job, Some(t0() + Duration::minutes(5 * 140)));
}

#[test]
fn a_report_out_of_bounds_is_refused_on_write_and_skipped_on_read() {
    let (_d, repo) = repo();
    let mut long = report("a", 0);
    long.interval_seconds = 365 * 86_400;
    let e = records::save(&repo, &Record::Host(long.clone())).unwrap_err();
    assert!(e.to_string().contains("interval"), "{e}");
    let mut twice = report("a", 0);
    twice.sources.push(twice.sources[0].clone());
    assert!(records::save(&repo, &Record::Host(twice)).is_err());
    let mut many = report("a", 0);
    many.sources = (0..records::MAX_HOST_SOURCES + 1)
        .map(|i| HostSource {
            name: format!("s{i}"),
            ..report("a", 0).sources[0].clone()
        })
        .collect();
    assert!(records::save(&repo, &Record::Host(many)).is_err());
    let mut wordy = report("a", 0);
    wordy.retired = Some("x".repeat(2000));
    assert!(records::save(&repo, &Record::Host(wordy)).is_err());
    let mut nameless = report("", 0);
    nameless.sources.clear();
    assert!(records::save(&repo, &Record::Host(nameless)).is_err());
    // Nothing refused was stored.
    assert!(hosts(&records::load_all(&repo).unwrap()).is_empty());
    // Written around the check (as a hostile holder of the key could): read as nothing, not as
    // a damaged record (it authenticates as a host report, so it cannot be a lock).
    records::store(&repo, &Record::Host(long)).unwrap();
    records::save(&repo, &Record::Host(report("b", 0))).unwrap();
    let (rs, bad) = records::load_checked(&repo).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let hs = hosts(&rs);
    assert_eq!(hs.len(), 1, "{hs:?}");
    assert_eq!(hs[0].host, "b");
    assert!(records::retention_lock(&repo).is_ok());
    // Compaction leaves it in place and still does not read it.
    rollup::compact(&repo, t0())
        .unwrap()
        .expect("something to fold");
    let (rs, _) = records::load_checked(&repo).unwrap();
    assert_eq!(hosts(&rs).len(), 1);
    assert_eq!(repo.storage().list(ObjectKind::Record).unwrap().len(), 2);
}
