//! `restore --source`: choose a source's recovery point and restore it, files into a
//! directory, anything else with the source's own tool.

use std::path::PathBuf;

use holdfast_core::progress::Progress;
use holdfast_core::restore::{RestoreOptions, RestoreOutcome};
use holdfast_core::snapshot::{self, SnapshotEntry};
use serde::Serialize;

use super::{Runtime, RuntimeError};
use crate::config::Workload;
use crate::jobs::JobError;
use crate::sources;

/// What to restore of a source, and where. The words are the command line's: `target`
/// (`--target`) and `replace` (`--replace`), the same for files and for sources.
#[derive(Debug, Clone, Default)]
pub struct SourceRestoreRequest {
    /// The source's name in the workload.
    pub source: String,
    /// A snapshot id prefix; `None` or `latest`: the newest complete point this host made
    /// (or any host's, for a shared source; or `host`'s).
    pub snapshot: Option<String>,
    /// Choose `latest` among this host's points.
    pub host: Option<String>,
    /// Where to: a directory (path sources), a file (SQLite), a database name or an empty
    /// data directory (PostgreSQL), `HOLDFAST_RESTORE_TARGET` (command sources).
    pub target: Option<String>,
    /// Path sources: restore only these paths.
    pub include: Vec<String>,
    /// Restore over what is at the target.
    pub replace: bool,
    /// Point-in-time recovery (`--at`, `--lsn`): a continuous source's base backup and log up
    /// to this target, instead of one recovery point.
    pub at: Option<sources::pitr::RecoveryTarget>,
    /// After a point-in-time restore, start the server and wait until it reached the target.
    pub start: bool,
    /// After a point-in-time restore, the restored server must not ship its log (a copy
    /// beside the source).
    pub no_archive: bool,
}

/// What a source restore did.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum SourceRestored {
    /// Files restored into a directory.
    Files {
        /// The recovery point (hex id).
        snapshot: String,
        /// Where.
        target: PathBuf,
        /// What was restored, and what could not be.
        result: RestoreOutcome,
    },
    /// Restored to a point in time from a base backup and the archived log.
    PointInTime(sources::pitr::PitrRestored),
    /// Restored with the source's own tool.
    Tool {
        /// The recovery point (hex id).
        snapshot: String,
        /// What was done, one line each.
        done: Vec<String>,
    },
}

impl SourceRestored {
    /// The recovery point restored (hex id).
    pub fn snapshot(&self) -> &str {
        match self {
            SourceRestored::Files { snapshot, .. } | SourceRestored::Tool { snapshot, .. } => {
                snapshot
            }
            SourceRestored::PointInTime(p) => &p.base,
        }
    }
}

impl Runtime {
    /// The recovery point of `req.source` a restore would use (see
    /// [`SourceRestoreRequest::snapshot`]).
    pub fn source_point(
        &self,
        w: &Workload,
        req: &SourceRestoreRequest,
    ) -> Result<(holdfast_core::Repository, SnapshotEntry), RuntimeError> {
        let name = req.source.as_str();
        let s = w
            .source(name)
            .ok_or_else(|| JobError::unknown_source(w, name))?;
        let (rname, rcfg) = w
            .repository_of(s)
            .ok_or_else(|| RuntimeError::SourceRestore {
                source_name: name.into(),
                message: "the source has no repository: give it `repository = NAME`".into(),
            })?;
        let repo = self.open_workload_repository(w, rname, rcfg, false)?;
        let (all, _) = snapshot::load_all(&repo)?;
        let me = holdfast_core::util::hostname();
        let mine: Vec<SnapshotEntry> = all
            .into_iter()
            .filter(|x| x.snapshot.source.as_deref() == Some(name))
            .collect();
        let snap = match req.snapshot.as_deref() {
            // The newest complete point of this source made by this host (or any host, for a
            // shared source, or the host `host` names); an explicit id may name any of them.
            None | Some("latest") => mine
                .iter()
                .rev()
                .filter(|x| match &req.host {
                    Some(h) => &x.snapshot.hostname == h,
                    None => s.owns(x.snapshot.source.as_deref(), &x.snapshot.hostname, &me),
                })
                .find(|x| x.snapshot.complete)
                .cloned()
                .ok_or_else(|| RuntimeError::SourceRestore {
                    source_name: name.into(),
                    message: format!(
                        "source {name} has no complete recovery point made by host {} (another host's: pass --host NAME or a snapshot id)",
                        req.host.as_deref().unwrap_or(&me)
                    ),
                })?,
            Some(id) => snapshot::find(&mine, id)?.clone(),
        };
        Ok((repo, snap))
    }

