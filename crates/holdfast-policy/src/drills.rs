//! `drill`: timed, validated restores and reproductions, recorded in the repository; a short
//! composition of named steps (scratch directory, reproduce or restore, RTO judgement).

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;
use std::time::{Duration as StdDuration, Instant};

use holdfast_core::records::{self, DrillRecord, Record};
use holdfast_core::snapshot::{self, SnapshotEntry};
use holdfast_core::Repository;
use serde::Serialize;

use crate::config::{SourceConfig, Strategy};
use crate::env::{Env, JobError};
use crate::hooks::run_hook;
use crate::sources::{DrillJob, SourceError};

fn host() -> String {
    holdfast_core::util::hostname()
}

/// A kind of drill record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrillKind {
    /// A recovery point restored and checked.
    Restore,
    /// A reproducible source's recipe run and verified.
    Reproduce,
}

impl DrillKind {
    /// As stored in drill records.
    pub fn as_str(self) -> &'static str {
        match self {
            DrillKind::Restore => "restore",
            DrillKind::Reproduce => "reproduce",
        }
    }
}

/// Run a drill for one source and record it: find its repository, make a scratch directory,
/// prove the recipe or restore a recovery point, judge the time against the RTO.
pub fn drill(
    env: &Env,
    source: &str,
    random: bool,
    scratch: &Path,
) -> Result<DrillRecord, JobError> {
    let w = env.workload;
    let s = w
        .source(source)
        .ok_or_else(|| JobError::unknown_source(w, source))?;
    let (rname, rcfg) = w
        .repository_of(s)
        .or_else(|| w.repositories.iter().next().map(|(k, v)| (k.as_str(), v)))
        .ok_or_else(|| {
            JobError::Invalid("the workload defines no repository to record drills in".into())
        })?;
    let repo = (env.open)(rname, rcfg)?;
    let dir = scratch_dir(scratch)?;
    let rto = w.class_of(s).and_then(|(_, c)| c.rto);
    let timeout = rto
        .and_then(|r| (r * 2).to_std().ok())
        .unwrap_or(StdDuration::from_secs(3600));
    let rec = match s.strategy {
        Some(Strategy::Reproduce) => reproduce_drill(env, s, dir.path(), timeout),
        _ => restore_drill(env, &repo, s, random, dir.path(), timeout)?,
    };
    finish_drill(&repo, rec, rto)
}

/// Step: a fresh directory for one drill under `scratch`.
fn scratch_dir(scratch: &Path) -> Result<tempfile::TempDir, JobError> {
    let io = |source| JobError::Io {
        op: "creating scratch directory",
        path: scratch.to_path_buf(),
        source,
    };
    fs::create_dir_all(scratch).map_err(io)?;
    tempfile::Builder::new()
        .prefix("holdfast-drill-")
        .tempdir_in(scratch)
        .map_err(io)
}

fn drill_record(
    env: &Env,
    s: &SourceConfig,
    kind: DrillKind,
    t: Instant,
    snapshot: Option<String>,
) -> DrillRecord {
    DrillRecord {
        source: s.name().into(),
        kind: kind.as_str().into(),
        snapshot,
        started: env.now,
        seconds: t.elapsed().as_secs_f64(),
        passed: false,
        files: 0,
        bytes: 0,
        messages: Vec::new(),
        host: host(),
    }
}

/// Step: run a reproducible source's recipe and its verify command in the scratch directory.
fn reproduce_drill(env: &Env, s: &SourceConfig, dir: &Path, timeout: StdDuration) -> DrillRecord {
    let t = Instant::now();
    let r = s.reproduce.clone().unwrap_or_default();
    let mut messages = Vec::new();
    let mut passed = false;
    match &r.command {
        None => messages.push("no reproduce command: nothing to prove".into()),
        Some(cmd) => {
            let env_vars = [("HOLDFAST_SCRATCH", dir)];
            let (ok, out) = run_hook(cmd, timeout, &env_vars);
            messages.push(format!(
                "reproduce: {}",
                if ok { "ok".to_string() } else { out }
            ));
            passed = ok;
            if ok {
                if let Some(v) = &r.verify {
                    let (vok, vout) = run_hook(v, timeout, &env_vars);
                    messages.push(format!(
                        "verify: {}",
                        if vok { "ok".to_string() } else { vout }
                    ));
                    passed = vok;
                } else {
                    messages.push(
                        "no verify command: the recipe ran but its result was not checked".into(),
                    );
                    passed = false;
                }
            }
        }
    }
    DrillRecord {
        passed,
        messages,
        ..drill_record(env, s, DrillKind::Reproduce, t, None)
    }
}

/// Step: pick a recovery point (the newest, or a random one) and let the source's kind
/// restore and check it. A repository error fails the drill command itself.
fn restore_drill(
    env: &Env,
    repo: &Repository,
    s: &SourceConfig,
    random: bool,
    dir: &Path,
    timeout: StdDuration,
) -> Result<DrillRecord, JobError> {
    let t = Instant::now();
    if let Some(c) = s.driver().continuous() {
        return continuous_drill(env, repo, s, c, dir, timeout);
    }
    let within = env
        .workload
        .class_of(s)
        .and_then(|(_, c)| c.drill_within)
        .map(|w| env.now - w);
    let pick = pick_point(repo, s, random, within)?;
    let o = s.driver().drill(&DrillJob {
        repo,
        snap: &pick,
        scratch: dir,
        timeout,
        progress: env.progress,
    });
    let base = drill_record(env, s, DrillKind::Restore, t, Some(pick.id.to_hex()));
    record_of(o, base, t, None)
}

