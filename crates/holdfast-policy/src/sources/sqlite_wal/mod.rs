//! Continuous protection of SQLite sources (`kind = "sqlite"`, `mode = "continuous"`): WAL
//! frames shipped every interval by `holdfast replicate`, on top of snapshots that start
//! generations; restore to a point in time. The mechanism and its safety argument are in
//! docs/DESIGN.md ("SQLite continuous protection"); the settings in docs/pitr/sqlite.md.
//!
//! Every piece of a generation carries its place in the WAL in its metadata ([`PieceInfo`]):
//! a generation is a chain of pieces numbered from 0 (the start, naming its snapshot), each
//! continuing the previous one's WAL offset and checksum, or starting the next WAL after a
//! restart. [`window`] is a pure function of what the repository holds.

pub mod frames;
mod replicate;
mod restore;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use holdfast_core::logs::{LogBatch, LogKind, Piece};
use holdfast_core::snapshot::SnapshotEntry;

use super::pitr::{Continuous, Gap, PitrRestore, PitrRestored, Window};
use super::SourceError;
use frames::{WalId, WAL_HEADER};

pub use replicate::SqliteReplicator;
pub use restore::PitrError;

/// Settings of a continuous SQLite source.
#[derive(Debug, Clone)]
pub struct SqliteWal {
    /// The source's name.
    pub name: String,
    /// The database file.
    pub path: PathBuf,
    /// Pause between two rounds of shipping (default 1 s).
    pub interval: Duration,
    /// When nothing changed, a heartbeat piece at least this often (default 1 min).
    pub heartbeat: Duration,
    /// A snapshot inside the generation at least this often (1 h), so that a restore replays
    /// at most this much WAL.
    pub snapshot_every: Duration,
    /// The source's `verify` query, run by a drill on the restored copy.
    pub verify: Option<String>,
}

/// What a piece is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceType {
    /// The start of a generation: names its snapshot and the WAL position it is at.
    Start,
    /// A later snapshot in the same generation (periodic), at the WAL position it names.
    Snapshot,
    /// WAL frames (whole commit groups).
    Frames,
    /// Nothing changed up to its last time.
    Heartbeat,
}

/// A piece's place in its generation, read from (or written to) its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct PieceInfo {
    /// What it is.
    pub kind: PieceType,
    /// The generation.
    pub generation: String,
    /// Its number in the generation (0: the start).
    pub seq: u64,
    /// The WAL it is in (`None`: the WAL was empty, everything in the database file).
    pub wal: Option<WalId>,
    /// Page size of the database.
    pub page_size: u32,
    /// WAL offset of its first frame.
    pub start: u64,
    /// WAL offset after its last frame.
    pub end: u64,
    /// Checksum chain before its first frame.
    pub cksum: (u32, u32),
    /// Checksum chain after its last frame.
    pub cksum_end: (u32, u32),
    /// Database size in pages after its last commit.
    pub db_size: u32,
    /// When the read of its frames ended: no commit in it (or before it) is later.
    pub read_end: DateTime<Utc>,
    /// Every commit at or before this instant is in it or an earlier piece.
    pub last_time: DateTime<Utc>,
    /// The start's snapshot (hex id).
    pub base: Option<String>,
}