    /// Restore a source's recovery point: a path source's files into `req.target`; any other
    /// kind with its own tool (see [`crate::sources::restore`]).
    pub fn restore_source(
        &self,
        w: &Workload,
        req: &SourceRestoreRequest,
        progress: &dyn Progress,
    ) -> Result<SourceRestored, RuntimeError> {
        if let Some(target) = &req.at {
            return self.restore_at(w, req, target, progress);
        }
        let (repo, snap) = self.source_point(w, req)?;
        let name = req.source.as_str();
        let s = w
            .source(name)
            .ok_or_else(|| JobError::unknown_source(w, name))?;
        let fail = |message: String| RuntimeError::SourceRestore {
            source_name: name.into(),
            message,
        };
        // Files are the engine's; every other kind restores through its driver.
        if s.restores_files() {
            let target = req
                .target
                .as_ref()
                .map(PathBuf::from)
                .ok_or_else(|| fail("give --target DIRECTORY".into()))?;
            let (index, _) = repo.load_index()?;
            let opts = RestoreOptions {
                target,
                include: req.include.clone(),
                overwrite: req.replace,
                threads: 0,
            };
            let result = holdfast_core::restore::restore(&repo, &index, &snap, &opts, progress)?;
            return Ok(SourceRestored::Files {
                snapshot: snap.id.to_hex(),
                target: opts.target,
                result,
            });
        }
        let conn = sources::Conn::of(s).map_err(|e| fail(e.to_string()))?;
        let done = sources::restore(&repo, s, &snap, req.target.as_deref(), req.replace, &conn)
            .map_err(|e| fail(e.to_string()))?;
        Ok(SourceRestored::Tool {
            snapshot: snap.id.to_hex(),
            done,
        })
    }

    /// Point-in-time restore of a continuous source: its base backups are the complete
    /// recovery points this host made (or any host's, for a shared source, or `req.host`'s);
    /// the kind picks the base backup and replays its log up to `target`.
    fn restore_at(
        &self,
        w: &Workload,
        req: &SourceRestoreRequest,
        target: &sources::pitr::RecoveryTarget,
        progress: &dyn Progress,
    ) -> Result<SourceRestored, RuntimeError> {
        let name = req.source.as_str();
        let s = w
            .source(name)
            .ok_or_else(|| JobError::unknown_source(w, name))?;
        let fail = |message: String| RuntimeError::SourceRestore {
            source_name: name.into(),
            message,
        };
        let c = s.driver().continuous().ok_or_else(|| {
            fail(format!(
                "--at needs continuous protection, and {name} ({}) has none: restore one of its recovery points instead (holdfast snapshots --of {name})",
                s.driver().describe()
            ))
        })?;
        let (rname, rcfg) = w.repository_of(s).ok_or_else(|| {
            fail("the source has no repository: give it `repository = NAME`".into())
        })?;
        let repo = self.open_workload_repository(w, rname, rcfg, false)?;
        let (all, _) = snapshot::load_all(&repo)?;
        let me = holdfast_core::util::hostname();
        let (bases, logs) =
            crate::chains::Owned::of(s, c.log_kind(), &all, &me, req.host.as_deref()).cloned();
        let conn = sources::Conn::of(s).map_err(|e| fail(e.to_string()))?;
        let workload = std::path::absolute(&w.path).unwrap_or_else(|_| w.path.clone());
        let done = c
            .restore_at(&sources::pitr::PitrRestore {
                repo: &repo,
                source: name,
                workload: &workload,
                bases: &bases,
                logs: &logs,
                host: req.host.as_deref(),
                target,
                into: req.target.as_deref(),
                replace: req.replace,
                conn: &conn,
                start: req.start,
                archive: !req.no_archive,
                progress,
            })
            .map_err(|e| fail(e.to_string()))?;
        Ok(SourceRestored::PointInTime(done))
    }
}
