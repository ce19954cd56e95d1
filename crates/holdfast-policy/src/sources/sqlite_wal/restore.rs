//! `restore --source NAME --at TIME|latest` of a continuous SQLite source: the newest
//! generation whose snapshot is at or before the target, then its shipped frames (whole commit
//! groups, validated again) of the pieces read completely before the target, written into a
//! scratch file that is checked and moved into place by [`crate::sources::sqlite_restore`].

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use holdfast_core::logs;
use holdfast_core::snapshot::SnapshotEntry;
use holdfast_core::stream;

use super::frames;
use super::{generations, Generation, PieceType};
use crate::sources::pitr::{PitrRestore, PitrRestored, RecoveryTarget};
use crate::sources::sqlite_restore::{self, RestoreError};

/// Why a point-in-time restore of an SQLite source failed.
#[derive(Debug, thiserror::Error)]
pub enum PitrError {
    /// No `--target`.
    #[error("restoring an sqlite source needs --target FILE")]
    NoTarget,
    /// `--lsn` or another position.
    #[error("an SQLite source has no log positions to restore to: give --at TIME or --at latest")]
    Position,
    /// Nothing to restore from.
    #[error("no generation of this source has its snapshot in the repository: run `holdfast replicate` (it starts one)")]
    Nothing,
    /// The target is before every snapshot.
    #[error(
        "{target} is before the oldest snapshot of a generation ({from}): restore to a later time"
    )]
    TooEarly {
        /// Asked for.
        target: DateTime<Utc>,
        /// The oldest.
        from: DateTime<Utc>,
    },
    /// The target is after what the log reaches.
    #[error("generation {generation} is shipped only up to {to}{why}, so {target} cannot be restored exactly: restore --at latest, or a time up to {to}")]
    TooLate {
        /// The generation.
        generation: String,
        /// Asked for.
        target: DateTime<Utc>,
        /// What it reaches.
        to: DateTime<Utc>,
        /// Why it stops there.
        why: String,
    },
    /// What the repository holds contradicts itself.
    #[error("generation {0}: {1}")]
    Inconsistent(String, String),
    /// Reading the repository failed.
    #[error(transparent)]
    Engine(#[from] holdfast_core::Error),
    /// The restore was refused or failed.
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

fn corrupt(what: &str, detail: impl Into<String>) -> holdfast_core::Error {
    holdfast_core::Error::Corrupt {
        what: what.to_string(),
        detail: detail.into(),
    }
}

/// The generation and the snapshot in it (index of its piece in the chain) to restore from:
/// for a time, the newest usable snapshot at or before it; for `latest`, the newest snapshot
/// of the generation that reaches furthest.
fn choose<'g, 'a>(
    gens: &'g [Generation<'a>],
    target: &RecoveryTarget,
) -> Result<(&'g Generation<'a>, usize, &'a SnapshotEntry), PitrError> {
    let usable: Vec<&Generation> = gens.iter().filter(|g| g.usable()).collect();
    let from = usable
        .iter()
        .filter_map(|g| g.from())
        .min()
        .ok_or(PitrError::Nothing)?;
    let time = |g: &Generation, i: usize| g.chain[i].2.last_time;
    match target {
        RecoveryTarget::Latest => {
            let g = usable
                .into_iter()
                .max_by_key(|g| (g.to(), g.started()))
                .ok_or(PitrError::Nothing)?;
            let (i, b) = *g.points.last().ok_or(PitrError::Nothing)?;
            Ok((g, i, b))
        }
        RecoveryTarget::Time(t) => usable
            .into_iter()
            .flat_map(|g| g.points.iter().map(move |(i, b)| (g, *i, *b)))
            .filter(|(g, i, _)| time(g, *i) <= *t)
            .max_by_key(|(g, i, _)| time(g, *i))
            .ok_or(PitrError::TooEarly { target: *t, from }),
        RecoveryTarget::Position(_) => Err(PitrError::Position),
    }
}

