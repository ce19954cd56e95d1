//! The service's view of the workload at one instant: what the HTTP server, `/metrics` and the
//! alerts read. The observer builds a new one after every job and every `[service] refresh`;
//! readers hold an `Arc` of the newest, so a request never reads a repository.
//!
//! Verdicts are kept as the status report has them: a source whose RPO was never measured is
//! *not met* here too (a service that has not looked yet never shows green).

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use holdfast_core::records::{DrillRecord, JobRecord, JobState};
use holdfast_policy::compliance::Verdict;
use holdfast_policy::observe::Observed;
use holdfast_policy::report::StatusReport;
use serde::Serialize;

/// How many recent job and drill records a snapshot carries (newest first).
pub const RECENT: usize = 200;

/// Everything the service knows, at `at`.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// When it was computed.
    pub at: DateTime<Utc>,
    /// This host's name (recovery points, jobs and drills of this host are the ones judged).
    pub host: String,
    /// When the service started.
    pub started: DateTime<Utc>,
    /// holdfast's version.
    pub version: String,
    /// The workload file and whether the newest reload worked.
    pub config: ConfigState,
    /// The status report (`None` until the first one is computed).
    pub status: Option<StatusReport>,
    /// Per source, flattened for metrics and alerts.
    pub sources: Vec<SourceState>,
    /// Recent job records of this host, newest first (at most [`RECENT`]).
    pub jobs: Vec<JobRecord>,
    /// Recent drill records of this host, newest first (at most [`RECENT`]).
    pub drills: Vec<DrillRecord>,
    /// Jobs running now.
    pub running: Vec<RunningJob>,
    /// The continuous replication tasks this service hosts.
    pub tasks: Vec<TaskState>,
    /// Per repository of the workload.
    pub repositories: Vec<RepoState>,
    /// Every host's sources in the workload's repositories (the fleet view), recomputed at
    /// most once a minute.
    pub fleet: Option<holdfast_policy::fleet::FleetReport>,
}

/// The workload file as loaded.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigState {
    /// The file.
    pub path: PathBuf,
    /// When the workload in use was loaded.
    pub loaded_at: DateTime<Utc>,
    /// The newest reload failed (the previous workload stays in use): why.
    pub error: Option<String>,
}

/// One source's state, from the status report and the records.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SourceState {
    /// Name.
    pub name: String,
    /// Class.
    pub class: Option<String>,
    /// `backup` or `reproduce` (none: undecided, an anti-pattern).
    pub strategy: Option<String>,
    /// RPO, seconds.
    pub rpo_seconds: Option<i64>,
    /// RTO, seconds.
    pub rto_seconds: Option<i64>,
    /// Age of the newest recovery point (continuous sources: of the window's end), seconds.
    pub point_age_seconds: Option<i64>,
    /// RPO verdict: `Some(true)` met, `Some(false)` breached or never measured, `None` does
    /// not apply.
    pub rpo_met: Option<bool>,
    /// RTO verdict, the same way.
    pub rto_met: Option<bool>,
    /// Whether the newest drill passed (`None`: never drilled).
    pub drill_passed: Option<bool>,
    /// When the newest drill started.
    pub last_drill_at: Option<DateTime<Utc>>,
    /// How long the newest drill took, seconds.
    pub last_drill_seconds: Option<f64>,
    /// When the newest job that completed (with or without warnings) started.
    pub last_success: Option<DateTime<Utc>>,
    /// When the newest failed or expired job started.
    pub last_failure: Option<DateTime<Utc>>,
    /// What the newest failed job said.
    pub last_failure_message: Option<String>,
    /// Whether the newest backup job failed (it ran after the newest success).
    pub failing: bool,
    /// How long the newest backup job took, seconds.
    pub last_job_seconds: Option<f64>,
    /// Bytes the newest backup read and added to the repository.
    pub last_job_bytes_read: Option<u64>,
    /// Bytes the newest backup added to the repository.
    pub last_job_bytes_added: Option<u64>,
    /// For a continuous source: how far its log lags behind now (age of the window's end).
    pub replication_lag_seconds: Option<i64>,
    /// What is wrong, for people.
    pub problems: Vec<String>,
}

/// A job that runs now.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunningJob {
    /// Source.
    pub source: String,
    /// `backup`, `drill` or `maintenance`.
    pub kind: String,
    /// When it started.
    pub started: DateTime<Utc>,
    /// The child process.
    pub pid: u32,
}

