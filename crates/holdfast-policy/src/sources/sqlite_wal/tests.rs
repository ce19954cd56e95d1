//! The window of continuous SQLite sources, as a table: generations, continuity of WAL
//! offsets and checksums within a generation, restarts of the WAL, gaps by generation and
//! offset, heartbeats, duplicates, damaged metadata.

// (Test code: the layering check reads no further.)
#[cfg(test)]
use chrono::{DateTime, Duration, TimeZone, Utc};
use holdfast_core::logs::{LogBatch, LogKind, Piece};
use holdfast_core::snapshot::{Snapshot, SnapshotEntry, Summary};
use holdfast_core::Id;

use super::frames::{WalId, MAGIC};
use super::*;

const FS: u64 = 24 + 512;

fn t(s: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap() + Duration::seconds(s)
}

fn wal(ckpt: u32, salt1: u32) -> WalId {
    WalId {
        magic: MAGIC,
        page_size: 512,
        ckpt,
        salt1,
        salt2: 99,
    }
}

fn snap(time: DateTime<Utc>, log: Option<LogBatch>) -> SnapshotEntry {
    SnapshotEntry {
        id: Id::random(),
        snapshot: Snapshot {
            time,
            tree: Id::random(),
            paths: vec![],
            hostname: "h".into(),
            username: "u".into(),
            tags: vec![],
            copied_from: None,
            source: log.is_none().then(|| "db".to_string()),
            parent: None,
            complete: true,
            errors: vec![],
            warnings: vec![],
            changed_while_read: vec![],
            summary: Summary::default(),
            program: "test".into(),
            log,
        },
    }
}

/// A chain being written: pieces of one generation, as the replicator makes them.
struct Gen {
    id: String,
    seq: u64,
    at: PieceInfo,
}

impl Gen {
    fn start(
        id: &str,
        base: &SnapshotEntry,
        w: Option<WalId>,
        end: u64,
        time: i64,
    ) -> (Gen, Piece) {
        let info = PieceInfo {
            kind: PieceType::Start,
            generation: id.into(),
            seq: 0,
            wal: w,
            page_size: 512,
            start: end,
            end,
            cksum: (1, 2),
            cksum_end: (1, 2),
            db_size: 4,
            read_end: t(time),
            last_time: t(time),
            base: Some(base.id.to_hex()),
        };
        let p = piece(&info, t(time));
        (
            Gen {
                id: id.into(),
                seq: 0,
                at: info,
            },
            p,
        )
    }
    /// `frames` frames in the current WAL (or in `next`, restarted) up to `time`.
    fn frames(&mut self, frames: u64, next: Option<WalId>, time: i64) -> Piece {
        let (wal, start, cksum) = match next {
            Some(w) => (Some(w), 32, header_cksum(w)),
            None => (self.at.wal, self.at.end, self.at.cksum_end),
        };
        self.push(
            PieceType::Frames,
            wal,
            start,
            start + frames * FS,
            cksum,
            time,
        )
    }
    /// A periodic snapshot at the current position.
    fn snapshot(&mut self, base: &SnapshotEntry, time: i64) -> Piece {
        let (w, e, c) = (self.at.wal, self.at.end, self.at.cksum_end);
        let mut p = self.push(PieceType::Snapshot, w, e, e, c, time);
        self.at.base = Some(base.id.to_hex());
        p.meta = self.at.meta();
        p
    }
    fn heartbeat(&mut self, time: i64) -> Piece {
        let (w, e, c) = (self.at.wal, self.at.end, self.at.cksum_end);
        self.push(PieceType::Heartbeat, w, e, e, c, time)
    }
    fn push(
        &mut self,
        kind: PieceType,
        wal: Option<WalId>,
        start: u64,
        end: u64,
        cksum: (u32, u32),
        time: i64,
    ) -> Piece {
        self.seq += 1;
        let first = self.at.last_time;
        self.at = PieceInfo {
            kind,
            generation: self.id.clone(),
            seq: self.seq,
            wal,
            start,
            end,
            cksum,
            cksum_end: (cksum.0.wrapping_add(7), cksum.1),
            read_end: t(time) + Duration::milliseconds(5),
            last_time: t(time),
            base: None,
            ..self.at.clone()
        };
        piece(&self.at, first)
    }
}

fn piece(info: &PieceInfo, first: DateTime<Utc>) -> Piece {
    Piece {
        name: format!("{}-{}", info.generation, info.seq),
        size: info.end - info.start,
        blake3: format!("{:064}", info.seq),
        first_time: Some(first),
        last_time: Some(info.last_time),
        meta: info.meta(),
    }
}