/// Restore to `job.target` (see the module documentation).
pub fn restore_at(job: &PitrRestore) -> Result<PitrRestored, PitrError> {
    if matches!(job.target, RecoveryTarget::Position(_)) {
        return Err(PitrError::Position);
    }
    let into = PathBuf::from(job.into.ok_or(PitrError::NoTarget)?);
    let bases: Vec<&SnapshotEntry> = job.bases.iter().collect();
    let batches: Vec<_> = job
        .logs
        .iter()
        .filter_map(|e| e.snapshot.log.as_ref().map(|l| (e, l)))
        .collect();
    let mut problems = Vec::new();
    let gens = generations(&bases, &batches, &mut problems);
    let (g, at, base) = choose(&gens, job.target)?;
    if let Some(p) = problems.iter().find(|p| p.contains(&g.id)) {
        return Err(PitrError::Inconsistent(g.id.clone(), p.clone()));
    }
    let start = g.chain[at].2.clone();
    let to = g.to().expect("a usable generation");
    let (limit, t) = match job.target {
        RecoveryTarget::Time(t) => (*t, Some(*t)),
        _ => (DateTime::<Utc>::MAX_UTC, None),
    };
    if let Some(t) = t.filter(|t| *t > to) {
        let why = match g.broken {
            Some((seq, off, _)) => format!(" (piece {seq} at WAL offset {off} is missing)"),
            None => " (the newest piece shipped)".into(),
        };
        return Err(PitrError::TooLate {
            generation: g.id.clone(),
            target: t,
            to,
            why,
        });
    }
    // The pieces read completely before the target: none of their commits is later.
    let apply: Vec<_> = g.chain[at + 1..]
        .iter()
        .take_while(|(_, _, i)| i.read_end <= limit)
        .collect();
    let reached_log = apply
        .last()
        .map(|(_, _, i)| i.last_time)
        .unwrap_or(start.last_time);
    let reached = t.map_or(reached_log, |t| reached_log.min(t));
    let (index, _) = job.repo.load_index()?;
    let files = stream::list_files(job.repo, &index, &base.snapshot.tree)?;
    let (d, f) = files
        .first()
        .ok_or_else(|| corrupt("the generation's snapshot", "it holds no database file"))?;
    let path = format!("{d}/{f}");
    let frames_n: u64 = apply
        .iter()
        .map(|(_, p, i)| p.size / (24 + u64::from(i.page_size)))
        .sum();
    let done = sqlite_restore::restore(&into, job.replace, |out| {
        stream::read_file(job.repo, &index, &base.snapshot.tree, &path, out)?;
        let len = out
            .metadata()
            .map_err(|e| corrupt("the restored snapshot", e.to_string()))?
            .len();
        let mut head = [0u8; 2];
        out.seek(SeekFrom::Start(16))
            .and_then(|_| out.read_exact(&mut head))
            .map_err(|e| corrupt("the restored snapshot", e.to_string()))?;
        let ps = match u16::from_be_bytes(head) {
            1 => 65536,
            n => u32::from(n),
        };
        if ps != start.page_size || len != u64::from(start.db_size) * u64::from(ps) {
            return Err(corrupt(
                &format!("snapshot {} of generation {}", base.id.short(), g.id),
                format!(
                    "{len} bytes of {ps}-byte pages, its start piece says {} pages of {} bytes",
                    start.db_size, start.page_size
                ),
            ));
        }
        for (batch, piece, info) in &apply {
            if info.kind != PieceType::Frames {
                continue;
            }
            let mut buf = Vec::with_capacity(piece.size as usize);
            logs::read_piece(job.repo, &index, batch, &piece.name, &mut buf)?;
            let wal = info
                .wal
                .ok_or_else(|| corrupt(&piece.name, "frames without a WAL"))?;
            frames::apply(out, wal, info.start, info.cksum, &buf)
                .map_err(|e| corrupt(&format!("log piece {}", piece.name), e))?;
        }
        Ok(())
    })?;
    let mut lines = vec![
        format!(
            "generation {}: snapshot {} at {}, then {} frames of {} pieces",
            g.id,
            base.id.short(),
            start.last_time.to_rfc3339(),
            frames_n,
            apply.len()
        ),
        done,
        format!(
            "every commit at or before {} is restored, none after {} (commit times are known to the ship interval)",
            reached.to_rfc3339(),
            apply
                .last()
                .map(|(_, _, i)| i.read_end)
                .unwrap_or(start.read_end)
                .to_rfc3339()
        ),
    ];
    lines.extend(problems);
    Ok(PitrRestored {
        base: base.id.to_hex(),
        target: job.target.clone(),
        reached: Some(reached),
        done: lines,
        warnings: Vec::new(),
    })
}
