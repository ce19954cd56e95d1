//! The binary log chain a repository holds, as a pure function of its snapshots: which
//! pieces follow each other (files in sequence, positions contiguous), where the holes are
//! (named by file and position), which base backups can start a replay, and what a restore
//! to a target needs.
//!
//! Each piece's metadata is read as hostile: a piece whose metadata does not parse, or
//! disagrees with its size, is a problem, never part of the chain.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, DurationRound, Utc};
use holdfast_core::logs::{LogBatch, Piece};
use holdfast_core::snapshot::SnapshotEntry;
use holdfast_core::Id;

use super::events::{seq, valid_name};
use super::meta;
use crate::sources::pitr::{Gap, RecoveryTarget, Window};

/// One stored range of a binary log file.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk<'a> {
    /// The batch holding it.
    pub batch: &'a SnapshotEntry,
    /// The piece's name in the batch.
    pub name: &'a str,
    /// The file.
    pub file: &'a str,
    /// Its sequence number.
    pub seq: u64,
    /// First byte.
    pub start: u64,
    /// End (exclusive).
    pub end: u64,
    /// It ends its file.
    pub closed: bool,
    /// Its first event's time.
    pub first_time: Option<DateTime<Utc>>,
    /// Every change committed before it is stored.
    pub last_time: Option<DateTime<Utc>>,
    blake3: &'a str,
}

impl Chunk<'_> {
    /// Where the piece after it starts.
    fn next(&self) -> (u64, u64) {
        if self.closed {
            (self.seq + 1, 0)
        } else {
            (self.seq, self.end)
        }
    }
}

/// A base backup's recorded coordinates (from its marker piece).
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// File.
    pub file: String,
    /// Position.
    pub pos: u64,
    /// The dump's consistent snapshot was taken before this instant.
    pub consistent_by: DateTime<Utc>,
}

impl Mark {
    /// The first target this base can serve: replay keeps events stamped before the target's
    /// whole second, and the base holds changes up to `consistent_by`.
    pub fn from(&self) -> DateTime<Utc> {
        self.consistent_by
            .duration_trunc(Duration::seconds(1))
            .unwrap_or(self.consistent_by)
            + Duration::seconds(1)
    }
}

/// An unbroken run of pieces.
#[derive(Debug, Clone, Default)]
pub struct Segment<'a> {
    /// Its pieces, in order.
    pub chunks: Vec<Chunk<'a>>,
}

impl Segment<'_> {
    /// The index of the chunk holding this position, if the segment also holds its file's
    /// start (a replay needs the file's header).
    fn find(&self, file: &str, pos: u64) -> Option<usize> {
        if !self.chunks.iter().any(|c| c.file == file && c.start == 0) {
            return None;
        }
        self.chunks
            .iter()
            .position(|c| c.file == file && c.start <= pos && pos <= c.end && pos >= 4)
    }
    fn to_from(&self, i: usize) -> Option<DateTime<Utc>> {
        self.chunks[i..].iter().filter_map(|c| c.last_time).max()
    }
}

/// A hole between two segments.
#[derive(Debug, Clone)]
struct Hole {
    after_segment: usize,
    missing: String,
    count: u64,
}

/// The chain of one source's binary log.
#[derive(Debug, Default)]
pub struct Chain<'a> {
    /// Unbroken runs, in log order.
    pub segments: Vec<Segment<'a>>,
    holes: Vec<Hole>,
    /// Base markers by snapshot id (hex).
    pub marks: BTreeMap<String, Mark>,
    /// The batch holding each base's marker.
    mark_batches: BTreeMap<String, Id>,
    /// What makes the chain untrustworthy.
    pub problems: Vec<String>,
    /// Pieces read.
    pub pieces: usize,
}

