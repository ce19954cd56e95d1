//! `/metrics`: the snapshot in the Prometheus text exposition format, built with
//! `prometheus-client`.
//!
//! Every metric is a gauge named `holdfast_*` with its unit in the name (`_seconds`,
//! `_bytes`, `_timestamp_seconds` for Unix times), so the output parses both as the classic
//! text format (0.0.4, what Prometheus and `promtool check metrics` read) and as OpenMetrics.
//! Per source the labels are `source`, `class` and `host`; per repository `repository` and
//! `host`; per replication task `source` and `host`.
//!
//! Verdicts follow the snapshot: `holdfast_source_rpo_met` is 1 only when the RPO is met; a
//! verdict never measured is 0 (a service that has not looked never shows green); a verdict
//! that does not apply (no RPO, no RTO) exports no sample at all. Any other value the snapshot
//! does not know (never drilled, no recovery point) exports no sample either, rather than a
//! made-up 0 that could read as "fresh" or "fast".
//!
//! The values are those of the observation the snapshot holds (`holdfast_snapshot_timestamp_seconds`
//! says when it was made): an age is the age at that instant, and a rule that wants the age
//! now uses the `_timestamp_seconds` twin (`time() - holdfast_source_recovery_point_timestamp_seconds`),
//! which keeps growing even when the observer is stuck.

use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::snapshot::{RepoState, Snapshot, SourceState, TaskHealth, TaskState};

