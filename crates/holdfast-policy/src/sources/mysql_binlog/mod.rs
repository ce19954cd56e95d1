//! Continuous protection of `kind = "mysql"` sources (`mode = "continuous"`): base backups
//! are consistent dumps that record their binary log coordinates, and `holdfast replicate`
//! archives the binary log between them (`mariadb-binlog --read-from-remote-server --raw
//! --stop-never`), so that a restore can replay it up to any second.
//!
//! Pieces (`LogKind::Binlog`), each described by its metadata:
//! - a range of a binary log file: `file`, `start`, `end` (byte positions, `end` exclusive;
//!   a file's first piece starts at 0, the magic number), `server-id`, `closed = "true"` when
//!   it ends with the file's Rotate or Stop event; `first_time` is its first event's time,
//!   `last_time` the instant before which every change is stored;
//! - a heartbeat: a range of no bytes at the stored end, written when nothing changed;
//! - a base marker (`base` = the base backup's id, `file`, `pos`, `consistent-by`), written
//!   right after each base backup: where its replay starts.

mod drill;
mod events;
mod restore;
mod stream;
mod window;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use holdfast_core::logs::{self, LogBatch, LogKind, NewPiece};
use holdfast_core::progress::Progress;
use holdfast_core::snapshot::SnapshotEntry;
use holdfast_core::{Id, Repository};

use super::conn::ServerSettings;
use super::pitr::{Continuous, PitrRestore, PitrRestored, Replicator, Window};
use super::{RawSource, SourceError};

pub use events::{dump_coordinates, Coordinates, ScanReader, Seen};

/// Piece metadata keys.
pub mod meta {
    /// Binary log file name.
    pub const FILE: &str = "file";
    /// First byte of a range.
    pub const START: &str = "start";
    /// End of a range (exclusive).
    pub const END: &str = "end";
    /// The range ends its file.
    pub const CLOSED: &str = "closed";
    /// The server id of its last event.
    pub const SERVER_ID: &str = "server-id";
    /// A heartbeat (no bytes).
    pub const HEARTBEAT: &str = "heartbeat";
    /// A base marker: the base backup's id (hex).
    pub const BASE: &str = "base";
    /// A base marker's position.
    pub const POS: &str = "pos";
    /// When the base's dump had certainly taken its consistent snapshot (RFC 3339).
    pub const CONSISTENT_BY: &str = "consistent-by";
}