fn ck(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl PieceInfo {
    /// The metadata to store.
    pub fn meta(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let kind = match self.kind {
            PieceType::Start => "start",
            PieceType::Snapshot => "snapshot",
            PieceType::Frames => "frames",
            PieceType::Heartbeat => "heartbeat",
        };
        m.insert("type".into(), kind.into());
        m.insert("generation".into(), self.generation.clone());
        m.insert("seq".into(), self.seq.to_string());
        m.insert("page-size".into(), self.page_size.to_string());
        if let Some(w) = self.wal {
            m.insert("magic".into(), w.magic.to_string());
            m.insert("ckpt".into(), w.ckpt.to_string());
            m.insert("salt1".into(), w.salt1.to_string());
            m.insert("salt2".into(), w.salt2.to_string());
        }
        m.insert("start".into(), self.start.to_string());
        m.insert("end".into(), self.end.to_string());
        m.insert("cksum".into(), format!("{}-{}", self.cksum.0, self.cksum.1));
        m.insert(
            "cksum-end".into(),
            format!("{}-{}", self.cksum_end.0, self.cksum_end.1),
        );
        m.insert("db-size".into(), self.db_size.to_string());
        m.insert("read-end".into(), self.read_end.to_rfc3339());
        if let Some(b) = &self.base {
            m.insert("base".into(), b.clone());
        }
        m
    }

    /// Read a stored piece's metadata (anything missing or malformed is an error naming it).
    pub fn parse(p: &Piece) -> Result<PieceInfo, String> {
        let m = &p.meta;
        let get = |k: &str| {
            m.get(k)
                .map(String::as_str)
                .ok_or_else(|| format!("piece {} has no {k}", p.name))
        };
        let num = |k: &str| -> Result<u64, String> {
            get(k)?
                .parse()
                .map_err(|_| format!("piece {}: {k} is no number", p.name))
        };
        let n32 = |k: &str| -> Result<u32, String> {
            u32::try_from(num(k)?).map_err(|_| format!("piece {}: {k} is out of range", p.name))
        };
        let kind = match get("type")? {
            "start" => PieceType::Start,
            "snapshot" => PieceType::Snapshot,
            "frames" => PieceType::Frames,
            "heartbeat" => PieceType::Heartbeat,
            t => return Err(format!("piece {}: unknown type {t:?}", p.name)),
        };
        let page_size = n32("page-size")?;
        let wal = match m.get("salt1") {
            None => None,
            Some(_) => Some(WalId {
                magic: n32("magic")?,
                page_size,
                ckpt: n32("ckpt")?,
                salt1: n32("salt1")?,
                salt2: n32("salt2")?,
            }),
        };
        let time = |k: &str| -> Result<DateTime<Utc>, String> {
            DateTime::parse_from_rfc3339(get(k)?)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| format!("piece {}: {k} is no time", p.name))
        };
        let info = PieceInfo {
            kind,
            generation: get("generation")?.to_string(),
            seq: num("seq")?,
            wal,
            page_size,
            start: num("start")?,
            end: num("end")?,
            cksum: ck(get("cksum")?).ok_or_else(|| format!("piece {}: bad cksum", p.name))?,
            cksum_end: ck(get("cksum-end")?)
                .ok_or_else(|| format!("piece {}: bad cksum-end", p.name))?,
            db_size: n32("db-size")?,
            read_end: time("read-end")?,
            last_time: p
                .last_time
                .ok_or_else(|| format!("piece {} has no last time", p.name))?,
            base: m.get("base").cloned(),
        };
        let fsz = 24 + u64::from(page_size);
        let ok = p.size <= frames::MAX_READ
            && page_size.is_power_of_two()
            && (512..=65536).contains(&page_size)
            && info.end >= info.start
            && (info.end - info.start).is_multiple_of(fsz)
            && (info.end - info.start) == p.size
            && (info.kind == PieceType::Frames) == (p.size > 0)
            && (info.kind == PieceType::Start) == (info.seq == 0)
            && matches!(info.kind, PieceType::Start | PieceType::Snapshot) == info.base.is_some();
        if !ok {
            return Err(format!(
                "piece {}: its WAL offsets, size and type do not agree",
                p.name
            ));
        }
        Ok(info)
    }

    /// Whether `next` continues this piece without a gap: the same WAL from this end with the
    /// same checksum chain, or the first frames of the WAL after a restart.
    pub fn continued_by(&self, next: &PieceInfo) -> bool {
        if next.seq != self.seq + 1 || next.page_size != self.page_size {
            return false;
        }
        match (self.wal, next.wal) {
            (a, b) if a == b => next.start == self.end && next.cksum == self.cksum_end,
            // The next WAL after a restart: its first frames, from its header's checksum. (Its
            // checkpoint sequence and salts need not follow the old ones': the connection that
            // writes first after a restart writes its own.)
            (_, Some(w)) => next.start == WAL_HEADER && next.cksum == header_cksum(w),
            _ => false,
        }
    }
}

/// The checksum of the WAL header of `w` (the chain's start).
pub fn header_cksum(w: WalId) -> (u32, u32) {
    let mut b = Vec::with_capacity(24);
    for v in [w.magic, 3_007_000, w.page_size, w.ckpt, w.salt1, w.salt2] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    frames::checksum(w.magic & 1 == 1, &b, (0, 0))
}

/// One generation as found in the repository.
#[derive(Debug, Clone)]
pub struct Generation<'a> {
    /// Its id.
    pub id: String,
    /// Its first piece: the start (seq 0), or the oldest periodic snapshot kept (a generation
    /// is split in segments where a piece is missing; each begins at a snapshot piece).
    pub start: Option<PieceInfo>,
    /// Its snapshots that are among the usable bases: (index in `chain`, snapshot), oldest
    /// first (the start's, and periodic ones).
    pub points: Vec<(usize, &'a SnapshotEntry)>,
    /// The unbroken chain from the start: (batch, piece, info).
    pub chain: Vec<(&'a SnapshotEntry, &'a Piece, PieceInfo)>,
    /// Where the chain breaks, if it does: the first missing piece's number and WAL offset.
    pub broken: Option<(u64, u64, u64)>,
}

