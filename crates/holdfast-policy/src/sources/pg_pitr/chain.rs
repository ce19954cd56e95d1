//! The WAL chain of a PostgreSQL source: from each base backup's start segment, segment by
//! segment, following timeline switches, up to the newest segment reachable without a gap.
//! A pure function of the snapshots (and of the backup and timeline history facts, read from
//! the pieces' `meta` for status, from their bytes for a restore), so it is table-tested.

use std::collections::{BTreeMap, HashMap};

use chrono::Timelike;
use chrono::{DateTime, Utc};
use holdfast_core::logs::{LogBatch, Piece};
use holdfast_core::snapshot::SnapshotEntry;

use super::history::{BackupHistory, Branch};
use super::names::{self, per_log, SegName, WalFile};
use crate::sources::pitr::{Gap, RecoveryTarget, Window};

/// Facts from the small history files, however they were read.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Backup history files, with the time of the batch that stored each.
    pub backups: Vec<(BackupHistory, DateTime<Utc>)>,
    /// Each timeline's branch (from its history file).
    pub branches: BTreeMap<u32, Branch>,
    /// Files that could not be read, for people.
    pub problems: Vec<String>,
}

impl Facts {
    /// From what the archive side recorded in the pieces' `meta` (no piece is read).
    pub fn from_meta(batches: &[(&SnapshotEntry, &LogBatch)]) -> Facts {
        let mut f = Facts::default();
        for (e, b) in batches {
            for p in &b.pieces {
                match names::parse(&p.name) {
                    Some(WalFile::Backup(..)) => match BackupHistory::from_meta(&p.name, &p.meta) {
                        Ok(h) => f.backups.push((h, e.snapshot.time)),
                        Err(x) => f.problems.push(x.to_string()),
                    },
                    Some(WalFile::History(t)) => {
                        if let Some(br) = super::history::branch_from_meta(&p.meta) {
                            f.branches.insert(t, br);
                        }
                    }
                    _ => {}
                }
            }
        }
        f
    }
}

/// Where one base backup's chain goes.
#[derive(Debug, Clone)]
pub struct BaseChain<'a> {
    /// The base snapshot.
    pub entry: &'a SnapshotEntry,
    /// Its backup history file, when found.
    pub history: Option<BackupHistory>,
    /// From when it is recoverable (its end, rounded up).
    pub ready: Option<DateTime<Utc>>,
    /// Whether every segment from its start to its stop is archived.
    pub usable: bool,
    /// The last segment reached without a gap (number).
    pub reached: Option<u64>,
    /// Every change committed at or before this is recoverable from it.
    pub end: Option<DateTime<Utc>>,
    /// The first segment not archived after `reached` (its name).
    pub next: String,
    /// When later segments exist on its path: how many are missing from `next` on.
    pub missing: Option<u64>,
    /// Timelines recovery follows, newest first, with the first segment of each.
    pub path: Vec<(u32, u64)>,
    /// Why it cannot be used, when it cannot.
    pub why: Option<String>,
}

/// The chain analysis of a source's archive.
#[derive(Debug)]
pub struct Analysis<'a> {
    /// wal_segment_size, when any segment is archived.
    pub seg_size: Option<u64>,
    /// Each base's chain, in the order of their `ready` time (unusable ones last).
    pub chains: Vec<BaseChain<'a>>,
    /// Findings that make the archive untrustworthy.
    pub problems: Vec<String>,
    /// Pieces counted.
    pub pieces: usize,
    /// Bases counted.
    pub bases: usize,
    segments: HashMap<(u32, u64), (&'a Piece, &'a SnapshotEntry)>,
    heartbeat: Option<DateTime<Utc>>,
}

fn segno_of_lsn(lsn: u64, seg_size: u64) -> u64 {
    lsn / seg_size
}

