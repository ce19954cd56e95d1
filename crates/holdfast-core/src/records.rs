//! Job and drill records (`records/<id>`, encrypted JSON): what `protect` ran and what restore
//! drills measured. Stored in the repository, so every host that can read it sees the same truth.

use chrono::{DateTime, Utc};
use holdfast_storage::ObjectKind;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::Repository;

/// Associated data of every record (rollups too).
pub(crate) const AAD: &[u8] = b"holdfast record";

/// The `type` of every record this holdfast reads.
pub(crate) const KNOWN_TYPES: [&str; 5] =
    ["job", "drill", "retention_lock", "object_locks", "host"];

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
    ObjectLocks(LockRecord),
    /// A host's report on itself (a heartbeat): its sources, their objectives and its verdicts.
    Host(HostReport),
}

/// Sources a host report may name.
pub const MAX_HOST_SOURCES: usize = 4096;
/// Bytes of any name in a host report (host, source, class, strategy, program).
pub const MAX_HOST_NAME: usize = 256;
/// The longest interval a host report may announce (a longer one is refused, so a report
/// cannot keep its host looking alive for a year).
pub const MAX_HOST_INTERVAL_SECONDS: i64 = 7 * 86_400;

/// What a host writes about itself into every repository its sources use, at every run of
/// `protect` and every `[service] heartbeat`: the fleet view (`status --all-hosts`) judges every
/// host's sources from the repository alone with it, and a host whose newest report is overdue
/// has stopped reporting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    /// The host (`util::hostname`, `HOLDFAST_HOSTNAME`).
    pub host: String,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// Seconds until the next report is due.
    pub interval_seconds: i64,
    /// The writer, e.g. `holdfast 0.1.0`.
    pub program: String,
    /// The host's sources whose recovery points go to (or are copied to) this repository.
    pub sources: Vec<HostSource>,
    /// Set when this report retires the host (`holdfast retire-host`): who retired it and why.
    /// The fleet view stops judging it until the host writes anything newer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<String>,
}

/// One source of a host report: what another host needs to judge it from the repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSource {
    /// Source name (its recovery points and records carry it, with the host).
    pub name: String,
    /// Class name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Strategy (`backup`, `continuous`, `reproduce`, ...), if declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Whether any host's recovery points of this source count (the workload's `shared`).
    #[serde(default)]
    pub shared: bool,
    /// RPO in seconds.
    #[serde(default)]
    pub rpo_seconds: Option<i64>,
    /// RTO in seconds.
    #[serde(default)]
    pub rto_seconds: Option<i64>,
    /// Required drill frequency in seconds.
    #[serde(default)]
    pub drill_every_seconds: Option<i64>,
    /// Whether it is protected continuously (a change log shipped between base backups).
    #[serde(default)]
    pub continuous: bool,
    /// For a continuous source, the end of its recoverable window as the host measured it
    /// (its recovery point; the base backups alone understate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recoverable_to: Option<DateTime<Utc>>,
    /// The host's own RPO verdict at `at` (`None`: not applicable; not measured is `false`).
    #[serde(default)]
    pub rpo_met: Option<bool>,
    /// The host's own RTO verdict at `at`.
    #[serde(default)]
    pub rto_met: Option<bool>,
}

