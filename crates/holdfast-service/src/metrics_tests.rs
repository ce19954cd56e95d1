//! Unit tests of [`super::render`] on hand-built snapshots.

use std::collections::BTreeMap;

use chrono::{Duration, TimeZone, Utc};

use super::*;
use crate::snapshot::{ConfigState, RunningJob};

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
}

fn source(name: &str) -> SourceState {
    SourceState {
        name: name.into(),
        class: Some("critical".into()),
        strategy: Some("backup".into()),
        rpo_seconds: Some(3600),
        rto_seconds: Some(600),
        point_age_seconds: Some(120),
        rpo_met: Some(true),
        rto_met: Some(true),
        drill_passed: Some(true),
        last_drill_at: Some(at() - Duration::minutes(30)),
        last_drill_seconds: Some(12.5),
        last_success: Some(at() - Duration::seconds(125)),
        last_failure: None,
        last_failure_message: None,
        failing: false,
        last_job_seconds: Some(4.25),
        last_job_bytes_read: Some(1_000_000),
        last_job_bytes_added: Some(4096),
        replication_lag_seconds: None,
        problems: vec![],
    }
}

fn snapshot() -> Snapshot {
    let never = SourceState {
        class: None,
        rpo_met: Some(false),
        rto_met: None,
        rto_seconds: None,
        point_age_seconds: None,
        drill_passed: None,
        last_drill_at: None,
        last_drill_seconds: None,
        last_success: None,
        last_failure: Some(at() - Duration::seconds(10)),
        failing: true,
        last_job_seconds: Some(0.5),
        last_job_bytes_read: None,
        last_job_bytes_added: None,
        problems: vec!["no recovery point".into(), "the newest job failed".into()],
        ..source("never")
    };
    let wal = SourceState {
        replication_lag_seconds: Some(7),
        drill_passed: Some(false),
        rto_met: Some(false),
        ..source("wal")
    };
    Snapshot {
        at: at(),
        host: "h1".into(),
        started: at() - Duration::hours(1),
        version: "0.9.0".into(),
        config: ConfigState {
            path: "/etc/holdfast.toml".into(),
            loaded_at: at() - Duration::minutes(5),
            error: None,
        },
        status: None,
        sources: vec![source("db"), never, wal],
        jobs: vec![],
        drills: vec![],
        running: ["backup", "backup", "drill"]
            .iter()
            .enumerate()
            .map(|(i, k)| RunningJob {
                source: format!("s{i}"),
                kind: k.to_string(),
                started: at(),
                pid: 100 + i as u32,
            })
            .collect(),
        tasks: vec![TaskState {
            source: "wal".into(),
            health: TaskHealth::Stalled,
            restarts: 3,
            since: at() - Duration::seconds(90),
            last_error: Some("exit 1".into()),
        }],
        repositories: vec![
            RepoState {
                name: "main".into(),
                readable: true,
                size_bytes: Some(123_456_789),
                packs: Some(42),
                sessions: Some(1),
                gc_plans: Some(0),
                retention_lock_seconds: Some(86400),
                object_lock_seconds: None,
            },
            RepoState {
                name: "offsite".into(),
                readable: false,
                size_bytes: None,
                packs: None,
                sessions: None,
                gc_plans: None,
                retention_lock_seconds: None,
                object_lock_seconds: None,
            },
        ],
        fleet: None,
    }
}

/// Samples by `name{labels}` (labels as written).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l}"));
            (k.to_string(), v.parse().unwrap_or_else(|_| panic!("{l}")))
        })
        .collect()
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> Option<f64> {
    m.get(key).copied()
}

fn src(name: &str, source: &str, class: &str) -> String {
    format!("{name}{{source=\"{source}\",class=\"{class}\",host=\"h1\"}}")
}

