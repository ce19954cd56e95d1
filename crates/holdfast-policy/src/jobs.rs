//! Running the policy against repositories: `protect` (what is due, and nothing else) and
//! `drill` (timed, validated restores and reproductions), each a short composition of named
//! steps. Job kinds, drill kinds and what `protect` did are enums; the stored records keep
//! their strings (`"backup"`, `"retention"`, `"copy"`; `"restore"`, `"reproduce"`).

use std::fs::{self, File};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Utc};
use holdfast_core::records::{self, JobRecord, JobState, Record};
use holdfast_core::Repository;
use serde::{Serialize, Serializer};

use crate::cadence::{self, Due};
use crate::config::{ClassConfig, SourceConfig, Strategy, Workload};

pub use crate::drills::{drill, DrillKind};
pub use crate::env::{Env, JobError, Opener};
pub use crate::hooks::run_hook;

/// A kind of job record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// A backup of the source.
    Backup,
    /// The class's keep policy applied (and a prune).
    Retention,
    /// Recovery points copied to another repository.
    Copy,
}

impl JobKind {
    /// As stored in job records.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Retention => "retention",
            JobKind::Copy => "copy",
        }
    }
    /// From a stored job record (`None`: a kind this version does not know).
    pub fn parse(s: &str) -> Option<JobKind> {
        [JobKind::Backup, JobKind::Retention, JobKind::Copy]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// What `protect` did with a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A backup ran (with retention and copies after it).
    Ran,
    /// Not due; copies that were behind were made.
    Copied,
    /// Not due until then.
    NotDue {
        /// When the next backup is due.
        until: DateTime<Utc>,
    },
    /// A reproducible source: nothing to back up.
    Reproducible,
    /// No strategy declared.
    NoStrategy,
    /// No class, so no RPO.
    NoClass,
    /// Its class has no RPO.
    NoRpo,
    /// Another `protect` holds the source's lock.
    RunningElsewhere,
    /// Retention (and prune) ran in the maintenance window.
    Retained,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Ran => write!(f, "ran"),
            Action::Copied => write!(f, "copied"),
            Action::NotDue { until } => {
                write!(f, "not due until {}", until.format("%Y-%m-%d %H:%M:%S"))
            }
            Action::Reproducible => {
                write!(
                    f,
                    "reproducible: nothing to back up (drills prove the recipe)"
                )
            }
            Action::NoStrategy => write!(f, "skipped: no strategy (see `holdfast plan`)"),
            Action::NoClass => write!(
                f,
                "skipped: no class, so no RPO to schedule by (see `holdfast plan`)"
            ),
            Action::NoRpo => write!(f, "skipped: its class has no RPO (see `holdfast plan`)"),
            Action::RunningElsewhere => write!(f, "skipped: another protect is running it"),
            Action::Retained => write!(f, "retention ran (maintenance window)"),
        }
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One line of what `protect` did.
#[derive(Debug, Clone, Serialize)]
pub struct ProtectLine {
    /// Source.
    pub source: String,
    /// What happened (serialized as the sentence people read).
    pub action: Action,
    /// The job records written.
    pub jobs: Vec<JobRecord>,
}

pub(crate) struct SourceLock {
    _file: File,
}

pub(crate) fn lock(state_dir: &Path, source: &str) -> Result<Option<SourceLock>, JobError> {
    fs::create_dir_all(state_dir).map_err(|source| JobError::Io {
        op: "creating state directory",
        path: state_dir.to_path_buf(),
        source,
    })?;
    let p = state_dir.join(format!("{source}.lock"));
    let f = File::create(&p).map_err(|source| JobError::Io {
        op: "opening lock",
        path: p.clone(),
        source,
    })?;
    // SAFETY: flock on a valid descriptor we own.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    Ok((r == 0).then_some(SourceLock { _file: f }))
}

fn host() -> String {
    holdfast_core::util::hostname()
}

/// The outcome of a job that ran: completed, or completed with warnings if there are any.
pub fn outcome(warnings: &[String]) -> JobState {
    if warnings.is_empty() {
        JobState::Completed
    } else {
        JobState::CompletedWithWarnings
    }
}

fn job(
    source: &str,
    kind: JobKind,
    started: DateTime<Utc>,
    secs: f64,
    state: JobState,
    snapshot: Option<String>,
    messages: Vec<String>,
) -> JobRecord {
    JobRecord {
        source: source.into(),
        job: kind.as_str().into(),
        started,
        seconds: secs,
        state,
        snapshot,
        messages,
        host: host(),
    }
}

