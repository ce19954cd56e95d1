//! Table tests of the fleet view's judging (pure functions).

use super::*;
use chrono::TimeZone;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
}

fn ago(m: i64) -> DateTime<Utc> {
    now() - Duration::minutes(m)
}

fn src(name: &str) -> HostSource {
    HostSource {
        name: name.into(),
        class: Some("critical".into()),
        strategy: Some("backup".into()),
        shared: false,
        continuous: false,
        rpo_seconds: Some(15 * 60),
        rto_seconds: Some(600),
        drill_every_seconds: None,
        recoverable_to: None,
        rpo_met: Some(true),
        rto_met: Some(true),
    }
}

fn drill(m: i64, seconds: f64, passed: bool) -> Option<DrillFact> {
    Some(DrillFact {
        at: ago(m),
        seconds,
        passed,
    })
}

#[test]
fn host_state_table() {
    let i = 300;
    let deadline = Duration::seconds(2 * i) + GRACE;
    type Case = (Option<(DateTime<Utc>, i64)>, HostState);
    let cases: Vec<Case> = vec![
        (None, HostState::NeverReported),
        (Some((ago(1), i)), HostState::Reporting),
        (Some((now() - deadline, i)), HostState::Reporting),
        (
            Some((now() - deadline - Duration::seconds(1), i)),
            HostState::Stopped,
        ),
        (Some((ago(60 * 24), i)), HostState::Stopped),
        // An interval out of bounds is clamped: it cannot keep a host alive for a year.
        (Some((ago(60 * 24 * 30), 365 * 86_400)), HostState::Stopped),
        (Some((ago(-1), i)), HostState::Reporting),
        (Some((ago(-10), i)), HostState::ClockAhead),
    ];
    for (n, (newest, want)) in cases.into_iter().enumerate() {
        let (got, why) = host_state(newest, now());
        assert_eq!(got, want, "case {n}: {why}");
        assert_eq!(
            why.is_empty(),
            want == HostState::Reporting,
            "case {n}: {why}"
        );
    }
}

#[test]
fn judge_source_table() {
    let stale = HostSource {
        drill_every_seconds: Some(3600),
        ..src("db")
    };
    let cont = HostSource {
        continuous: true,
        recoverable_to: Some(ago(1)),
        ..src("db")
    };
    let cont_failing = HostSource {
        rpo_met: Some(false),
        ..cont.clone()
    };
    let reproduce = HostSource {
        strategy: Some("reproduce".into()),
        rpo_seconds: None,
        ..src("db")
    };
    let base_only = HostSource {
        recoverable_to: None,
        ..cont.clone()
    };
    let no_rpo = HostSource {
        rpo_seconds: None,
        ..src("db")
    };
    type Case<'a> = (
        Option<&'a HostSource>,
        bool,
        Option<DateTime<Utc>>,
        Option<DrillFact>,
        (Verdict, Verdict, Verdict),
        bool,
    );
    use Verdict::*;
    let s = src("db");
    let cases: Vec<Case> = vec![
        // Met: a fresh point and a passed drill within the RTO.
        (
            Some(&s),
            true,
            Some(ago(5)),
            drill(30, 9.0, true),
            (Met, Met, NotApplicable),
            false,
        ),
        // Exactly the RPO is met; a second more is not.
        (
            Some(&s),
            true,
            Some(ago(15)),
            drill(30, 9.0, true),
            (Met, Met, NotApplicable),
            false,
        ),
        (
            Some(&s),
            true,
            Some(ago(15) - Duration::seconds(1)),
            drill(30, 9.0, true),
            (Breached, Met, NotApplicable),
            true,
        ),
        (
            Some(&s),
            true,
            None,
            drill(30, 9.0, true),
            (Breached, Met, NotApplicable),
            true,
        ),
        (
            Some(&s),
            true,
            Some(ago(5)),
            None,
            (Met, NotMeasured, NotApplicable),
            true,
        ),
        (
            Some(&s),
            true,
            Some(ago(5)),
            drill(30, 9.0, false),
            (Met, Breached, NotApplicable),
            true,
        ),
        (
            Some(&s),
            true,
            Some(ago(5)),
            drill(30, 600.0, true),
            (Met, Met, NotApplicable),
            false,
        ),
        (
            Some(&s),
            true,
            Some(ago(5)),
            drill(30, 600.5, true),
            (Met, Breached, NotApplicable),
            true,
        ),
        (
            Some(&no_rpo),
            true,
            Some(ago(5)),
            drill(30, 9.0, true),
            (NotMeasured, Met, NotApplicable),
            true,
        ),
        (
            Some(&stale),
            true,
            Some(ago(5)),
            drill(30, 9.0, true),
            (Met, Met, Met),
            false,
        ),
        (
            Some(&stale),
            true,
            Some(ago(5)),
            drill(61, 9.0, true),
            (Met, Met, Breached),
            true,
        ),
        (
            Some(&stale),
            true,
            Some(ago(5)),
            None,
            (Met, NotMeasured, NotMeasured),
            true,
        ),
        // A continuous source's point is the end of its window, as its host measured it...
        (
            Some(&cont),
            true,
            Some(ago(600)),
            drill(30, 9.0, true),
            (Met, Met, NotApplicable),
            false,
        ),
        // ... and its host's own breach (shipping failing there) counts.
        (
            Some(&cont_failing),
            true,
            Some(ago(600)),
            drill(30, 9.0, true),
            (Breached, Met, NotApplicable),
            true,
        ),
        // A base backup alone, no window: its own age.
        (
            Some(&base_only),
            true,
            Some(ago(600)),
            drill(30, 9.0, true),
            (Breached, Met, NotApplicable),
            true,
        ),
        (
            Some(&reproduce),
            true,
            None,
            drill(30, 9.0, true),
            (NotApplicable, Met, NotApplicable),
            false,
        ),
        // Objectives unknown: the host never reported them.
        (
            None,
            false,
            Some(ago(5)),
            drill(30, 9.0, true),
            (NotMeasured, NotMeasured, NotApplicable),
            true,
        ),
        // A reporting host that no longer lists it: shown, not judged.
        (
            None,
            true,
            Some(ago(5000)),
            None,
            (NotApplicable, NotApplicable, NotApplicable),
            false,
        ),
    ];
    for (n, (s, reporting, point, d, (rpo, rto, fresh), failing)) in cases.into_iter().enumerate() {
        let got = judge_source("db", s, reporting, point, d, now());
        assert_eq!(
            (got.rpo, got.rto, got.drill_fresh),
            (rpo, rto, fresh),
            "case {n}: {:?}",
            got.problems
        );
        assert_eq!(got.failing(), failing, "case {n}");
        // Every failure says why; a met source says nothing (one no longer listed says so).
        assert_eq!(
            got.problems.is_empty(),
            !failing && got.reported,
            "case {n}: {:?}",
            got.problems
        );
    }
}

