//! Running the policy against repositories: `protect` (what is due, and nothing else),
//! `drill` (timed, validated restores and reproductions), and the facts `status` and `plan` read.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Utc};
use holdfast_core::backup::{self, BackupOptions};
use holdfast_core::progress::Progress;
use holdfast_core::records::{self, DrillRecord, JobRecord, JobState, Record};
use holdfast_core::restore::{self, RestoreOptions};
use holdfast_core::snapshot::{self, SnapshotEntry};
use holdfast_core::Repository;
use serde::Serialize;

use crate::cadence::{self, Due};
use crate::config::{RepositoryConfig, SourceConfig, SourceKind, Strategy, Workload};

/// Errors of policy jobs.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] holdfast_core::Error),
    /// A repository could not be opened.
    #[error("repository {name:?}: {message}")]
    Repository {
        /// Its name in the workload.
        name: String,
        /// Why.
        message: String,
    },
    /// Bad request.
    #[error("{0}")]
    Invalid(String),
    /// The workload has no source of this name.
    #[error("no source named {name:?} in {workload}: the sources are {known}")]
    UnknownSource {
        /// The name asked for.
        name: String,
        /// The workload file.
        workload: String,
        /// The names it has.
        known: String,
    },
    /// Local I/O.
    #[error("{op} {path}: {source}")]
    Io {
        /// What.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl JobError {
    /// The error for a source name the workload does not have.
    pub fn unknown_source(w: &Workload, name: &str) -> JobError {
        let known: Vec<&str> = w.sources.iter().map(|s| s.name()).collect();
        JobError::UnknownSource {
            name: name.into(),
            workload: w.path.display().to_string(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        }
    }
}

/// Opens the repository a workload names (the CLI knows the backends and passwords).
pub type Opener<'a> = dyn Fn(&str, &RepositoryConfig) -> Result<Repository, JobError> + 'a;

/// What jobs need from their caller.
pub struct Env<'a> {
    /// The workload.
    pub workload: &'a Workload,
    /// "Now" (injectable for tests).
    pub now: DateTime<Utc>,
    /// Opens repositories.
    pub open: &'a Opener<'a>,
    /// Where per-source locks live (so two `protect` runs never run one source twice).
    pub state_dir: PathBuf,
    /// Progress of long operations.
    pub progress: &'a dyn Progress,
}

/// One line of what `protect` did.
#[derive(Debug, Clone, Serialize)]
pub struct ProtectLine {
    /// Source.
    pub source: String,
    /// What happened: "ran", "not due", "running elsewhere", "reproduced (nothing to back up)".
    pub action: String,
    /// The job records written.
    pub jobs: Vec<JobRecord>,
}

struct SourceLock {
    _file: File,
}

