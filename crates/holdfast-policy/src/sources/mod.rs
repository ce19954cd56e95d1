//! Source drivers: one module per kind, each with its own typed configuration, behind one
//! [`Source`] trait (backup, restore, drill, discover-match, preflight, facts).
//!
//! Databases are backed up through their own backup mechanism, never by copying live files:
//! SQLite (online backup API), PostgreSQL (pg_dump / pg_dumpall, or pg_basebackup),
//! MySQL/MariaDB (mysqldump --single-transaction), and any command's output. Each dump is
//! streamed into the repository; each is restored by the store's own restore tool; each can be
//! drilled on a scratch server.
//!
//! Adding a kind: write a module with a configuration type implementing [`Source`] and a
//! `build(&RawSource, &Path) -> Result<Arc<dyn Source>, String>`, and add one line to
//! [`KINDS`]. Nothing else matches on the kind.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use holdfast_core::progress::Progress;
use holdfast_core::snapshot::SnapshotEntry;
use holdfast_core::{Id, Repository};

use crate::found::Found;

mod command;
mod conn;
mod db_restore;
pub mod journal;
mod journal_export;
mod journal_pieces;
mod journal_restore;
mod mysql;
pub mod mysql_binlog;
mod path;
pub mod path_btrfs;
pub mod path_lvm;
pub mod pg_physical;
pub mod pg_pitr;
pub mod pitr;
mod postgres;
pub mod raw;
mod s3;
mod scratch;
mod sqlite;
pub mod sqlite_restore;
pub mod sqlite_wal;
mod systool;
pub mod thin_xml;
mod tool;
pub mod volume;
mod volume_freeze;
mod volume_lvm;
pub mod volume_thin;

pub mod my_scratch;
pub mod pg_scratch;
pub mod pg_wal;

pub use conn::Conn;
pub use db_restore::DbRestoreError;
pub use path::unusable;
pub use raw::RawSource;
pub use scratch::ScratchError;
pub use sqlite::sqlite_online_backup;
pub use tool::ToolError;

/// How a kind turns a `[[source]]` table into its driver; the error is shown at the source's
/// name, as `file:line:column: message`.
pub type Build = fn(&RawSource, &Path) -> Result<Arc<dyn Source>, String>;

/// Every kind the workload file accepts (`kind = "..."`), with its builder. The one place
/// kinds are registered.
pub const KINDS: &[(&str, Build)] = &[
    ("path", path::build),
    ("sqlite", sqlite::build),
    ("postgres", postgres::build),
    ("mysql", mysql::build),
    ("command", command::build),
    ("s3", s3::build),
    ("volume", volume::build),
    ("journal", journal::build),
];

/// A source driver failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The repository failed while a path source was read or restored: the job itself fails
    /// (a drill is not recorded), as any engine error does.
    #[error(transparent)]
    Engine(#[from] holdfast_core::Error),
    /// The kind's own error (its message is the kind error's).
    #[error("{source}")]
    Kind {
        /// The kind that failed.
        kind: &'static str,
        /// The kind's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl SourceError {
    /// Wrap a kind's error.
    pub fn new(kind: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        SourceError::Kind {
            kind,
            source: Box::new(e),
        }
    }
}

/// What a backup needs.
pub struct BackupJob<'a> {
    /// The repository.
    pub repo: &'a Repository,
    /// The source's name.
    pub name: &'a str,
    /// Tags for its snapshot.
    pub tags: &'a [String],
    /// The recovery point's time.
    pub time: DateTime<Utc>,
    /// Where temporary copies may go.
    pub scratch: &'a Path,
    /// Progress.
    pub progress: &'a dyn Progress,
}

/// What a backup made.
#[derive(Debug, Default)]
pub struct Backed {
    /// The snapshot written, if any.
    pub snapshot: Option<Id>,
    /// What was skipped or changed while read (warnings).
    pub skipped: Vec<String>,
}

/// What a restore needs.
pub struct RestoreJob<'a> {
    /// The repository.
    pub repo: &'a Repository,
    /// The recovery point.
    pub snap: &'a SnapshotEntry,
    /// The target (its meaning is the kind's: a file, a directory, a database name).
    pub into: Option<&'a str>,
    /// Replace existing data (otherwise a non-empty target is refused).
    pub replace: bool,
    /// The database server to restore into.
    pub conn: &'a Conn,
}

/// What a drill needs.
pub struct DrillJob<'a> {
    /// The repository.
    pub repo: &'a Repository,
    /// The recovery point drilled.
    pub snap: &'a SnapshotEntry,
    /// An empty scratch directory for this drill.
    pub scratch: &'a Path,
    /// Limit for scratch servers and verify commands.
    pub timeout: Duration,
    /// Progress.
    pub progress: &'a dyn Progress,
}

/// Result of a drill.
pub struct DrillOutcome {
    /// Passed.
    pub passed: bool,
    /// What was done and checked.
    pub messages: Vec<String>,
    /// Files restored.
    pub files: u64,
    /// Bytes restored.
    pub bytes: u64,
}

