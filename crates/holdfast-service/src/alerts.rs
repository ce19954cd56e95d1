//! Which alerts fire now, from a snapshot (pure: a table of cases tests it).
//!
//! One alert per condition and subject, with a stable key (`rpo:SOURCE`), so the notifier can
//! tell a new alert from one that still fires. Verdicts follow the snapshot's rule: an RPO or
//! RTO never measured is *not met* and fires (a service that has not seen a recovery point
//! must not look green).

use chrono::Duration;
use serde::{Deserialize, Serialize};

use crate::snapshot::{Snapshot, TaskHealth};

/// A replication task waiting out its restart backoff longer than this fires
/// [`AlertKind::ReplicationStalled`] (a task that dies once and comes back does not).
pub const RESTARTING_ALERT_AFTER: Duration = Duration::minutes(2);

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A source's newest job failed.
    JobFailed,
    /// A source's RPO is breached.
    RpoBreached,
    /// A source's RTO is breached.
    RtoBreached,
    /// A source's newest drill failed.
    DrillFailed,
    /// A replication task makes no progress.
    ReplicationStalled,
    /// The workload file could not be reloaded.
    ConfigInvalid,
    /// A repository cannot be read.
    RepositoryUnreadable,
}

impl AlertKind {
    /// The key's prefix and the name people see (`rpo`, `job`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::JobFailed => "job",
            AlertKind::RpoBreached => "rpo",
            AlertKind::RtoBreached => "rto",
            AlertKind::DrillFailed => "drill",
            AlertKind::ReplicationStalled => "replication",
            AlertKind::ConfigInvalid => "config",
            AlertKind::RepositoryUnreadable => "repository",
        }
    }
}

/// One firing condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable identity across snapshots (`rpo:SOURCE`).
    pub key: String,
    /// What.
    pub kind: AlertKind,
    /// The source, if it is about one.
    pub source: Option<String>,
    /// One line for people.
    pub summary: String,
}

fn alert(kind: AlertKind, subject: Option<&str>, summary: String) -> Alert {
    Alert {
        key: match subject {
            Some(s) => format!("{}:{s}", kind.as_str()),
            None => kind.as_str().to_string(),
        },
        kind,
        source: None,
        summary,
    }
}

fn of_source(kind: AlertKind, source: &str, summary: String) -> Alert {
    Alert {
        source: Some(source.to_string()),
        ..alert(kind, Some(source), summary)
    }
}

fn secs(s: i64) -> String {
    holdfast_policy::duration::show(Duration::seconds(s))
}

