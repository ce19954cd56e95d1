//! Table tests of the binary log chain: `window` and `plan` are pure functions of snapshots.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use holdfast_core::logs::{LogBatch, LogKind, Piece};
use holdfast_core::snapshot::{Snapshot, SnapshotEntry, Summary};
use holdfast_core::Id;

use super::meta;
use super::window::{plan, Chain};
use crate::sources::pitr::RecoveryTarget;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&format!("2026-12-01T{s}Z"))
        .unwrap()
        .with_timezone(&Utc)
}

fn snap(seed: &str, time: &str, log: Option<LogBatch>) -> SnapshotEntry {
    SnapshotEntry {
        id: Id::of_bytes(seed.as_bytes()),
        snapshot: Snapshot {
            time: t(time),
            tree: Id::of_bytes(b"tree"),
            paths: vec![],
            hostname: "h".into(),
            username: "u".into(),
            tags: vec![],
            copied_from: None,
            source: log.is_none().then(|| "shop".to_string()),
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

/// A range piece `file:start-end`, times as `HH:MM:SS`; `!` closes the file; `~` is a
/// heartbeat; bytes differ by `v`.
fn range(spec: &str, first: &str, last: &str) -> Piece {
    let closed = spec.ends_with('!');
    let spec = spec.trim_end_matches('!');
    let (file, r) = spec.split_once(':').unwrap();
    let (a, b) = r.split_once('-').unwrap();
    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
    let mut m = BTreeMap::new();
    m.insert(meta::FILE.to_string(), format!("binlog.{file:0>6}"));
    m.insert(meta::START.to_string(), a.to_string());
    m.insert(meta::END.to_string(), b.to_string());
    if closed {
        m.insert(meta::CLOSED.to_string(), "true".into());
    }
    Piece {
        name: format!("binlog.{file:0>6}@{a}"),
        size: b - a,
        blake3: format!("{file}-{a}-{b}"),
        first_time: (!first.is_empty()).then(|| t(first)),
        last_time: (!last.is_empty()).then(|| t(last)),
        meta: m,
    }
}

fn mark(base: &SnapshotEntry, file: u32, pos: u64, by: &str) -> Piece {
    let mut m = BTreeMap::new();
    m.insert(meta::BASE.to_string(), base.id.to_hex());
    m.insert(meta::FILE.to_string(), format!("binlog.{file:06}"));
    m.insert(meta::POS.to_string(), pos.to_string());
    m.insert(meta::CONSISTENT_BY.to_string(), t(by).to_rfc3339());
    Piece {
        name: format!("base.{}", base.id.to_hex()),
        size: 0,
        blake3: String::new(),
        first_time: None,
        last_time: None,
        meta: m,
    }
}

fn batch(seed: &str, pieces: Vec<Piece>) -> SnapshotEntry {
    snap(
        seed,
        "10:00:00",
        Some(LogBatch {
            source: "shop".into(),
            kind: LogKind::Binlog,
            pieces,
        }),
    )
}

struct Case {
    name: &'static str,
    pieces: Vec<Vec<Piece>>,
    with_marks: bool,
    from: Option<&'static str>,
    to: Option<&'static str>,
    gaps: Vec<&'static str>,
    problems: Vec<&'static str>,
}

fn run(c: &Case) {
    let b1 = snap("b1", "10:00:00", None);
    let b2 = snap("b2", "10:10:00", None);
    let mut batches: Vec<SnapshotEntry> = c
        .pieces
        .iter()
        .enumerate()
        .map(|(i, p)| batch(&format!("{}-{i}", c.name), p.clone()))
        .collect();
    if c.with_marks {
        batches.push(batch(
            "marks",
            vec![
                mark(&b1, 1, 300, "10:00:01.5"),
                mark(&b2, 2, 200, "10:10:01"),
            ],
        ));
    }
    let refs: Vec<(&SnapshotEntry, &LogBatch)> = batches
        .iter()
        .map(|e| (e, e.snapshot.log.as_ref().unwrap()))
        .collect();
    let w = Chain::of(&refs).window(&[&b1, &b2]);
    assert_eq!(w.from, c.from.map(t), "{}: from", c.name);
    assert_eq!(w.to, c.to.map(t), "{}: to", c.name);
    let gaps: Vec<&str> = w.gaps.iter().map(|g| g.missing.as_str()).collect();
    assert_eq!(gaps, c.gaps, "{}: gaps", c.name);
    assert_eq!(
        w.problems.len(),
        c.problems.len(),
        "{}: {:?}",
        c.name,
        w.problems
    );
    for (p, want) in w.problems.iter().zip(&c.problems) {
        assert!(p.contains(want), "{}: {p:?} lacks {want:?}", c.name);
    }
}

#[test]
fn window_table() {
    let whole = || {
        vec![
            vec![range("1:0-500", "10:00:00", "10:00:05")],
            vec![range("1:500-900!", "10:00:06", "10:05:00")],
            vec![range("2:0-400", "10:05:00", "10:12:00")],
            vec![range("2:400-400", "", "10:13:00")],
        ]
    };
    let cases = vec![
        Case {
            name: "a whole chain across a rotation, ending in a heartbeat",
            pieces: whole(),
            with_marks: true,
            from: Some("10:00:02"),
            to: Some("10:13:00"),
            gaps: vec![],
            problems: vec![],
        },
        Case {
            name: "the same pieces stored twice count once",
            pieces: {
                let mut p = whole();
                p.push(vec![range("1:500-900!", "10:00:06", "10:05:00")]);
                p
            },
            with_marks: true,
            from: Some("10:00:02"),
            to: Some("10:13:00"),
            gaps: vec![],
            problems: vec![],
        },
        Case {
            name: "a hole inside a file is named by file and positions",
            pieces: vec![
                vec![range("1:0-500", "10:00:00", "10:00:05")],
                vec![range("1:700-900!", "10:00:06", "10:05:00")],
                vec![range("2:0-400", "10:05:00", "10:12:00")],
            ],
            with_marks: true,
            from: Some("10:00:02"),
            to: Some("10:12:00"),
            gaps: vec!["binlog.000001 from position 500 to 700"],
            problems: vec![],
        },
        Case {
            name: "a missing file after a rotation",
            pieces: vec![
                vec![range("1:0-900!", "10:00:00", "10:05:00")],
                vec![range("3:0-400", "10:20:00", "10:21:00")],
            ],
            with_marks: true,
            from: Some("10:00:02"),
            to: Some("10:05:00"),
            gaps: vec!["binlog.000002 from position 0"],
            problems: vec!["does not hold its position"],
        },
        Case {
            name: "an unclosed file followed by the next one: its end is missing",
            pieces: vec![
                vec![range("1:0-500", "10:00:00", "10:00:05")],
                vec![range("2:0-400", "10:05:00", "10:12:00")],
            ],
            with_marks: true,
            from: Some("10:00:02"),
            to: Some("10:12:00"),
            gaps: vec!["binlog.000001 from position 500"],
            problems: vec![],
        },
        Case {
            name: "no markers: no base can start a replay",
            pieces: whole(),
            with_marks: false,
            from: None,
            to: None,
            gaps: vec![],
            problems: vec![
                "no recorded binary log position",
                "no recorded binary log position",
            ],
        },
        Case {
            name: "the log has not reached the newer base yet",
            pieces: vec![vec![range("1:0-500", "10:00:00", "10:00:05")]],
            with_marks: true,
            from: Some("10:00:02"),
            to: Some("10:00:05"),
            gaps: vec![],
            problems: vec!["no archived binary log after it yet"],
        },
        Case {
            name: "a chain starting mid-file cannot start a replay there",
            pieces: vec![vec![range("1:200-900!", "10:00:00", "10:05:00")]],
            with_marks: true,
            from: None,
            to: None,
            gaps: vec![],
            problems: vec![
                "does not hold its position",
                "no archived binary log after it yet",
            ],
        },
        Case {
            name: "the same range with different bytes",
            pieces: {
                let mut p = whole();
                let mut other = range("1:500-900!", "10:00:06", "10:05:00");
                other.blake3 = "else".into();
                p.push(vec![other]);
                p
            },
            with_marks: true,
            from: Some("10:00:02"),
            to: Some("10:13:00"),
            gaps: vec![],
            problems: vec!["stored twice with different bytes"],
        },
        Case {
            name: "metadata that disagrees with the size is refused",
            pieces: {
                let mut p = whole();
                let mut bad = range("2:400-500", "10:13:00", "10:14:00");
                bad.size = 3;
                p.push(vec![bad]);
                let mut bad = range("2:500-600", "10:14:00", "10:15:00");
                bad.meta.insert(meta::FILE.into(), "../x".into());
                p.push(vec![bad]);
                p
            },
            with_marks: true,
            from: Some("10:00:02"),
            to: Some("10:13:00"),
            gaps: vec![],
            problems: vec!["disagree with its 3 bytes", "no valid binary log file name"],
        },
        Case {
            name: "overlapping ranges",
            pieces: {
                let mut p = whole();
                p.push(vec![range("1:400-600", "10:00:04", "10:00:07")]);
                p
            },
            with_marks: true,
            from: Some("10:00:02"),
            to: Some("10:13:00"),
            gaps: vec![],
            problems: vec!["overlaps"],
        },
    ];
    for c in &cases {
        run(c);
    }
}

#[test]
fn a_gap_before_every_base_is_not_reported_and_a_gap_names_where_it_resumes() {
    let b1 = snap("b1", "10:00:00", None);
    let b2 = snap("b2", "10:10:00", None);
    let batches = [
        batch("x", vec![range("1:0-100", "09:00:00", "09:00:01")]),
        // Hole: 1:100.. then the chain b1 starts in.
        batch(
            "y",
            vec![
                range("2:0-900!", "10:00:00", "10:05:00"),
                range("3:0-300", "10:05:00", "10:06:00"),
            ],
        ),
        // Hole at 3:300, then b2's chain.
        batch(
            "z",
            vec![
                range("4:0-500", "10:10:00", "10:20:00"),
                mark(&b1, 2, 300, "10:00:01.5"),
                mark(&b2, 4, 200, "10:10:01"),
            ],
        ),
    ];
    let refs: Vec<_> = batches
        .iter()
        .map(|e| (e, e.snapshot.log.as_ref().unwrap()))
        .collect();
    let w = Chain::of(&refs).window(&[&b1, &b2]);
    assert_eq!(w.gaps.len(), 1, "{:?}", w.gaps);
    assert_eq!(w.gaps[0].missing, "binlog.000003 from position 300");
    assert_eq!(w.gaps[0].after, Some(t("10:06:00")));
    assert_eq!(w.gaps[0].resumes, Some(t("10:10:02")));
    assert_eq!(w.from, Some(t("10:00:02")));
    assert_eq!(w.to, Some(t("10:20:00")));
    assert!(w.contains(t("10:05:30")));
    assert!(!w.contains(t("10:08:00")));
    assert!(w.contains(t("10:15:00")));
}

#[test]
fn plan_picks_the_newest_base_that_serves_the_target_and_only_the_pieces_it_needs() {
    let b1 = snap("b1", "10:00:00", None);
    let b2 = snap("b2", "10:10:00", None);
    let bases = vec![b1.clone(), b2.clone()];
    let batches = [
        batch(
            "a",
            vec![
                range("1:0-500", "10:00:00", "10:00:05"),
                range("1:500-900!", "10:00:06", "10:05:00"),
                range("2:0-400", "10:05:00", "10:12:00"),
                range("2:400-800", "10:12:30", "10:15:00"),
                range("2:800-900", "10:15:00", "10:16:00"),
            ],
        ),
        batch(
            "m",
            vec![
                mark(&b1, 1, 300, "10:00:01.5"),
                mark(&b2, 2, 200, "10:10:01"),
            ],
        ),
    ];
    let refs: Vec<_> = batches
        .iter()
        .map(|e| (e, e.snapshot.log.as_ref().unwrap()))
        .collect();
    let chain = Chain::of(&refs);
    let span = |p: &super::window::Plan| -> Vec<String> {
        p.chunks
            .iter()
            .map(|c| format!("{}:{}", c.seq, c.start))
            .collect()
    };
    // Latest: the newest base, everything after it.
    let p = plan(&chain, &bases, &RecoveryTarget::Latest).unwrap();
    assert_eq!(p.base.id, b2.id);
    assert_eq!(span(&p), ["2:0", "2:400", "2:800"]);
    assert_eq!((p.stop, p.reached), (None, Some(t("10:16:00"))));
    // A time after the newer base: stop at its whole second, pieces starting after it
    // are not fetched.
    let at = t("10:12:10.700");
    let p = plan(&chain, &bases, &RecoveryTarget::Time(at)).unwrap();
    assert_eq!(p.base.id, b2.id);
    assert_eq!(p.stop, Some(t("10:12:10")));
    assert_eq!(span(&p), ["2:0"]);
    // Within the second after the newer base's snapshot: the older base serves it.
    let p = plan(&chain, &bases, &RecoveryTarget::Time(t("10:10:01.900"))).unwrap();
    assert_eq!(p.base.id, b1.id);
    assert_eq!(span(&p), ["1:0", "1:500", "2:0"]);
    let p = plan(&chain, &bases, &RecoveryTarget::Time(t("10:10:02"))).unwrap();
    assert_eq!(p.base.id, b2.id);
    // Before the window, beyond it, or by position: refused, saying why.
    for (target, why) in [
        (
            RecoveryTarget::Time(t("10:00:01.9")),
            "before the recoverable window",
        ),
        (RecoveryTarget::Time(t("10:17:00")), "reaches only"),
        (RecoveryTarget::Position("x".into()), "not supported"),
    ] {
        let e = plan(&chain, &bases, &target).unwrap_err();
        assert!(e.contains(why), "{target}: {e}");
    }
}

#[test]
fn a_mysql_source_takes_mode_continuous_and_its_log_table_only_with_it() {
    use std::path::Path;
    let parse = |extra: &str| {
        let r: crate::sources::RawSource =
            toml::from_str(&format!("name = \"shop\"\nkind = \"mysql\"\n{extra}"))
                .map_err(|e| e.to_string())?;
        crate::sources::mysql::build(&r, Path::new("/"))
    };
    let w =
        parse("mode = \"continuous\"\n[log]\ninterval = \"2s\"\nheartbeat = \"30s\"\n").unwrap();
    let d = &*w;
    assert!(d.continuous().is_some());
    assert!(d.replicator("shop").is_some());
    assert_eq!(d.replicator("shop").unwrap().interval().as_secs(), 2);
    assert!(d.describe().contains("continuous"));
    let plain = parse("").unwrap();
    assert!(plain.continuous().is_none());
    assert!(plain.replicator("shop").is_none());
    for (extra, why) in [
        ("[log]\ninterval = \"2s\"\n", "add mode = \"continuous\""),
        ("mode = \"physical\"\n", "not one of a mysql source's"),
        (
            "mode = \"continuous\"\n[log]\nstreaming = true\n",
            "PostgreSQL settings",
        ),
        (
            "mode = \"continuous\"\n[log]\ninterval = \"0s\"\n",
            "must be positive",
        ),
    ] {
        let e = parse(extra).unwrap_err();
        assert!(e.contains(why), "{extra}: {e}");
    }
}

#[test]
fn the_batches_a_base_needs_include_older_ones_holding_its_file() {
    let b2 = snap("b2", "10:10:00", None);
    let batches = [
        // Before the base: file 1 (not needed), file 2's start and the range holding the
        // base's position (needed although older than the base).
        batch("old", vec![range("1:0-900!", "09:00:00", "09:30:00")]),
        batch("head", vec![range("2:0-150", "10:00:00", "10:05:00")]),
        batch("holds", vec![range("2:150-300", "10:05:00", "10:10:00")]),
        batch("mark", vec![mark(&b2, 2, 200, "10:10:01")]),
        batch("after", vec![range("2:300-400", "10:10:00", "10:12:00")]),
    ];
    let refs: Vec<_> = batches
        .iter()
        .map(|e| (e, e.snapshot.log.as_ref().unwrap()))
        .collect();
    let chain = Chain::of(&refs);
    let need = chain.needed(&[&b2]);
    let want: std::collections::BTreeSet<Id> = batches[1..].iter().map(|b| b.id).collect();
    assert_eq!(need, want);
    assert!(!need.contains(&batches[0].id));
    assert!(chain.needed(&[]).is_empty());
}