fn batch(pieces: Vec<Piece>) -> SnapshotEntry {
    let time = pieces[0].last_time.unwrap();
    snap(
        time,
        Some(LogBatch {
            source: "db".into(),
            kind: LogKind::SqliteWal,
            pieces,
        }),
    )
}

fn win(bases: &[SnapshotEntry], batches: &[SnapshotEntry]) -> Window {
    let b: Vec<&SnapshotEntry> = bases.iter().collect();
    let l: Vec<_> = batches
        .iter()
        .map(|e| (e, e.snapshot.log.as_ref().unwrap()))
        .collect();
    window(&b, &l)
}

#[test]
fn one_generation_reaches_its_newest_piece_and_a_heartbeat_moves_it() {
    let base = snap(t(0), None);
    let (mut g, p0) = Gen::start("g1", &base, Some(wal(3, 10)), 32 + 5 * FS, 0);
    let bs = vec![
        batch(vec![p0]),
        batch(vec![g.frames(2, None, 1)]),
        batch(vec![g.frames(1, None, 2)]),
        batch(vec![g.heartbeat(62)]),
    ];
    let w = win(std::slice::from_ref(&base), &bs);
    assert_eq!((w.from, w.to), (Some(t(0)), Some(t(62))));
    assert!(w.whole(), "{w:?}");
    assert_eq!((w.bases, w.pieces), (1, 4));
    // Without the heartbeat the window ends at the last frames.
    let w = win(std::slice::from_ref(&base), &bs[..3]);
    assert_eq!(w.to, Some(t(2)));
}