fn parse_piece<'a>(
    batch: &'a SnapshotEntry,
    p: &'a Piece,
    problems: &mut Vec<String>,
) -> Option<Result<Chunk<'a>, (String, Mark)>> {
    let m = |k: &str| p.meta.get(k).map(String::as_str);
    let bad = |problems: &mut Vec<String>, why: &str| {
        problems.push(format!(
            "piece {} of log batch {}: {why}: it is not part of the chain",
            p.name,
            batch.id.short()
        ));
    };
    if let Some(base) = m(meta::BASE) {
        let file = m(meta::FILE).filter(|f| valid_name(f));
        let pos = m(meta::POS).and_then(|v| v.parse().ok());
        let by = m(meta::CONSISTENT_BY)
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.with_timezone(&Utc));
        return match (file, pos, by) {
            (Some(file), Some(pos), Some(consistent_by)) => Some(Err((
                base.to_string(),
                Mark {
                    file: file.to_string(),
                    pos,
                    consistent_by,
                },
            ))),
            _ => {
                bad(
                    problems,
                    "a base marker without a valid file, position or time",
                );
                None
            }
        };
    }
    let file = match m(meta::FILE) {
        Some(f) if valid_name(f) => f,
        _ => {
            bad(problems, "no valid binary log file name");
            return None;
        }
    };
    let start: Option<u64> = m(meta::START).and_then(|v| v.parse().ok());
    let end: Option<u64> = m(meta::END).and_then(|v| v.parse().ok());
    let (Some(start), Some(end)) = (start, end) else {
        bad(problems, "no valid start and end positions");
        return None;
    };
    if end < start || end - start != p.size || (start > 0 && start < 4) {
        bad(
            problems,
            &format!(
                "positions {start}..{end} disagree with its {} bytes",
                p.size
            ),
        );
        return None;
    }
    Some(Ok(Chunk {
        batch,
        name: &p.name,
        file,
        seq: seq(file)?,
        start,
        end,
        closed: m(meta::CLOSED) == Some("true"),
        first_time: p.first_time,
        last_time: p.last_time,
        blake3: &p.blake3,
    }))
}

