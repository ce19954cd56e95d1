//! Continuous log archives: the pieces of a database's change log (PostgreSQL WAL segments,
//! SQLite WAL frames, MariaDB binary logs) stored between base backups, for point-in-time
//! recovery.
//!
//! A batch of pieces is stored as a snapshot whose [`Snapshot::log`] describes them: its files
//! are the pieces (deduplicated, compressed, encrypted, in packs, like any stream), so garbage
//! collection, `check`, `copy` and the signed history (a deleted batch is reported) treat it
//! as they treat every snapshot. Its `source` is `None`: no code that looks for a source's
//! recovery points can mistake one log batch for a whole recovery point; the source it
//! belongs to is [`LogBatch::source`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::Index;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::snapshot::{Snapshot, SnapshotEntry};
use crate::stream::{self, StreamItem, StreamOptions};

/// Which log a batch holds (each kind reads its own pieces' names and metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogKind {
    /// PostgreSQL WAL segments and timeline history files (`archive_command`).
    PgWal,
    /// SQLite WAL frames (`holdfast replicate`).
    SqliteWal,
    /// MariaDB / MySQL binary logs.
    Binlog,
}

impl LogKind {
    /// Its name in snapshot labels (`wal:NAME`, ...).
    pub fn label(self) -> &'static str {
        match self {
            LogKind::PgWal => "wal",
            LogKind::SqliteWal => "sqlite-wal",
            LogKind::Binlog => "binlog",
        }
    }
}

/// One piece of a log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Piece {
    /// Its name: the file name in the batch (a WAL segment's name, ...). Unique in its log
    /// for the kinds whose names are unique (PostgreSQL segments).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// BLAKE3 of its bytes (hex): a piece pushed again is compared by it.
    pub blake3: String,
    /// The oldest change it holds, when the kind knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_time: Option<DateTime<Utc>>,
    /// Every change committed at or before this time is in this piece or an earlier one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_time: Option<DateTime<Utc>>,
    /// The kind's own facts (timeline, start LSN, salt, offset, binlog position, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

/// What a log batch snapshot holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogBatch {
    /// The workload source it belongs to.
    pub source: String,
    /// Which log.
    pub kind: LogKind,
    /// The pieces, in log order.
    pub pieces: Vec<Piece>,
}

/// A piece to store: its description and its bytes.
pub struct NewPiece<'a> {
    /// What it is (its `size` and `blake3` must be those of `reader`'s bytes: the caller
    /// usually holds the piece in memory).
    pub piece: Piece,
    /// The bytes.
    pub reader: Box<dyn std::io::Read + 'a>,
}

impl<'a> NewPiece<'a> {
    /// A piece held in memory: `size` and `blake3` are computed from `bytes`.
    pub fn from_bytes(name: &str, bytes: &'a [u8]) -> NewPiece<'a> {
        NewPiece {
            piece: Piece {
                name: name.to_string(),
                size: bytes.len() as u64,
                blake3: blake3::hash(bytes).to_hex().to_string(),
                first_time: None,
                last_time: None,
                meta: BTreeMap::new(),
            },
            reader: Box::new(bytes),
        }
    }
}

/// Store pieces as one batch of `source`'s log; returns the batch snapshot. Durable when it
/// returns (the snapshot and the history event are flushed): only then may a piece be
/// acknowledged to the database.
pub fn append(
    repo: &Repository,
    source: &str,
    kind: LogKind,
    tags: &[String],
    pieces: Vec<NewPiece<'_>>,
    progress: &dyn Progress,
) -> Result<(Id, Snapshot)> {
    if pieces.is_empty() {
        return Err(Error::Invalid(
            "a log batch needs at least one piece".into(),
        ));
    }
    let batch = LogBatch {
        source: source.to_string(),
        kind,
        pieces: pieces.iter().map(|p| p.piece.clone()).collect(),
    };
    let items = pieces
        .into_iter()
        .map(|p| StreamItem {
            name: p.piece.name,
            reader: p.reader,
            finish: Box::new(|| Ok(())),
        })
        .collect();
    let opts = StreamOptions {
        dir: source.to_string(),
        label: format!("{}:{source}", kind.label()),
        source: None,
        tags: tags.to_vec(),
        time: None,
        log: Some(batch),
    };
    stream::backup_streams(repo, &opts, items, progress)
}

/// The log batches of `source` of this kind among `all` (oldest first), with their batch.
pub fn batches<'a>(
    all: &'a [SnapshotEntry],
    source: &str,
    kind: LogKind,
) -> Vec<(&'a SnapshotEntry, &'a LogBatch)> {
    all.iter()
        .filter_map(|e| e.snapshot.log.as_ref().map(|l| (e, l)))
        .filter(|(_, l)| l.source == source && l.kind == kind)
        .collect()
}

/// Write one piece of a batch to `out`, authenticating every blob and checking its length and
/// BLAKE3 against the batch's description (a piece that does not match is an error, never
/// handed to the database).
pub fn read_piece(
    repo: &Repository,
    index: &Index,
    batch: &SnapshotEntry,
    name: &str,
    out: &mut dyn std::io::Write,
) -> Result<Piece> {
    let log = batch.snapshot.log.as_ref().ok_or_else(|| {
        Error::Invalid(format!("snapshot {} is not a log batch", batch.id.short()))
    })?;
    let piece = log.pieces.iter().find(|p| p.name == name).ok_or_else(|| {
        Error::Invalid(format!("{name} is not in log batch {}", batch.id.short()))
    })?;
    let mut hashing = HashingWriter {
        inner: out,
        hasher: blake3::Hasher::new(),
        n: 0,
    };
    stream::read_file(
        repo,
        index,
        &batch.snapshot.tree,
        &format!("{}/{name}", log.source),
        &mut hashing,
    )?;
    let got = hashing.hasher.finalize().to_hex().to_string();
    if hashing.n != piece.size || got != piece.blake3 {
        return Err(Error::Corrupt {
            what: format!("log piece {name} in batch {}", batch.id.short()),
            detail: format!(
                "{} bytes with BLAKE3 {got}, the batch says {} bytes with {}",
                hashing.n, piece.size, piece.blake3
            ),
        });
    }
    Ok(piece.clone())
}

struct HashingWriter<'a> {
    inner: &'a mut dyn std::io::Write,
    hasher: blake3::Hasher,
    n: u64,
}

impl std::io::Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
