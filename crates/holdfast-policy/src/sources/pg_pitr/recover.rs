//! `holdfast restore --source NAME --at TIME|latest` / `--lsn LSN` for a continuous PostgreSQL
//! source: choose the newest base backup that ends before the target and whose WAL chain
//! reaches it, extract it into an empty data directory, tell PostgreSQL to fetch the archived
//! WAL through `holdfast wal-fetch` and where to stop, optionally start it and wait.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use holdfast_core::index::Index;
use holdfast_core::logs::{self, LogBatch};
use holdfast_core::snapshot::SnapshotEntry;
use holdfast_core::Repository;

use super::chain::{self, Analysis, Facts};
use super::conf::{self, Stop};
use super::history::{self, BackupHistory, MAX_BYTES};
use super::names::{self, WalFile};
use super::start::{self, StartError, Started};
use crate::sources::pg_physical::{self, PhysicalError};
use crate::sources::pitr::{PitrRestore, PitrRestored, RecoveryTarget};
use crate::sources::tool::{feed, files, ToolError};

/// Why a point-in-time restore failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The repository failed.
    #[error(transparent)]
    Engine(#[from] holdfast_core::Error),
    /// No base backup and chain reach the target.
    #[error("{0}")]
    Unreachable(String),
    /// The restore needs a data directory.
    #[error(
        "a point-in-time restore of postgres needs --target DATA_DIRECTORY (an empty directory)"
    )]
    NoDataDirectory,
    /// The base snapshot holds no base.tar.
    #[error("base backup {0} holds no base.tar")]
    NoBaseTar(String),
    /// Extracting the base backup failed or was refused.
    #[error(transparent)]
    Physical(#[from] PhysicalError),
    /// The restored server did not reach the target.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Reading the base backup's file list failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
}

/// How the restore is run (a user restore or a drill).
pub struct Options {
    /// The holdfast binary the restored server runs as restore_command.
    pub exe: PathBuf,
    /// Turn archiving off on the restored server (a drill must not archive into the source's
    /// log).
    pub archive_off: bool,
    /// How long to wait for recovery with `start`.
    pub timeout: Duration,
}

impl Options {
    /// A user's restore: this binary, archiving as configured, one hour to recover.
    pub fn user() -> Options {
        Options {
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("holdfast")),
            archive_off: false,
            timeout: Duration::from_secs(3600),
        }
    }
}

/// A restore done, with the server when it was started.
pub struct Recovered {
    /// What to report.
    pub restored: PitrRestored,
    /// The running server, when started.
    pub server: Option<Started>,
}

