//! Table tests of the WAL chain analysis (a pure function of snapshots).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use holdfast_core::logs::{LogBatch, LogKind, Piece};
use holdfast_core::snapshot::{Snapshot, SnapshotEntry};
use holdfast_core::Id;

use super::chain::{Analysis, Facts};
use super::names::{format_lsn, SegName};
use crate::sources::pitr::{Gap, RecoveryTarget, Window};

const MB16: u64 = 16 << 20;
const MB1: u64 = 1 << 20;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Segment `n`'s last time: minute `n`.
fn lt(n: u64) -> DateTime<Utc> {
    t0() + Duration::minutes(n as i64)
}

fn snap(time: DateTime<Utc>, log: Option<LogBatch>) -> SnapshotEntry {
    let source = log.is_none().then(|| "db".to_string());
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
            source,
            parent: None,
            complete: true,
            errors: vec![],
            warnings: vec![],
            changed_while_read: vec![],
            summary: Default::default(),
            program: "test".into(),
            log,
        },
    }
}

/// An archive being built: base snapshots and one batch per piece.
struct Arch {
    seg: u64,
    bases: Vec<SnapshotEntry>,
    batches: Vec<SnapshotEntry>,
}

impl Arch {
    fn new(seg: u64) -> Arch {
        Arch {
            seg,
            bases: vec![],
            batches: vec![],
        }
    }
    fn pl(&self) -> u64 {
        0x1_0000_0000 / self.seg
    }
    fn name(&self, tli: u32, n: u64) -> String {
        SegName::of(tli, n, self.pl()).to_string()
    }
    fn piece(
        &mut self,
        name: String,
        size: u64,
        hash: &str,
        last: Option<DateTime<Utc>>,
        meta: &[(&str, String)],
    ) {
        let stored = last.unwrap_or_else(t0) + Duration::seconds(5);
        let p = Piece {
            name,
            size,
            blake3: hash.into(),
            first_time: None,
            last_time: last,
            meta: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        self.batches.push(snap(
            stored,
            Some(LogBatch {
                source: "db".into(),
                kind: LogKind::PgWal,
                pieces: vec![p],
            }),
        ));
    }
    /// Segments `ns` on timeline `tli`.
    fn segs(&mut self, tli: u32, ns: impl IntoIterator<Item = u64>) -> &mut Arch {
        for n in ns {
            let name = self.name(tli, n);
            let h = blake3::hash(name.as_bytes()).to_hex().to_string();
            self.piece(name, self.seg, &h, Some(lt(n)), &[]);
        }
        self
    }
    /// A base backup starting and stopping in segment `n` of timeline `tli` (its stop time 10 s
    /// before segment n's last time); `meta`: whether its .backup piece carries the facts.
    fn base(&mut self, tli: u32, n: u64, meta: bool) -> DateTime<Utc> {
        let time = lt(n) - Duration::seconds(30);
        let stop_time = lt(n) - Duration::seconds(10);
        let start = n * self.seg + 0x28;
        let name = format!("{}.00000028.backup", self.name(tli, n));
        let facts = [
            (
                "label",
                format!(
                    "holdfast db {}",
                    time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                ),
            ),
            ("start-lsn", format_lsn(start)),
            ("stop-lsn", format_lsn(start + 0x110)),
            ("stop-time", stop_time.to_rfc3339()),
            ("timeline", tli.to_string()),
        ];
        self.piece(
            name,
            300,
            "b",
            Some(stop_time),
            if meta { &facts } else { &[] },
        );
        self.bases.push(snap(time, None));
        // Ready one second after the whole-second stop time.
        stop_time + Duration::seconds(1)
    }
    /// A base in segment `n` whose history file (no meta) was stored at `stored`.
    fn base_stored_at(&mut self, tli: u32, n: u64, stored: DateTime<Utc>) {
        let time = lt(n) - Duration::seconds(30);
        let name = format!("{}.00000028.backup", self.name(tli, n));
        self.piece(name, 300, "b", Some(stored - Duration::seconds(5)), &[]);
        self.bases.push(snap(time, None));
    }
    /// Timeline `tli` branched from `parent` in segment `n` (`meta`: its history piece says so).
    fn history(&mut self, tli: u32, parent: u32, n: u64, meta: bool) {
        let m = [
            ("parent", parent.to_string()),
            ("switch-lsn", format_lsn(n * self.seg + 0x100)),
        ];
        self.piece(
            format!("{tli:08X}.history"),
            40,
            "h",
            Some(lt(n)),
            if meta { &m } else { &[] },
        );
    }
    fn partial(&mut self, tli: u32, n: u64) {
        let name = format!("{}.partial", self.name(tli, n));
        self.piece(name, self.seg, "p", Some(lt(n)), &[]);
    }
    fn with<R>(&self, f: impl FnOnce(&Analysis) -> R) -> R {
        let bases: Vec<&SnapshotEntry> = self.bases.iter().collect();
        let batches: Vec<(&SnapshotEntry, &LogBatch)> = self
            .batches
            .iter()
            .map(|e| (e, e.snapshot.log.as_ref().unwrap()))
            .collect();
        let facts = Facts::from_meta(&batches);
        let a = Analysis::new(&bases, &batches, &facts);
        f(&a)
    }
    fn window(&self) -> Window {
        self.with(|a| a.window())
    }
}

fn gap(
    missing: &str,
    count: u64,
    after: Option<DateTime<Utc>>,
    resumes: Option<DateTime<Utc>>,
) -> Gap {
    Gap {
        missing: missing.into(),
        count,
        after,
        resumes,
    }
}

#[test]
fn an_unbroken_chain_reaches_the_newest_segment() {
    let mut a = Arch::new(MB16);
    a.segs(1, 2..=10);
    let ready = a.base(1, 2, true);
    let w = a.window();
    assert_eq!((w.from, w.to), (Some(ready), Some(lt(10))));
    assert!(w.whole(), "{w:?}");
    assert_eq!((w.bases, w.pieces), (1, 10));
}

#[test]
fn a_gap_in_the_middle_ends_the_window_before_it() {
    let mut a = Arch::new(MB16);
    a.segs(1, (2..=10).filter(|n| *n != 6 && *n != 7));
    let ready = a.base(1, 2, true);
    let w = a.window();
    assert_eq!((w.from, w.to), (Some(ready), Some(lt(5))));
    assert_eq!(
        w.gaps,
        vec![gap("000000010000000000000006", 2, Some(lt(5)), None)]
    );
    assert!(!w.whole());
    assert!(w.contains(lt(5)) && !w.contains(lt(5) + Duration::seconds(1)));
    // Latest would lose what comes after the gap: refused, naming the instant to ask for.
    a.with(|an| {
        let e = an.choose(&RecoveryTarget::Latest).unwrap_err();
        assert!(
            e.contains("000000010000000000000006 is missing") && e.contains("10:05:00"),
            "{e}"
        );
        assert!(an.choose(&RecoveryTarget::Time(lt(5))).is_ok());
    });
}

#[test]
fn a_gap_right_after_a_base() {
    let mut a = Arch::new(MB16);
    a.segs(1, [2, 4, 5, 6]);
    let ready = a.base(1, 2, true);
    let w = a.window();
    assert_eq!((w.from, w.to), (Some(ready), Some(lt(2))));
    assert_eq!(
        w.gaps,
        vec![gap("000000010000000000000003", 1, Some(lt(2)), None)]
    );
}

#[test]
fn a_base_whose_own_segment_is_missing_is_not_usable() {
    let mut a = Arch::new(MB16);
    a.segs(1, [3, 4, 5]);
    a.base(1, 2, true);
    let w = a.window();
    assert_eq!((w.from, w.to), (None, None));
    assert_eq!(w.gaps, vec![gap("000000010000000000000002", 1, None, None)]);
    assert!(
        w.problems.iter().any(|p| p.contains("cannot be recovered")),
        "{w:?}"
    );
    a.with(|an| assert!(an.choose(&RecoveryTarget::Latest).is_err()));
}

#[test]
fn two_bases_with_a_gap_between_them_restart_the_window_at_the_second() {
    let mut a = Arch::new(MB16);
    a.segs(1, (2..=12).filter(|n| !(6..=7).contains(n)));
    let r1 = a.base(1, 2, true);
    let r2 = a.base(1, 8, true);
    let w = a.window();
    assert_eq!((w.from, w.to), (Some(r1), Some(lt(12))));
    assert_eq!(
        w.gaps,
        vec![gap("000000010000000000000006", 2, Some(lt(5)), Some(r2))]
    );
    assert!(w.contains(lt(4)));
    assert!(!w.contains(lt(6)));
    assert!(w.contains(r2) && w.contains(lt(12)));
    a.with(|an| {
        let pick = |t| {
            an.choose(&RecoveryTarget::Time(t))
                .map(|c| c.entry.snapshot.time)
        };
        assert_eq!(pick(lt(4)).unwrap(), a.bases[0].snapshot.time);
        assert_eq!(pick(lt(11)).unwrap(), a.bases[1].snapshot.time);
        let e = pick(lt(6)).unwrap_err();
        assert!(
            e.contains("000000010000000000000006") && e.contains("recoverable window"),
            "{e}"
        );
        assert!(pick(r1 - Duration::seconds(1)).is_err());
        assert!(pick(lt(13)).is_err());
        assert_eq!(
            an.choose(&RecoveryTarget::Latest)
                .unwrap()
                .entry
                .snapshot
                .time,
            a.bases[1].snapshot.time
        );
    });
}

#[test]
fn the_newest_base_is_chosen_when_both_reach_the_target() {
    let mut a = Arch::new(MB16);
    a.segs(1, 2..=12);
    let r1 = a.base(1, 2, true);
    a.base(1, 8, true);
    let w = a.window();
    assert_eq!((w.from, w.to), (Some(r1), Some(lt(12))));
    assert!(w.whole(), "{w:?}");
    a.with(|an| {
        let pick = |t| {
            an.choose(&RecoveryTarget::Time(t))
                .unwrap()
                .entry
                .snapshot
                .time
        };
        assert_eq!(pick(lt(7)), a.bases[0].snapshot.time);
        assert_eq!(pick(lt(9)), a.bases[1].snapshot.time);
        // By LSN: the base whose stop is at or before it.
        let by_lsn = |l: u64| {
            an.choose(&RecoveryTarget::Position(format_lsn(l)))
                .map(|c| c.entry.snapshot.time)
        };
        assert_eq!(by_lsn(9 * MB16).unwrap(), a.bases[1].snapshot.time);
        assert_eq!(by_lsn(5 * MB16).unwrap(), a.bases[0].snapshot.time);
        assert!(by_lsn(13 * MB16).is_err());
        assert!(an.choose(&RecoveryTarget::Position("nope".into())).is_err());
    });
}

#[test]
fn a_timeline_switch_is_followed() {
    for meta in [true, false] {
        let mut a = Arch::new(MB16);
        a.segs(1, 2..=4);
        a.partial(1, 5);
        a.history(2, 1, 5, meta);
        a.segs(2, 5..=8);
        let ready = a.base(1, 2, true);
        let w = a.window();
        assert_eq!((w.from, w.to), (Some(ready), Some(lt(8))), "meta {meta}");
        assert!(w.whole(), "{w:?}");
        a.with(|an| assert_eq!(an.chains[0].path, vec![(2, 5), (1, 0)]));
    }
}

#[test]
fn after_a_switch_the_old_timeline_does_not_fill_a_gap_of_the_new_one() {
    let mut a = Arch::new(MB16);
    // The old primary went on writing timeline 1; timeline 2 lost its segment 6.
    a.segs(1, 2..=8);
    a.history(2, 1, 5, true);
    a.segs(2, [5, 7, 8]);
    a.base(1, 2, true);
    let w = a.window();
    assert_eq!(w.to, Some(lt(5)));
    assert_eq!(
        w.gaps,
        vec![gap("000000020000000000000006", 1, Some(lt(5)), None)]
    );
}

#[test]
fn a_base_on_a_newer_timeline_and_one_restored_again() {
    let mut a = Arch::new(MB16);
    a.segs(1, 2..=5);
    a.history(2, 1, 5, true);
    a.segs(2, 5..=9);
    a.base(1, 2, true);
    let r2 = a.base(2, 7, true);
    let w = a.window();
    assert_eq!(w.to, Some(lt(9)));
    assert!(w.whole(), "{w:?}");
    a.with(|an| {
        let c = an.choose(&RecoveryTarget::Time(lt(8))).unwrap();
        assert_eq!(c.ready, Some(r2));
        assert_eq!(c.path, vec![(2, 0)]);
    });
}

#[test]
fn the_low_word_wraps_at_the_segment_size() {
    // 16 MiB: ...000000FF is followed by ...0000000100000000.
    let mut a = Arch::new(MB16);
    a.segs(1, [0xFE, 0xFF, 0x101]);
    a.base(1, 0xFE, true);
    let w = a.window();
    assert_eq!(w.to, Some(lt(0xFF)));
    assert_eq!(
        w.gaps,
        vec![gap("000000010000000100000000", 1, Some(lt(0xFF)), None)]
    );
    a.segs(1, [0x100]);
    assert!(a.window().whole());
    assert_eq!(a.window().to, Some(lt(0x101)));
    // 1 MiB: the low word runs to 0xFFF.
    let mut b = Arch::new(MB1);
    b.segs(1, [0xFFE, 0xFFF, 0x1001]);
    b.base(1, 0xFFE, true);
    let w = b.window();
    assert_eq!(
        w.gaps,
        vec![gap("000000010000000100000000", 1, Some(lt(0xFFF)), None)]
    );
    assert_eq!(b.name(1, 0xFFF), "000000010000000000000FFF");
    b.segs(1, [0x1000]);
    assert_eq!(b.window().to, Some(lt(0x1001)));
    assert!(b.window().whole());
}

#[test]
fn a_segment_archived_twice_with_other_bytes_is_a_problem() {
    let mut a = Arch::new(MB16);
    a.segs(1, 2..=5);
    a.base(1, 2, true);
    // The same bytes again: fine (PostgreSQL's retry after a lost acknowledgement).
    a.segs(1, [3]);
    assert!(a.window().whole());
    let name = a.name(1, 4);
    a.piece(name, MB16, "other", Some(lt(4)), &[]);
    let w = a.window();
    assert!(
        w.problems
            .iter()
            .any(|p| p.contains("000000010000000000000004") && p.contains("twice")),
        "{w:?}"
    );
    assert!(!w.whole());
}

#[test]
fn a_base_without_a_backup_history_file_is_a_problem() {
    let mut a = Arch::new(MB16);
    a.segs(1, 2..=10);
    a.bases.push(snap(lt(1), None));
    let r = a.base(1, 6, true);
    let w = a.window();
    assert_eq!(w.from, Some(r));
    assert!(
        w.problems
            .iter()
            .any(|p| p.contains("no .backup history file")),
        "{w:?}"
    );
    assert!(!w.whole());
}

#[test]
fn bases_match_their_history_file_by_label_or_by_time() {
    // Two bases; their .backup pieces stored in the other order: labels decide.
    let mut a = Arch::new(MB16);
    a.segs(1, 2..=10);
    let r2 = a.base(1, 8, true);
    let r1 = a.base(1, 3, true);
    let w = a.window();
    assert_eq!(w.from, Some(r1));
    a.with(|an| {
        let readies: Vec<_> = an.chains.iter().map(|c| c.ready).collect();
        assert_eq!(readies, vec![Some(r1), Some(r2)]);
    });
    // Without meta: the history file stored after the base stopped; its STOP TIME (whole
    // seconds) is at most the second it was stored in, so the window starts at the next whole
    // second, never before the instant a restore (which reads the file) accepts.
    let mut b = Arch::new(MB16);
    b.segs(1, 2..=10);
    b.base(1, 3, false);
    let w = b.window();
    assert!(w.whole(), "{w:?}");
    let stored = lt(3) - Duration::seconds(10) + Duration::seconds(5);
    assert_eq!(w.from, Some(stored + Duration::seconds(1)));
    // Stored a fraction into a second: the next whole second.
    let mut b = Arch::new(MB16);
    b.segs(1, 2..=10);
    b.base_stored_at(1, 3, stored + Duration::milliseconds(400));
    assert_eq!(b.window().from, Some(stored + Duration::seconds(1)));
    // An older base whose history file was never archived (taken before archiving was on)
    // does not take the next base's: the history file belongs to the newest base before it.
    let mut c = Arch::new(MB16);
    c.segs(1, 2..=10);
    c.bases.push(snap(lt(0), None));
    c.base(1, 5, false);
    c.with(|an| {
        let mine = an
            .chains
            .iter()
            .find(|x| x.entry.snapshot.time == lt(5) - Duration::seconds(30))
            .unwrap();
        assert!(mine.usable, "{mine:?}");
        let old = an
            .chains
            .iter()
            .find(|x| x.entry.snapshot.time == lt(0))
            .unwrap();
        assert!(
            !old.usable && old.why.as_deref().unwrap().contains("no .backup"),
            "{old:?}"
        );
    });
}

#[test]
fn a_heartbeat_after_the_newest_segment_extends_the_window() {
    let mut a = Arch::new(MB16);
    a.segs(1, 2..=5);
    a.base(1, 2, true);
    a.piece("heartbeat".into(), 0, "", Some(lt(9)), &[]);
    assert_eq!(a.window().to, Some(lt(9)));
    // Not across a gap.
    a.segs(1, [7]);
    let w = a.window();
    assert_eq!(w.to, Some(lt(5)));
    assert_eq!(w.gaps.len(), 1);
}

#[test]
fn wrong_sizes_and_no_bases() {
    let mut a = Arch::new(MB16);
    a.segs(1, 2..=5);
    let n = a.name(1, 6);
    a.piece(n, 100, "x", Some(lt(6)), &[]);
    let w = a.window();
    assert!(
        w.problems.iter().any(|p| p.contains("not a whole")),
        "{w:?}"
    );
    assert!(
        w.problems.iter().any(|p| p.contains("no base backup")),
        "{w:?}"
    );
    assert_eq!((w.from, w.to), (None, None));
    let empty = Arch::new(MB16);
    let w = empty.window();
    assert!(!w.whole() && w.from.is_none());
    let _ = BTreeMap::<u8, u8>::new();
}
