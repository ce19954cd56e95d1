//! Writes job and drill records into a local repository for `bench/status-records.sh`:
//! `gen_records DIR PASSWORD COUNT SOURCES (save|store) THREADS [STEP_MINUTES]`. `save` is
//! the real writer (`records::save`, which compacts); `store` writes every record as earlier
//! holdfasts did (no compaction). Records name the sources `src0..` and this host, one job a
//! minute per source from 2025-01-01 (with STEP_MINUTES: one every STEP_MINUTES, the newest
//! ending now; `bench/service.sh` writes a year that way), a failure every 97th run, a drill
//! every 200th.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use holdfast_backend_local::LocalStorage;
use holdfast_core::records::{self, DrillRecord, JobRecord, JobState, Record};
use holdfast_core::Repository;
use holdfast_storage::Storage;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (dir, pw, count, sources, mode, threads, step) = match &a[..] {
        [_, d, p, c, s, m, t] => (d, p, c, s, m, t, None),
        [_, d, p, c, s, m, t, step] => (d, p, c, s, m, t, Some(step.parse::<i64>().unwrap())),
        _ => {
            eprintln!(
                "usage: gen_records DIR PASSWORD COUNT SOURCES save|store THREADS [STEP_MINUTES]"
            );
            std::process::exit(2);
        }
    };
    let (count, sources, threads): (u64, u64, u64) = (
        count.parse().unwrap(),
        sources.parse().unwrap(),
        threads.parse().unwrap(),
    );
    let s: Arc<dyn Storage> = Arc::new(LocalStorage::new(std::path::PathBuf::from(dir)));
    let repo = Arc::new(Repository::open(s, pw.as_bytes()).expect("open the repository"));
    let host = holdfast_core::util::hostname();
    let t0 = match step {
        None => Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
        Some(m) => Utc::now() - Duration::minutes(m * (count / sources) as i64),
    };
    let step = step.unwrap_or(1);
    let save = mode == "save";
    std::thread::scope(|sc| {
        for t in 0..threads {
            let (repo, host) = (repo.clone(), host.clone());
            sc.spawn(move || {
                for i in (t..count).step_by(threads as usize) {
                    let src = format!("src{}", i % sources);
                    let run = (i / sources) as i64;
                    let started = t0 + Duration::minutes(run * step);
                    let r = if run % 200 == 199 {
                        Record::Drill(DrillRecord {
                            source: src,
                            kind: "restore".into(),
                            snapshot: None,
                            started,
                            seconds: 30.0,
                            passed: true,
                            files: 10,
                            bytes: 1000,
                            messages: vec![],
                            host: host.clone(),
                        })
                    } else {
                        Record::Job(JobRecord {
                            source: src,
                            job: "backup".into(),
                            started,
                            seconds: 2.0,
                            state: if run % 97 == 96 {
                                JobState::Failed
                            } else {
                                JobState::Completed
                            },
                            snapshot: None,
                            messages: vec![],
                            host: host.clone(),
                        })
                    };
                    if save {
                        records::save(&repo, &r).unwrap();
                    } else {
                        records::store(&repo, &r).unwrap();
                    }
                }
            });
        }
    });
}