/// Read a small piece (a history file), refusing one larger than any PostgreSQL writes.
fn small_piece(
    repo: &Repository,
    index: &Index,
    batch: &SnapshotEntry,
    name: &str,
    size: u64,
) -> Result<Vec<u8>, String> {
    if size > MAX_BYTES {
        return Err(format!(
            "{name} is {size} bytes, more than any PostgreSQL history file ({MAX_BYTES}): refused"
        ));
    }
    let mut out = Vec::with_capacity(size as usize);
    logs::read_piece(repo, index, batch, name, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The backup and timeline history facts, read from the pieces' bytes (authenticated, size
/// and BLAKE3 checked, bounded), never from what their metadata claims.
pub fn facts_from_repository(
    repo: &Repository,
    index: &Index,
    batches: &[(&SnapshotEntry, &LogBatch)],
) -> Facts {
    let mut f = Facts::default();
    let mut done = BTreeMap::new();
    for (e, b) in batches {
        for p in &b.pieces {
            let kind = names::parse(&p.name);
            if !matches!(kind, Some(WalFile::Backup(..)) | Some(WalFile::History(_)))
                || done.insert(p.name.clone(), ()).is_some()
            {
                continue;
            }
            let bytes = match small_piece(repo, index, e, &p.name, p.size) {
                Ok(b) => b,
                Err(x) => {
                    f.problems.push(x);
                    continue;
                }
            };
            match kind {
                Some(WalFile::Backup(..)) => match BackupHistory::parse(&p.name, &bytes) {
                    Ok(h) => f.backups.push((h, e.snapshot.time)),
                    Err(x) => f.problems.push(x.to_string()),
                },
                Some(WalFile::History(t)) => {
                    match history::parse_timeline_history(t, &p.name, &bytes) {
                        Ok(v) => {
                            for (tli, br) in v {
                                f.branches.entry(tli).or_insert(br);
                            }
                        }
                        Err(x) => f.problems.push(x.to_string()),
                    }
                }
                _ => {}
            }
        }
    }
    f
}

/// Restore to a point in time (see the module).
pub fn restore_at(job: &PitrRestore, opts: &Options) -> Result<Recovered, RecoverError> {
    let repo = job.repo;
    let (index, _) = repo.load_index()?;
    let batches: Vec<(&SnapshotEntry, &LogBatch)> = job
        .logs
        .iter()
        .filter_map(|e| e.snapshot.log.as_ref().map(|l| (e, l)))
        .filter(|(_, l)| l.kind == logs::LogKind::PgWal)
        .collect();
    let bases: Vec<&SnapshotEntry> = job.bases.iter().collect();
    let facts = facts_from_repository(repo, &index, &batches);
    let analysis = Analysis::new(&bases, &batches, &facts);
    let c = analysis
        .choose(job.target)
        .map_err(|e| RecoverError::Unreachable(format!("{}: {e}", job.source)))?;
    let ss = analysis.seg_size.unwrap_or(16 << 20);
    let stop = match job.target {
        RecoveryTarget::Latest => Stop::End,
        RecoveryTarget::Time(t) => Stop::Time(*t),
        RecoveryTarget::Position(p) => Stop::Lsn(
            names::parse_lsn(p)
                .ok_or_else(|| RecoverError::Unreachable(format!("--lsn {p:?} is no LSN")))?,
        ),
    };
    let base = c.entry;
    let target = PathBuf::from(job.into.ok_or(RecoverError::NoDataDirectory)?);
    let fs_ = files(repo, &index, base)?;
    let (d, f) = fs_
        .iter()
        .find(|(_, f)| f == "base.tar")
        .ok_or_else(|| RecoverError::NoBaseTar(base.id.short()))?;
    let path = format!("{d}/{f}");
    let cmd = conf::restore_command(&opts.exe, job.workload, job.source, job.host);
    let lines = conf::settings(&cmd, &stop, opts.archive_off || !job.archive);
    let why = format!(
        "point-in-time recovery of {} to {} from base backup {}",
        job.source,
        job.target,
        base.id.short()
    );
    let mut done = pg_physical::restore(&target, job.replace, |dir| {
        let mut t = Command::new("tar");
        t.arg("-x").arg("-C").arg(dir).arg("-f").arg("-");
        feed(repo, &index, &base.snapshot.tree, &path, t, "tar")?;
        conf::write(dir, &lines, &why).map_err(|source| ToolError::Io {
            what: format!("writing the recovery settings into {}", dir.display()),
            source,
        })
    })?;
    let h = c.history.as_ref().expect("a chosen chain has its history");
    done.push(format!(
        "base backup {} ({}, WAL from {}, consistent from {}) and the archived WAL up to {}",
        base.id.short(),
        base.snapshot.time.to_rfc3339(),
        h.start,
        c.ready.map(|t| t.to_rfc3339()).unwrap_or_default(),
        c.next
    ));
    done.push(format!(
        "wrote into {}/postgresql.auto.conf: {}; created recovery.signal",
        target.display(),
        lines.join("; ")
    ));
    let w = analysis.window();
    done.push(chain::describe(&w));
    let mut server = None;
    let mut reached = None;
    if job.start {
        let last = c.reached.unwrap_or(0);
        let s = start::start_and_wait(&target, job.conn, &stop, last, ss, opts.timeout)?;
        done.extend(s.lines.iter().cloned());
        done.push(format!(
            "recovery ended and the server was promoted (timeline {}, last replayed {}); it runs on port {} (socket {}), log {}",
            s.timeline.map(|t| t.to_string()).unwrap_or_else(|| "?".into()),
            s.replay_lsn.map(names::format_lsn).unwrap_or_else(|| "?".into()),
            s.port,
            s.host,
            s.log.display()
        ));
        reached = s.reached;
        server = Some(s);
    } else {
        done.push(format!(
            "start it to recover (it fetches the WAL with holdfast wal-fetch, so the repository's password must reach it the way the workload says): {}",
            start_hint(&target)
        ));
    }
    Ok(Recovered {
        restored: PitrRestored {
            base: base.id.to_hex(),
            target: job.target.clone(),
            reached,
            done,
            warnings: Vec::new(),
        },
        server,
    })
}

fn start_hint(target: &Path) -> String {
    format!("pg_ctl -D {} -w start", target.display())
}