type Labels = Vec<(&'static str, String)>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;

/// How a metric's name ends (prometheus-client appends the unit).
#[derive(Clone, Copy)]
enum U {
    /// A count, a ratio or 1/0: no unit.
    One,
    /// Seconds (durations, and Unix times with `_timestamp` before it).
    Seconds,
    /// Bytes.
    Bytes,
}

/// One metric of a row type: name (without the unit), help, unit, and its value for a row
/// (`None`: no sample).
struct Def<T> {
    name: &'static str,
    help: &'static str,
    unit: U,
    value: fn(&T, &Snapshot) -> Option<f64>,
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// A Unix time in seconds (millisecond precision).
fn ts(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// A label value in the text format: backslash, double quote and newline escaped
/// (prometheus-client writes label values as they are).
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// The per-source metrics.
const SOURCE: &[Def<SourceState>] = &[
    Def {
        name: "holdfast_source_recovery_point_age",
        help: "Age of the newest complete recovery point (continuous sources: of the end of the recoverable window) when the snapshot was taken; no sample without one",
        unit: U::Seconds,
        value: |x, _| x.point_age_seconds.map(|v| v as f64),
    },
    Def {
        name: "holdfast_source_recovery_point_timestamp",
        help: "Unix time of the newest complete recovery point (continuous sources: the end of the recoverable window); time() minus this is its age now",
        unit: U::Seconds,
        value: |x, s| x.point_age_seconds.map(|a| ts(s.at) - a as f64),
    },
    Def {
        name: "holdfast_source_rpo",
        help: "Recovery point objective of the source's class",
        unit: U::Seconds,
        value: |x, _| x.rpo_seconds.map(|v| v as f64),
    },
    Def {
        name: "holdfast_source_rto",
        help: "Recovery time objective of the source's class",
        unit: U::Seconds,
        value: |x, _| x.rto_seconds.map(|v| v as f64),
    },
    Def {
        name: "holdfast_source_rpo_met",
        help: "1 if the RPO is met, 0 if it is breached or was never measured; no sample if the source has no RPO",
        unit: U::One,
        value: |x, _| x.rpo_met.map(flag),
    },
    Def {
        name: "holdfast_source_rto_met",
        help: "1 if the newest drill shows the RTO is met, 0 if it is breached or was never measured; no sample if the source has no RTO",
        unit: U::One,
        value: |x, _| x.rto_met.map(flag),
    },
    Def {
        name: "holdfast_source_last_success_timestamp",
        help: "Unix time the newest job that completed (with or without warnings) started",
        unit: U::Seconds,
        value: |x, _| x.last_success.map(ts),
    },
    Def {
        name: "holdfast_source_last_failure_timestamp",
        help: "Unix time the newest failed or expired job started",
        unit: U::Seconds,
        value: |x, _| x.last_failure.map(ts),
    },
    Def {
        name: "holdfast_source_failing",
        help: "1 if the newest backup job failed, 0 otherwise",
        unit: U::One,
        value: |x, _| Some(flag(x.failing)),
    },
    Def {
        name: "holdfast_source_drill_passed",
        help: "1 if the newest restore drill passed, 0 if it failed; no sample if never drilled",
        unit: U::One,
        value: |x, _| x.drill_passed.map(flag),
    },
    Def {
        name: "holdfast_source_drill_duration",
        help: "How long the newest restore drill took",
        unit: U::Seconds,
        value: |x, _| x.last_drill_seconds,
    },
    Def {
        name: "holdfast_source_drill_timestamp",
        help: "Unix time the newest restore drill started",
        unit: U::Seconds,
        value: |x, _| x.last_drill_at.map(ts),
    },
    Def {
        name: "holdfast_source_replication_lag",
        help: "Continuous sources: how far the shipped log lags behind the snapshot's time",
        unit: U::Seconds,
        value: |x, _| x.replication_lag_seconds.map(|v| v as f64),
    },
    Def {
        name: "holdfast_source_last_job_duration",
        help: "How long the newest backup job took",
        unit: U::Seconds,
        value: |x, _| x.last_job_seconds,
    },
    Def {
        name: "holdfast_source_last_job_read",
        help: "Bytes the newest recovery point's backup read from the source",
        unit: U::Bytes,
        value: |x, _| x.last_job_bytes_read.map(|v| v as f64),
    },
    Def {
        name: "holdfast_source_last_job_added",
        help: "Bytes the newest recovery point's backup added to the repository",
        unit: U::Bytes,
        value: |x, _| x.last_job_bytes_added.map(|v| v as f64),
    },
    Def {
        name: "holdfast_source_problems",
        help: "Number of problems the status report lists for the source",
        unit: U::One,
        value: |x, _| Some(x.problems.len() as f64),
    },
];

/// The per-replication-task metrics (besides the state set).
const TASK: &[Def<TaskState>] = &[
    Def {
        name: "holdfast_replication_task_restarts",
        help: "Times the replication task was restarted since the service started",
        unit: U::One,
        value: |x, _| Some(x.restarts as f64),
    },
    Def {
        name: "holdfast_replication_task_state_since_timestamp",
        help: "Unix time the replication task entered its current state",
        unit: U::Seconds,
        value: |x, _| Some(ts(x.since)),
    },
];

/// The per-repository metrics.
const REPOSITORY: &[Def<RepoState>] = &[
    Def {
        name: "holdfast_repository_readable",
        help: "1 if the repository could be read at the snapshot, 0 if not",
        unit: U::One,
        value: |x, _| Some(flag(x.readable)),
    },
    Def {
        name: "holdfast_repository_size",
        help: "Bytes of the repository's pack files",
        unit: U::Bytes,
        value: |x, _| x.size_bytes.map(|v| v as f64),
    },
    Def {
        name: "holdfast_repository_packs",
        help: "Number of pack files in the repository",
        unit: U::One,
        value: |x, _| x.packs.map(|v| v as f64),
    },
    Def {
        name: "holdfast_repository_writer_sessions",
        help: "Writer sessions registered in the repository now (backups in progress, from any host)",
        unit: U::One,
        value: |x, _| x.sessions.map(|v| v as f64),
    },
    Def {
        name: "holdfast_repository_gc_plans",
        help: "Garbage-collection plans waiting to be finished",
        unit: U::One,
        value: |x, _| x.gc_plans.map(|v| v as f64),
    },
    Def {
        name: "holdfast_repository_retention_lock",
        help: "holdfast's retention lock: recovery points younger than this are never forgotten; no sample without a lock",
        unit: U::Seconds,
        value: |x, _| x.retention_lock_seconds.map(|v| v as f64),
    },
    Def {
        name: "holdfast_repository_object_lock",
        help: "The store's Object Lock: each recovery point stays whole this long; no sample without one",
        unit: U::Seconds,
        value: |x, _| x.object_lock_seconds.map(|v| v as f64),
    },
];

/// The service's own metrics (one sample each, label `host`).
const SERVICE: &[Def<()>] = &[
    Def {
        name: "holdfast_service_start_time",
        help: "Unix time the service started",
        unit: U::Seconds,
        value: |_, s| Some(ts(s.started)),
    },
    Def {
        name: "holdfast_snapshot_timestamp",
        help: "Unix time of the observation every other metric comes from; time() minus this is the age of the data (a stuck observer shows here)",
        unit: U::Seconds,
        value: |_, s| Some(ts(s.at)),
    },
    Def {
        name: "holdfast_config_reload_failed",
        help: "1 if the newest reload of the workload file failed (the previous workload stays in use), 0 otherwise",
        unit: U::One,
        value: |_, s| Some(flag(s.config.error.is_some())),
    },
    Def {
        name: "holdfast_config_loaded_timestamp",
        help: "Unix time the workload in use was loaded",
        unit: U::Seconds,
        value: |_, s| Some(ts(s.config.loaded_at)),
    },
];

/// The kinds of job the service runs (`holdfast_running_jobs` has a sample for each).
pub const JOB_KINDS: [&str; 3] = ["backup", "drill", "maintenance"];

/// The replication task states (`holdfast_replication_task_state` has a sample for each).
pub const TASK_STATES: [(TaskHealth, &str); 3] = [
    (TaskHealth::Running, "running"),
    (TaskHealth::Restarting, "restarting"),
    (TaskHealth::Stalled, "stalled"),
];

struct Out {
    reg: Registry,
}

impl Out {
    fn family(&mut self, name: &str, help: &str, unit: U) -> Gauges {
        let f = Gauges::default();
        match unit {
            U::One => self.reg.register(name, help, f.clone()),
            U::Seconds => self
                .reg
                .register_with_unit(name, help, Unit::Seconds, f.clone()),
            U::Bytes => self
                .reg
                .register_with_unit(name, help, Unit::Bytes, f.clone()),
        }
        f
    }

    /// Register `defs` and set each one's value for every row that has one.
    fn rows<T>(
        &mut self,
        s: &Snapshot,
        defs: &[Def<T>],
        rows: &[T],
        labels: impl Fn(&T) -> Labels,
    ) {
        for d in defs {
            let f = self.family(d.name, d.help, d.unit);
            for r in rows {
                if let Some(v) = (d.value)(r, s) {
                    f.get_or_create(&labels(r)).set(v);
                }
            }
        }
    }
}

/// The snapshot in the Prometheus text exposition format.
pub fn render(s: &Snapshot) -> String {
    let mut out = Out {
        reg: Registry::default(),
    };
    let host = esc(&s.host);
    let h = || vec![("host", host.clone())];
    let up = out.family(
        "holdfast_up",
        "Always 1 while the service answers; labels name its version and host (absent or up == 0 means the service is down)",
        U::One,
    );
    up.get_or_create(&vec![("host", host.clone()), ("version", esc(&s.version))])
        .set(1.0);
    out.rows(s, SERVICE, &[()], |_| h());
    let running = out.family(
        "holdfast_running_jobs",
        "Jobs the service runs now, by kind (backup, drill, maintenance)",
        U::One,
    );
    for kind in JOB_KINDS {
        let n = s.running.iter().filter(|j| j.kind == kind).count();
        let mut l = h();
        l.push(("kind", kind.to_string()));
        running.get_or_create(&l).set(n as f64);
    }
    out.rows(s, SOURCE, &s.sources, |x| {
        vec![
            ("source", esc(&x.name)),
            ("class", esc(x.class.as_deref().unwrap_or(""))),
            ("host", host.clone()),
        ]
    });
    let task_labels = |x: &TaskState| vec![("source", esc(&x.source)), ("host", host.clone())];
    let state = out.family(
        "holdfast_replication_task_state",
        "1 for the replication task's current state (running, restarting: died and waits out its backoff, stalled: runs but its log does not move on), 0 for the others",
        U::One,
    );
    for t in &s.tasks {
        for (health, name) in TASK_STATES {
            let mut l = task_labels(t);
            l.push(("state", name.to_string()));
            state.get_or_create(&l).set(flag(t.health == health));
        }
    }
    out.rows(s, TASK, &s.tasks, task_labels);
    out.rows(s, REPOSITORY, &s.repositories, |x| {
        vec![("repository", esc(&x.name)), ("host", host.clone())]
    });
    let mut text = String::new();
    if let Err(e) = encode(&mut text, &out.reg) {
        tracing::error!("cannot encode the metrics: {e}");
    }
    text
}

/// Every metric name [`render`] can export (with its unit suffix), for the documentation test.
pub fn names() -> Vec<String> {
    fn full<T>(d: &Def<T>) -> String {
        match d.unit {
            U::One => d.name.to_string(),
            U::Seconds => format!("{}_seconds", d.name),
            U::Bytes => format!("{}_bytes", d.name),
        }
    }
    let mut v = vec![
        "holdfast_up".to_string(),
        "holdfast_running_jobs".into(),
        "holdfast_replication_task_state".into(),
    ];
    v.extend(SERVICE.iter().map(full));
    v.extend(SOURCE.iter().map(full));
    v.extend(TASK.iter().map(full));
    v.extend(REPOSITORY.iter().map(full));
    v
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
