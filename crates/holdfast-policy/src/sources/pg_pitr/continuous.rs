//! [`Continuous`] for `kind = "postgres"`, `mode = "continuous"`: the window from the WAL
//! chain, restores to a time or an LSN, drills on a scratch server.

use holdfast_core::logs::{LogBatch, LogKind, Piece};
use holdfast_core::snapshot::SnapshotEntry;

use super::chain::{Analysis, Facts};
use super::names::{self, WalFile};
use super::{drill, recover};
use crate::sources::pitr::{Continuous, PitrDrill, PitrRestore, PitrRestored, Window};
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

    /// Timeline history files: every later restore may need them (PostgreSQL reads the
    /// newest timeline's history to follow a switch).
    fn keep_always(&self, piece: &Piece) -> bool {
        matches!(names::parse(&piece.name), Some(WalFile::History(_)))
    }
}