/// Why binary log archiving or a point-in-time restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BinlogError {
    /// The repository failed.
    #[error(transparent)]
    Engine(#[from] holdfast_core::Error),
    /// A client tool failed.
    #[error(transparent)]
    Tool(#[from] super::ToolError),
    /// The base backup could not be restored.
    #[error(transparent)]
    Restore(#[from] super::DbRestoreError),
    /// The password is not available.
    #[error(transparent)]
    Password(#[from] super::conn::PasswordEnvUnset),
    /// The server's binary log is off or unreadable.
    #[error("{0}")]
    Server(String),
    /// The spool could not be used.
    #[error("spool {path}: {source}")]
    Spool {
        /// The spool path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A spooled file is not a binary log continuing where the archive ends.
    #[error("{file} in the spool does not continue the archive at position {pos}: {why} (was the server's binary log reset or the server replaced? take a base backup with `holdfast protect`; the archive has a gap from there)")]
    Diverged {
        /// The file.
        file: String,
        /// The archive's end in it.
        pos: u64,
        /// What was wrong.
        why: String,
    },
    /// The target cannot be reached from what the repository holds.
    #[error("{0}")]
    Unreachable(String),
    /// The dump recorded no binary log coordinates.
    #[error("the dump recorded no binary log position (is log_bin on, and may the user run SHOW MASTER STATUS / BINLOG MONITOR?): a continuous source needs it; this base backup cannot start a point-in-time restore")]
    NoCoordinates,
}

impl From<BinlogError> for SourceError {
    fn from(e: BinlogError) -> Self {
        SourceError::new("mysql", e)
    }
}

/// Continuous protection settings of a mysql source.
#[derive(Debug, Clone)]
pub struct BinlogSettings {
    /// The source's name.
    pub name: String,
    /// The server.
    pub server: ServerSettings,
    /// One database (replay is limited to it), or every one.
    pub database: Option<String>,
    /// Pause between two rounds of `holdfast replicate`.
    pub interval: Duration,
    /// At least this often a round records that the log is shipped up to now.
    pub heartbeat: Duration,
    /// Where the stream writes (default: the state directory's `binlog/NAME`).
    pub spool: Option<PathBuf>,
    /// How often `protect` takes a base dump (`[source.log] base-every`; default 1 day).
    pub base_every: Option<chrono::Duration>,
    /// The query a drill runs on the restored scratch server (the source's `verify`).
    pub verify: Option<String>,
    /// The database it runs in (`verify-database`, else the source's database).
    pub verify_database: Option<String>,
}

impl BinlogSettings {
    /// From the source table (`mode = "continuous"` and its `[source.log]`).
    pub fn of(r: &RawSource, database: Option<String>) -> Result<Self, String> {
        let log = r.log.clone().unwrap_or_default();
        let pos = |d: Option<chrono::Duration>, default: u64, what: &str| match d {
            None => Ok(Duration::from_secs(default)),
            Some(d) => d
                .to_std()
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("source {:?}: log.{what} must be positive", r.name())),
        };
        if log.queue_max.is_some() || log.streaming {
            return Err(format!(
                "source {:?}: log.queue-max and log.streaming are PostgreSQL settings; a mysql source streams its binary log under `holdfast replicate`",
                r.name()
            ));
        }
        Ok(BinlogSettings {
            name: r.name().to_string(),
            server: ServerSettings::of(r),
            database,
            interval: pos(log.interval, 1, "interval")?,
            heartbeat: pos(log.heartbeat, 60, "heartbeat")?,
            spool: log.spool,
            base_every: log.base_every,
            verify: r.verify.clone(),
            verify_database: r.verify_database.clone(),
        })
    }

    /// A replicator for `holdfast replicate`.
    pub fn replicator(&self) -> Box<dyn Replicator> {
        Box::new(stream::BinlogStream::new(self.clone()))
    }
}

impl Continuous for BinlogSettings {
    fn log_kind(&self) -> LogKind {
        LogKind::Binlog
    }

    fn window(&self, bases: &[&SnapshotEntry], batches: &[(&SnapshotEntry, &LogBatch)]) -> Window {
        window::Chain::of(batches).window(bases)
    }

    fn restore_at(&self, job: &PitrRestore) -> Result<PitrRestored, SourceError> {
        Ok(restore::restore_at(self, job)?)
    }

    fn base_every(&self) -> chrono::Duration {
        self.base_every.unwrap_or_else(|| chrono::Duration::days(1))
    }

    fn drill_at(&self, job: &super::pitr::PitrDrill) -> Result<super::DrillOutcome, SourceError> {
        drill::drill_at(self, job)
    }

    /// Older than the oldest kept base dump, and not needed by any kept base: a base's replay
    /// starts inside a binary log file whose first pieces were usually stored before it.
    fn prunable<'a>(
        &self,
        kept_bases: &[&SnapshotEntry],
        batches: &[(&'a SnapshotEntry, &'a LogBatch)],
    ) -> Vec<&'a SnapshotEntry> {
        let needed = needed_batches(kept_bases, batches);
        crate::sources::pitr::prunable_batches(kept_bases, batches, &|_| false)
            .into_iter()
            .filter(|e| !needed.contains(&e.id))
            .collect()
    }
}

/// The log batches a replay from any of `bases` needs, whatever their age (for retention: the
/// pieces from the start of a base's binary log file, which may be stored before the base,
/// and the bases' markers). Batches not in it are not needed by these bases.
pub fn needed_batches(
    bases: &[&SnapshotEntry],
    batches: &[(&SnapshotEntry, &LogBatch)],
) -> std::collections::BTreeSet<Id> {
    window::Chain::of(batches).needed(bases)
}

/// The dump options that make a base backup record its coordinates, and the reader filter
/// that reads them (MariaDB's `mariadb-dump`/`mysqldump` spelling; MySQL 8.0.26+ also
/// accepts it, deprecated in favour of `--source-data=2`).
pub const DUMP_OPTION: &str = "--master-data=2";

/// What a base backup's dump saw.
pub fn new_seen() -> Arc<Mutex<Seen>> {
    Arc::new(Mutex::new(Seen::default()))
}

/// After a base backup `id`: record where its replay starts, as a marker piece. Durable
/// when it returns.
pub fn mark_base(
    repo: &Repository,
    source: &str,
    id: &Id,
    seen: &Arc<Mutex<Seen>>,
    progress: &dyn Progress,
) -> Result<(), BinlogError> {
    let s = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (Some(c), Some(at)) = (s.coordinates, s.at) else {
        return Err(BinlogError::NoCoordinates);
    };
    let mut p = NewPiece::from_bytes(&format!("base.{}", id.to_hex()), &[]);
    p.piece.first_time = Some(at);
    for (k, v) in [
        (meta::BASE, id.to_hex()),
        (meta::FILE, c.file),
        (meta::POS, c.pos.to_string()),
        (meta::CONSISTENT_BY, at.to_rfc3339()),
    ] {
        p.piece.meta.insert(k.into(), v);
    }
    logs::append(repo, source, LogKind::Binlog, &[], vec![p], progress)?;
    Ok(())
}

/// Whole seconds, for `--stop-datetime` (read in the client's time zone: the child runs with
/// `TZ=UTC`).
pub(crate) fn utc_seconds(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

#[cfg(test)]
mod tests;
