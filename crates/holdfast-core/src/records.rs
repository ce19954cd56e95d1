//! Job and drill records (`records/<id>`, encrypted JSON): what `protect` ran and what restore
//! drills measured. Stored in the repository, so every host that can read it sees the same truth.

use chrono::{DateTime, Utc};
use holdfast_storage::ObjectKind;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::Repository;

const AAD: &[u8] = b"holdfast record";

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Everything was done.
    Completed,
    /// Done, but something was skipped (the recovery point is incomplete).
    CompletedWithWarnings,
    /// Nothing usable was produced.
    Failed,
    /// The job was due but did not start before its deadline (the host was off or asleep).
    Expired,
}

/// One job run by `protect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Source name.
    pub source: String,
    /// "backup", "retention", "copy", ...
    pub job: String,
    /// When it started (or, for an expired job, when it was due).
    pub started: DateTime<Utc>,
    /// Duration in seconds.
    pub seconds: f64,
    /// Outcome.
    pub state: JobState,
    /// Snapshot produced, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// What went wrong or was skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<String>,
    /// Host that ran it.
    pub host: String,
}

/// One restore or reproduction drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// Source name.
    pub source: String,
    /// "restore" or "reproduce".
    pub kind: String,
    /// Snapshot restored (restore drills).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// When it started.
    pub started: DateTime<Utc>,
    /// Seconds from start to validated.
    pub seconds: f64,
    /// Whether every check passed.
    pub passed: bool,
    /// Files validated.
    pub files: u64,
    /// Bytes validated.
    pub bytes: u64,
    /// What was checked and what failed.
    #[serde(default)]
    pub messages: Vec<String>,
    /// Host that ran it.
    pub host: String,
}

/// A record of either kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A job.
    Job(JobRecord),
    /// A drill.
    Drill(DrillRecord),
    /// A retention lock setting.
    RetentionLock(RetentionLock),
    /// Object Lock extensions made on the store.
    ObjectLocks(crate::objlock::LockRecord),
}

/// A minimum retention that `forget` never goes below (REL09-BP02). In compliance mode it can
/// never be lowered or removed through holdfast. It is enforced by holdfast: a principal with
/// delete permission on the store can still delete objects, which only the store's own object
/// lock prevents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetentionLock {
    /// Snapshots younger than this many seconds are never forgotten.
    pub min_age_seconds: i64,
    /// Whether the lock may never be lowered.
    pub compliance: bool,
    /// When it was set.
    pub set_at: DateTime<Utc>,
    /// Host that set it.
    pub host: String,
}

/// The strongest retention lock in force: the largest minimum age, compliance if any
/// compliance lock exists.
pub fn retention_lock(repo: &Repository) -> Result<Option<RetentionLock>> {
    let mut best: Option<RetentionLock> = None;
    for r in load_all(repo)? {
        if let Record::RetentionLock(l) = r {
            best = Some(match best {
                None => l,
                Some(b) => RetentionLock {
                    min_age_seconds: b.min_age_seconds.max(l.min_age_seconds),
                    compliance: b.compliance || l.compliance,
                    set_at: b.set_at.max(l.set_at),
                    host: l.host,
                },
            });
        }
    }
    Ok(best)
}

/// Set a retention lock. Locks only ever add up: a new lock below the one in force is refused
/// when that one is in compliance mode, and otherwise the strongest still wins.
pub fn set_retention_lock(
    repo: &Repository,
    min_age_seconds: i64,
    compliance: bool,
    now: DateTime<Utc>,
) -> Result<RetentionLock> {
    if min_age_seconds <= 0 {
        return Err(Error::Invalid(
            "a retention lock needs a positive minimum age".into(),
        ));
    }
    if let Some(cur) = retention_lock(repo)? {
        if cur.compliance && min_age_seconds < cur.min_age_seconds {
            return Err(Error::Refused(format!(
                "the repository has a compliance-mode retention lock of {} days, which cannot be lowered",
                cur.min_age_seconds / 86_400
            )));
        }
    }
    let l = RetentionLock {
        min_age_seconds,
        compliance,
        set_at: now,
        host: crate::util::hostname(),
    };
    save(repo, &Record::RetentionLock(l.clone()))?;
    Ok(retention_lock(repo)?.unwrap_or(l))
}

/// Store a record.
pub fn save(repo: &Repository, r: &Record) -> Result<Id> {
    let id = repo.save_json(ObjectKind::Record, AAD, r)?;
    repo.storage().flush()?;
    Ok(id)
}

/// Load every record (damaged ones are skipped with a warning), oldest first.
pub fn load_all(repo: &Repository) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for o in repo.storage().list(ObjectKind::Record)? {
        match repo.load_json_listed::<Record>(ObjectKind::Record, &o.name, o.size, AAD) {
            Ok(r) => out.push(r),
            Err(e @ Error::Corrupt { .. }) => tracing::warn!("record skipped: {e}"),
            Err(Error::Storage(e)) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        }
    }
    out.sort_by_key(|r| match r {
        Record::Job(j) => j.started,
        Record::Drill(d) => d.started,
        Record::RetentionLock(l) => l.set_at,
        Record::ObjectLocks(l) => l.at,
    });
    Ok(out)
}