impl HostReport {
    /// Whether the report is within bounds (it is authenticated, yet read as possibly hostile):
    /// names short and non-empty, sources few and distinct, the interval positive and at most
    /// [`MAX_HOST_INTERVAL_SECONDS`], durations not negative.
    pub fn check(&self) -> std::result::Result<(), String> {
        let name = |what: &str, s: &str| {
            if s.is_empty() || s.len() > MAX_HOST_NAME || s.chars().any(char::is_control) {
                Err(format!(
                    "its {what} {:?} is empty, longer than {MAX_HOST_NAME} bytes or has control characters",
                    s.chars().take(40).collect::<String>()
                ))
            } else {
                Ok(())
            }
        };
        name("host", &self.host)?;
        name("program", &self.program)?;
        if self
            .retired
            .as_ref()
            .is_some_and(|r| r.len() > 4 * MAX_HOST_NAME)
        {
            return Err(format!(
                "its retirement reason is longer than {} bytes",
                4 * MAX_HOST_NAME
            ));
        }
        if !(1..=MAX_HOST_INTERVAL_SECONDS).contains(&self.interval_seconds) {
            return Err(format!(
                "its interval of {} s is not between 1 s and {MAX_HOST_INTERVAL_SECONDS} s",
                self.interval_seconds
            ));
        }
        if self.sources.len() > MAX_HOST_SOURCES {
            return Err(format!(
                "it names {} sources, more than {MAX_HOST_SOURCES}",
                self.sources.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.sources {
            name("source", &s.name)?;
            for v in [&s.class, &s.strategy].into_iter().flatten() {
                name("class or strategy", v)?;
            }
            if !seen.insert(s.name.as_str()) {
                return Err(format!("it names source {:?} twice", s.name));
            }
            let durations = [s.rpo_seconds, s.rto_seconds, s.drill_every_seconds];
            if durations.into_iter().flatten().any(|d| d < 0) {
                return Err(format!("source {:?} has a negative objective", s.name));
            }
        }
        Ok(())
    }
}

/// What one extension locked: each object and until when (Unix seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockRecord {
    /// When the extension ran.
    pub at: DateTime<Utc>,
    /// The mode used.
    pub mode: String,
    /// Objects (kind name, object name, locked until).
    pub objects: Vec<(String, String, i64)>,
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

/// Everything known about retention locks, readable or not.
#[derive(Debug, Clone, Default)]
pub struct LockState {
    /// The strongest lock held by a readable record.
    pub lock: Option<RetentionLock>,
    /// Records that cannot be read (`record NAME is damaged: ...`): any of them may be a lock.
    pub unreadable: Vec<String>,
    /// What the history says about locks.
    pub audit: crate::history::Audit,
}

impl LockState {
    /// The history records a stronger lock than any readable record holds: the lock record
    /// was deleted or replaced.
    pub fn lock_record_lost(&self) -> Option<String> {
        if let Some(h) = &self.audit.retention_lock {
            let held = self.lock.as_ref();
            let weaker = held.is_none_or(|l| {
                l.min_age_seconds < h.min_age_seconds || (h.compliance && !l.compliance)
            });
            if weaker {
                return Some(format!(
                    "the history records a retention lock of {} days{} (set {}), but no readable record holds it: the lock record was deleted or replaced. Set it again with `holdfast retention-lock --min-age {}d{}`",
                    h.min_age_seconds / 86_400,
                    if h.compliance { " in compliance mode" } else { "" },
                    h.set_at.format("%Y-%m-%d %H:%M UTC"),
                    (h.min_age_seconds + 86_399) / 86_400,
                    if h.compliance { " --compliance" } else { "" },
                ));
            }
        }
        None
    }

    /// Why the lock in force cannot be known, if it cannot: an unreadable record, a history that
    /// records a stronger lock than the records hold (the lock record was deleted), or damaged,
    /// missing or rolled-back history entries (one may have recorded a lock).
    pub fn unverifiable(&self) -> Option<String> {
        if let Some(u) = self.unreadable.first() {
            return Some(format!(
                "{u} ({} unreadable record(s) in all); it may be a retention lock. Restore it from a copy of the repository or the store's object versions; if you know it is not a lock, delete it from records/ and set the lock again with `holdfast retention-lock --min-age ...`",
                self.unreadable.len()
            ));
        }
        if let Some(m) = self.lock_record_lost() {
            return Some(m);
        }
        let a = &self.audit;
        if !a.damaged.is_empty() || !a.missing.is_empty() || a.rolled_back.is_some() {
            return Some(format!(
                "the history is damaged or cut ({}), and a lost entry may have recorded a retention lock: run `holdfast check`; after investigating, `holdfast history --accept-loss`",
                a.errors().into_iter().find(|e| !e.starts_with("snapshot ")).unwrap_or_default()
            ));
        }
        None
    }

    /// The strongest lock known from readable records and the history together (for refusing
    /// to lower a compliance lock even when its record was deleted).
    pub fn strongest(&self) -> Option<(i64, bool)> {
        let r = self
            .lock
            .as_ref()
            .map(|l| (l.min_age_seconds, l.compliance));
        let h = self
            .audit
            .retention_lock
            .map(|l| (l.min_age_seconds, l.compliance));
        match (r, h) {
            (Some(a), Some(b)) => Some((a.0.max(b.0), a.1 || b.1)),
            (a, b) => a.or(b),
        }
    }
}

/// Read every record and the history's lock events.
pub fn lock_state(repo: &Repository) -> Result<LockState> {
    let (records, unreadable) = load_checked(repo)?;
    Ok(lock_state_of(
        &records,
        unreadable,
        crate::history::audit(repo)?,
    ))
}

/// The lock state from records and a history audit already read (so that `status` reads each
/// once).
pub fn lock_state_of(
    records: &[Record],
    unreadable: Vec<String>,
    audit: crate::history::Audit,
) -> LockState {
    let mut best: Option<RetentionLock> = None;
    for r in records {
        if let Record::RetentionLock(l) = r {
            let l = l.clone();
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
    LockState {
        lock: best,
        unreadable,
        audit,
    }
}

impl LockState {
    /// The lock in force, or [`Error::RetentionLockUnverifiable`] when it cannot be known.
    pub fn in_force(&self) -> Result<Option<RetentionLock>> {
        if let Some(detail) = self.unverifiable() {
            return Err(Error::RetentionLockUnverifiable { detail });
        }
        Ok(self.lock.clone())
    }
}

/// The strongest retention lock in force: the largest minimum age, compliance if any
/// compliance lock exists. Fails closed ([`Error::RetentionLockUnverifiable`]) when the lock in
/// force cannot be known (see [`LockState::unverifiable`]).
pub fn retention_lock(repo: &Repository) -> Result<Option<RetentionLock>> {
    lock_state(repo)?.in_force()
}

/// Set a retention lock. Locks only ever add up: a new lock below the one in force is refused
/// when that one is in compliance mode (as known from the records or the history), and
/// otherwise the strongest still wins. Setting a lock is also the fix when its record was lost.
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
    let st = lock_state(repo)?;
    if let Some((cur, true)) = st.strongest() {
        if min_age_seconds < cur {
            return Err(Error::Refused(format!(
                "the repository has a compliance-mode retention lock of {} days, which cannot be lowered",
                cur / 86_400
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
    crate::history::append(
        repo,
        vec![crate::history::Event::RetentionLockSet {
            min_age_seconds,
            compliance,
        }],
    )?;
    Ok(lock_state(repo)?.lock.unwrap_or(l))
}

/// Store a record. After a job, drill or host record, compacts `records/` when it is due
/// ([`crate::rollup::compact_if_due`]); a compaction that fails leaves the record stored and
/// is only a warning (the next write tries again).
pub fn save(repo: &Repository, r: &Record) -> Result<Id> {
    if let Record::Host(h) = r {
        h.check()
            .map_err(|e| Error::Invalid(format!("host report of {:?}: {e}", h.host)))?;
    }
    let id = store(repo, r)?;
    if matches!(r, Record::Job(_) | Record::Drill(_) | Record::Host(_)) {
        if let Err(e) = crate::rollup::compact_if_due(repo, Utc::now()) {
            tracing::warn!("the records were not compacted: {e}");
        }
    }
    Ok(id)
}

/// Store a record durably and nothing else: what [`save`] did before compaction (the
/// benchmark uses it to build a repository as earlier holdfasts left it).
pub fn store(repo: &Repository, r: &Record) -> Result<Id> {
    let id = repo.save_json(ObjectKind::Record, AAD, r)?;
    repo.storage().flush()?;
    Ok(id)
}

/// Load every record (damaged ones are skipped with a warning), oldest first.
pub fn load_all(repo: &Repository) -> Result<Vec<Record>> {
    let (out, bad) = load_checked(repo)?;
    for b in bad {
        tracing::warn!("record skipped: {b}");
    }
    Ok(out)
}

/// Load every record, oldest first (the jobs, drills and host reports of the live rollups
/// included), and
/// say which objects cannot be read (`record NAME is damaged: ...`): damaged, written with
/// another key, or not a record this holdfast knows. Reads the rollups and the records they do
/// not cover ([`crate::rollup::load`]): a bounded number however long the repository lived.
pub fn load_checked(repo: &Repository) -> Result<(Vec<Record>, Vec<String>)> {
    let l = crate::rollup::load(repo)?;
    let mut out = l.records();
    out.sort_by_key(|r| match r {
        Record::Job(j) => j.started,
        Record::Drill(d) => d.started,
        Record::RetentionLock(l) => l.set_at,
        Record::ObjectLocks(l) => l.at,
        Record::Host(h) => h.at,
    });
    Ok((out, l.unreadable))
}
