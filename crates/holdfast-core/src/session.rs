//! Writer sessions and garbage-collection plans: the two records that let backups and prune run
//! at the same time without a lock (see docs/DESIGN.md, "Garbage collection").
//!
//! A backup registers a session (`sessions/<random>`) *before* it reads the index and the plans,
//! and refreshes its heartbeat every [`HEARTBEAT`]. Prune writes a plan (`gc/<id>`) naming the
//! packs it condemns, and deletes them only when no live session started before the plan.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use holdfast_storage::{ObjectKind, PutMode};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::Repository;

/// How often a session refreshes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(60);
/// A session whose heartbeat is older than this is considered dead.
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);

/// The heartbeat interval: [`HEARTBEAT`], or shorter for tests (`HOLDFAST_TEST_HEARTBEAT_MS`, so
/// that a test can see a heartbeat rewrite a record within seconds; never longer).
fn heartbeat_interval() -> Duration {
    std::env::var("HOLDFAST_TEST_HEARTBEAT_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(HEARTBEAT, |ms| {
            Duration::from_millis(ms.max(10)).min(HEARTBEAT)
        })
}

const SESSION_AAD: &[u8] = b"holdfast session";
const PLAN_AAD: &[u8] = b"holdfast gc plan";

/// A live writer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// What it is doing.
    pub operation: String,
    /// Host.
    pub hostname: String,
    /// Process id.
    pub pid: u32,
    /// When it started.
    pub started: DateTime<Utc>,
    /// Last heartbeat.
    pub heartbeat: DateTime<Utc>,
    /// The host's boot id, so that a prune on the same host can tell the process is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The process's start time (clock ticks since boot), to tell a reused pid apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
}

/// What a writer knows about its own heartbeat.
struct Beat {
    /// When the heartbeat was last stored.
    last: Mutex<DateTime<Utc>>,
    /// Set once a gap between heartbeats was long enough for a prune to count the session
    /// dead (the process was suspended, or the store unreachable): sticky.
    lapsed: AtomicBool,
}

impl Beat {
    /// Record a stored heartbeat at `now`, first noting whether the gap since the last one
    /// could have made the session look dead.
    fn stored(&self, now: DateTime<Utc>) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if gap_may_look_dead(*last, now) {
            self.lapsed.store(true, Ordering::Release);
        }
        *last = now;
    }
}

/// Whether a heartbeat last stored at `last` may look dead to a prune at `now`: a margin of two
/// heartbeats below [`STALE_AFTER`] allows for clocks that differ.
fn gap_may_look_dead(last: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now.signed_duration_since(last)
        .to_std()
        .is_ok_and(|gap| gap + 2 * HEARTBEAT >= STALE_AFTER)
}

/// A registered session; removed when dropped.
pub struct Session {
    repo: Repository,
    name: String,
    record: SessionRecord,
    beat_state: Arc<Beat>,
    stop: Arc<AtomicBool>,
    beat: Option<JoinHandle<()>>,
}