fn report(host: &str, at: DateTime<Utc>, sources: Vec<HostSource>) -> HostReport {
    HostReport {
        host: host.into(),
        at,
        interval_seconds: 300,
        program: "holdfast test".into(),
        retired: None,
        sources,
    }
}

fn drill_record(host: &str, source: &str, m: i64) -> DrillRecord {
    DrillRecord {
        source: source.into(),
        kind: "restore".into(),
        snapshot: None,
        started: ago(m),
        seconds: 2.0,
        passed: true,
        files: 1,
        bytes: 1,
        messages: vec![],
        host: host.into(),
    }
}

fn row<'a>(rows: &'a [HostRow], host: &str) -> &'a HostRow {
    rows.iter().find(|r| r.host == host).unwrap()
}

fn source<'a>(r: &'a HostRow, name: &str) -> &'a FleetSource {
    r.sources.iter().find(|s| s.name == name).unwrap()
}

#[test]
fn a_point_of_one_host_never_counts_for_another_hosts_source_of_the_same_name() {
    let mut ev = Evidence {
        points: vec![("a".into(), "db".into(), ago(5))],
        drills: vec![drill_record("a", "db", 10), drill_record("b", "db", 10)],
        reports: vec![
            ("r".into(), report("a", ago(1), vec![src("db")])),
            ("r".into(), report("b", ago(1), vec![src("db")])),
        ],
        ..Default::default()
    };
    let rows = judge(&ev, now());
    assert!(!row(&rows, "a").failing, "{:?}", row(&rows, "a"));
    let b = row(&rows, "b");
    assert!(b.failing);
    assert_eq!(source(b, "db").rpo, Verdict::Breached);
    assert_eq!(source(b, "db").newest_point, None);
    // A drill of host a does not count for host b either.
    ev.drills.retain(|d| d.host == "a");
    ev.points.push(("b".into(), "db".into(), ago(3)));
    let rows = judge(&ev, now());
    assert_eq!(source(row(&rows, "b"), "db").rto, Verdict::NotMeasured);
    // Unless the source is shared: then any host's points and drills count.
    let shared = HostSource {
        shared: true,
        ..src("db")
    };
    ev.reports[1].1.sources = vec![shared];
    let rows = judge(&ev, now());
    assert!(!row(&rows, "b").failing, "{:?}", row(&rows, "b"));
}