/// The segment holding the last byte before `lsn` (a stop point at a segment boundary ends in
/// the segment before).
fn segno_before(lsn: u64, seg_size: u64) -> u64 {
    lsn.saturating_sub(1) / seg_size
}

impl<'a> Analysis<'a> {
    /// Analyse `batches` (oldest first) for `bases` (complete base snapshots).
    pub fn new(
        bases: &[&'a SnapshotEntry],
        batches: &[(&'a SnapshotEntry, &'a LogBatch)],
        facts: &Facts,
    ) -> Analysis<'a> {
        let mut problems = facts.problems.clone();
        let mut pieces = 0;
        // The segment size: the size most segments have.
        let mut sizes: BTreeMap<u64, usize> = BTreeMap::new();
        for (_, b) in batches {
            for p in &b.pieces {
                pieces += 1;
                if let Some(WalFile::Segment(_)) = names::parse(&p.name) {
                    *sizes.entry(p.size).or_default() += 1;
                }
            }
        }
        let seg_size = sizes
            .iter()
            .max_by_key(|(s, n)| (**n, **s))
            .map(|(s, _)| *s);
        let pl = seg_size.and_then(per_log);
        if let (Some(s), None) = (seg_size, pl) {
            problems.push(format!(
                "archived WAL segments are {s} bytes: no PostgreSQL segment size (a power of two from 1 MiB to 1 GiB)"
            ));
        }
        let mut segments: HashMap<(u32, u64), (&Piece, &SnapshotEntry)> = HashMap::new();
        let mut seen: HashMap<&str, (&Piece, &SnapshotEntry)> = HashMap::new();
        let mut partials: BTreeMap<u32, u64> = BTreeMap::new();
        let mut first_seg: BTreeMap<u32, u64> = BTreeMap::new();
        let mut heartbeat: Option<DateTime<Utc>> = None;
        for (e, b) in batches {
            for p in &b.pieces {
                if let Some((q, qe)) = seen.get(p.name.as_str()) {
                    if q.blake3 != p.blake3 || q.size != p.size {
                        problems.push(format!(
                            "{} was archived twice with different contents (batches {} and {}): one of them is not the server's WAL",
                            p.name,
                            qe.id.short(),
                            e.id.short()
                        ));
                    }
                    continue;
                }
                seen.insert(&p.name, (p, e));
                let Some(pl) = pl else { continue };
                match names::parse(&p.name) {
                    Some(WalFile::Segment(s)) => {
                        let Some(n) = s.segno(pl) else {
                            problems.push(format!(
                                "{}: no segment of a {}-byte WAL",
                                p.name,
                                seg_size.unwrap_or(0)
                            ));
                            continue;
                        };
                        if Some(p.size) != seg_size {
                            problems.push(format!(
                                "{} is {} bytes, not a whole {}-byte segment",
                                p.name,
                                p.size,
                                seg_size.unwrap_or(0)
                            ));
                            continue;
                        }
                        segments.insert((s.tli, n), (p, e));
                        let f = first_seg.entry(s.tli).or_insert(n);
                        *f = (*f).min(n);
                    }
                    Some(WalFile::Partial(s)) => {
                        if let Some(n) = s.segno(pl) {
                            partials.insert(s.tli, n);
                        }
                    }
                    Some(_) => {}
                    // Not a WAL file: a heartbeat (nothing new to archive up to its time).
                    None => {
                        if let Some(t) = p.last_time {
                            heartbeat = Some(heartbeat.map_or(t, |h| h.max(t)));
                        }
                    }
                }
            }
        }
        // Timelines whose history file was stored without its facts: the parent is the one
        // before, and it branched where its parent's .partial or its own first segment is.
        let mut branches = facts.branches.clone();
        for (e, b) in batches {
            let _ = e;
            for p in &b.pieces {
                if let Some(WalFile::History(t)) = names::parse(&p.name) {
                    if let (false, Some(ss)) = (branches.contains_key(&t), seg_size) {
                        let parent = t - 1;
                        let at = partials
                            .get(&parent)
                            .or_else(|| first_seg.get(&t))
                            .map(|n| n * ss);
                        if let Some(switch) = at {
                            branches.insert(t, Branch { parent, switch });
                        } else {
                            problems.push(format!(
                                "{}: where timeline {t} branched is unknown (no segment of it is archived)",
                                p.name
                            ));
                        }
                    }
                }
            }
        }
        let mut a = Analysis {
            seg_size,
            chains: Vec::new(),
            problems,
            pieces,
            bases: bases.len(),
            segments,
            heartbeat,
        };
        let matched = match_bases(bases, &facts.backups);
        for (entry, found) in bases.iter().zip(matched) {
            let c = a.walk(entry, found, &branches);
            a.chains.push(c);
        }
        a.chains.sort_by_key(|c| (!c.usable, c.ready));
        a
    }