#[test]
fn a_met_source_exports_its_values() {
    let m = samples(&render(&snapshot()));
    let db = |n: &str| get(&m, &src(n, "db", "critical"));
    assert_eq!(db("holdfast_source_rpo_met"), Some(1.0));
    assert_eq!(db("holdfast_source_rto_met"), Some(1.0));
    assert_eq!(db("holdfast_source_rpo_seconds"), Some(3600.0));
    assert_eq!(db("holdfast_source_rto_seconds"), Some(600.0));
    assert_eq!(
        db("holdfast_source_recovery_point_age_seconds"),
        Some(120.0)
    );
    assert_eq!(
        db("holdfast_source_recovery_point_timestamp_seconds"),
        Some((at().timestamp() - 120) as f64)
    );
    assert_eq!(
        db("holdfast_source_last_success_timestamp_seconds"),
        Some((at().timestamp() - 125) as f64)
    );
    assert_eq!(db("holdfast_source_last_failure_timestamp_seconds"), None);
    assert_eq!(db("holdfast_source_failing"), Some(0.0));
    assert_eq!(db("holdfast_source_drill_passed"), Some(1.0));
    assert_eq!(db("holdfast_source_drill_duration_seconds"), Some(12.5));
    assert_eq!(
        db("holdfast_source_drill_timestamp_seconds"),
        Some((at().timestamp() - 1800) as f64)
    );
    assert_eq!(db("holdfast_source_last_job_duration_seconds"), Some(4.25));
    assert_eq!(db("holdfast_source_last_job_read_bytes"), Some(1e6));
    assert_eq!(db("holdfast_source_last_job_added_bytes"), Some(4096.0));
    assert_eq!(db("holdfast_source_replication_lag_seconds"), None);
    assert_eq!(db("holdfast_source_problems"), Some(0.0));
}

/// The worst bug is a false green: a verdict never measured is 0, and one that does not apply
/// has no sample (neither a 1 nor a 0 an alert could misread).
#[test]
fn never_measured_is_zero_and_not_applicable_is_absent() {
    let text = render(&snapshot());
    let m = samples(&text);
    let never = |n: &str| get(&m, &src(n, "never", ""));
    assert_eq!(never("holdfast_source_rpo_met"), Some(0.0));
    assert_eq!(never("holdfast_source_rto_met"), None, "{text}");
    assert_eq!(never("holdfast_source_rto_seconds"), None);
    assert_eq!(never("holdfast_source_failing"), Some(1.0));
    assert_eq!(never("holdfast_source_problems"), Some(2.0));
    assert_eq!(
        never("holdfast_source_last_failure_timestamp_seconds"),
        Some((at().timestamp() - 10) as f64)
    );
    // Never drilled, no recovery point: no made-up sample.
    for n in [
        "holdfast_source_drill_passed",
        "holdfast_source_drill_duration_seconds",
        "holdfast_source_recovery_point_age_seconds",
        "holdfast_source_recovery_point_timestamp_seconds",
        "holdfast_source_last_success_timestamp_seconds",
    ] {
        assert_eq!(never(n), None, "{n} in\n{text}");
    }
    // No source ever has a "met" without a verdict: flip every verdict to not-measured and
    // no 1 remains.
    let mut s = snapshot();
    for x in &mut s.sources {
        x.rpo_met = Some(false);
        x.rto_met = Some(false);
    }
    let m = samples(&render(&s));
    let ones: Vec<_> = m
        .iter()
        .filter(|(k, v)| k.contains("_met{") && **v != 0.0)
        .collect();
    assert!(ones.is_empty(), "{ones:?}");
}

#[test]
fn breaches_drills_and_replication_show() {
    let m = samples(&render(&snapshot()));
    let wal = |n: &str| get(&m, &src(n, "wal", "critical"));
    assert_eq!(wal("holdfast_source_rto_met"), Some(0.0));
    assert_eq!(wal("holdfast_source_drill_passed"), Some(0.0));
    assert_eq!(wal("holdfast_source_replication_lag_seconds"), Some(7.0));
    let task = |n: &str, extra: &str| get(&m, &format!("{n}{{source=\"wal\",host=\"h1\"{extra}}}"));
    let st = |s: &str| {
        task(
            "holdfast_replication_task_state",
            &format!(",state=\"{s}\""),
        )
    };
    assert_eq!(st("stalled"), Some(1.0));
    assert_eq!(st("running"), Some(0.0));
    assert_eq!(st("restarting"), Some(0.0));
    assert_eq!(task("holdfast_replication_task_restarts", ""), Some(3.0));
    assert_eq!(
        task(
            "holdfast_replication_task_state_since_timestamp_seconds",
            ""
        ),
        Some((at().timestamp() - 90) as f64)
    );
}