impl Generation<'_> {
    /// When it started (its start piece's time).
    pub fn started(&self) -> Option<DateTime<Utc>> {
        self.start.as_ref().map(|s| s.last_time)
    }
    /// The instant its oldest usable snapshot is at.
    pub fn from(&self) -> Option<DateTime<Utc>> {
        self.points.first().map(|(i, _)| self.chain[*i].2.last_time)
    }
    /// Whether it can be restored from (it has a usable snapshot).
    pub fn usable(&self) -> bool {
        !self.points.is_empty()
    }
    /// The newest instant its unbroken chain reaches.
    pub fn to(&self) -> Option<DateTime<Utc>> {
        self.chain.last().map(|(_, _, i)| i.last_time)
    }
}

/// The generations of `batches` (sorted by the time of their start), with each one's chain;
/// findings that make the window untrustworthy go to `problems`.
pub fn generations<'a>(
    bases: &[&'a SnapshotEntry],
    batches: &[(&'a SnapshotEntry, &'a LogBatch)],
    problems: &mut Vec<String>,
) -> Vec<Generation<'a>> {
    type Found<'a> = BTreeMap<u64, (&'a SnapshotEntry, &'a Piece, PieceInfo)>;
    let mut by_gen: BTreeMap<String, Found<'a>> = BTreeMap::new();
    for (e, b) in batches {
        for p in &b.pieces {
            let info = match PieceInfo::parse(p) {
                Ok(i) => i,
                Err(m) => {
                    problems.push(format!("log batch {}: {m}", e.id.short()));
                    continue;
                }
            };
            let g = by_gen.entry(info.generation.clone()).or_default();
            match g.get(&info.seq) {
                Some((_, q, _)) if q.blake3 == p.blake3 && q.meta == p.meta => {}
                Some((f, _, _)) => problems.push(format!(
                    "generation {} has two different pieces numbered {} (batches {} and {})",
                    info.generation,
                    info.seq,
                    f.id.short(),
                    e.id.short()
                )),
                None => {
                    g.insert(info.seq, (*e, p, info));
                }
            }
        }
    }
    let mut out: Vec<Generation> = by_gen
        .into_iter()
        .flat_map(|(id, found)| {
            // Segments: each from a snapshot piece (the start or a periodic one) as far as
            // the pieces continue one another; pieces before the first snapshot present
            // (dropped by retention) or between a break and the next snapshot are unusable.
            type Chain<'a> = Vec<(&'a SnapshotEntry, &'a Piece, PieceInfo)>;
            let segment = |chain: Chain<'a>, broken| {
                let points = chain
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (_, _, info))| {
                        let b = info.base.as_ref()?;
                        bases.iter().find(|x| &x.id.to_hex() == b).map(|x| (i, *x))
                    })
                    .collect();
                Generation {
                    id: id.clone(),
                    start: chain.first().map(|(_, _, i)| i.clone()),
                    points,
                    chain,
                    broken,
                }
            };
            let mut segments = Vec::new();
            let mut chain: Chain<'a> = Vec::new();
            for (_, x) in found {
                if let Some((_, _, prev)) = chain.last() {
                    if prev.continued_by(&x.2) {
                        chain.push(x);
                        continue;
                    }
                    let broken = Some((prev.seq + 1, prev.end, x.2.seq));
                    segments.push(segment(std::mem::take(&mut chain), broken));
                }
                if matches!(x.2.kind, PieceType::Start | PieceType::Snapshot) {
                    chain.push(x);
                }
            }
            if !chain.is_empty() {
                segments.push(segment(chain, None));
            }
            segments
        })
        .collect();
    out.sort_by_key(|g| g.started());
    out
}

/// What the source can be recovered to (see [`Continuous::window`]).
pub fn window(bases: &[&SnapshotEntry], batches: &[(&SnapshotEntry, &LogBatch)]) -> Window {
    let mut w = Window::default();
    let gens = generations(bases, batches, &mut w.problems);
    w.pieces = batches.iter().map(|(_, b)| b.pieces.len()).sum();
    let usable: Vec<&Generation> = gens.iter().filter(|g| g.usable()).collect();
    w.bases = usable.iter().map(|g| g.points.len()).sum();
    w.from = usable.iter().filter_map(|g| g.from()).min();
    w.to = usable.iter().filter_map(|g| g.to()).max();
    for (i, g) in usable.iter().enumerate() {
        let next = usable.get(i + 1).and_then(|n| n.from().map(|t| (n, t)));
        if let Some((seq, offset, found)) = g.broken {
            w.gaps.push(Gap {
                missing: format!(
                    "sqlite-wal generation {} piece {seq} (WAL offset {offset})",
                    g.id
                ),
                count: found.saturating_sub(seq).max(1),
                after: g.to(),
                resumes: next.map(|(_, t)| t),
            });
        } else if let Some((n, t)) = next {
            let (to, end) = g.chain.last().map(|(_, _, i)| (i.last_time, i.end)).unzip();
            if to.is_some_and(|to| to < t) {
                w.gaps.push(Gap {
                    missing: format!(
                        "sqlite-wal generation {} after WAL offset {} (replication stopped or lost continuity; generation {} starts again)",
                        g.id,
                        end.unwrap_or(0),
                        n.id
                    ),
                    count: 1,
                    after: to,
                    resumes: Some(t),
                });
            }
        }
    }
    w
}