pub(crate) fn line(s: &SourceConfig, action: Action, jobs: Vec<JobRecord>) -> ProtectLine {
    ProtectLine {
        source: s.name().into(),
        action,
        jobs,
    }
}

/// Run everything that is due now, and nothing else.
pub fn protect(env: &Env) -> Result<Vec<ProtectLine>, JobError> {
    let o = crate::observe::observe(env);
    env.workload
        .sources
        .iter()
        .map(|s| protect_one(env, &o, s))
        .collect()
}

/// Step: is the source scheduled at all (a backup strategy, a class with an RPO)?
pub fn schedulable<'w>(
    w: &'w Workload,
    s: &SourceConfig,
) -> Result<(&'w ClassConfig, chrono::Duration), Action> {
    match s.strategy {
        Some(Strategy::Backup) => {}
        Some(Strategy::Reproduce) => return Err(Action::Reproducible),
        None => return Err(Action::NoStrategy),
    }
    let (_, class) = w.class_of(s).ok_or(Action::NoClass)?;
    let rpo = class.rpo.ok_or(Action::NoRpo)?;
    Ok((class, rpo))
}

/// The cadence `protect` follows for a scheduled source: from the RPO and the measured run
/// time; for a continuous source, its base-backup interval (the log meets the RPO).
pub fn source_cadence(
    o: &crate::observe::Observed,
    s: &SourceConfig,
    rpo: chrono::Duration,
) -> cadence::Cadence {
    let mut cad = cadence::cadence(rpo, cadence::expected_run(&o.backup_seconds(s.name())));
    if let Some(c) = s.driver().continuous() {
        // The log meets the RPO; base backups only bound the replay (and the restore time).
        cad.interval = c.base_every();
        cad.feasible = true;
    }
    cad
}

/// When `protect` has work for a source: the instant its backup fell (or falls) due, or now if
/// a copy repository lacks its newest point, with the cadence's interval; `None` when it is
/// not scheduled at all (reproduced, no strategy, no class or RPO). What the service
/// schedules by.
pub fn protect_due(
    env: &Env,
    o: &crate::observe::Observed,
    s: &SourceConfig,
) -> Option<(DateTime<Utc>, chrono::Duration)> {
    let (class, rpo) = schedulable(env.workload, s).ok()?;
    let cad = source_cadence(o, s, rpo);
    let newest = o.newest_point(s.name()).map(|p| p.snapshot.time);
    let at = match cadence::due(env.now, newest, cad.interval) {
        // Never backed up: due since ever (the service counts its start window from its own
        // start, so the instant stays put between observations).
        Due::Now { .. } => Some(
            newest
                .map(|n| n + cad.interval)
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        ),
        Due::NotYet { next } => Some(if copies_behind(o, s, class, newest) {
            env.now
        } else {
            next
        }),
    };
    at.map(|a| (a, cad.interval))
}

fn protect_one(
    env: &Env,
    o: &crate::observe::Observed,
    s: &SourceConfig,
) -> Result<ProtectLine, JobError> {
    let name = s.name();
    let (class, rpo) = match schedulable(env.workload, s) {
        Ok(c) => c,
        Err(action) => return Ok(line(s, action, vec![])),
    };
    let cad = source_cadence(o, s, rpo);
    let newest = o.newest_point(name).map(|p| p.snapshot.time);
    let missed = match cadence::due(env.now, newest, cad.interval) {
        Due::NotYet { next } => return copy_if_behind(env, o, s, class, newest, next),
        Due::Now { missed, .. } => missed,
    };
    let Some(_lock) = lock(&env.state_dir, name)? else {
        return Ok(line(s, Action::RunningElsewhere, vec![]));
    };
    let repo = open_for(env, s)?;
    let mut jobs = Vec::new();
    if missed > 0 {
        let due_at = newest.map(|n| n + cad.interval).unwrap_or(env.now);
        jobs.push(save(&repo, record_missed(name, due_at, missed))?);
    }
    let r = save(&repo, run_backup(env, &repo, s)?)?;
    let ok = r.state != JobState::Failed;
    jobs.push(r);
    if ok {
        // With a maintenance window, retention waits for it (`protect --retain`, see
        // `maintenance`).
        if !matches!(env.workload.service.maintenance(), Ok(Some(_))) {
            if let Some(r) = run_retention(env, &repo, s, class) {
                jobs.push(save(&repo, r)?);
            }
        }
        jobs.extend(run_copies(env, &repo, s, class)?);
    }
    Ok(line(s, Action::Ran, jobs))
}