#[test]
fn window_table() {
    struct Case {
        name: &'static str,
        /// Builds (bases, batches).
        build: fn() -> (Vec<SnapshotEntry>, Vec<SnapshotEntry>),
        from: Option<i64>,
        to: Option<i64>,
        /// Each gap: (substring of `missing`, after, resumes).
        gaps: Vec<(&'static str, Option<i64>, Option<i64>)>,
        problems: usize,
    }
    let cases = vec![
        Case {
            name: "a missing piece is a gap named by generation and offset",
            build: || {
                let base = snap(t(0), None);
                let (mut g, p0) = Gen::start("g1", &base, Some(wal(3, 10)), 32, 0);
                let p1 = g.frames(2, None, 1);
                let _lost = g.frames(1, None, 2);
                let p3 = g.frames(1, None, 3);
                (vec![base], vec![batch(vec![p0, p1]), batch(vec![p3])])
            },
            from: Some(0),
            to: Some(1),
            gaps: vec![("generation g1 piece 2 (WAL offset 1104)", Some(1), None)],
            problems: 0,
        },
        Case {
            name: "a restart of the WAL (new salts, from its header) continues",
            build: || {
                let base = snap(t(0), None);
                let (mut g, p0) = Gen::start("g1", &base, Some(wal(3, 10)), 32, 0);
                let p1 = g.frames(2, None, 1);
                let p2 = g.frames(3, Some(wal(0, 5151)), 2);
                let p3 = g.frames(1, None, 3);
                (
                    vec![base],
                    vec![batch(vec![p0]), batch(vec![p1, p2]), batch(vec![p3])],
                )
            },
            from: Some(0),
            to: Some(3),
            gaps: vec![],
            problems: 0,
        },
        Case {
            name: "a new WAL's frames not from its beginning are a gap",
            build: || {
                let base = snap(t(0), None);
                let (mut g, p0) = Gen::start("g1", &base, Some(wal(3, 10)), 32, 0);
                let p1 = g.frames(2, None, 1);
                let mut p2 = g.frames(3, Some(wal(0, 4711)), 2);
                let mut info = PieceInfo::parse(&p2).unwrap();
                info.start += FS;
                info.end += FS;
                p2.meta = info.meta();
                (vec![base], vec![batch(vec![p0, p1, p2])])
            },
            from: Some(0),
            to: Some(1),
            gaps: vec![("generation g1 piece 2 (WAL offset 1104)", Some(1), None)],
            problems: 0,
        },
        Case {
            name: "an empty WAL at the start: any first WAL continues",
            build: || {
                let base = snap(t(0), None);
                let (mut g, p0) = Gen::start("g1", &base, None, 0, 0);
                let p1 = g.frames(2, Some(wal(0, 4242)), 1);
                (vec![base], vec![batch(vec![p0, p1])])
            },
            from: Some(0),
            to: Some(1),
            gaps: vec![],
            problems: 0,
        },
        Case {
            name: "frames that do not start at the previous end are a gap",
            build: || {
                let base = snap(t(0), None);
                let (mut g, p0) = Gen::start("g1", &base, Some(wal(3, 10)), 32, 0);
                let p1 = g.frames(2, None, 1);
                g.at.end += FS;
                let p2 = g.frames(1, None, 2);
                (vec![base], vec![batch(vec![p0, p1, p2])])
            },
            from: Some(0),
            to: Some(1),
            gaps: vec![("generation g1 piece 2", Some(1), None)],
            problems: 0,
        },
        Case {
            name: "a generation whose snapshot is gone is not usable",
            build: || {
                let base = snap(t(0), None);
                let (mut g, p0) = Gen::start("g1", &base, Some(wal(3, 10)), 32, 0);
                let p1 = g.frames(2, None, 1);
                (vec![], vec![batch(vec![p0, p1])])
            },
            from: None,
            to: None,
            gaps: vec![],
            problems: 0,
        },
        Case {
            name: "replication stopped: the time between two generations is a gap",
            build: || {
                let (b1, b2) = (snap(t(0), None), snap(t(100), None));
                let (mut g1, p0) = Gen::start("g1", &b1, Some(wal(3, 10)), 32, 0);
                let p1 = g1.frames(2, None, 10);
                let (mut g2, q0) = Gen::start("g2", &b2, Some(wal(9, 20)), 32, 100);
                let q1 = g2.frames(2, None, 101);
                (
                    vec![b1, b2],
                    vec![batch(vec![p0, p1]), batch(vec![q0]), batch(vec![q1])],
                )
            },
            from: Some(0),
            to: Some(101),
            gaps: vec![("generation g1 after WAL offset 1104", Some(10), Some(100))],
            problems: 0,
        },
        Case {
            name: "a broken generation resumes at the next one's snapshot",
            build: || {
                let (b1, b2) = (snap(t(0), None), snap(t(100), None));
                let (mut g1, p0) = Gen::start("g1", &b1, Some(wal(3, 10)), 32, 0);
                let p1 = g1.frames(2, None, 10);
                let _lost = g1.frames(2, None, 11);
                let p3 = g1.frames(2, None, 12);
                let (_, q0) = Gen::start("g2", &b2, Some(wal(9, 20)), 32, 100);
                (vec![b1, b2], vec![batch(vec![p0, p1, p3]), batch(vec![q0])])
            },
            from: Some(0),
            to: Some(100),
            gaps: vec![("generation g1 piece 2", Some(10), Some(100))],
            problems: 0,
        },
        Case {
            name: "a piece stored twice with the same bytes is one piece; with others a problem",
            build: || {
                let base = snap(t(0), None);
                let (mut g, p0) = Gen::start("g1", &base, Some(wal(3, 10)), 32, 0);
                let p1 = g.frames(2, None, 1);
                let mut other = p1.clone();
                other.blake3 = format!("{:064}", 7);
                (
                    vec![base],
                    vec![
                        batch(vec![p0, p1.clone()]),
                        batch(vec![p1]),
                        batch(vec![other]),
                    ],
                )
            },
            from: Some(0),
            to: Some(1),
            gaps: vec![],
            problems: 1,
        },
        Case {
            name: "damaged metadata is a problem, not a piece",
            build: || {
                let base = snap(t(0), None);
                let (mut g, p0) = Gen::start("g1", &base, Some(wal(3, 10)), 32, 0);
                let mut p1 = g.frames(2, None, 1);
                p1.size += 1;
                let mut p2 = g.frames(2, None, 2);
                p2.meta.remove("seq");
                (vec![base], vec![batch(vec![p0, p1, p2])])
            },
            from: Some(0),
            to: Some(0),
            gaps: vec![],
            problems: 2,
        },
        Case {
            name: "retention dropped what is older than the oldest kept snapshot",
            build: || {
                let (b0, b3) = (snap(t(0), None), snap(t(3), None));
                let (mut g, _p0) = Gen::start("g1", &b0, Some(wal(3, 10)), 32, 0);
                let _p1 = g.frames(2, None, 1);
                let _p2 = g.frames(2, Some(wal(0, 77)), 2);
                let p3 = g.snapshot(&b3, 3);
                let p4 = g.frames(1, None, 4);
                (vec![b3], vec![batch(vec![p3]), batch(vec![p4])])
            },
            from: Some(3),
            to: Some(4),
            gaps: vec![],
            problems: 0,
        },
        Case {
            name: "a piece missing between two snapshots: recoverable again from the later one",
            build: || {
                let (b0, b4) = (snap(t(0), None), snap(t(4), None));
                let (mut g, p0) = Gen::start("g1", &b0, Some(wal(3, 10)), 32, 0);
                let p1 = g.frames(2, None, 1);
                let _lost = g.frames(2, None, 2);
                let p3 = g.frames(2, None, 3);
                let p4 = g.snapshot(&b4, 4);
                let p5 = g.frames(1, None, 5);
                (
                    vec![b0, b4],
                    vec![batch(vec![p0, p1]), batch(vec![p3, p4, p5])],
                )
            },
            from: Some(0),
            to: Some(5),
            gaps: vec![("generation g1 piece 2 (WAL offset 1104)", Some(1), Some(4))],
            problems: 0,
        },
        Case {
            name: "pieces without a start: the generation is unusable",
            build: || {
                let base = snap(t(0), None);
                let (mut g, _p0) = Gen::start("g1", &base, Some(wal(3, 10)), 32, 0);
                let p1 = g.frames(2, None, 1);
                (vec![base], vec![batch(vec![p1])])
            },
            from: None,
            to: None,
            gaps: vec![],
            problems: 0,
        },
    ];
    for c in cases {
        let (bases, batches) = (c.build)();
        let w = win(&bases, &batches);
        assert_eq!(w.from, c.from.map(t), "{}: from", c.name);
        assert_eq!(w.to, c.to.map(t), "{}: to", c.name);
        assert_eq!(w.gaps.len(), c.gaps.len(), "{}: {:?}", c.name, w.gaps);
        for (g, (m, after, resumes)) in w.gaps.iter().zip(&c.gaps) {
            assert!(g.missing.contains(m), "{}: {}", c.name, g.missing);
            assert_eq!(g.after, after.map(t), "{}: after", c.name);
            assert_eq!(g.resumes, resumes.map(t), "{}: resumes", c.name);
        }
        assert_eq!(w.problems.len(), c.problems, "{}: {:?}", c.name, w.problems);
    }
}

#[test]
fn settings_of_an_sqlite_source() {
    use crate::config::Workload;
    let parse = |extra: &str| {
        let text =
            format!("[[source]]\nname = \"s\"\nkind = \"sqlite\"\npath = \"/x.db\"\n{extra}");
        Workload::parse(std::path::Path::new("/w.toml"), &text)
    };
    let w = parse("mode = \"continuous\"\n").unwrap();
    let d = w.sources[0].driver();
    assert!(d.continuous().is_some() && d.replicator("s").is_some());
    let r = d.replicator("s").unwrap();
    assert_eq!(r.interval(), std::time::Duration::from_secs(1));
    let w = parse("mode = \"continuous\"\n[source.log]\ninterval = \"5s\"\nheartbeat = \"2m\"\n")
        .unwrap();
    assert_eq!(
        w.sources[0].driver().replicator("s").unwrap().interval(),
        std::time::Duration::from_secs(5)
    );
    let w = parse("").unwrap();
    assert!(w.sources[0].driver().continuous().is_none());
    // preflight: a continuous source's database must be in WAL mode.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("CREATE TABLE t(x)").unwrap();
    let on = |extra: &str| {
        let text = format!(
            "[[source]]\nname = \"s\"\nkind = \"sqlite\"\npath = \"{}\"\n{extra}",
            db.display()
        );
        Workload::parse(std::path::Path::new("/w.toml"), &text).unwrap()
    };
    let found = on("mode = \"continuous\"\n").sources[0]
        .driver()
        .preflight();
    assert!(
        found.len() == 1 && found[0].contains("not in WAL mode"),
        "{found:?}"
    );
    assert!(on("").sources[0].driver().preflight().is_empty());
    c.execute_batch("PRAGMA journal_mode=WAL").unwrap();
    assert!(on("mode = \"continuous\"\n").sources[0]
        .driver()
        .preflight()
        .is_empty());
    for (extra, says) in [
        (
            "[source.log]\ninterval = \"5s\"\n",
            "add mode = \"continuous\"",
        ),
        ("mode = \"physical\"\n", "not one of an sqlite source's"),
        (
            "mode = \"continuous\"\n[source.log]\nstreaming = true\n",
            "only interval and heartbeat",
        ),
    ] {
        let e = parse(extra).unwrap_err().to_string();
        assert!(e.contains(says), "{extra}: {e}");
    }
}