    fn walk(
        &self,
        entry: &'a SnapshotEntry,
        found: Option<(BackupHistory, DateTime<Utc>)>,
        branches: &BTreeMap<u32, Branch>,
    ) -> BaseChain<'a> {
        let mut c = BaseChain {
            entry,
            history: None,
            ready: None,
            usable: false,
            reached: None,
            end: None,
            next: String::new(),
            missing: None,
            path: Vec::new(),
            why: None,
        };
        let Some((h, stored)) = found else {
            c.why = Some(format!(
                "base backup {} ({}) has no .backup history file in the archive: the WAL it needs is unknown (is archive_command holdfast wal-push?)",
                entry.id.short(),
                entry.snapshot.time.to_rfc3339()
            ));
            return c;
        };
        let (Some(ss), Some(pl)) = (self.seg_size, self.seg_size.and_then(per_log)) else {
            c.why = Some(format!(
                "base backup {}: no WAL segment is archived",
                entry.id.short()
            ));
            c.history = Some(h);
            return c;
        };
        // The backup is consistent within a second of its (whole-second) STOP TIME. Without
        // one (the history file's bytes are not read here), the batch holding the file was
        // stored after the backup stopped, so its STOP TIME is at most that second: the next
        // whole second is never earlier than what a restore, which reads the file, accepts.
        c.ready = Some(match h.stop_time {
            Some(t) => t + chrono::Duration::seconds(1),
            None => {
                let floor = stored.with_nanosecond(0).unwrap_or(stored);
                floor + chrono::Duration::seconds(1)
            }
        });
        let Some(start) = h.start.segno(pl) else {
            c.why = Some(format!(
                "{}: its start segment does not fit the segment size",
                h.name
            ));
            c.history = Some(h);
            return c;
        };
        let stop = h.stop_lsn.map_or(start, |l| segno_before(l, ss).max(start));
        // recovery_target_timeline = 'latest': the newest timeline whose history files follow
        // one another from the base's timeline on, as PostgreSQL probes them.
        let mut newest = h.timeline;
        while branches.contains_key(&(newest + 1)) {
            newest += 1;
        }
        let mut path = Vec::new();
        let mut t = newest;
        loop {
            if t == h.timeline {
                path.push((t, 0));
                break;
            }
            match branches.get(&t) {
                Some(b) if b.parent < t => {
                    path.push((t, segno_of_lsn(b.switch, ss)));
                    t = b.parent;
                }
                _ => break,
            }
        }
        let ok_path = path.last().map(|p| p.0) == Some(h.timeline)
            && path
                .iter()
                .rev()
                .nth(1)
                .is_none_or(|(_, begin)| *begin >= stop);
        if !ok_path {
            c.why = Some(format!(
                "base backup {}: timeline {newest} (the newest archived) does not branch from its timeline {} after it ended, so PostgreSQL refuses recovery_target_timeline = 'latest' from it",
                entry.id.short(),
                h.timeline
            ));
            path = vec![(h.timeline, 0)];
        }
        let tli_for = |s: u64| {
            path.iter()
                .find(|(_, begin)| *begin <= s)
                .map(|(t, _)| *t)
                .unwrap_or(h.timeline)
        };
        let mut s = start;
        let mut end = c.ready;
        while let Some((p, _)) = self.segments.get(&(tli_for(s), s)) {
            if let Some(t) = p.last_time {
                end = end.max(Some(t));
            }
            s += 1;
        }
        c.reached = (s > start).then(|| s - 1);
        c.next = SegName::of(tli_for(s), s, pl).to_string();
        let later = self
            .segments
            .keys()
            .filter(|(t, n)| *n > s && tli_for(*n) == *t)
            .map(|(_, n)| *n)
            .min();
        c.missing = later.map(|n| n - s);
        c.usable = ok_path && c.reached.is_some_and(|r| r >= stop);
        if c.usable && later.is_none() {
            // Nothing newer is archived on its path: a heartbeat stored after the newest
            // segment says nothing was left to archive up to its time.
            let newest_stored = self.segments.values().map(|(_, e)| e.snapshot.time).max();
            if let (Some(hb), Some(ns)) = (self.heartbeat, newest_stored) {
                if hb >= ns {
                    end = end.max(Some(hb));
                }
            }
        }
        if c.usable {
            c.end = end;
        } else if c.why.is_none() {
            c.why = Some(format!(
                "base backup {} cannot be recovered: {} (needed from its start {} to its stop {}) is not archived",
                entry.id.short(),
                c.next,
                SegName::of(h.timeline, start, pl),
                SegName::of(tli_for(stop), stop, pl)
            ));
        }
        c.history = Some(h);
        c.path = path;
        c
    }

    /// What can be recovered.
    pub fn window(&self) -> Window {
        let mut w = Window {
            problems: self.problems.clone(),
            bases: self.bases,
            pieces: self.pieces,
            ..Default::default()
        };
        let mut pending: Option<&BaseChain> = None;
        let mut cur: Option<&BaseChain> = None;
        for c in &self.chains {
            if !c.usable {
                if let Some(why) = &c.why {
                    w.problems.push(why.clone());
                }
                if c.history.is_some() && cur.is_none() && pending.is_none() {
                    pending = Some(c);
                }
                continue;
            }
            let (ready, end) = (c.ready, c.end);
            match cur {
                None => {
                    if let Some(p) = pending.take() {
                        w.gaps.push(Gap {
                            missing: p.next.clone(),
                            count: p.missing.unwrap_or(1).max(1),
                            after: None,
                            resumes: ready,
                        });
                    }
                    w.from = ready;
                    w.to = end;
                    cur = Some(c);
                }
                Some(k) if ready <= w.to => {
                    if end > w.to {
                        w.to = end;
                        cur = Some(c);
                    }
                    let _ = k;
                }
                Some(k) => {
                    w.gaps.push(Gap {
                        missing: k.next.clone(),
                        count: k.missing.unwrap_or(1).max(1),
                        after: w.to,
                        resumes: ready,
                    });
                    w.to = end;
                    cur = Some(c);
                }
            }
        }
        match (cur, pending) {
            (Some(k), _) if k.missing.is_some() => w.gaps.push(Gap {
                missing: k.next.clone(),
                count: k.missing.unwrap_or(1),
                after: w.to,
                resumes: None,
            }),
            (None, Some(p)) => w.gaps.push(Gap {
                missing: p.next.clone(),
                count: p.missing.unwrap_or(1).max(1),
                after: None,
                resumes: None,
            }),
            _ => {}
        }
        if self.bases == 0 {
            w.problems
                .push("no base backup: nothing to replay the archived WAL onto".into());
        }
        w
    }

    /// The base backup a restore to `target` starts from: the newest whose end is before the
    /// target and whose chain reaches it.
    pub fn choose(&self, target: &RecoveryTarget) -> Result<&BaseChain<'a>, String> {
        let usable = self.chains.iter().filter(|c| c.usable);
        let pick = match target {
            // Latest is everything archived: a chain that stops at a gap does not reach it
            // (and PostgreSQL, missing a segment of the newest timeline, may silently replay
            // the older timeline past the switch instead).
            RecoveryTarget::Latest => {
                let best = usable.max_by_key(|c| (c.end, c.ready));
                if let Some(c) = best.filter(|c| c.missing.is_some()) {
                    return Err(format!(
                        "latest is not recoverable: {} is missing, later WAL is archived; the newest instant recoverable is {} (restore --at it explicitly to accept losing what comes after): {}",
                        c.next,
                        c.end.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)).unwrap_or_default(),
                        describe(&self.window())
                    ));
                }
                best
            }
            RecoveryTarget::Time(t) => usable
                .filter(|c| c.ready.is_some_and(|r| r <= *t) && c.end.is_some_and(|e| e >= *t))
                .max_by_key(|c| c.ready),
            RecoveryTarget::Position(p) => {
                let lsn = names::parse_lsn(p).ok_or_else(|| {
                    format!("--lsn {p:?} is no LSN: write it as PostgreSQL does (16/B374D848)")
                })?;
                let ss = self.seg_size.unwrap_or(1);
                usable
                    .filter(|c| {
                        let h = c.history.as_ref().expect("usable chains have one");
                        h.stop_lsn.unwrap_or(h.start_lsn) <= lsn
                            && c.reached.is_some_and(|r| r >= segno_of_lsn(lsn, ss))
                    })
                    .max_by_key(|c| c.ready)
            }
        };
        pick.ok_or_else(|| {
            format!(
                "no base backup reaches {target}: {}",
                describe(&self.window())
            )
        })
    }
}