/// The log kind and window for `kind = "sqlite"` sources in continuous mode.
impl Continuous for SqliteWal {
    fn log_kind(&self) -> LogKind {
        LogKind::SqliteWal
    }

    fn window(&self, bases: &[&SnapshotEntry], batches: &[(&SnapshotEntry, &LogBatch)]) -> Window {
        window(bases, batches)
    }

    fn restore_at(&self, job: &PitrRestore) -> Result<PitrRestored, SourceError> {
        restore::restore_at(job).map_err(|e| SourceError::new("sqlite", e))
    }

    fn drill_at(&self, job: &super::pitr::PitrDrill) -> Result<super::DrillOutcome, SourceError> {
        let db = job.scratch.join("drill.db");
        self.drill_into(&PitrRestore {
            repo: job.repo,
            source: job.source,
            workload: job.workload,
            bases: job.bases,
            logs: job.logs,
            host: None,
            target: job.target,
            into: db.to_str(),
            replace: false,
            conn: &super::Conn::default(),
            start: false,
            archive: false,
            progress: job.progress,
        })
    }
}

impl SqliteWal {
    /// A drill of continuous protection: restore to `job.target` (a drill picks a random
    /// instant of the window) into `job.into` (a file in the drill's scratch directory), then
    /// `PRAGMA integrity_check`, rows per table and the source's `verify` query. Passes only
    /// when all pass and the restore reached an instant at or after the target's (for a
    /// time: within the ship interval before it).
    pub fn drill_into(&self, job: &PitrRestore) -> Result<super::DrillOutcome, SourceError> {
        let r = restore::restore_at(job).map_err(|e| SourceError::new("sqlite", e))?;
        let db = std::path::PathBuf::from(job.into.unwrap_or_default());
        let mut messages = r.done.clone();
        let mut passed = super::sqlite::check_db(&db, self.verify.as_deref(), &mut messages)?;
        if let (super::pitr::RecoveryTarget::Time(t), Some(reached)) = (job.target, r.reached) {
            let late = *t - reached;
            let slack = chrono::Duration::from_std(self.interval * 3).unwrap_or_default();
            if late > slack {
                messages.push(format!(
                    "reached {} only, {} s before the target {}",
                    reached.to_rfc3339(),
                    late.num_milliseconds() as f64 / 1000.0,
                    t.to_rfc3339()
                ));
                passed = false;
            }
        }
        let bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or_default();
        Ok(super::DrillOutcome {
            passed,
            messages,
            files: 1,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests;

/// The continuous settings of an SQLite source: `None` without `mode`; `mode = "continuous"`
/// with the `[source.log]` table's `interval` (default 1 s) and `heartbeat` (default 1 min).
pub fn settings(r: &super::RawSource, db: &std::path::Path) -> Result<Option<SqliteWal>, String> {
    let n = r.name();
    match r.mode.as_deref() {
        None if r.log.is_some() => Err(format!(
            "source {n:?}: [source.log] is for continuous protection: add mode = \"continuous\""
        )),
        None => Ok(None),
        Some("continuous") => {
            let log = r.log.clone().unwrap_or_default();
            let secs = |d: Option<chrono::Duration>, default: u64, what: &str| match d {
                None => Ok(Duration::from_secs(default)),
                Some(d) if d.num_seconds() >= 1 => Ok(Duration::from_secs(d.num_seconds() as u64)),
                Some(_) => Err(format!("source {n:?}: [source.log] {what} must be at least 1s")),
            };
            if log.queue_max.is_some() || log.streaming || log.spool.is_some() {
                return Err(format!(
                    "source {n:?}: an sqlite source's [source.log] takes only interval and heartbeat"
                ));
            }
            Ok(Some(SqliteWal {
                name: n.to_string(),
                path: db.to_path_buf(),
                interval: secs(log.interval, 1, "interval")?,
                heartbeat: secs(log.heartbeat, 60, "heartbeat")?,
                snapshot_every: Duration::from_secs(3600),
                verify: r.verify.clone(),
            }))
        }
        Some(m) => Err(format!(
            "source {n:?}: mode {m:?} is not one of an sqlite source's: \"continuous\" (or no mode: online backups only)"
        )),
    }
}

#[cfg(test)]
mod live_tests;
