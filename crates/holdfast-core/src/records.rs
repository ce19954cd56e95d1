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
        match repo.load_json::<Record>(ObjectKind::Record, &o.name, AAD) {
            Ok(r) => out.push(r),
            Err(e @ Error::Corrupt { .. }) => tracing::warn!("record skipped: {e}"),
            Err(e) => return Err(e),
        }
    }
    out.sort_by_key(|r| match r {
        Record::Job(j) => j.started,
        Record::Drill(d) => d.started,
    });
    Ok(out)
}