/// Step: not due, but copy the newest point wherever a copy repository lacks it.
fn copy_if_behind(
    env: &Env,
    o: &crate::observe::Observed,
    s: &SourceConfig,
    class: &ClassConfig,
    newest: Option<DateTime<Utc>>,
    next: DateTime<Utc>,
) -> Result<ProtectLine, JobError> {
    let name = s.name();
    let mut jobs = Vec::new();
    if copies_behind(o, s, class, newest) {
        if let Some(_lock) = lock(&env.state_dir, name)? {
            let repo = open_for(env, s)?;
            jobs = run_copies(env, &repo, s, class)?;
        }
    }
    let action = if jobs.is_empty() {
        Action::NotDue { until: next }
    } else {
        Action::Copied
    };
    Ok(line(s, action, jobs))
}

/// Whether a copy repository the class requires lacks the source's newest point (or, for a
/// continuous source, its newest log batch).
fn copies_behind(
    o: &crate::observe::Observed,
    s: &SourceConfig,
    class: &ClassConfig,
    newest: Option<DateTime<Utc>>,
) -> bool {
    let name = s.name();
    class.copies.iter().any(|c| {
        let copied = o
            .by_repo
            .get(c.get_ref())
            .and_then(|m| m.get(name))
            .and_then(|v| v.iter().max().copied());
        let logs_behind = s.driver().continuous().is_some() && {
            let newest_log = o
                .logs
                .get(name)
                .and_then(|v| v.last())
                .map(|e| e.snapshot.time);
            let copied_log = o
                .logs_by_repo
                .get(c.get_ref())
                .and_then(|m| m.get(name))
                .copied();
            newest_log.is_some() && copied_log < newest_log
        };
        (newest.is_some() && copied < newest) || logs_behind
    })
}

/// Step: open the repository a source's recovery points go to.
pub(crate) fn open_for(env: &Env, s: &SourceConfig) -> Result<Repository, JobError> {
    let (rname, rcfg) = env
        .workload
        .repository_of(s)
        .ok_or_else(|| JobError::Invalid(format!("source {}: no repository", s.name())))?;
    (env.open)(rname, rcfg)
}

pub(crate) fn save(repo: &Repository, r: JobRecord) -> Result<JobRecord, JobError> {
    records::save(repo, &Record::Job(r.clone()))?;
    Ok(r)
}

/// Step: the record of scheduled runs that did not start in time.
fn record_missed(name: &str, due_at: DateTime<Utc>, missed: u32) -> JobRecord {
    job(name, JobKind::Backup, due_at, 0.0, JobState::Expired, None, vec![format!("{missed} scheduled run(s) did not start in time (host off or protect not running); one catch-up run follows")])
}

/// Step: apply the class's keep policy to this source's points, and prune if any went.
pub(crate) fn run_retention(
    env: &Env,
    repo: &Repository,
    s: &SourceConfig,
    class: &ClassConfig,
) -> Option<JobRecord> {
    let keep = class.keep.as_ref().cloned().filter(|p| !p.is_empty())?;
    let name = s.name();
    let t = Instant::now();
    let res = holdfast_core::prune::forget_matching(repo, &keep, env.now, false, &|sn| {
        s.owns(sn.source.as_deref(), &sn.hostname, &host())
    });
    let (state, msgs) = match res {
        Ok(items) => {
            let removed = items.iter().filter(|i| i.reasons.is_empty()).count();
            let mut msgs = vec![format!(
                "{removed} recovery point(s) removed by the class's keep policy"
            )];
            let mut state = JobState::Completed;
            let mut removed = removed;
            if let Some(c) = s.driver().continuous() {
                match forget_old_logs(env, repo, s, c) {
                    Ok(0) => {}
                    Ok(n) => {
                        msgs.push(format!(
                            "{n} log batch(es) removed: older than the oldest kept base backup"
                        ));
                        removed += n;
                    }
                    Err(e) => {
                        msgs.push(format!("removing old log batches failed: {e}"));
                        state = JobState::Failed;
                    }
                }
            }
            if removed > 0 {
                match holdfast_core::prune::prune(repo, &Default::default(), env.progress) {
                    Ok(p) => msgs.push(format!(
                        "prune: {} pack(s) deleted, {} bytes freed",
                        p.packs_deleted, p.bytes_freed
                    )),
                    Err(e) => {
                        msgs.push(format!("prune failed: {e}"));
                        state = JobState::Failed;
                    }
                }
            }
            (state, msgs)
        }
        Err(e) => (JobState::Failed, vec![e.to_string()]),
    };
    Some(job(
        name,
        JobKind::Retention,
        env.now,
        t.elapsed().as_secs_f64(),
        state,
        None,
        msgs,
    ))
}

