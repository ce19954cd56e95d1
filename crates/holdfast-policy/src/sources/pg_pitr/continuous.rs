//! [`Continuous`] for `kind = "postgres"`, `mode = "continuous"`: the window from the WAL
//! chain, restores to a time or an LSN, drills on a scratch server.

use holdfast_core::logs::{LogBatch, LogKind, Piece};
use holdfast_core::snapshot::SnapshotEntry;

use super::chain::{Analysis, Facts};
use super::names::{self, WalFile};
use super::{drill, recover};
use crate::sources::pitr::{Continuous, LogHealth, PitrDrill, PitrRestore, PitrRestored, Window};
use crate::sources::postgres::PostgresSource;
use crate::sources::{DrillOutcome, SourceError};

fn kind_error(e: recover::RecoverError) -> SourceError {
    match e {
        recover::RecoverError::Engine(e) => SourceError::Engine(e),
        e => SourceError::new("postgres", e),
    }
}

impl Continuous for PostgresSource {
    fn log_kind(&self) -> LogKind {
        LogKind::PgWal
    }

    /// From the snapshots alone: a base's backup history file is matched by the time in its
    /// label when the archive recorded it in the piece's meta, else by when it was stored
    /// (its stop time is then the time it was stored: later than the real one, never
    /// earlier).
    fn window(&self, bases: &[&SnapshotEntry], batches: &[(&SnapshotEntry, &LogBatch)]) -> Window {
        let facts = Facts::from_meta(batches);
        Analysis::new(bases, batches, &facts).window()
    }

    fn restore_at(&self, job: &PitrRestore) -> Result<PitrRestored, SourceError> {
        recover::restore_at(job, &recover::Options::user())
            .map(|r| r.restored)
            .map_err(kind_error)
    }

    fn drill_at(&self, job: &PitrDrill) -> Result<DrillOutcome, SourceError> {
        drill::drill_at(self, job).map_err(kind_error)
    }

    fn base_every(&self) -> chrono::Duration {
        self.wal
            .as_ref()
            .and_then(|w| w.base_every)
            .unwrap_or_else(|| chrono::Duration::days(1))
    }

    /// From the `wal-push` state on this host: failing now, WAL waiting beyond `queue-max`,
    /// or no push ever seen (archive_command not set, or another state directory).
    fn health(&self, name: &str, state_dir: &std::path::Path) -> Option<LogHealth> {
        let w = self.wal.as_ref()?;
        let h = crate::sources::pg_wal::archive_health(state_dir, name, w);
        let mut notes = Vec::new();
        if h.measured_at.is_none() {
            notes.push(format!(
                "no wal-push has run with the state directory {} on this host: is archive_command set, with the same HOLDFAST_STATE_DIR (or [source.log] spool)?",
                h.state_dir.display()
            ));
        }
        Some(LogHealth {
            failing_since: h.failing_since,
            last_error: h.last_error,
            waiting_bytes: h.measured_at.map(|_| h.waiting_bytes),
            queue_max: Some(h.queue_max),
            notes,
        })
    }

    /// The server says which segment holds the last byte of WAL it inserted: when that
    /// segment is archived, everything written up to the moment asked is.
    fn shipped_until(
        &self,
        batches: &[(&SnapshotEntry, &LogBatch)],
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        let conn = self.server.conn().ok()?;
        let w = crate::sources::pg_wal::idle::written(&conn).ok()?;
        crate::sources::pg_wal::idle::archived_until(&w, &|name| {
            batches
                .iter()
                .any(|(_, l)| l.pieces.iter().any(|p| p.name == name))
        })
    }

    /// Timeline history files: every later restore may need them (PostgreSQL reads the
    /// newest timeline's history to follow a switch).
    fn keep_always(&self, piece: &Piece) -> bool {
        matches!(names::parse(&piece.name), Some(WalFile::History(_)))
    }
}