fn lock(state_dir: &Path, source: &str) -> Result<Option<SourceLock>, JobError> {
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

/// Run a shell command with a timeout; returns (success, combined output).
pub fn run_hook(cmd: &str, timeout: StdDuration, env: &[(&str, &Path)]) -> (bool, String) {
    let out = match tempfile::tempfile() {
        Ok(f) => f,
        Err(e) => return (false, format!("cannot create a temporary file: {e}")),
    };
    let mut c = Command::new("sh");
    c.arg("-c").arg(cmd).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let (o1, o2) = match (out.try_clone(), out.try_clone()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return (false, "cannot capture output".into()),
    };
    c.stdout(o1).stderr(o2);
    let mut child = match c.spawn() {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot run {cmd:?}: {e}")),
    };
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(StdDuration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let mut text = String::new();
    let mut f = out;
    use std::io::Seek;
    let _ = f.seek(std::io::SeekFrom::Start(0));
    let _ = f.take(64 * 1024).read_to_string(&mut text);
    match status {
        Some(s) if s.success() => (true, text),
        Some(s) => (false, format!("{cmd:?} failed ({s}): {}", text.trim())),
        None => (
            false,
            format!(
                "{cmd:?} did not finish within {}s and was killed: {}",
                timeout.as_secs(),
                text.trim()
            ),
        ),
    }
}

fn host() -> String {
    holdfast_core::util::hostname()
}

fn job(
    source: &str,
    kind: &str,
    started: DateTime<Utc>,
    secs: f64,
    state: JobState,
    snapshot: Option<String>,
    messages: Vec<String>,
) -> JobRecord {
    JobRecord {
        source: source.into(),
        job: kind.into(),
        started,
        seconds: secs,
        state,
        snapshot,
        messages,
        host: host(),
    }
}

/// Run everything that is due now, and nothing else.
pub fn protect(env: &Env) -> Result<Vec<ProtectLine>, JobError> {
    let o = crate::observe::observe(env);
    let mut lines = Vec::new();
    for s in &env.workload.sources {
        let name = s.name();
        match s.strategy {
            Some(Strategy::Backup) => {}
            Some(Strategy::Reproduce) => {
                lines.push(ProtectLine {
                    source: name.into(),
                    action: "reproducible: nothing to back up (drills prove the recipe)".into(),
                    jobs: vec![],
                });
                continue;
            }
            None => {
                lines.push(ProtectLine {
                    source: name.into(),
                    action: "skipped: no strategy (see `holdfast plan`)".into(),
                    jobs: vec![],
                });
                continue;
            }
        }
        let Some((_, class)) = env.workload.class_of(s) else {
            lines.push(ProtectLine {
                source: name.into(),
                action: "skipped: no class, so no RPO to schedule by (see `holdfast plan`)".into(),
                jobs: vec![],
            });
            continue;
        };
        let Some(rpo) = class.rpo else {
            lines.push(ProtectLine {
                source: name.into(),
                action: "skipped: its class has no RPO (see `holdfast plan`)".into(),
                jobs: vec![],
            });
            continue;
        };
        let cad = cadence::cadence(rpo, cadence::expected_run(&o.backup_seconds(name)));
        let newest = o.newest_point(name).map(|p| p.snapshot.time);
        let missed = match cadence::due(env.now, newest, cad.interval) {
            Due::NotYet { next } => {
                // Copies are due whenever the newest point is not yet in every copy repository.
                let copies_behind = class.copies.iter().any(|c| {
                    let copied = o
                        .by_repo
                        .get(c.get_ref())
                        .and_then(|m| m.get(name))
                        .and_then(|v| v.iter().max().copied());
                    newest.is_some() && copied < newest
                });
                let mut jobs = Vec::new();
                if copies_behind {
                    if let Some(_lock) = lock(&env.state_dir, name)? {
                        let (rname, rcfg) = env.workload.repository_of(s).ok_or_else(|| {
                            JobError::Invalid(format!("source {name}: no repository"))
                        })?;
                        let repo = (env.open)(rname, rcfg)?;
                        jobs = run_copies(env, &repo, s, class)?;
                    }
                }
                lines.push(ProtectLine {
                    source: name.into(),
                    action: if jobs.is_empty() {
                        format!("not due until {}", next.format("%Y-%m-%d %H:%M:%S"))
                    } else {
                        "copied".into()
                    },
                    jobs,
                });
                continue;
            }
            Due::Now { missed, .. } => missed,
        };
        let Some(_lock) = lock(&env.state_dir, name)? else {
            lines.push(ProtectLine {
                source: name.into(),
                action: "skipped: another protect is running it".into(),
                jobs: vec![],
            });
            continue;
        };
        let (rname, rcfg) = env
            .workload
            .repository_of(s)
            .ok_or_else(|| JobError::Invalid(format!("source {name}: no repository")))?;
        let repo = (env.open)(rname, rcfg)?;
        let mut jobs = Vec::new();
        if missed > 0 {
            let due_at = newest.map(|n| n + cad.interval).unwrap_or(env.now);
            let r = job(name, "backup", due_at, 0.0, JobState::Expired, None, vec![format!("{missed} scheduled run(s) did not start in time (host off or protect not running); one catch-up run follows")]);
            records::save(&repo, &Record::Job(r.clone()))?;
            jobs.push(r);
        }
        let r = run_backup(env, &repo, s)?;
        records::save(&repo, &Record::Job(r.clone()))?;
        let ok = r.state != JobState::Failed;
        jobs.push(r);
        if ok {
            if let Some(keep) = class.keep.as_ref().cloned().filter(|p| !p.is_empty()) {
                let t = Instant::now();
                let started = env.now;
                let res =
                    holdfast_core::prune::forget_matching(&repo, &keep, env.now, false, &|sn| {
                        s.owns(sn.source.as_deref(), &sn.hostname, &host())
                    });
                let r = match res {
                    Ok(items) => {
                        let removed = items.iter().filter(|i| i.reasons.is_empty()).count();
                        let mut msgs = vec![format!(
                            "{removed} recovery point(s) removed by the class's keep policy"
                        )];
                        let mut state = JobState::Completed;
                        if removed > 0 {
                            match holdfast_core::prune::prune(
                                &repo,
                                &Default::default(),
                                env.progress,
                            ) {
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
                        job(
                            name,
                            "retention",
                            started,
                            t.elapsed().as_secs_f64(),
                            state,
                            None,
                            msgs,
                        )
                    }
                    Err(e) => job(
                        name,
                        "retention",
                        started,
                        t.elapsed().as_secs_f64(),
                        JobState::Failed,
                        None,
                        vec![e.to_string()],
                    ),
                };
                records::save(&repo, &Record::Job(r.clone()))?;
                jobs.push(r);
            }
        }
        if ok {
            jobs.extend(run_copies(env, &repo, s, class)?);
        }
        lines.push(ProtectLine {
            source: name.into(),
            action: "ran".into(),
            jobs,
        });
    }
    Ok(lines)
}

/// Copy the source's recovery points to every repository its class requires; one job record
/// per destination (saved in the source's repository).
fn run_copies(
    env: &Env,
    repo: &Repository,
    s: &SourceConfig,
    class: &crate::config::ClassConfig,
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
                    &|x| {
                        s.owns(x.snapshot.source.as_deref(), &x.snapshot.hostname, &host())
                            && x.snapshot.complete
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
                let state = if lock.is_empty() {
                    JobState::Completed
                } else {
                    JobState::CompletedWithWarnings
                };
                m.extend(lock);
                job(
                    name,
                    "copy",
                    env.now,
                    t.elapsed().as_secs_f64(),
                    state,
                    None,
                    m,
                )
            }
            Err(e) => job(
                name,
                "copy",
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

/// Back up one source now; returns its job record (not yet saved).
pub fn run_backup(env: &Env, repo: &Repository, s: &SourceConfig) -> Result<JobRecord, JobError> {
    let name = s.name();
    let started = env.now;
    let t = Instant::now();
    let mut messages = Vec::new();
    let fail = |mut messages: Vec<String>, m: String| {
        messages.push(m);
        Ok(job(
            name,
            "backup",
            started,
            t.elapsed().as_secs_f64(),
            JobState::Failed,
            None,
            messages,
        ))
    };
    if s.kind == SourceKind::S3 {
        return fail(
            messages,
            "source kind s3 is not supported by this version yet".into(),
        );
    }
    if let Some(pre) = &s.pre {
        let (ok, out) = run_hook(pre, hook_timeout(s), &[]);
        if !ok {
            return fail(
                messages,
                format!("pre hook failed, nothing was backed up: {out}"),
            );
        }
    }
    // (snapshot id, what was skipped) or the failure.
    let res: Result<(Option<String>, Vec<String>), String> = if s.kind != SourceKind::Path {
        crate::sources::backup(repo, s, env.now, &std::env::temp_dir(), env.progress)
            .map(|id| (Some(id.to_hex()), Vec::new()))
    } else {
        let opts = BackupOptions {
            paths: s.all_paths(),
            tags: s.tags.clone(),
            excludes: s.exclude.clone(),
            time: Some(env.now),
            source: Some(name.to_string()),
            ..Default::default()
        };
        backup::backup(repo, &opts, env.progress)
            .map(|out| {
                let mut skipped = out.snapshot.errors;
                skipped.extend(out.snapshot.changed_while_read);
                (out.id.map(|i| i.to_hex()), skipped)
            })
            .map_err(|e| e.to_string())
    };
    if let Some(post) = &s.post {
        let (ok, out) = run_hook(post, hook_timeout(s), &[]);
        if !ok {
            messages.push(format!("post hook failed: {out}"));
        }
    }
    match res {
        Ok((snapshot, skipped)) => {
            messages.extend(skipped);
            if snapshot.is_some() {
                messages.extend(extend_object_lock(repo, env.now));
            }
            let state = if messages.is_empty() {
                JobState::Completed
            } else {
                JobState::CompletedWithWarnings
            };
            Ok(job(
                name,
                "backup",
                started,
                t.elapsed().as_secs_f64(),
                state,
                snapshot,
                messages,
            ))
        }
        Err(e) => fail(messages, e),
    }
}

/// Run a drill for one source and record it.
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
    fs::create_dir_all(scratch).map_err(|e| JobError::Io {
        op: "creating scratch directory",
        path: scratch.to_path_buf(),
        source: e,
    })?;
    let dir = tempfile::Builder::new()
        .prefix("holdfast-drill-")
        .tempdir_in(scratch)
        .map_err(|e| JobError::Io {
            op: "creating scratch directory",
            path: scratch.to_path_buf(),
            source: e,
        })?;
    let started = env.now;
    let t = Instant::now();
    let rto = w.class_of(s).and_then(|(_, c)| c.rto);
    let timeout = rto
        .and_then(|r| (r * 2).to_std().ok())
        .unwrap_or(StdDuration::from_secs(3600));
    let mut messages = Vec::new();
    let rec = match s.strategy {
        Some(Strategy::Reproduce) => {
            let r = s.reproduce.clone().unwrap_or_default();
            let mut passed = false;
            match &r.command {
                None => messages.push("no reproduce command: nothing to prove".into()),
                Some(cmd) => {
                    let env_vars = [("HOLDFAST_SCRATCH", dir.path())];
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
                                "no verify command: the recipe ran but its result was not checked"
                                    .into(),
                            );
                            passed = false;
                        }
                    }
                }
            }
            DrillRecord {
                source: source.into(),
                kind: "reproduce".into(),
                snapshot: None,
                started,
                seconds: t.elapsed().as_secs_f64(),
                passed,
                files: 0,
                bytes: 0,
                messages,
                host: host(),
            }
        }
        _ => {
            let (all, _) = snapshot::load_all(&repo)?;
            let mine: Vec<&SnapshotEntry> = all
                .iter()
                .filter(|x| {
                    s.owns(x.snapshot.source.as_deref(), &x.snapshot.hostname, &host())
                        && x.snapshot.complete
                })
                .collect();
            let pick = if random && !mine.is_empty() {
                mine[rand_index(mine.len())]
            } else {
                *mine.last().ok_or_else(|| JobError::Invalid(format!("source {source} has no complete recovery point to drill: run `holdfast protect` first")))?
            };
            if s.kind != SourceKind::Path {
                let o = crate::sources::drill(&repo, s, pick, dir.path(), timeout);
                let (passed, msgs, bytes) = match o {
                    Ok(o) => (o.passed, o.messages, o.bytes),
                    Err(e) => (false, vec![e], 0),
                };
                let rec = DrillRecord {
                    source: source.into(),
                    kind: "restore".into(),
                    snapshot: Some(pick.id.to_hex()),
                    started,
                    seconds: t.elapsed().as_secs_f64(),
                    passed,
                    files: 1,
                    bytes,
                    messages: msgs,
                    host: host(),
                };
                return finish_drill(&repo, rec, rto);
            }
            let (index, _) = repo.load_index()?;
            let target = dir.path().join("restore");
            let res = restore::restore(
                &repo,
                &index,
                pick,
                &RestoreOptions {
                    target: target.clone(),
                    ..Default::default()
                },
                env.progress,
            )?;
            messages.extend(res.errors.iter().cloned());
            let v = restore::validate(&repo, &index, &pick.snapshot.tree, &target)?;
            messages.extend(v.errors.iter().cloned());
            let mut passed = res.errors.is_empty() && v.errors.is_empty();
            messages.push(format!(
                "validated {} files ({} bytes) against snapshot {}",
                v.files,
                v.bytes,
                pick.id.short()
            ));
            if let Some(cmd) = &s.verify {
                let (ok, out) = run_hook(cmd, timeout, &[("HOLDFAST_DRILL_DIR", &target)]);
                messages.push(format!(
                    "verify: {}",
                    if ok { "ok".to_string() } else { out }
                ));
                passed &= ok;
            }
            DrillRecord {
                source: source.into(),
                kind: "restore".into(),
                snapshot: Some(pick.id.to_hex()),
                started,
                seconds: t.elapsed().as_secs_f64(),
                passed,
                files: v.files,
                bytes: v.bytes,
                messages,
                host: host(),
            }
        }
    };
    finish_drill(&repo, rec, rto)
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
    let mut b = [0u8; 8];
    let _ = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    (u64::from_le_bytes(b) % n as u64) as usize
}
