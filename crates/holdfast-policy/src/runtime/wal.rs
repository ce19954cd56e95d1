//! `wal-push` and `wal-fetch` of a continuous PostgreSQL source, and its archive health: the
//! workload's source, repository, ownership and state directory, around
//! [`crate::sources::pg_wal`].

use std::path::Path;

use holdfast_core::progress::Progress;

use super::{Runtime, RuntimeError};
use crate::config::{SourceConfig, Workload};
use crate::jobs::JobError;
use crate::sources::pg_wal::{self, fetch, push, ArchiveHealth, WalError, WalSettings};

/// Why `wal-push` or `wal-fetch` could not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum WalCommandError {
    /// The workload or the runtime failed (unknown source, no repository, ...).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The source archives no WAL.
    #[error("source {0:?} archives no WAL: declare it kind = \"postgres\", mode = \"continuous\"")]
    NotContinuous(String),
    /// Archiving or fetching failed.
    #[error("{source_name}: {source}")]
    Wal {
        /// The source.
        source_name: String,
        /// Why.
        #[source]
        source: WalError,
    },
}

impl WalCommandError {
    /// The WAL error inside, if that is what failed.
    pub fn wal(&self) -> Option<&WalError> {
        match self {
            WalCommandError::Wal { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn continuous<'a>(
    w: &'a Workload,
    name: &str,
) -> Result<(&'a SourceConfig, &'a WalSettings), WalCommandError> {
    let s = w
        .source(name)
        .ok_or_else(|| RuntimeError::from(JobError::unknown_source(w, name)))?;
    let settings = s
        .driver()
        .pg_wal()
        .ok_or_else(|| WalCommandError::NotContinuous(name.into()))?;
    Ok((s, settings))
}

/// The source's repository location as the workload names it (`NAME URL`), which local
/// records are tied to.
fn repository_key(w: &Workload, s: &SourceConfig) -> String {
    match w.repository_of(s) {
        Some((name, r)) if r.url.contains("://") => format!("{name} {}", r.url),
        Some((name, r)) => format!("{name} {}", w.resolve(Path::new(&r.url)).display()),
        None => String::new(),
    }
}

impl Runtime {
    /// Opens the repository of `s` (creating it if there is none, as `protect` does).
    fn wal_opener<'a>(
        &'a self,
        w: &'a Workload,
        s: &'a SourceConfig,
    ) -> impl Fn() -> Result<holdfast_core::Repository, String> + 'a {
        move || {
            let (rname, rcfg) = w.repository_of(s).ok_or_else(|| {
                "the source has no repository: give it `repository = NAME`".to_string()
            })?;
            self.open_workload_repository(w, rname, rcfg, true)
                .map_err(|e| e.to_string())
        }
    }

    /// `wal-push --source NAME %p`: archive `path` (see [`push::push`]). Success means the
    /// file is durable in the repository.
    pub fn wal_push(
        &self,
        w: &Workload,
        source: &str,
        path: &Path,
        progress: &dyn Progress,
    ) -> Result<push::Pushed, WalCommandError> {
        let (s, settings) = continuous(w, source)?;
        let state = settings.state_dir(&self.state_dir, source);
        let me = holdfast_core::util::hostname();
        let repository = repository_key(w, s);
        let job = push::PushJob {
            source,
            path,
            state: &state,
            settings,
            repository: &repository,
            now: self.now(),
            tags: &s.tags,
            progress,
        };
        push::push(&job, &self.wal_opener(w, s), &|snap| s.owns_log(snap, &me)).map_err(
            |source_err| WalCommandError::Wal {
                source_name: source.into(),
                source: source_err,
            },
        )
    }

    /// `wal-fetch --source NAME %f %p` (see [`fetch::fetch`]).
    pub fn wal_fetch(
        &self,
        w: &Workload,
        source: &str,
        name: &str,
        dest: &Path,
        host: Option<&str>,
    ) -> Result<fetch::Fetched, WalCommandError> {
        let (s, settings) = continuous(w, source)?;
        let state = settings.state_dir(&self.state_dir, source);
        let me = holdfast_core::util::hostname();
        let repository = repository_key(w, s);
        let job = fetch::FetchJob {
            source,
            name,
            dest,
            state: &state,
            settings,
            repository: &repository,
        };
        // Another host's WAL (`--host`, written by a restore of that host's points), or the
        // batches this host owns.
        let mine = |snap: &holdfast_core::snapshot::Snapshot| match host {
            Some(h) => snap.hostname == h && snap.log.as_ref().is_some_and(|l| l.source == source),
            None => s.owns_log(snap, &me),
        };
        fetch::fetch(&job, &self.wal_opener(w, s), &mine).map_err(|source_err| {
            WalCommandError::Wal {
                source_name: source.into(),
                source: source_err,
            }
        })
    }

    /// The archive health of a source on this host, if it archives WAL (see
    /// [`pg_wal::archive_health`]): `status` reports an RPO failure while it is failing and a
    /// failing control while it is over `[source.log] queue-max`.
    pub fn archive_health(&self, s: &SourceConfig) -> Option<ArchiveHealth> {
        let settings = s.driver().pg_wal()?;
        Some(pg_wal::archive_health(&self.state_dir, s.name(), settings))
    }
}