/// A kind of data source: its typed configuration and how it is backed up, restored, drilled,
/// matched against what discovery finds, and checked before any backup runs.
pub trait Source: std::fmt::Debug + Send + Sync {
    /// Its name in the workload file (`kind = "..."`) and in snapshot labels.
    fn kind(&self) -> &'static str;
    /// The files it reads, if any (for discovery and reports).
    fn paths(&self) -> &[PathBuf] {
        &[]
    }
    /// Whether it copies files as they are (a path source) rather than through a store's own
    /// backup mechanism; a restore of it is a file restore.
    fn copies_files(&self) -> bool {
        false
    }
    /// Back it up now.
    fn backup(&self, job: &BackupJob) -> Result<Backed, SourceError>;
    /// Restore a recovery point with the store's own tools; what was done.
    fn restore(&self, job: &RestoreJob) -> Result<Vec<String>, SourceError>;
    /// Restore into a scratch place, check it, run its verify step.
    fn drill(&self, job: &DrillJob) -> Result<DrillOutcome, SourceError>;
    /// The database server settings to restore into, by default its own.
    fn conn(&self) -> Result<Conn, SourceError> {
        Ok(Conn::default())
    }
    /// Whether it protects this discovered location (never by kind alone). File systems are
    /// matched by [`Source::paths`] for every kind; explicit `covers` by the caller.
    fn covers(&self, _f: &Found) -> bool {
        false
    }
    /// Places beside its own that this source's access shows to `discover` (an `s3` source
    /// lists the buckets of its endpoint); asked only when a workload is given, and may use
    /// the network.
    fn neighbours(&self) -> Vec<Found> {
        Vec::new()
    }
    /// Why it cannot be backed up as declared, if it cannot (read before any backup runs).
    fn preflight(&self) -> Vec<String> {
        Vec::new()
    }
    /// One line for people: how it is backed up (reports, compliance evidence).
    fn describe(&self) -> String;
    /// Its continuous protection (a change log archived between base backups, for
    /// point-in-time recovery), if it is configured.
    fn continuous(&self) -> Option<&dyn pitr::Continuous> {
        None
    }
    /// Its WAL archiving settings, for a continuous PostgreSQL source (`wal-push`,
    /// `wal-fetch`, [`pg_wal::archive_health`]).
    fn pg_wal(&self) -> Option<&pg_wal::WalSettings> {
        None
    }
    /// What `holdfast replicate` runs for it (log shipping in the foreground), if anything.
    fn replicator(&self, _name: &str) -> Option<Box<dyn pitr::Replicator>> {
        None
    }
}

/// The driver of a kind name, if it is registered.
pub fn builder(kind: &str) -> Option<Build> {
    KINDS.iter().find(|(k, _)| *k == kind).map(|(_, b)| *b)
}

/// Anything that has a source driver (a workload's `SourceConfig`).
pub trait AsSource {
    /// Its driver.
    fn as_source(&self) -> &dyn Source;
}

/// Restore a source's snapshot with the store's own tools (see each kind for what `into`
/// means). Refuses a non-empty target unless `replace`.
pub fn restore(
    repo: &Repository,
    s: &impl AsSource,
    snap: &SnapshotEntry,
    into: Option<&str>,
    replace: bool,
    conn: &Conn,
) -> Result<Vec<String>, SourceError> {
    s.as_source().restore(&RestoreJob {
        repo,
        snap,
        into,
        replace,
        conn,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Workload;

    #[test]
    fn every_registered_kind_builds_a_driver_of_its_name() {
        for (k, _) in super::KINDS {
            let text = format!(
                "[[source]]\nname = \"s\"\nkind = \"{k}\"\npath = \"/x\"\ncommand = \"c\"\n"
            );
            let w = Workload::parse(Path::new("/w.toml"), &text);
            if *k == "journal" {
                // A journal source reads a directory, never `path`.
                let e = w.unwrap_err().to_string();
                assert!(e.contains("give directory ="), "{e}");
                let w = Workload::parse(
                    Path::new("/w.toml"),
                    "[[source]]\nname = \"s\"\nkind = \"journal\"\ndirectory = \"/x\"\n",
                )
                .unwrap();
                assert_eq!(w.sources[0].kind(), "journal");
                assert!(w.sources[0].driver().describe().contains("/x"));
                continue;
            }
            if *k == "s3" {
                let e = w.unwrap_err().to_string();
                // A bucket source needs its bucket (or a binary built with object storage).
                assert!(
                    e.contains("needs bucket") || e.contains("built with the \"s3\" feature"),
                    "{e}"
                );
                continue;
            }
            let w = w.unwrap();
            assert_eq!(w.sources[0].kind(), *k);
            assert!(!w.sources[0].driver().describe().is_empty());
        }
        assert!(super::builder("tape").is_none());
    }
}