impl Session {
    /// Register a session and start its heartbeat.
    pub fn start(repo: &Repository, operation: &str) -> Result<Session> {
        let now = Utc::now();
        let record = SessionRecord {
            operation: operation.into(),
            hostname: crate::util::hostname(),
            pid: std::process::id(),
            started: now,
            heartbeat: now,
            boot_id: crate::liveness::boot_id(),
            pid_start: crate::liveness::process_start(std::process::id()),
        };
        let name = Id::random().to_hex();
        write_session(repo, &name, &record)?;
        repo.storage().flush()?;
        let beat_state = Arc::new(Beat {
            last: Mutex::new(now),
            lapsed: AtomicBool::new(false),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (r, n, mut rec, s, b) = (
            repo.clone(),
            name.clone(),
            record.clone(),
            stop.clone(),
            beat_state.clone(),
        );
        let beat = std::thread::Builder::new()
            .name("holdfast-heartbeat".into())
            .spawn(move || {
                // Parked until the next beat; Drop unparks it, so ending a session is immediate.
                let every = heartbeat_interval();
                let mut next = std::time::Instant::now() + every;
                while !s.load(Ordering::Acquire) {
                    let now = std::time::Instant::now();
                    if now < next {
                        std::thread::park_timeout(next - now);
                        continue;
                    }
                    next = now + every;
                    rec.heartbeat = Utc::now();
                    match write_session(&r, &n, &rec) {
                        Ok(()) => b.stored(rec.heartbeat),
                        Err(e) => tracing::warn!("could not refresh session heartbeat: {e}"),
                    }
                }
            })
            .expect("spawning a thread");
        Ok(Session {
            repo: repo.clone(),
            name,
            record,
            beat_state,
            stop,
            beat: Some(beat),
        })
    }

    /// When this session started.
    pub fn started(&self) -> DateTime<Utc> {
        self.record.started
    }

    /// Whether this session may have looked dead to a prune at some point: a gap between
    /// heartbeats (or since the last one) came within two heartbeats of [`STALE_AFTER`].
    pub fn lapsed(&self) -> bool {
        self.beat_state.lapsed.load(Ordering::Acquire)
            || gap_may_look_dead(
                *self
                    .beat_state
                    .last
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()),
                Utc::now(),
            )
    }

    /// Store a heartbeat now (re-creating the record if a prune removed it) and say whether
    /// the session may have looked dead before: it lapsed, or its record was gone or stale.
    /// A writer calls this before recording a snapshot; after it, no new plan executes
    /// while the writer lives.
    pub fn refresh(&self) -> Result<bool> {
        let mut lapsed = self.lapsed();
        match self.repo.storage().get(ObjectKind::Session, &self.name) {
            Ok(raw) => {
                let rec = self
                    .repo
                    .key()
                    .decrypt(SESSION_AAD, &raw)
                    .ok()
                    .and_then(|p| serde_json::from_slice::<SessionRecord>(&p).ok());
                lapsed |= rec.is_none_or(|r| gap_may_look_dead(r.heartbeat, Utc::now()));
            }
            Err(e) if e.is_not_found() => lapsed = true,
            Err(e) => return Err(e.into()),
        }
        let mut rec = self.record.clone();
        rec.heartbeat = Utc::now();
        write_session(&self.repo, &self.name, &rec)?;
        self.repo.storage().flush()?;
        self.beat_state.stored(rec.heartbeat);
        if lapsed {
            self.beat_state.lapsed.store(true, Ordering::Release);
        }
        Ok(lapsed)
    }

    /// Test seam: pretend the last heartbeat was stored `by` earlier (a suspended process).
    #[doc(hidden)]
    pub fn backdate_heartbeat_for_tests(&self, by: Duration) {
        let mut last = self
            .beat_state
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *last -= chrono::Duration::from_std(by).expect("a short duration");
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.beat.take() {
            h.thread().unpark();
            let _ = h.join();
        }
        // A backup may hold credentials without delete permission: the ended record is then
        // left for prune, which removes it once its heartbeat is stale.
        if let Err(e) = self.repo.storage().delete(ObjectKind::Session, &self.name) {
            tracing::info!("session record {} left for prune: {e}", self.name);
        }
        let _ = self.repo.storage().flush();
    }
}

/// Largest session record a reader accepts (a few hundred bytes are written).
const MAX_SESSION_LEN: u64 = 64 << 10;

fn write_session(repo: &Repository, name: &str, rec: &SessionRecord) -> Result<()> {
    let sealed = repo
        .key()
        .encrypt(SESSION_AAD, &serde_json::to_vec(rec).expect("serializable"));
    repo.storage()
        .put(ObjectKind::Session, name, &sealed, PutMode::Overwrite)?;
    Ok(())
}

/// What garbage collection makes of one session record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A writer that may still write a snapshot: nothing it may use is deleted.
    Live,
    /// No heartbeat for [`STALE_AFTER`]: dead.
    Stale,
    /// Recorded by a process of this host (same boot) that is no longer running: dead at once.
    Gone,
    /// Cannot be read (damaged), stored less than [`STALE_AFTER`] ago: counted as live until
    /// then, in case it is a writer we cannot see.
    UnreadableRecent,
    /// Cannot be read and stored more than [`STALE_AFTER`] ago: dead (a live writer rewrites its
    /// record every [`HEARTBEAT`]).
    UnreadableOld,
    /// Cannot be read, and the store does not say when it was written: counted as live until
    /// removed with `holdfast prune --remove-unreadable-sessions`.
    UnreadableUnknownAge,
}

impl Verdict {
    /// Whether it holds back garbage collection.
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            Verdict::Live | Verdict::UnreadableRecent | Verdict::UnreadableUnknownAge
        )
    }
}

/// One session record as garbage collection sees it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Object name.
    pub name: String,
    /// The record, if it could be read.
    pub record: Option<SessionRecord>,
    /// Why it could not be read.
    pub unreadable: Option<String>,
    /// Live or dead.
    pub verdict: Verdict,
}