/// Remove the log batches of a continuous source that no kept base backup needs (see
/// [`crate::sources::pitr::prunable_batches`]); how many were removed.
fn forget_old_logs(
    env: &Env,
    repo: &Repository,
    s: &SourceConfig,
    c: &dyn crate::sources::pitr::Continuous,
) -> Result<usize, holdfast_core::Error> {
    let (all, _) = holdfast_core::snapshot::load_all(repo)?;
    let o = crate::chains::Owned::of(s, c.log_kind(), &all, &host(), None);
    let old = c.prunable(&o.bases, &o.logs);
    if old.is_empty() {
        return Ok(0);
    }
    let items = holdfast_core::prune::forget_chosen(repo, &old, env.now, false)?;
    Ok(items.iter().filter(|i| i.reasons.is_empty()).count())
}

/// Copy the source's recovery points to every repository its class requires; one job record
/// per destination (saved in the source's repository).
fn run_copies(
    env: &Env,
    repo: &Repository,
    s: &SourceConfig,
    class: &ClassConfig,
) -> Result<Vec<JobRecord>, JobError> {
    let name = s.name();
    let mut out = Vec::new();
    for dest in &class.copies {
        let t = Instant::now();
        let res = env
            .workload
            .repositories
            .get(dest.get_ref())
            .ok_or_else(|| {
                JobError::Invalid(format!(
                    "copy repository {:?} is not defined",
                    dest.get_ref()
                ))
            })
            .and_then(|cfg| (env.open)(dest.get_ref(), cfg))
            .and_then(|dst| {
                let r = holdfast_core::copy::copy(
                    repo,
                    &dst,
                    // A continuous source's log batches travel with its base backups: a copy
                    // without them restores to base backups only.
                    &|x| {
                        (s.owns(x.snapshot.source.as_deref(), &x.snapshot.hostname, &host())
                            && x.snapshot.complete)
                            || s.owns_log(&x.snapshot, &host())
                    },
                    env.progress,
                )
                .map_err(JobError::from)?;
                let lock = if r.copied.is_empty() {
                    Vec::new()
                } else {
                    extend_object_lock(&dst, env.now)
                };
                Ok((r, lock))
            });
        let r = match res {
            Ok((rep, lock)) => {
                let mut m = vec![format!(
                    "to {}: {} recovery point(s) copied and verified, {} already there, {} bytes uploaded",
                    dest.get_ref(),
                    rep.copied.len(),
                    rep.already_present,
                    rep.bytes_added
                )];
                let state = outcome(&lock);
                m.extend(lock);
                job(
                    name,
                    JobKind::Copy,
                    env.now,
                    t.elapsed().as_secs_f64(),
                    state,
                    None,
                    m,
                )
            }
            Err(e) => job(
                name,
                JobKind::Copy,
                env.now,
                t.elapsed().as_secs_f64(),
                JobState::Failed,
                None,
                vec![format!("to {}: {e}", dest.get_ref())],
            ),
        };
        records::save(repo, &Record::Job(r.clone()))?;
        out.push(r);
    }
    Ok(out)
}

/// Extend the store's Object Lock after a recovery point was written; what went wrong, if
/// anything (the point is stored either way, so this is a warning, not a failure).
fn extend_object_lock(repo: &Repository, now: DateTime<Utc>) -> Vec<String> {
    holdfast_core::objlock::after_write(repo, now)
        .warning()
        .into_iter()
        .collect()
}

fn hook_timeout(s: &SourceConfig) -> StdDuration {
    s.hook_timeout
        .and_then(|d| d.to_std().ok())
        .unwrap_or(StdDuration::from_secs(300))
}