/// The window in words: "recoverable: any second from A to B, except ...".
pub fn describe(w: &Window) -> String {
    let f = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_else(|| "-".into())
    };
    let mut s = match (w.from, w.to) {
        (Some(a), Some(b)) => format!(
            "the recoverable window is any time from {} to {}",
            f(Some(a)),
            f(Some(b))
        ),
        _ => "nothing is recoverable to a point in time".to_string(),
    };
    for g in &w.gaps {
        s.push_str(&format!(
            "; {} (and {} after it) missing: {} to {} is not recoverable",
            g.missing,
            g.count.saturating_sub(1),
            f(g.after),
            match g.resumes {
                Some(r) => f(Some(r)),
                None => "now".into(),
            }
        ));
    }
    for p in &w.problems {
        s.push_str(&format!("; {p}"));
    }
    s
}

/// Each base's backup history file: the one whose label carries the base's time; a history
/// file without a recorded label belongs to the newest base that began before it was stored
/// (PostgreSQL archives it as the base backup ends).
fn match_bases(
    bases: &[&SnapshotEntry],
    backups: &[(BackupHistory, DateTime<Utc>)],
) -> Vec<Option<(BackupHistory, DateTime<Utc>)>> {
    let mut out: Vec<Option<(BackupHistory, DateTime<Utc>)>> = bases
        .iter()
        .map(|b| {
            backups
                .iter()
                .find(|(h, _)| h.label_time() == Some(b.snapshot.time))
                .cloned()
        })
        .collect();
    let mut unlabelled: Vec<&(BackupHistory, DateTime<Utc>)> =
        backups.iter().filter(|(h, _)| h.label.is_none()).collect();
    unlabelled.sort_by_key(|(_, at)| *at);
    for b in unlabelled {
        let owner = (0..bases.len())
            .filter(|i| out[*i].is_none() && bases[*i].snapshot.time <= b.1)
            .max_by_key(|i| bases[*i].snapshot.time);
        if let Some(i) = owner {
            out[i] = Some(b.clone());
        }
    }
    out
}