impl SessionInfo {
    /// One line naming the session and, for unreadable ones, what to do.
    pub fn describe(&self) -> String {
        match (&self.record, &self.unreadable) {
            (Some(s), _) => format!(
                "{} on {} (pid {}, started {})",
                s.operation, s.hostname, s.pid, s.started
            ),
            (None, why) => {
                let why = why.as_deref().unwrap_or("unreadable");
                match self.verdict {
                    Verdict::UnreadableUnknownAge => format!(
                        "the unreadable session record sessions/{} ({why}); the store does not say how old it is, so it counts as a live writer: if no backup is running, remove it with `holdfast prune --remove-unreadable-sessions`",
                        self.name
                    ),
                    _ => format!(
                        "the unreadable session record sessions/{} ({why}), counted as live until {} minutes after it was written",
                        self.name,
                        STALE_AFTER.as_secs() / 60
                    ),
                }
            }
        }
    }
}

/// Every session record with its verdict at `now`.
pub fn sessions(repo: &Repository, now: DateTime<Utc>) -> Result<Vec<SessionInfo>> {
    let mut out = Vec::new();
    for o in repo.storage().list(ObjectKind::Session)? {
        let raw = if o.size > MAX_SESSION_LEN {
            Err(format!(
                "{} bytes, more than a session record can be",
                o.size
            ))
        } else {
            match repo.storage().get(ObjectKind::Session, &o.name) {
                Ok(r) => Ok(r),
                Err(e) if e.is_not_found() => continue, // ended meanwhile
                Err(e) => return Err(e.into()),
            }
        };
        let rec = raw.and_then(|raw| {
            let plain = repo
                .key()
                .decrypt(SESSION_AAD, &raw)
                .map_err(|e| e.to_string())?;
            serde_json::from_slice::<SessionRecord>(&plain).map_err(|e| e.to_string())
        });
        let info = match rec {
            Ok(rec) => {
                let verdict = if is_stale(&rec, now) {
                    Verdict::Stale
                } else if crate::liveness::provably_gone(
                    &rec.hostname,
                    rec.boot_id.as_deref(),
                    rec.pid,
                    rec.pid_start,
                ) {
                    Verdict::Gone
                } else {
                    Verdict::Live
                };
                SessionInfo {
                    name: o.name,
                    record: Some(rec),
                    unreadable: None,
                    verdict,
                }
            }
            Err(why) => {
                let modified = match repo.storage().modified(ObjectKind::Session, &o.name) {
                    Ok(m) => m,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
                let verdict = match modified {
                    None => Verdict::UnreadableUnknownAge,
                    Some(t) => {
                        let t: DateTime<Utc> = t.into();
                        if now
                            .signed_duration_since(t)
                            .to_std()
                            .is_ok_and(|a| a >= STALE_AFTER)
                        {
                            Verdict::UnreadableOld
                        } else {
                            Verdict::UnreadableRecent
                        }
                    }
                };
                tracing::warn!(
                    "session record {} cannot be read ({why}): {:?}",
                    o.name,
                    verdict
                );
                SessionInfo {
                    name: o.name,
                    record: None,
                    unreadable: Some(why),
                    verdict,
                }
            }
        };
        out.push(info);
    }
    Ok(out)
}

fn is_stale(rec: &SessionRecord, now: DateTime<Utc>) -> bool {
    let age = now.signed_duration_since(rec.heartbeat);
    age.to_std().is_ok_and(|a| a >= STALE_AFTER)
}

/// Every session that holds back garbage collection at `now`. An unreadable record that may
/// be recent reads as a session of unknown origin that started at the beginning of time, so
/// every plan waits for it.
pub fn live_sessions(repo: &Repository, now: DateTime<Utc>) -> Result<Vec<SessionInfo>> {
    Ok(sessions(repo, now)?
        .into_iter()
        .filter(|s| s.verdict.is_live())
        .collect())
}

impl SessionInfo {
    /// When the writer started (the beginning of time if unknown).
    pub fn started(&self) -> DateTime<Utc> {
        self.record
            .as_ref()
            .map_or(DateTime::<Utc>::MIN_UTC, |r| r.started)
    }
}

/// What [`sweep_dead_sessions`] removed.
#[derive(Debug, Clone, Default)]
pub struct Swept {
    /// Records of dead writers (stale heartbeat, or a process of this host that is gone).
    pub dead: usize,
    /// Unreadable records (older than [`STALE_AFTER`], or any age when asked explicitly).
    pub unreadable: Vec<String>,
}

/// Delete the records of sessions that are dead at `now`: no heartbeat for [`STALE_AFTER`] (a
/// killed writer elsewhere, or a backup whose credentials may not delete: backup never needs
/// delete permission and leaves its ended session for the next prune), a process of this host
/// that is provably gone, and unreadable records older than [`STALE_AFTER`]. With
/// `remove_unreadable`, unreadable records of any age go too (the explicit fix for a store that
/// does not say how old they are).
pub fn sweep_dead_sessions(
    repo: &Repository,
    now: DateTime<Utc>,
    remove_unreadable: bool,
) -> Result<Swept> {
    let mut out = Swept::default();
    for s in sessions(repo, now)? {
        let unreadable = s.record.is_none();
        if !(!s.verdict.is_live() || unreadable && remove_unreadable) {
            continue;
        }
        repo.storage().delete(ObjectKind::Session, &s.name)?;
        if unreadable {
            out.unreadable.push(s.name);
        } else {
            out.dead += 1;
        }
    }
    if out.dead + out.unreadable.len() > 0 {
        repo.storage().flush()?;
    }
    Ok(out)
}

/// [`sweep_dead_sessions`] without unreadable records of unknown age; returns how many were
/// removed.
pub fn sweep_stale_sessions(repo: &Repository, now: DateTime<Utc>) -> Result<usize> {
    let s = sweep_dead_sessions(repo, now, false)?;
    Ok(s.dead + s.unreadable.len())
}

/// A prune's plan: packs to delete once no older session is alive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcPlan {
    /// When the plan was written.
    pub created: DateTime<Utc>,
    /// Packs to delete.
    pub condemned: Vec<Id>,
}

