//! Writer sessions and garbage-collection plans: the two records that let backups and prune run
//! at the same time without a lock (see docs/DESIGN.md, "Garbage collection").
//!
//! A backup registers a session (`sessions/<random>`) *before* it reads the index and the plans,
//! and refreshes its heartbeat every [`HEARTBEAT`]. Prune writes a plan (`gc/<id>`) naming the
//! packs it condemns, and deletes them only when no live session started before the plan.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
}

/// A registered session; removed when dropped.
pub struct Session {
    repo: Repository,
    name: String,
    record: SessionRecord,
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
        };
        let name = Id::random().to_hex();
        write_session(repo, &name, &record)?;
        repo.storage().flush()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (r, n, mut rec, s) = (repo.clone(), name.clone(), record.clone(), stop.clone());
        let beat = std::thread::Builder::new()
            .name("holdfast-heartbeat".into())
            .spawn(move || {
                // Parked until the next beat; Drop unparks it, so ending a session is immediate.
                let mut next = std::time::Instant::now() + HEARTBEAT;
                while !s.load(Ordering::Acquire) {
                    let now = std::time::Instant::now();
                    if now < next {
                        std::thread::park_timeout(next - now);
                        continue;
                    }
                    next = now + HEARTBEAT;
                    rec.heartbeat = Utc::now();
                    if let Err(e) = write_session(&r, &n, &rec) {
                        tracing::warn!("could not refresh session heartbeat: {e}");
                    }
                }
            })
            .expect("spawning a thread");
        Ok(Session {
            repo: repo.clone(),
            name,
            record,
            stop,
            beat: Some(beat),
        })
    }

    /// When this session started.
    pub fn started(&self) -> DateTime<Utc> {
        self.record.started
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

fn write_session(repo: &Repository, name: &str, rec: &SessionRecord) -> Result<()> {
    let sealed = repo
        .key()
        .encrypt(SESSION_AAD, &serde_json::to_vec(rec).expect("serializable"));
    repo.storage()
        .put(ObjectKind::Session, name, &sealed, PutMode::Overwrite)?;
    Ok(())
}

/// Every session record, by name. An unreadable record reads as a live session of unknown
/// origin (`None`), so that nothing is deleted under a writer we cannot see.
fn all_sessions(repo: &Repository) -> Result<Vec<(String, Option<SessionRecord>)>> {
    let mut out = Vec::new();
    for o in repo.storage().list(ObjectKind::Session)? {
        let raw = match repo.storage().get(ObjectKind::Session, &o.name) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => continue, // ended meanwhile
            Err(e) => return Err(e.into()),
        };
        let rec = repo
            .key()
            .decrypt(SESSION_AAD, &raw)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok());
        if rec.is_none() {
            tracing::warn!(
                "session record {} is unreadable; treating it as live",
                o.name
            );
        }
        out.push((o.name, rec));
    }
    Ok(out)
}

fn is_stale(rec: &SessionRecord, now: DateTime<Utc>) -> bool {
    let age = now.signed_duration_since(rec.heartbeat);
    age.to_std().is_ok_and(|a| a >= STALE_AFTER)
}

/// Every session whose heartbeat is fresh at `now`.
pub fn live_sessions(repo: &Repository, now: DateTime<Utc>) -> Result<Vec<SessionRecord>> {
    Ok(all_sessions(repo)?
        .into_iter()
        .map(|(_, rec)| {
            rec.unwrap_or_else(|| SessionRecord {
                operation: "unknown".into(),
                hostname: "?".into(),
                pid: 0,
                started: DateTime::<Utc>::MIN_UTC,
                heartbeat: now,
            })
        })
        .filter(|rec| !is_stale(rec, now))
        .collect())
}

/// Delete the records of sessions that are dead at `now` (no heartbeat for [`STALE_AFTER`]):
/// a killed writer, or a backup whose credentials may not delete (backup never needs delete
/// permission; it leaves its ended session for the next prune). Returns how many were removed.
pub fn sweep_stale_sessions(repo: &Repository, now: DateTime<Utc>) -> Result<usize> {
    let mut n = 0;
    for (name, rec) in all_sessions(repo)? {
        if rec.is_some_and(|r| is_stale(&r, now)) {
            repo.storage().delete(ObjectKind::Session, &name)?;
            n += 1;
        }
    }
    if n > 0 {
        repo.storage().flush()?;
    }
    Ok(n)
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

/// Every plan, with its id.
pub fn load_plans(repo: &Repository) -> Result<Vec<(Id, GcPlan)>> {
    let mut out = Vec::new();
    for o in repo.storage().list(ObjectKind::Gc)? {
        let Some(id) = Id::from_hex(&o.name) else {
            continue;
        };
        match repo.load_json::<GcPlan>(ObjectKind::Gc, &o.name, PLAN_AAD) {
            Ok(p) => out.push((id, p)),
            Err(Error::Storage(s)) if s.is_not_found() => continue,
            Err(e) => return Err(e),
        }
    }
    out.sort_by_key(|(_, p)| p.created);
    Ok(out)
}

/// Every pack that some plan condemns: writers must not deduplicate against them.
pub fn condemned_packs(repo: &Repository) -> Result<HashSet<Id>> {
    Ok(load_plans(repo)?
        .into_iter()
        .flat_map(|(_, p)| p.condemned)
        .collect())
}