impl<'a> Chain<'a> {
    /// Read the chain from a source's batches (any order).
    pub fn of(batches: &[(&'a SnapshotEntry, &'a LogBatch)]) -> Chain<'a> {
        let mut chain = Chain::default();
        let mut chunks = Vec::new();
        for (e, b) in batches {
            for p in &b.pieces {
                match parse_piece(e, p, &mut chain.problems) {
                    Some(Ok(c)) => chunks.push(c),
                    Some(Err((id, mark))) => {
                        chain.mark_batches.insert(id.clone(), e.id);
                        chain.marks.insert(id, mark);
                    }
                    None => {}
                }
            }
        }
        chain.pieces = chunks.len();
        chunks.sort_by_key(|c| (c.seq, c.start, c.end));
        let mut kept: Vec<Chunk> = Vec::new();
        for c in chunks {
            if let Some(last) = kept.last() {
                if (last.seq, last.start, last.end) == (c.seq, c.start, c.end) {
                    if last.blake3 != c.blake3 || last.closed != c.closed {
                        chain.problems.push(format!(
                            "{} positions {}..{} was stored twice with different bytes (batches {} and {}): was the server's binary log reset?",
                            c.file, c.start, c.end, last.batch.id.short(), c.batch.id.short()
                        ));
                    }
                    continue;
                }
                if c.seq == last.seq && c.start < last.end {
                    chain.problems.push(format!(
                        "{} positions {}..{} overlaps {}..{} (batches {} and {})",
                        c.file,
                        c.start,
                        c.end,
                        last.start,
                        last.end,
                        c.batch.id.short(),
                        last.batch.id.short()
                    ));
                    continue;
                }
            }
            kept.push(c);
        }
        let mut seg = Segment::default();
        for c in kept {
            if let Some(prev) = seg.chunks.last() {
                let (nseq, npos) = prev.next();
                // A heartbeat at the end of the previous piece repeats its position.
                let same_place = c.start == c.end && c.seq == prev.seq && c.start == prev.end;
                if (c.seq, c.start) != (nseq, npos) && !same_place {
                    let expected = if prev.closed {
                        super::events::next_name(prev.file).unwrap_or_default()
                    } else {
                        prev.file.to_string()
                    };
                    let count = if c.seq == nseq {
                        1
                    } else {
                        c.seq - nseq + u64::from(c.start > 0)
                    };
                    chain.holes.push(Hole {
                        after_segment: chain.segments.len(),
                        missing: if c.seq == nseq {
                            format!("{expected} from position {npos} to {}", c.start)
                        } else {
                            format!("{expected} from position {npos}")
                        },
                        count,
                    });
                    chain.segments.push(std::mem::take(&mut seg));
                }
            }
            seg.chunks.push(c);
        }
        if !seg.chunks.is_empty() {
            chain.segments.push(seg);
        }
        chain
    }

    /// Where a base backup's replay starts: (segment, chunk) holding its position.
    pub fn locate(&self, mark: &Mark) -> Option<(usize, usize)> {
        self.segments
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.find(&mark.file, mark.pos).map(|j| (i, j)))
    }

    /// The window of recoverable instants, for the source's base backups (oldest first).
    pub fn window(&self, bases: &[&SnapshotEntry]) -> Window {
        let mut w = Window {
            problems: self.problems.clone(),
            bases: bases.len(),
            pieces: self.pieces,
            ..Default::default()
        };
        // Each usable base: its first target and its segment.
        let mut usable: Vec<(DateTime<Utc>, usize, usize)> = Vec::new();
        let mut earliest_seg: Option<usize> = None;
        for b in bases {
            let id = b.id.to_hex();
            let Some(mark) = self.marks.get(&id) else {
                w.problems.push(format!(
                    "base backup {} has no recorded binary log position (its marker is missing): it cannot start a point-in-time restore",
                    b.id.short()
                ));
                continue;
            };
            match self.locate(mark) {
                Some((s, c)) => {
                    usable.push((mark.from(), s, c));
                    earliest_seg = Some(earliest_seg.map_or(s, |e: usize| e.min(s)));
                }
                None => {
                    let beyond = self
                        .segments
                        .last()
                        .and_then(|s| s.chunks.last())
                        .is_none_or(|l| {
                            let (ns, np) = l.next();
                            (seq(&mark.file).unwrap_or(0), mark.pos) >= (ns, np)
                        });
                    w.problems.push(if beyond {
                        format!(
                            "base backup {} ({} position {}) has no archived binary log after it yet: is `holdfast replicate` running?",
                            b.id.short(), mark.file, mark.pos
                        )
                    } else {
                        format!(
                            "base backup {} ({} position {}): the archived binary log does not hold its position (it lies in a gap, or before the archive's start)",
                            b.id.short(), mark.file, mark.pos
                        )
                    });
                }
            }
        }
        w.from = usable.iter().map(|u| u.0).min();
        if let Some((_, s, c)) = usable.iter().max_by_key(|u| (u.1, u.0)) {
            // The newest segment a base reaches; its own base's piece onward (the oldest base
            // in that segment starts it).
            let first = usable
                .iter()
                .filter(|u| u.1 == *s)
                .map(|u| u.2)
                .min()
                .unwrap_or(*c);
            w.to = self.segments[*s].to_from(first);
        }
        if let Some(e) = earliest_seg {
            for h in self.holes.iter().filter(|h| h.after_segment >= e) {
                let after = self.segments[h.after_segment]
                    .chunks
                    .iter()
                    .filter_map(|c| c.last_time)
                    .max();
                let resumes = usable
                    .iter()
                    .filter(|u| u.1 > h.after_segment)
                    .map(|u| u.0)
                    .min();
                w.gaps.push(Gap {
                    missing: h.missing.clone(),
                    count: h.count,
                    after,
                    resumes,
                });
            }
        }
        w
    }
}

impl Chain<'_> {
    /// The batches a replay from any of `bases` needs (ids): every batch holding a piece from
    /// the start of a usable base's file to the end of its run, and the batches holding the
    /// bases' markers. A piece a base needs may be stored before the base itself (the range
    /// that holds its position), so retention must keep these whatever their age.
    pub fn needed(&self, bases: &[&SnapshotEntry]) -> BTreeSet<Id> {
        let mut out = BTreeSet::new();
        for b in bases {
            let Some(mark) = self.marks.get(&b.id.to_hex()) else {
                continue;
            };
            if let Some(m) = self.mark_batches.get(&b.id.to_hex()) {
                out.insert(*m);
            }
            let Some((s, _)) = self.locate(mark) else {
                continue;
            };
            let seg = &self.segments[s];
            let first = seg
                .chunks
                .iter()
                .position(|c| c.file == mark.file)
                .unwrap_or(0);
            out.extend(seg.chunks[first..].iter().map(|c| c.batch.id));
        }
        out
    }
}