/// Store a plan; returns its id.
pub fn save_plan(repo: &Repository, plan: &GcPlan) -> Result<Id> {
    let id = repo.save_json(ObjectKind::Gc, PLAN_AAD, plan)?;
    repo.storage().flush()?;
    Ok(id)
}

/// Largest plan a reader accepts: 64 MiB holds a million condemned packs (16 TiB of 16 MiB packs).
pub const MAX_PLAN_LEN: u64 = 64 << 20;

/// A readable plan and its id.
pub type Plan = (Id, GcPlan);

/// A plan that cannot be read: its name and why.
pub type UnreadablePlan = (String, String);

/// Every plan, with its id, and the plans that cannot be read (name and reason).
///
/// A plan that cannot be read (damaged on storage, or not a plan) condemns nothing anyone can
/// read: no prune can execute it, so writers may ignore it, and prune deletes it. A storage
/// error other than "not found" is still an error (the plan may be fine).
pub fn load_plans_lenient(repo: &Repository) -> Result<(Vec<Plan>, Vec<UnreadablePlan>)> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for o in repo.storage().list(ObjectKind::Gc)? {
        let Some(id) = Id::from_hex(&o.name) else {
            continue;
        };
        if o.size > MAX_PLAN_LEN {
            bad.push((
                o.name,
                format!("{} bytes, more than a plan can be ({MAX_PLAN_LEN})", o.size),
            ));
            continue;
        }
        match repo.load_json::<GcPlan>(ObjectKind::Gc, &o.name, PLAN_AAD) {
            Ok(p) => out.push((id, p)),
            Err(Error::Storage(s)) if s.is_not_found() => continue,
            Err(e @ Error::Corrupt { .. }) => bad.push((o.name, e.to_string())),
            Err(e) => return Err(e),
        }
    }
    out.sort_by_key(|(_, p)| p.created);
    Ok((out, bad))
}

/// Every readable plan, with its id; unreadable ones are skipped with a warning that names them
/// and the fix (see [`load_plans_lenient`]).
pub fn load_plans(repo: &Repository) -> Result<Vec<(Id, GcPlan)>> {
    let (plans, bad) = load_plans_lenient(repo)?;
    for (name, why) in bad {
        tracing::warn!(
            "gc plan {name} cannot be read and is ignored ({why}); `holdfast prune` removes it"
        );
    }
    Ok(plans)
}

/// Delete the plans that cannot be read; returns their names.
pub fn remove_unreadable_plans(repo: &Repository) -> Result<Vec<String>> {
    let (_, bad) = load_plans_lenient(repo)?;
    for (name, _) in &bad {
        repo.storage().delete(ObjectKind::Gc, name)?;
    }
    if !bad.is_empty() {
        repo.storage().flush()?;
    }
    Ok(bad.into_iter().map(|(n, _)| n).collect())
}

/// Every pack that some plan condemns: writers must not deduplicate against them.
pub fn condemned_packs(repo: &Repository) -> Result<HashSet<Id>> {
    Ok(load_plans(repo)?
        .into_iter()
        .flat_map(|(_, p)| p.condemned)
        .collect())
}