/// The alerts firing in this snapshot, in a stable order (sources as the workload lists
/// them, then tasks, repositories and the configuration), each key at most once.
pub fn evaluate(s: &Snapshot) -> Vec<Alert> {
    let mut out = Vec::new();
    for x in &s.sources {
        let n = x.name.as_str();
        if x.failing {
            let why = x
                .last_failure_message
                .as_deref()
                .unwrap_or("no message recorded");
            out.push(of_source(
                AlertKind::JobFailed,
                n,
                format!("{n}: the newest backup failed: {why}"),
            ));
        }
        if x.rpo_met == Some(false) {
            let rpo = x.rpo_seconds.map(secs).unwrap_or_else(|| "?".into());
            let summary = match x.point_age_seconds {
                Some(age) => format!(
                    "{n}: RPO breached: the newest recovery point is {} old (RPO {rpo})",
                    secs(age)
                ),
                None => format!("{n}: RPO breached: no recovery point yet (RPO {rpo})"),
            };
            out.push(of_source(AlertKind::RpoBreached, n, summary));
        }
        if x.rto_met == Some(false) {
            let rto = x
                .rto_seconds
                .map(secs)
                .unwrap_or_else(|| "none defined for its class".into());
            let summary = match (x.drill_passed, x.last_drill_seconds) {
                (Some(true), Some(t)) => format!(
                    "{n}: RTO breached: the newest drill took {} (RTO {rto})",
                    secs(t.round() as i64)
                ),
                (Some(false), _) => {
                    format!("{n}: RTO not met: the newest drill failed (RTO {rto})")
                }
                _ => format!("{n}: RTO not measured: no drill yet (RTO {rto})"),
            };
            out.push(of_source(AlertKind::RtoBreached, n, summary));
        }
        if x.drill_passed == Some(false) {
            let at = x
                .last_drill_at
                .map(|t| format!(" (started {})", t.format("%Y-%m-%d %H:%M:%S UTC")))
                .unwrap_or_default();
            out.push(of_source(
                AlertKind::DrillFailed,
                n,
                format!("{n}: the newest restore drill failed{at}"),
            ));
        }
    }
    for t in &s.tasks {
        let n = t.source.as_str();
        let why = t
            .last_error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        let summary = match t.health {
            TaskHealth::Stalled => Some(format!(
                "{n}: replication makes no progress (its log lags more than the RPO){why}"
            )),
            TaskHealth::Restarting if s.at - t.since >= RESTARTING_ALERT_AFTER => Some(format!(
                "{n}: replication is down for {} ({} restarts){why}",
                secs((s.at - t.since).num_seconds()),
                t.restarts
            )),
            _ => None,
        };
        if let Some(summary) = summary {
            out.push(of_source(AlertKind::ReplicationStalled, n, summary));
        }
    }
    for r in s.repositories.iter().filter(|r| !r.readable) {
        let why = s
            .status
            .as_ref()
            .and_then(|st| st.unreadable.iter().find(|u| u.contains(&r.name)))
            .map(|u| format!(": {u}"))
            .unwrap_or_default();
        out.push(alert(
            AlertKind::RepositoryUnreadable,
            Some(&r.name),
            format!("repository {} cannot be read{why}", r.name),
        ));
    }
    if let Some(e) = &s.config.error {
        out.push(alert(
            AlertKind::ConfigInvalid,
            None,
            format!(
                "the workload file {} is invalid; the previous one stays in use: {e}",
                s.config.path.display()
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|a| seen.insert(a.key.clone()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{ConfigState, RepoState, SourceState, TaskState};
    use chrono::{TimeZone, Utc};

    fn src(name: &str) -> SourceState {
        SourceState {
            name: name.into(),
            class: Some("c".into()),
            strategy: Some("backup".into()),
            rpo_seconds: Some(3600),
            rto_seconds: Some(600),
            point_age_seconds: Some(60),
            rpo_met: Some(true),
            rto_met: Some(true),
            drill_passed: Some(true),
            last_drill_at: None,
            last_drill_seconds: Some(5.0),
            last_success: None,
            last_failure: None,
            last_failure_message: None,
            failing: false,
            last_job_seconds: None,
            last_job_bytes_read: None,
            last_job_bytes_added: None,
            replication_lag_seconds: None,
            problems: vec![],
        }
    }

    fn snap() -> Snapshot {
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        Snapshot {
            at,
            host: "h".into(),
            started: at,
            version: "0".into(),
            config: ConfigState {
                path: "/w.toml".into(),
                loaded_at: at,
                error: None,
            },
            status: None,
            sources: vec![src("a")],
            jobs: vec![],
            drills: vec![],
            running: vec![],
            tasks: vec![],
            repositories: vec![RepoState {
                name: "main".into(),
                readable: true,
                size_bytes: None,
                packs: None,
                sessions: None,
                gc_plans: None,
                retention_lock_seconds: None,
                object_lock_seconds: None,
            }],
            fleet: None,
        }
    }

    fn task(health: TaskHealth, for_secs: i64) -> TaskState {
        TaskState {
            source: "a".into(),
            health,
            restarts: 4,
            since: snap().at - Duration::seconds(for_secs),
            last_error: Some("replicate exited (exit status: 1)".into()),
        }
    }

    #[test]
    fn each_condition_fires_its_own_key() {
        type Case = (&'static str, fn(&mut Snapshot), Vec<&'static str>);
        let cases: Vec<Case> = vec![
            ("all well", |_| {}, vec![]),
            ("job failed", |s| s.sources[0].failing = true, vec!["job:a"]),
            (
                "rpo breached",
                |s| s.sources[0].rpo_met = Some(false),
                vec!["rpo:a"],
            ),
            (
                "rpo never measured counts",
                |s| {
                    s.sources[0].rpo_met = Some(false);
                    s.sources[0].point_age_seconds = None;
                },
                vec!["rpo:a"],
            ),
            (
                "rpo does not apply",
                |s| s.sources[0].rpo_met = None,
                vec![],
            ),
            (
                "rto breached",
                |s| s.sources[0].rto_met = Some(false),
                vec!["rto:a"],
            ),
            (
                "drill failed (and so the RTO)",
                |s| {
                    s.sources[0].drill_passed = Some(false);
                    s.sources[0].rto_met = Some(false);
                },
                vec!["rto:a", "drill:a"],
            ),
            (
                "never drilled",
                |s| s.sources[0].drill_passed = None,
                vec![],
            ),
            (
                "failing and never backed up",
                |s| {
                    s.sources[0].failing = true;
                    s.sources[0].rpo_met = Some(false);
                    s.sources[0].point_age_seconds = None;
                },
                vec!["job:a", "rpo:a"],
            ),
            (
                "replication stalled",
                |s| s.tasks = vec![task(TaskHealth::Stalled, 0)],
                vec!["replication:a"],
            ),
            (
                "replication restarting for long",
                |s| s.tasks = vec![task(TaskHealth::Restarting, 300)],
                vec!["replication:a"],
            ),
            (
                "replication restarting briefly",
                |s| s.tasks = vec![task(TaskHealth::Restarting, 5)],
                vec![],
            ),
            (
                "replication running",
                |s| s.tasks = vec![task(TaskHealth::Running, 9999)],
                vec![],
            ),
            (
                "config invalid",
                |s| s.config.error = Some("bad toml".into()),
                vec!["config"],
            ),
            (
                "repository unreadable",
                |s| s.repositories[0].readable = false,
                vec!["repository:main"],
            ),
            (
                "two sources, distinct keys",
                |s| {
                    let mut b = src("b");
                    b.failing = true;
                    s.sources[0].failing = true;
                    s.sources.push(b);
                },
                vec!["job:a", "job:b"],
            ),
            (
                "a source listed twice yields one key",
                |s| {
                    s.sources[0].failing = true;
                    let again = s.sources[0].clone();
                    s.sources.push(again);
                },
                vec!["job:a"],
            ),
        ];
        for (name, change, want) in cases {
            let mut s = snap();
            change(&mut s);
            let got: Vec<String> = evaluate(&s).into_iter().map(|a| a.key).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn summaries_name_the_cause() {
        let mut s = snap();
        s.sources[0].failing = true;
        s.sources[0].last_failure_message = Some("path data: not found".into());
        s.sources[0].rpo_met = Some(false);
        s.sources[0].point_age_seconds = None;
        s.config.error = Some("line 3: bad".into());
        let a = evaluate(&s);
        assert_eq!(a[0].kind, AlertKind::JobFailed);
        assert_eq!(a[0].source.as_deref(), Some("a"));
        assert!(a[0].summary.contains("path data: not found"), "{a:?}");
        assert!(a[1].summary.contains("no recovery point yet"), "{a:?}");
        assert_eq!(a[2].source, None);
        assert!(a[2].summary.contains("line 3: bad"), "{a:?}");
    }
}