/// What a restore to a target replays.
#[derive(Debug)]
pub struct Plan<'a> {
    /// The base backup.
    pub base: &'a SnapshotEntry,
    /// Its coordinates.
    pub mark: Mark,
    /// The pieces to fetch, in order (from the start of the base's file).
    pub chunks: Vec<Chunk<'a>>,
    /// Replay stops at the first event stamped at or after this whole second.
    pub stop: Option<DateTime<Utc>>,
    /// What is recovered: every statement that started before it.
    pub reached: Option<DateTime<Utc>>,
    /// Notes for people (a gap after the chain used).
    pub notes: Vec<String>,
}

/// Choose the base and the pieces for `target`; the error says why it cannot be reached.
pub fn plan<'a>(
    chain: &Chain<'a>,
    bases: &'a [SnapshotEntry],
    target: &RecoveryTarget,
) -> Result<Plan<'a>, String> {
    let stop = match target {
        RecoveryTarget::Latest => None,
        RecoveryTarget::Time(t) => Some(t.duration_trunc(Duration::seconds(1)).unwrap_or(*t)),
        RecoveryTarget::Position(p) => {
            return Err(format!(
                "a binary log position target ({p}) is not supported: give --at TIME or latest"
            ))
        }
    };
    let refs: Vec<&SnapshotEntry> = bases.iter().collect();
    let window = chain.window(&refs);
    let mut candidates = Vec::new();
    for b in bases.iter().rev() {
        let Some(mark) = chain.marks.get(&b.id.to_hex()) else {
            continue;
        };
        let Some((s, c)) = chain.locate(mark) else {
            continue;
        };
        if stop.is_some_and(|st| mark.from() > st) {
            continue;
        }
        candidates.push((b, mark.clone(), s, c));
    }
    // Newest base first; for a time, the newest whose segment reaches it.
    let mut why = Vec::new();
    for (b, mark, s, c) in candidates {
        let seg = &chain.segments[s];
        let to = seg.to_from(c);
        if let (Some(t), RecoveryTarget::Time(target_t)) = (to, target) {
            if t < *target_t {
                why.push(format!(
                    "from base backup {} the archived binary log reaches only {}",
                    b.id.short(),
                    t.to_rfc3339()
                ));
                continue;
            }
        }
        if to.is_none() {
            why.push(format!(
                "base backup {} has no archived time after it",
                b.id.short()
            ));
            continue;
        }
        let first = seg
            .chunks
            .iter()
            .position(|x| x.file == mark.file)
            .unwrap_or(c);
        let mut chunks: Vec<Chunk> = seg.chunks[first..=c].to_vec();
        // mariadb-binlog stops at the first event stamped at or after `stop`: a piece that
        // starts with one adds nothing.
        for x in &seg.chunks[c + 1..] {
            if let (Some(st), Some(ft)) = (stop, x.first_time) {
                if ft >= st {
                    break;
                }
            }
            chunks.push(x.clone());
        }
        let mut notes = Vec::new();
        if s + 1 < chain.segments.len() {
            notes.push(format!(
                "the archived binary log has a gap after {}: newer changes are not recoverable from this base",
                to.map(|t| t.to_rfc3339()).unwrap_or_default()
            ));
        }
        return Ok(Plan {
            base: b,
            mark,
            chunks,
            stop,
            reached: stop.or(to),
            notes,
        });
    }
    if why.is_empty() {
        why.push(match (target, window.from) {
            (RecoveryTarget::Time(t), Some(f)) if *t < f => format!(
                "{} is before the recoverable window, which starts at {}",
                t.to_rfc3339(),
                f.to_rfc3339()
            ),
            _ => "no base backup has its binary log position in the archive".into(),
        });
    }
    Err(format!(
        "cannot restore to {target}: {}{}",
        why.join("; "),
        if window.problems.is_empty() {
            String::new()
        } else {
            format!(" ({})", window.problems.join("; "))
        }
    ))
}
