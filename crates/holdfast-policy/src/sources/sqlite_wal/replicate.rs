//! `holdfast replicate` for a continuous SQLite source: every round, the WAL frames committed
//! since the last round are read from the `-wal` file, validated and stored as one log piece;
//! a read transaction is held between rounds so that no checkpoint can restart the WAL over
//! frames not yet read. The safety argument is in docs/DESIGN.md ("SQLite continuous
//! protection").

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use holdfast_core::logs::{self, LogKind, NewPiece};
use holdfast_core::progress::NoProgress;
use holdfast_core::stream::{self, StreamItem, StreamOptions};
use holdfast_core::Repository;
use rusqlite::{Connection, OpenFlags};

use super::frames::{self, Frames, WalId, WalRead, WAL_HEADER};
use super::{PieceInfo, PieceType, SqliteWal};
use crate::sources::pitr::{Replicator, Shipped};
use crate::sources::SourceError;

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    /// SQLite failed.
    #[error("{what}: {source}")]
    Sqlite {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// Local I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database is not in WAL mode.
    #[error("{0} is in journal mode {1:?}, not WAL: continuous protection reads the WAL; run `PRAGMA journal_mode=WAL` on it once (it persists)")]
    NotWal(String, String),
    /// The database file is gone.
    #[error("{0} does not exist any more: nothing is shipped until it is back (the replicated log stops here)")]
    Gone(String),
    /// The repository failed: nothing of this round was acknowledged.
    #[error("storing into the repository (nothing of this round counts as shipped): {0}")]
    Store(#[from] holdfast_core::Error),
}

fn sq(what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> ReplicateError {
    let what = what.into();
    move |source| ReplicateError::Sqlite { what, source }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ReplicateError {
    let what = what.into();
    move |source| ReplicateError::Io { what, source }
}

/// A position in the WAL: everything before it has been read.
#[derive(Debug, Clone, Copy)]
struct Pos {
    wal: Option<WalId>,
    page_size: u32,
    end: u64,
    cksum: (u32, u32),
    db_size: u32,
}

/// Frames read but not stored yet.
struct Pending {
    frames: Frames,
    last_time: DateTime<Utc>,
    read_end: DateTime<Utc>,
}

impl Live {
    /// New frames read: pending until stored; every commit up to `last_time` is in them or
    /// earlier, and the position moves past them.
    fn take(&mut self, f: Frames, last_time: DateTime<Utc>, read_end: DateTime<Utc>) {
        self.pos = Pos {
            wal: Some(f.id),
            page_size: self.pos.page_size,
            end: f.end,
            cksum: f.cksum_end,
            db_size: f.db_size,
        };
        self.pending.push(Pending {
            frames: f,
            last_time,
            read_end,
        });
    }
}

struct Live {
    /// A connection with an open read transaction (see the module documentation).
    held: Connection,
    generation: String,
    /// The last numbered piece's number (stored, or in `outbox`).
    seq: u64,
    /// After everything read (stored, in `outbox`, and pending).
    pos: Pos,
    /// Position after the last numbered piece.
    stored: Pos,
    /// The last numbered piece's last time.
    stored_time: DateTime<Utc>,
    /// Numbered pieces whose store failed: resent unchanged before anything new (a store
    /// whose answer was lost may have landed; the same piece again is a duplicate, not a
    /// conflict).
    outbox: Vec<(PieceInfo, Vec<u8>, DateTime<Utc>)>,
    started: Instant,
    /// (device, inode) of the database file.
    file: (u64, u64),
    pending: Vec<Pending>,
}

/// Ships one SQLite database's WAL (see the module documentation).
pub struct SqliteReplicator {
    pub(super) cfg: SqliteWal,
    live: Option<Live>,
    /// The WAL size from which a round checkpoints (by default 1000 pages, as SQLite's
    /// `wal_autocheckpoint`).
    pub(super) checkpoint_pages: u64,
}

/// What reading the WAL found.
enum Found {
    Nothing,
    New(Frames),
    Lost(String),
}

fn open(path: &Path) -> Result<Connection, ReplicateError> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sq(format!("opening {}", path.display())))?;
    c.busy_timeout(Duration::from_secs(5))
        .map_err(sq("setting the busy timeout"))?;
    Ok(c)
}

/// A connection with an open read transaction.
fn reader(path: &Path) -> Result<Connection, ReplicateError> {
    let c = open(path)?;
    c.execute_batch("BEGIN")
        .and_then(|_| c.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())))
        .map_err(sq(format!(
            "starting a read transaction on {}",
            path.display()
        )))?;
    Ok(c)
}