/// Back up one source now: pre hook, the kind's backup, post hook, object lock; returns its
/// job record (not yet saved).
pub fn run_backup(env: &Env, repo: &Repository, s: &SourceConfig) -> Result<JobRecord, JobError> {
    let started = env.now;
    let t = Instant::now();
    let mut messages = Vec::new();
    let record = |state, snapshot, messages| {
        job(
            s.name(),
            JobKind::Backup,
            started,
            t.elapsed().as_secs_f64(),
            state,
            snapshot,
            messages,
        )
    };
    if let Some(pre) = &s.pre {
        let (ok, out) = run_hook(pre, hook_timeout(s), &[]);
        if !ok {
            messages.push(format!("pre hook failed, nothing was backed up: {out}"));
            return Ok(record(JobState::Failed, None, messages));
        }
    }
    let res = s.driver().backup(&crate::sources::BackupJob {
        repo,
        name: s.name(),
        tags: &s.tags,
        time: env.now,
        scratch: &std::env::temp_dir(),
        progress: env.progress,
    });
    if let Some(post) = &s.post {
        let (ok, out) = run_hook(post, hook_timeout(s), &[]);
        if !ok {
            messages.push(format!("post hook failed: {out}"));
        }
    }
    match res {
        Ok(b) => {
            messages.extend(b.skipped);
            if b.snapshot.is_some() {
                messages.extend(extend_object_lock(repo, env.now));
            }
            let snapshot = b.snapshot.map(|i| i.to_hex());
            Ok(record(outcome(&messages), snapshot, messages))
        }
        Err(e) => {
            messages.push(e.to_string());
            Ok(record(JobState::Failed, None, messages))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chrono::TimeZone;

    use super::*;

    #[test]
    fn kinds_keep_their_stored_strings() {
        for (k, s) in [
            (JobKind::Backup, "backup"),
            (JobKind::Retention, "retention"),
            (JobKind::Copy, "copy"),
        ] {
            assert_eq!(k.as_str(), s);
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{s}\""));
            assert_eq!(JobKind::parse(s), Some(k));
        }
        assert_eq!(JobKind::parse("snapshot"), None);
        for (k, s) in [
            (DrillKind::Restore, "restore"),
            (DrillKind::Reproduce, "reproduce"),
        ] {
            assert_eq!(k.as_str(), s);
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{s}\""));
        }
    }

    #[test]
    fn actions_read_as_before() {
        let until = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap();
        let cases = [
            (Action::Ran, "ran"),
            (Action::Copied, "copied"),
            (
                Action::NotDue { until },
                "not due until 2026-03-04 05:06:07",
            ),
            (
                Action::Reproducible,
                "reproducible: nothing to back up (drills prove the recipe)",
            ),
            (
                Action::NoStrategy,
                "skipped: no strategy (see `holdfast plan`)",
            ),
            (
                Action::NoClass,
                "skipped: no class, so no RPO to schedule by (see `holdfast plan`)",
            ),
            (
                Action::NoRpo,
                "skipped: its class has no RPO (see `holdfast plan`)",
            ),
            (
                Action::RunningElsewhere,
                "skipped: another protect is running it",
            ),
        ];
        for (a, s) in cases {
            assert_eq!(a.to_string(), s);
            assert_eq!(serde_json::to_value(&a).unwrap(), serde_json::json!(s));
        }
    }

    #[test]
    fn outcome_table() {
        assert_eq!(outcome(&[]), JobState::Completed);
        assert_eq!(outcome(&["x".into()]), JobState::CompletedWithWarnings);
    }

    #[test]
    fn schedulable_table() {
        let w = Workload::parse(
            Path::new("/w.toml"),
            r#"
[repository.r]
url = "/r"
[class.timed]
rpo = "1h"
[class.untimed]
rto = "1h"
[[source]]
name = "ok"
kind = "path"
path = "/a"
class = "timed"
strategy = "backup"
[[source]]
name = "repro"
kind = "path"
path = "/a"
class = "timed"
strategy = "reproduce"
[[source]]
name = "undecided"
kind = "path"
path = "/a"
class = "timed"
[[source]]
name = "classless"
kind = "path"
path = "/a"
strategy = "backup"
[[source]]
name = "no-rpo"
kind = "path"
path = "/a"
class = "untimed"
strategy = "backup"
"#,
        )
        .unwrap();
        let cases = [
            ("ok", None),
            ("repro", Some(Action::Reproducible)),
            ("undecided", Some(Action::NoStrategy)),
            ("classless", Some(Action::NoClass)),
            ("no-rpo", Some(Action::NoRpo)),
        ];
        for (name, want) in cases {
            let got = schedulable(&w, w.source(name).unwrap());
            match want {
                None => assert_eq!(
                    got.map(|(_, rpo)| rpo).ok(),
                    Some(chrono::Duration::hours(1)),
                    "{name}"
                ),
                Some(a) => assert_eq!(got.err(), Some(a), "{name}"),
            }
        }
    }
}