#[test]
fn repositories_and_the_service_itself() {
    let mut s = snapshot();
    let m = samples(&render(&s));
    let repo = |r: &str, n: &str| get(&m, &format!("{n}{{repository=\"{r}\",host=\"h1\"}}"));
    assert_eq!(repo("main", "holdfast_repository_readable"), Some(1.0));
    assert_eq!(
        repo("main", "holdfast_repository_size_bytes"),
        Some(123_456_789.0)
    );
    assert_eq!(repo("main", "holdfast_repository_packs"), Some(42.0));
    assert_eq!(
        repo("main", "holdfast_repository_writer_sessions"),
        Some(1.0)
    );
    assert_eq!(repo("main", "holdfast_repository_gc_plans"), Some(0.0));
    assert_eq!(
        repo("main", "holdfast_repository_retention_lock_seconds"),
        Some(86400.0)
    );
    assert_eq!(
        repo("main", "holdfast_repository_object_lock_seconds"),
        None
    );
    assert_eq!(repo("offsite", "holdfast_repository_readable"), Some(0.0));
    assert_eq!(repo("offsite", "holdfast_repository_size_bytes"), None);

    let svc = |n: &str| get(&m, &format!("{n}{{host=\"h1\"}}"));
    assert_eq!(
        get(&m, "holdfast_up{host=\"h1\",version=\"0.9.0\"}"),
        Some(1.0)
    );
    assert_eq!(
        svc("holdfast_service_start_time_seconds"),
        Some((at().timestamp() - 3600) as f64)
    );
    assert_eq!(
        svc("holdfast_snapshot_timestamp_seconds"),
        Some(at().timestamp() as f64)
    );
    assert_eq!(svc("holdfast_config_reload_failed"), Some(0.0));
    assert_eq!(
        svc("holdfast_config_loaded_timestamp_seconds"),
        Some((at().timestamp() - 300) as f64)
    );
    let jobs = |k: &str| {
        get(
            &m,
            &format!("holdfast_running_jobs{{host=\"h1\",kind=\"{k}\"}}"),
        )
    };
    assert_eq!(jobs("backup"), Some(2.0));
    assert_eq!(jobs("drill"), Some(1.0));
    assert_eq!(jobs("maintenance"), Some(0.0));

    s.config.error = Some("line 3: bad".into());
    let m = samples(&render(&s));
    assert_eq!(
        get(&m, "holdfast_config_reload_failed{host=\"h1\"}"),
        Some(1.0)
    );
}

/// Every metric has HELP and TYPE gauge, a holdfast_ name with its unit, and no other type
/// (counter or info lines would not parse as the classic text format).
#[test]
fn every_metric_is_described() {
    let text = render(&snapshot());
    let names = names();
    for n in &names {
        assert!(n.starts_with("holdfast_"), "{n}");
        assert!(
            text.contains(&format!("\n# HELP {n} ")) || text.starts_with(&format!("# HELP {n} ")),
            "no HELP for {n}:\n{text}"
        );
        assert!(
            text.contains(&format!("# TYPE {n} gauge\n")),
            "no TYPE for {n}"
        );
    }
    let typed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    assert_eq!(typed.len(), names.len(), "{typed:?}");
    assert!(typed.iter().all(|t| t.ends_with(" gauge")), "{typed:?}");
    // Every sample belongs to a described metric.
    for k in samples(&text).keys() {
        let name = k.split('{').next().unwrap();
        assert!(names.iter().any(|n| n == name), "undescribed sample {k}");
    }
    // The timestamps and durations say so in their names.
    for n in [
        "_timestamp",
        "_age",
        "_lag",
        "_duration",
        "_rpo",
        "_rto",
        "_lock",
    ] {
        for m in names
            .iter()
            .filter(|m| m.ends_with(n) || m.contains(&format!("{n}_")))
        {
            assert!(m.ends_with("_seconds") || m.ends_with("_met"), "{m}");
        }
    }
}

#[test]
fn label_values_are_escaped() {
    let mut s = snapshot();
    s.sources[0].name = "we\"ird\\name\nx".into();
    let text = render(&s);
    assert!(
        text.contains("holdfast_source_rpo_met{source=\"we\\\"ird\\\\name\\nx\",class=\"critical\",host=\"h1\"} 1"),
        "{text}"
    );
    assert_eq!(esc("plain"), "plain");
}

#[test]
fn an_empty_snapshot_still_says_the_service_is_up() {
    let mut s = snapshot();
    s.sources.clear();
    s.tasks.clear();
    s.repositories.clear();
    s.running.clear();
    let m = samples(&render(&s));
    assert_eq!(
        get(&m, "holdfast_up{host=\"h1\",version=\"0.9.0\"}"),
        Some(1.0)
    );
    assert!(m.keys().all(|k| !k.starts_with("holdfast_source_")));
    assert_eq!(
        get(&m, "holdfast_running_jobs{host=\"h1\",kind=\"backup\"}"),
        Some(0.0)
    );
}