fn file_id(path: &Path) -> Result<(u64, u64), ReplicateError> {
    match std::fs::metadata(path) {
        Ok(m) => Ok((m.dev(), m.ino())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ReplicateError::Gone(path.display().to_string()))
        }
        Err(e) => Err(io(path.display().to_string())(e)),
    }
}

fn generation_id(path: &Path) -> String {
    let seed = format!(
        "{}|{}|{}",
        path.display(),
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    blake3::hash(seed.as_bytes()).to_hex()[..16].to_string()
}

impl SqliteReplicator {
    /// A replicator for `cfg` (nothing is opened before the first round).
    pub fn new(cfg: SqliteWal) -> SqliteReplicator {
        SqliteReplicator {
            cfg,
            live: None,
            checkpoint_pages: 1000,
        }
    }

    /// Read what is new in the WAL after `pos`.
    fn read_new(&self, pos: &Pos) -> Result<Found, ReplicateError> {
        let path = &self.cfg.path;
        let what = || format!("reading the WAL of {}", path.display());
        let h = match frames::read_header(path).map_err(io(what()))? {
            WalRead::Empty => return Ok(Found::Nothing),
            WalRead::Wal(h) => h,
        };
        if h.id.page_size != pos.page_size {
            return Ok(Found::Lost(format!(
                "the page size changed from {} to {} (VACUUM)",
                pos.page_size, h.id.page_size
            )));
        }
        let f = if Some(h.id) == pos.wal {
            frames::read_frames(path, h.id, pos.end, pos.cksum).map_err(io(what()))?
        } else {
            // A new WAL (new salts): it restarted once since the last read, and a restart only
            // overwrites frames present when the held reader began, which were read (see
            // DESIGN.md). The checkpoint sequence and salt 1 are not evidence either way: a
            // connection that did not run the checkpoint writes its own. As a further check,
            // committed frames of the old WAL after what was read, still in the file beyond
            // the new WAL, mean the old WAL was not read to its end.
            if let Some(old) = pos.wal {
                let missed =
                    frames::read_frames(path, old, pos.end, pos.cksum).map_err(io(what()))?;
                if !missed.bytes.is_empty() {
                    return Ok(Found::Lost(format!(
                        "the WAL restarted while {} committed frames after offset {} were not read",
                        missed.count(),
                        pos.end
                    )));
                }
            }
            frames::read_frames(path, h.id, WAL_HEADER, h.cksum).map_err(io(what()))?
        };
        Ok(if f.bytes.is_empty() {
            Found::Nothing
        } else {
            Found::New(f)
        })
    }

    /// Start a generation: under the write lock (for a moment), note the WAL's end and open
    /// a read transaction there; then snapshot the database inside that transaction and store
    /// it with a start piece naming it.
    fn new_generation(&mut self, repo: &Repository, why: &str) -> Result<Shipped, ReplicateError> {
        self.live = None;
        let path = self.cfg.path.clone();
        let file = file_id(&path)?;
        let w = open(&path)?;
        let mode: String = w
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(sq("PRAGMA journal_mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(ReplicateError::NotWal(path.display().to_string(), mode));
        }
        w.execute_batch("BEGIN IMMEDIATE")
            .map_err(sq("taking the write lock for a moment (BEGIN IMMEDIATE)"))?;
        let t0 = Utc::now();
        let r = reader(&path)?;
        let page_size: u32 = r
            .query_row("PRAGMA page_size", [], |x| x.get(0))
            .map_err(sq("PRAGMA page_size"))?;
        let what = || format!("reading the WAL of {}", path.display());
        let mut pos = Pos {
            wal: None,
            page_size,
            end: 0,
            cksum: (0, 0),
            db_size: 0,
        };
        if let WalRead::Wal(h) = frames::read_header(&path).map_err(io(what()))? {
            let f = frames::read_frames(&path, h.id, WAL_HEADER, h.cksum).map_err(io(what()))?;
            pos.wal = Some(h.id);
            (pos.end, pos.cksum) = if f.bytes.is_empty() {
                (WAL_HEADER, h.cksum)
            } else {
                (f.end, f.cksum_end)
            };
        }
        w.execute_batch("ROLLBACK").map_err(sq("ROLLBACK"))?;
        drop(w);
        pos.db_size = r
            .query_row("PRAGMA page_count", [], |x| x.get(0))
            .map_err(sq("PRAGMA page_count"))?;
        let (base, bytes) = self.snapshot(repo, &r, t0)?;
        let generation = generation_id(&path);
        let info = PieceInfo {
            kind: PieceType::Start,
            generation: generation.clone(),
            seq: 0,
            wal: pos.wal,
            page_size,
            start: pos.end,
            end: pos.end,
            cksum: pos.cksum,
            cksum_end: pos.cksum,
            db_size: pos.db_size,
            read_end: t0,
            last_time: t0,
            base: Some(base.to_hex()),
        };
        store(repo, &self.cfg.name, vec![(info, Vec::new(), t0)])?;
        self.live = Some(Live {
            held: r,
            generation: generation.clone(),
            seq: 0,
            pos,
            stored: pos,
            stored_time: t0,
            started: Instant::now(),
            file,
            pending: Vec::new(),
            outbox: Vec::new(),
        });
        Ok(Shipped {
            pieces: 1,
            bytes,
            messages: vec![format!(
                "generation {generation} started ({why}): snapshot {} at WAL offset {}",
                base.short(),
                pos.end
            )],
        })
    }

    /// Continue this host's newest generation where its last stored piece ends, if the WAL
    /// it is in is still there (the same salts: not restarted since, so every frame after
    /// the piece is still in it); `None` when a new generation must start.
    fn resume(&mut self, repo: &Repository) -> Result<Option<String>, ReplicateError> {
        let name = self.cfg.name.clone();
        let me = holdfast_core::util::hostname();
        let (all, _) = holdfast_core::snapshot::load_all(repo)?;
        let bases: Vec<_> = all
            .iter()
            .filter(|e| e.snapshot.complete && e.snapshot.hostname == me)
            .filter(|e| e.snapshot.source.as_deref() == Some(name.as_str()))
            .collect();
        let batches: Vec<_> = logs::batches(&all, &name, LogKind::SqliteWal)
            .into_iter()
            .filter(|(e, _)| e.snapshot.hostname == me)
            .collect();
        let mut problems = Vec::new();
        let gens = super::generations(&bases, &batches, &mut problems);
        let Some(g) = gens.iter().rev().find(|g| g.usable()) else {
            return Ok(None);
        };
        let Some((_, _, last)) = g.chain.last() else {
            return Ok(None);
        };
        let newer = gens.iter().any(|x| x.started() > g.started());
        if g.broken.is_some() || newer || problems.iter().any(|p| p.contains(&g.id)) {
            return Ok(None);
        }
        let path = self.cfg.path.clone();
        let file = file_id(&path)?;
        let w = open(&path)?;
        w.execute_batch("BEGIN IMMEDIATE")
            .map_err(sq("taking the write lock for a moment (BEGIN IMMEDIATE)"))?;
        let r = reader(&path)?;
        let same = match frames::read_header(&path).map_err(io(path.display().to_string()))? {
            WalRead::Wal(h) => last.wal == Some(h.id),
            WalRead::Empty => false,
        };
        w.execute_batch("ROLLBACK").map_err(sq("ROLLBACK"))?;
        if !same {
            return Ok(None);
        }
        let pos = Pos {
            wal: last.wal,
            page_size: last.page_size,
            end: last.end,
            cksum: last.cksum_end,
            db_size: last.db_size,
        };
        self.live = Some(Live {
            held: r,
            generation: g.id.clone(),
            seq: last.seq,
            pos,
            stored: pos,
            stored_time: last.last_time,
            started: Instant::now(),
            file,
            pending: Vec::new(),
            outbox: Vec::new(),
        });
        Ok(Some(format!(
            "generation {} resumed at WAL offset {} (the WAL was not restarted since its piece {})",
            g.id, last.end, last.seq
        )))
    }

    /// Snapshot the database through `r` (inside its read transaction, so exactly at the
    /// position it began at) and store it as a recovery point of the source at `t0`.
    fn snapshot(
        &self,
        repo: &Repository,
        r: &Connection,
        t0: DateTime<Utc>,
    ) -> Result<(holdfast_core::Id, u64), ReplicateError> {
        let path = &self.cfg.path;
        let dir = tempfile::Builder::new()
            .prefix("holdfast-sqlite-gen-")
            .tempdir()
            .map_err(io("scratch directory"))?;
        let copy = dir.path().join("copy.sqlite");
        {
            let mut to = Connection::open(&copy).map_err(sq(copy.display().to_string()))?;
            let b = rusqlite::backup::Backup::new(r, &mut to)
                .map_err(sq("snapshot through the backup API"))?;
            b.step(-1).map_err(sq("snapshot through the backup API"))?;
        }
        let name = self.cfg.name.clone();
        let f = File::open(&copy).map_err(io(copy.display().to_string()))?;
        let bytes = f.metadata().map(|m| m.len()).unwrap_or_default();
        let base_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "db.sqlite".into());
        let opts = StreamOptions {
            dir: name.clone(),
            label: format!("sqlite:{name}"),
            source: Some(name.clone()),
            tags: vec!["sqlite-generation".into()],
            time: Some(t0),
            log: None,
        };
        let items = vec![StreamItem {
            name: base_name,
            reader: Box::new(f),
            finish: Box::new(|| Ok(())),
        }];
        let (base, _) = stream::backup_streams(repo, &opts, items, &NoProgress)?;
        Ok((base, bytes))
    }

    /// A periodic snapshot in the same generation: under the write lock for a moment, read
    /// the WAL's tail and open a reader there; store the tail, then the snapshot read in that
    /// reader and a `snapshot` piece naming it at that position. The chain goes on unbroken.
    fn periodic_snapshot(&mut self, repo: &Repository) -> Result<Shipped, ReplicateError> {
        let path = self.cfg.path.clone();
        let w = open(&path)?;
        w.busy_timeout(Duration::from_secs(1))
            .map_err(sq("setting the busy timeout"))?;
        if w.execute_batch("BEGIN IMMEDIATE").is_err() {
            return Ok(Shipped {
                messages: vec!["periodic snapshot postponed: the database is being written".into()],
                ..Default::default()
            });
        }
        let t0 = Utc::now();
        let live = self.live.as_ref().expect("a live generation");
        let found = self.read_new(&live.pos)?;
        let live = self.live.as_mut().expect("a live generation");
        match found {
            Found::New(f) => live.take(f, t0, t0),
            Found::Nothing => {
                if let Some(p) = live.pending.last_mut() {
                    p.last_time = t0;
                }
            }
            Found::Lost(why) => {
                drop(w);
                return self.new_generation(repo, &why);
            }
        }
        let r = reader(&path)?;
        w.execute_batch("ROLLBACK").map_err(sq("ROLLBACK"))?;
        drop(w);
        let db_size: u32 = r
            .query_row("PRAGMA page_count", [], |x| x.get(0))
            .map_err(sq("PRAGMA page_count"))?;
        let mut shipped = Shipped::default();
        let live = self.live.as_mut().expect("a live generation");
        let (n, bytes) = flush(repo, &self.cfg.name, live)?;
        shipped.pieces += n;
        shipped.bytes += bytes;
        let (base, bytes) = self.snapshot(repo, &r, t0)?;
        let live = self.live.as_mut().expect("a live generation");
        let at = live.stored;
        let info = PieceInfo {
            kind: PieceType::Snapshot,
            generation: live.generation.clone(),
            seq: live.seq + 1,
            wal: at.wal,
            page_size: at.page_size,
            start: at.end,
            end: at.end,
            cksum: at.cksum,
            cksum_end: at.cksum,
            db_size,
            read_end: t0,
            last_time: t0,
            base: Some(base.to_hex()),
        };
        live.outbox.push((info, Vec::new(), live.stored_time));
        live.seq += 1;
        live.stored_time = t0;
        flush(repo, &self.cfg.name, live)?;
        live.held = r;
        live.started = Instant::now();
        shipped.pieces += 1;
        shipped.bytes += bytes;
        shipped.messages.push(format!(
            "periodic snapshot {} at WAL offset {} (generation {})",
            base.short(),
            at.end,
            live.generation
        ));
        Ok(shipped)
    }

    /// One round after the first.
    fn ship(&mut self, repo: &Repository) -> Result<Shipped, ReplicateError> {
        let path = self.cfg.path.clone();
        let file = file_id(&path)?;
        let live = self.live.as_ref().expect("a live generation");
        if file != live.file {
            return self.new_generation(repo, "the database file was replaced");
        }
        if live.started.elapsed() >= self.cfg.snapshot_every {
            return self.periodic_snapshot(repo);
        }
        // The next read transaction first, then read: a checkpoint can only restart the WAL
        // over frames present when it began, and those are read below.
        let next = reader(&path)?;
        let t = Utc::now();
        let found = self.read_new(&live.pos)?;
        let read_end = Utc::now();
        let live = self.live.as_mut().expect("a live generation");
        match found {
            Found::Lost(why) => {
                drop(next);
                if !live.pending.is_empty() {
                    // Store what was read before the loss first: the old chain stays whole up
                    // to there.
                    let _ = flush(repo, &self.cfg.name, live);
                }
                return self.new_generation(repo, &why);
            }
            Found::New(f) => live.take(f, t, read_end),
            Found::Nothing => {
                if let Some(p) = live.pending.last_mut() {
                    // Nothing after it at `t`: every commit before `t` is in it or earlier.
                    p.last_time = t;
                }
            }
        }
        let mut shipped = Shipped::default();
        if !live.pending.is_empty() || !live.outbox.is_empty() {
            // On failure the new reader is dropped and the old one kept (it protects more).
            let (n, bytes) = flush(repo, &self.cfg.name, live)?;
            shipped.pieces = n;
            shipped.bytes = bytes;
        } else if t - live.stored_time
            >= chrono::Duration::from_std(self.cfg.heartbeat).unwrap_or_default()
        {
            let info = PieceInfo {
                kind: PieceType::Heartbeat,
                generation: live.generation.clone(),
                seq: live.seq + 1,
                wal: live.stored.wal,
                page_size: live.stored.page_size,
                start: live.stored.end,
                end: live.stored.end,
                cksum: live.stored.cksum,
                cksum_end: live.stored.cksum,
                db_size: live.stored.db_size,
                read_end,
                last_time: t,
                base: None,
            };
            live.outbox.push((info, Vec::new(), live.stored_time));
            live.seq += 1;
            live.stored_time = t;
            flush(repo, &self.cfg.name, live)?;
            shipped.pieces = 1;
            shipped.messages.push("heartbeat: nothing changed".into());
        }
        live.held = next;
        if let Some(m) = self.checkpoint()? {
            shipped.messages.push(m);
        }
        Ok(shipped)
    }

    /// When the WAL has grown past the threshold: for a moment under the write lock, read
    /// its tail (kept pending), release the held reader, checkpoint (PASSIVE), and open the
    /// next reader on the fully checkpointed WAL, so that the application's next write can
    /// restart the WAL from its beginning. Skipped (for a later round) when the write lock
    /// is busy.
    fn checkpoint(&mut self) -> Result<Option<String>, ReplicateError> {
        let path = self.cfg.path.clone();
        let live = self.live.as_ref().expect("a live generation");
        let fsz = 24 + u64::from(live.pos.page_size);
        // What the current WAL holds (its file keeps its size after a restart).
        if live.pos.end < WAL_HEADER + self.checkpoint_pages * fsz {
            return Ok(None);
        }
        let w = open(&path)?;
        w.busy_timeout(Duration::from_millis(200))
            .map_err(sq("setting the busy timeout"))?;
        if w.execute_batch("BEGIN IMMEDIATE").is_err() {
            return Ok(Some(
                "checkpoint skipped: the database is being written".into(),
            ));
        }
        let t = Utc::now();
        let found = self.read_new(&live.pos)?;
        let live = self.live.as_mut().expect("a live generation");
        match found {
            Found::New(f) => live.take(f, t, t),
            Found::Nothing => {}
            Found::Lost(_) => return Ok(None), // the next round starts a new generation
        }
        // The WAL cannot change while the write lock is held: everything in it is read, so
        // the held reader can go (the write transaction, reading the newest state, takes its
        // place and limits no checkpoint), and the checkpoint can copy every frame.
        drop(std::mem::replace(&mut live.held, w));
        let c = open(&path)?;
        let ck = c
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(sq("PRAGMA wal_checkpoint(PASSIVE)"));
        drop(c);
        // The next reader, on the fully checkpointed WAL, before the write lock goes.
        let next = reader(&path);
        let (busy, log, done) = match (ck, next) {
            (Ok(ck), Ok(next)) => {
                let w = std::mem::replace(&mut live.held, next);
                w.execute_batch("ROLLBACK").map_err(sq("ROLLBACK"))?;
                ck
            }
            (ck, next) => {
                // No reader can be kept without a moment unprotected: the next round starts
                // a new generation (its snapshot holds everything).
                self.live = None;
                ck?;
                next?;
                unreachable!("one of them failed")
            }
        };
        Ok(Some(format!(
            "checkpoint (PASSIVE): {done} of {log} frames{}",
            if busy != 0 { ", busy" } else { "" }
        )))
    }
}

/// Number the pending frames as pieces (into the outbox) and store the outbox as one batch;
/// on success its pieces count as shipped, on failure they stay in the outbox, unchanged.
/// Returns the pieces and frame bytes stored.
fn flush(repo: &Repository, name: &str, live: &mut Live) -> Result<(usize, u64), ReplicateError> {
    for p in live.pending.drain(..) {
        live.seq += 1;
        let info = PieceInfo {
            kind: PieceType::Frames,
            generation: live.generation.clone(),
            seq: live.seq,
            wal: Some(p.frames.id),
            page_size: live.stored.page_size,
            start: p.frames.start,
            end: p.frames.end,
            cksum: p.frames.cksum_start,
            cksum_end: p.frames.cksum_end,
            db_size: p.frames.db_size,
            read_end: p.read_end,
            last_time: p.last_time,
            base: None,
        };
        live.stored = Pos {
            wal: Some(p.frames.id),
            page_size: live.stored.page_size,
            end: p.frames.end,
            cksum: p.frames.cksum_end,
            db_size: p.frames.db_size,
        };
        live.outbox.push((info, p.frames.bytes, live.stored_time));
        live.stored_time = p.last_time;
    }
    if live.outbox.is_empty() {
        return Ok((0, 0));
    }
    store(repo, name, live.outbox.clone())?;
    let n = live.outbox.len();
    let bytes = live.outbox.iter().map(|(_, b, _)| b.len() as u64).sum();
    live.outbox.clear();
    Ok((n, bytes))
}

/// Store pieces `(info, bytes, first_time)` as one batch (durable when it returns).
fn store(
    repo: &Repository,
    name: &str,
    pieces: Vec<(PieceInfo, Vec<u8>, DateTime<Utc>)>,
) -> Result<(), ReplicateError> {
    let new: Vec<NewPiece> = pieces
        .iter()
        .map(|(info, bytes, first)| {
            let kind = match info.kind {
                PieceType::Start => "start",
                PieceType::Snapshot => "snapshot",
                PieceType::Frames => "frames",
                PieceType::Heartbeat => "heartbeat",
            };
            let pname = format!("{}-{:010}-{kind}", info.generation, info.seq);
            let mut p = NewPiece::from_bytes(&pname, bytes);
            p.piece.first_time = Some(*first);
            p.piece.last_time = Some(info.last_time);
            p.piece.meta = info.meta();
            p
        })
        .collect();
    logs::append(repo, name, LogKind::SqliteWal, &[], new, &NoProgress)?;
    Ok(())
}

impl Replicator for SqliteReplicator {
    fn describe(&self) -> String {
        format!(
            "SQLite WAL frames of {} every {}s (heartbeat {}s)",
            self.cfg.path.display(),
            self.cfg.interval.as_secs_f64(),
            self.cfg.heartbeat.as_secs()
        )
    }

    fn interval(&self) -> Duration {
        self.cfg.interval
    }

    fn round(&mut self, repo: &Repository) -> Result<Shipped, SourceError> {
        let r = if self.live.is_some() {
            self.ship(repo)
        } else {
            match self.resume(repo) {
                Ok(Some(m)) => self.ship(repo).map(|mut s| {
                    s.messages.insert(0, m);
                    s
                }),
                Ok(None) => self.new_generation(repo, "replication started"),
                Err(e) => Err(e),
            }
        };
        r.map_err(|e| SourceError::new("sqlite", e))
    }

    fn stop(&mut self) {
        self.live = None;
    }
}