/// The record of a drill the kind ran: its outcome, or its error as a failed drill; `head` is
/// said first. Damage found in the repository (a blob that fails authentication, or is missing)
/// fails the drill, since a restore of that point would fail the same way; any other repository
/// error (the store unreachable, a wrong password) fails the drill command itself.
fn record_of(
    o: Result<crate::sources::DrillOutcome, SourceError>,
    base: DrillRecord,
    t: Instant,
    head: Option<String>,
) -> Result<DrillRecord, JobError> {
    let seconds = t.elapsed().as_secs_f64();
    Ok(match o {
        Ok(o) => DrillRecord {
            passed: o.passed,
            messages: head.into_iter().chain(o.messages).collect(),
            files: o.files,
            bytes: o.bytes,
            seconds,
            ..base
        },
        Err(SourceError::Engine(
            e @ (holdfast_core::Error::Corrupt { .. } | holdfast_core::Error::MissingBlob { .. }),
        )) => DrillRecord {
            messages: head
                .into_iter()
                .chain([format!("the restore failed: {e}")])
                .collect(),
            files: 1,
            seconds,
            ..base
        },
        Err(SourceError::Engine(e)) => return Err(e.into()),
        Err(e) => DrillRecord {
            messages: head.into_iter().chain([e.to_string()]).collect(),
            files: 1,
            seconds,
            ..base
        },
    })
}

/// Step: a continuous source is drilled at a random instant of its recoverable window: the
/// kind restores its base backup and replays the log up to that instant in a scratch place,
/// confirms it got there, and runs the verify step.
fn continuous_drill(
    env: &Env,
    repo: &Repository,
    s: &SourceConfig,
    c: &dyn crate::sources::pitr::Continuous,
    dir: &Path,
    timeout: StdDuration,
) -> Result<DrillRecord, JobError> {
    use crate::sources::pitr::{self, RecoveryTarget};
    let t = Instant::now();
    let (all, _) = snapshot::load_all(repo)?;
    let owned = crate::chains::Owned::of(s, c.log_kind(), &all, &host(), None);
    let window = c.window(&owned.bases, &owned.logs);
    let (bases, logs) = owned.cloned();
    let Some(at) = pitr::drill_target(&window, rand_u64()) else {
        return Err(JobError::Invalid(format!(
            "source {} has no recoverable window to drill (a base backup and its log are needed): run `holdfast protect`, and ship its log",
            s.name()
        )));
    };
    let target = RecoveryTarget::Time(at);
    let workload = std::path::absolute(&env.workload.path).unwrap_or_default();
    let o = c.drill_at(&pitr::PitrDrill {
        repo,
        source: s.name(),
        workload: &workload,
        bases: &bases,
        logs: &logs,
        target: &target,
        scratch: dir,
        timeout,
        progress: env.progress,
    });
    let base = drill_record(env, s, DrillKind::Restore, t, None);
    let head = format!("drilled point-in-time recovery to {}", at.to_rfc3339());
    record_of(o, base, t, Some(head))
}

/// Step: the recovery point a drill restores: the newest, or a random one (with the class's
/// `drill-within`, among those taken since `since`, like AWS restore testing's selection
/// window; the newest when none is that recent).
fn pick_point(
    repo: &Repository,
    s: &SourceConfig,
    random: bool,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<SnapshotEntry, JobError> {
    let (all, _) = snapshot::load_all(repo)?;
    let mine: Vec<SnapshotEntry> = all
        .into_iter()
        .filter(|x| {
            s.owns(x.snapshot.source.as_deref(), &x.snapshot.hostname, &host())
                && x.snapshot.complete
        })
        .collect();
    let first = since
        .map(|t| mine.iter().take_while(|x| x.snapshot.time < t).count())
        .unwrap_or(0)
        .min(mine.len().saturating_sub(1));
    let i = if random && !mine.is_empty() {
        first + rand_index(mine.len() - first)
    } else {
        mine.len().checked_sub(1).ok_or_else(|| {
            JobError::Invalid(format!(
                "source {} has no complete recovery point to drill: run `holdfast protect` first",
                s.name()
            ))
        })?
    };
    Ok(mine[i].clone())
}

/// A drill that took longer than the RTO fails: the restore worked, but not in time. Records
/// the drill either way.
fn finish_drill(
    repo: &Repository,
    mut rec: DrillRecord,
    rto: Option<chrono::Duration>,
) -> Result<DrillRecord, JobError> {
    if let Some(rto) = rto {
        if !crate::compliance::within(rec.seconds, rto) {
            rec.passed = false;
            rec.messages.push(format!(
                "took {:.1}s, longer than the RTO of {}: the drill fails (make the restore faster or the RTO longer)",
                rec.seconds,
                crate::duration::show(rto)
            ));
        }
    }
    records::save(repo, &Record::Drill(rec.clone()))?;
    Ok(rec)
}

fn rand_index(n: usize) -> usize {
    (rand_u64() % n as u64) as usize
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    u64::from_le_bytes(b)
}