/// How a replication task does.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TaskHealth {
    /// Running and shipping.
    Running,
    /// It died and waits out its backoff before the next start.
    Restarting,
    /// Running, but its log has not moved on for longer than the RPO allows.
    Stalled,
}

/// One continuous replication task.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskState {
    /// Source.
    pub source: String,
    /// How it does.
    pub health: TaskHealth,
    /// Restarts since the service started.
    pub restarts: u32,
    /// Since when it is in this state.
    pub since: DateTime<Utc>,
    /// Why it last died, if it did.
    pub last_error: Option<String>,
}

/// One repository of the workload.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RepoState {
    /// Name in the workload.
    pub name: String,
    /// Whether it could be read.
    pub readable: bool,
    /// Bytes of its pack files.
    pub size_bytes: Option<u64>,
    /// Number of pack files.
    pub packs: Option<u64>,
    /// Writer sessions registered now (backups in progress, from any host).
    pub sessions: Option<u64>,
    /// Garbage-collection plans waiting to be finished.
    pub gc_plans: Option<u64>,
    /// holdfast's retention lock: recovery points younger than this many seconds are never
    /// forgotten (`None`: no lock).
    pub retention_lock_seconds: Option<i64>,
    /// The store's Object Lock: each recovery point stays whole this many seconds (`None`:
    /// none).
    pub object_lock_seconds: Option<i64>,
}

/// `Some(true)` met, `Some(false)` breached or never measured, `None` does not apply.
pub fn met(v: Verdict) -> Option<bool> {
    match v {
        Verdict::Met => Some(true),
        Verdict::Breached | Verdict::NotMeasured => Some(false),
        Verdict::NotApplicable => None,
    }
}

/// The per-source states from a status report and what was observed.
pub fn sources(report: &StatusReport, o: &Observed, now: DateTime<Utc>) -> Vec<SourceState> {
    report
        .sources
        .iter()
        .map(|row| {
            let name = row.facts.name.clone();
            let jobs = o.jobs.get(&name).map(Vec::as_slice).unwrap_or(&[]);
            let ok = |j: &&JobRecord| {
                matches!(
                    j.state,
                    JobState::Completed | JobState::CompletedWithWarnings
                )
            };
            let bad = |j: &&JobRecord| matches!(j.state, JobState::Failed | JobState::Expired);
            let last_success = jobs.iter().rev().find(ok);
            let last_failure = jobs.iter().rev().find(bad);
            let backups: Vec<&JobRecord> = jobs.iter().filter(|j| j.job == "backup").collect();
            let last_backup = backups.iter().rev().find(|j| j.state != JobState::Expired);
            let newest_point = o
                .snapshots
                .get(&name)
                .and_then(|v| v.iter().rev().find(|s| s.snapshot.complete));
            SourceState {
                class: row.facts.class.clone(),
                strategy: row.facts.strategy.map(|s| {
                    serde_json::to_value(s)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default()
                }),
                rpo_seconds: row.rpo_seconds,
                rto_seconds: row.rto_seconds,
                point_age_seconds: row.status.age_seconds,
                rpo_met: met(row.status.rpo),
                rto_met: met(row.status.rto),
                drill_passed: row.facts.last_drill.as_ref().map(|d| d.passed),
                last_drill_at: row.facts.last_drill.as_ref().map(|d| d.at),
                last_drill_seconds: row.facts.last_drill.as_ref().map(|d| d.seconds),
                last_success: last_success.map(|j| j.started),
                last_failure: last_failure.map(|j| j.started),
                last_failure_message: last_failure.and_then(|j| j.messages.first().cloned()),
                failing: last_backup.is_some_and(|j| j.state == JobState::Failed),
                last_job_seconds: last_backup.map(|j| j.seconds),
                last_job_bytes_read: newest_point.map(|s| s.snapshot.summary.bytes_read),
                last_job_bytes_added: newest_point.map(|s| s.snapshot.summary.bytes_added),
                replication_lag_seconds: row
                    .facts
                    .continuous
                    .as_ref()
                    .and_then(|c| c.window.to)
                    .map(|t| (now - t).num_seconds()),
                problems: row.status.problems.clone(),
                name,
            }
        })
        .collect()
}

/// The newest `RECENT` records of all sources, newest first.
pub fn recent<T: Clone>(
    by_source: impl Iterator<Item = Vec<T>>,
    started: impl Fn(&T) -> DateTime<Utc>,
) -> Vec<T> {
    let mut all: Vec<T> = by_source.flatten().collect();
    all.sort_by_key(|r| std::cmp::Reverse(started(r)));
    all.truncate(RECENT);
    all
}