#[test]
fn hosts_that_stopped_or_never_reported_fail() {
    let ev = Evidence {
        points: vec![
            ("a".into(), "db".into(), ago(5)),
            ("c".into(), "db".into(), ago(5)),
            ("old".into(), "files".into(), ago(5)),
        ],
        drills: vec![drill_record("a", "db", 10), drill_record("c", "db", 10)],
        reports: vec![
            ("r".into(), report("a", ago(1), vec![src("db")])),
            // c's points are fresh, but it stopped reporting 20 minutes ago.
            ("r".into(), report("c", ago(20), vec![src("db")])),
        ],
        ..Default::default()
    };
    let rows = judge(&ev, now());
    assert_eq!(rows.len(), 3);
    assert!(!row(&rows, "a").failing);
    let c = row(&rows, "c");
    assert_eq!(c.state, HostState::Stopped);
    assert!(
        c.failing && c.problems[0].contains("stopped reporting"),
        "{c:?}"
    );
    let old = row(&rows, "old");
    assert_eq!(old.state, HostState::NeverReported);
    assert!(old.failing);
    assert_eq!(source(old, "files").rpo, Verdict::NotMeasured);
    let r = FleetReport {
        now: now(),
        repositories: vec!["r".into()],
        hosts: rows.clone(),
        unreadable: vec![],
    };
    assert!(!r.ok());
    let only_a = FleetReport {
        hosts: vec![row(&rows, "a").clone()],
        ..r.clone()
    };
    assert!(only_a.ok());
    assert!(!FleetReport {
        unreadable: vec!["repository \"r\": record x is damaged".into()],
        ..only_a.clone()
    }
    .ok());
    assert!(
        !FleetReport {
            hosts: vec![],
            ..only_a.clone()
        }
        .ok(),
        "no host at all is not a healthy fleet"
    );
    let page = html(&r);
    assert!(page.contains("stopped reporting") && page.contains("2 of 3 host(s) failing"));
}

#[test]
fn a_host_lists_the_sources_of_each_repository_from_its_newest_report_there() {
    // Host a reports db into repository r1 and files into r2; its newest report in r2 is
    // older than the one in r1, and must not hide files.
    let ev = Evidence {
        points: vec![
            ("a".into(), "db".into(), ago(5)),
            ("a".into(), "files".into(), ago(5)),
        ],
        drills: vec![drill_record("a", "db", 10), drill_record("a", "files", 10)],
        reports: vec![
            ("r1".into(), report("a", ago(1), vec![src("db")])),
            ("r2".into(), report("a", ago(3), vec![src("files")])),
            ("r2".into(), report("a", ago(30), vec![src("gone")])),
        ],
        ..Default::default()
    };
    let rows = judge(&ev, now());
    let a = row(&rows, "a");
    let names: Vec<&str> = a.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["db", "files"]);
    assert!(source(a, "files").reported);
    assert!(!a.failing, "{a:?}");
}

#[test]
fn a_retired_host_is_not_judged_until_it_writes_anything_newer() {
    let mut ev = Evidence {
        points: vec![("c".into(), "db".into(), ago(120))],
        reports: vec![("r".into(), report("c", ago(100), vec![src("db")]))],
        ..Default::default()
    };
    let rows = judge(&ev, now());
    assert!(row(&rows, "c").failing, "stopped before it is retired");
    let mut retire = retirement("c", "decommissioned", ago(50));
    ev.reports.push(("r".into(), retire.clone()));
    let rows = judge(&ev, now());
    let c = row(&rows, "c");
    assert_eq!(c.state, HostState::Retired);
    assert!(!c.failing && c.sources.is_empty(), "{c:?}");
    assert!(c.problems[0].contains("decommissioned"), "{c:?}");
    // Anything newer from it (here a recovery point; a job, a drill or a report alike) ends
    // the retirement: it is judged again, and it stopped reporting.
    ev.points.push(("c".into(), "db".into(), ago(40)));
    let rows = judge(&ev, now());
    let c = row(&rows, "c");
    assert_eq!(c.state, HostState::Stopped, "{c:?}");
    assert!(c.failing);
    assert!(
        c.problems.iter().any(|p| p.contains("judged again")),
        "{c:?}"
    );
    // A retirement after that holds again.
    retire.at = ago(30);
    ev.reports.push(("r".into(), retire));
    assert_eq!(row(&judge(&ev, now()), "c").state, HostState::Retired);
    // A job record newer than it ends it too.
    ev.seen.push(("c".into(), "db".into(), ago(20)));
    assert_eq!(row(&judge(&ev, now()), "c").state, HostState::Stopped);
}

#[test]
fn a_continuous_window_cannot_end_after_the_report_that_measured_it() {
    let future = HostSource {
        continuous: true,
        recoverable_to: Some(now() + Duration::days(365)),
        ..src("db")
    };
    let ev = Evidence {
        points: vec![("a".into(), "db".into(), ago(600))],
        drills: vec![drill_record("a", "db", 10)],
        reports: vec![("r".into(), report("a", ago(5), vec![future]))],
        ..Default::default()
    };
    let rows = judge(&ev, now());
    let db = source(row(&rows, "a"), "db");
    assert_eq!(db.age_seconds, Some(300), "{db:?}");
    assert_eq!(db.rpo, Verdict::Met);
    // Twenty minutes later, without a new report, the window's end is 25 minutes old.
    let later = judge(&ev, now() + Duration::minutes(20));
    assert_eq!(source(row(&later, "a"), "db").rpo, Verdict::Breached);
}
