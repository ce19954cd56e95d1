//! Per-source compliance and workload controls (modelled on AWS Backup Audit Manager), computed
//! from measured facts only. Pure functions.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::config::{Criticality, Strategy};
use crate::duration::show;

/// The verdict on one objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Met, by measurement.
    Met,
    /// Not met.
    Breached,
    /// Never measured: counts as not met.
    NotMeasured,
    /// Does not apply (no objective set, or not this strategy).
    NotApplicable,
}

impl Verdict {
    /// Whether this verdict fails a control.
    pub fn fails(self) -> bool {
        matches!(self, Verdict::Breached | Verdict::NotMeasured)
    }
}

/// A drill result as measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillFact {
    /// When.
    pub at: DateTime<Utc>,
    /// Seconds from start to validated.
    pub seconds: f64,
    /// Whether it passed.
    pub passed: bool,
}

/// What is known about one source, all of it read from the repository.
#[derive(Debug, Clone, Serialize)]
pub struct SourceFacts {
    /// Name.
    pub name: String,
    /// How it is backed up, from its driver (`Source::describe`): the evidence a report shows.
    pub mechanism: String,
    /// Class name.
    pub class: Option<String>,
    /// Criticality.
    pub criticality: Option<Criticality>,
    /// Strategy.
    pub strategy: Option<Strategy>,
    /// RPO.
    #[serde(skip)]
    pub rpo: Option<Duration>,
    /// RTO.
    #[serde(skip)]
    pub rto: Option<Duration>,
    /// Required drill frequency.
    #[serde(skip)]
    pub drill_every: Option<Duration>,
    /// Whether the class has a retention policy.
    pub has_retention: bool,
    /// Time of the newest complete recovery point.
    pub newest_point: Option<DateTime<Utc>>,
    /// Number of complete recovery points.
    pub points: usize,
    /// Newest drill.
    pub last_drill: Option<DrillFact>,
    /// Repositories that must hold a copy, with the time of the newest copy there.
    pub copies: Vec<(String, Option<DateTime<Utc>>)>,
    /// Whether the recovery points are encrypted.
    pub encrypted: bool,
    /// For a continuous source: its recoverable window and how shipping does (its RPO is the
    /// age of the window's end, never of its newest base backup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continuous: Option<ContinuousFacts>,
}

/// What is known about a continuous source's change log.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ContinuousFacts {
    /// What the repository can recover to.
    pub window: crate::sources::pitr::Window,
    /// How shipping does on this host, if the kind knows.
    pub health: Option<crate::sources::pitr::LogHealth>,
    /// When the newest log batch was stored in the source's repository.
    pub newest_batch: Option<DateTime<Utc>>,
    /// Per copy repository the class requires: when the newest log batch copied there was
    /// stored (a copy lagging more than the RPO behind fails the copy verdict).
    pub batch_copies: Vec<(String, Option<DateTime<Utc>>)>,
}

/// The verdicts for one source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// Name.
    pub name: String,
    /// RPO verdict.
    pub rpo: Verdict,
    /// Age of the newest recovery point, seconds.
    pub age_seconds: Option<i64>,
    /// RTO verdict.
    pub rto: Verdict,
    /// Last measured restore/reproduce seconds.
    pub drill_seconds: Option<f64>,
    /// Whether the last drill is within `drill-every`.
    pub drill_fresh: Verdict,
    /// Copy verdict.
    pub copies: Verdict,
    /// For a continuous source: the span any instant of which can be restored ("any second
    /// from A to B"), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// One line per problem, for people.
    pub problems: Vec<String>,
}

/// Whether a measured time (seconds) is within a limit: equal is within, a millisecond more is
/// not.
pub fn within(seconds: f64, limit: Duration) -> bool {
    seconds <= limit.num_milliseconds() as f64 / 1000.0
}

/// Evaluate one source at `now`.
pub fn evaluate(f: &SourceFacts, now: DateTime<Utc>) -> SourceStatus {
    let mut problems = Vec::new();
    // A continuous source loses what its log has not shipped: its RPO is the age of the end of
    // its recoverable window.
    let age = match &f.continuous {
        Some(c) => c.window.to.map(|t| now - t),
        None => f.newest_point.map(|t| now - t),
    };
    let rpo = match (f.strategy, f.rpo, age) {
        (Some(Strategy::Reproduce), _, _) => Verdict::NotApplicable,
        (_, None, _) => {
            problems.push("no RPO defined for its class".into());
            Verdict::NotMeasured
        }
        (_, Some(_), None) if f.continuous.is_some() => {
            problems.push(if f.newest_point.is_none() {
                "no base backup yet".into()
            } else {
                "no change log archived after a base backup yet".into()
            });
            Verdict::Breached
        }
        (_, Some(_), None) => {
            problems.push("no recovery point yet".into());
            Verdict::Breached
        }
        (_, Some(rpo), Some(age)) => {
            if age <= rpo {
                Verdict::Met
            } else {
                problems.push(match f.continuous {
                    Some(_) => format!(
                        "newest archived change is {} old, RPO is {}",
                        show(age),
                        show(rpo)
                    ),
                    None => format!(
                        "newest recovery point is {} old, RPO is {}",
                        show(age),
                        show(rpo)
                    ),
                });
                Verdict::Breached
            }
        }
    };
    let rpo = match &f.continuous {
        Some(c) if rpo != Verdict::NotApplicable => judge_log(c, now, rpo, &mut problems),
        _ => rpo,
    };
    let window = f
        .continuous
        .as_ref()
        .and_then(|c| Some((c.window.from?, c.window.to?)));
    let rto = match (f.rto, &f.last_drill) {
        (None, _) => {
            problems.push("no RTO defined for its class".into());
            Verdict::NotMeasured
        }
        (Some(_), None) => {
            problems.push("restore time never measured: run `holdfast drill`".into());
            Verdict::NotMeasured
        }
        (Some(rto), Some(d)) if !d.passed && !within(d.seconds, rto) => {
            problems.push(format!(
                "last drill ({}) took {:.1}s, RTO is {}",
                d.at.format("%Y-%m-%d %H:%M"),
                d.seconds,
                show(rto)
            ));
            Verdict::Breached
        }
        (Some(_), Some(d)) if !d.passed => {
            problems.push(format!(
                "last drill ({}) failed",
                d.at.format("%Y-%m-%d %H:%M")
            ));
            Verdict::Breached
        }
        (Some(rto), Some(d)) => {
            if within(d.seconds, rto) {
                Verdict::Met
            } else {
                problems.push(format!(
                    "last drill took {:.1}s, RTO is {}",
                    d.seconds,
                    show(rto)
                ));
                Verdict::Breached
            }
        }
    };
    let drill_fresh = match (f.drill_every, &f.last_drill) {
        (None, _) => Verdict::NotApplicable,
        (Some(_), None) => Verdict::NotMeasured,
        (Some(every), Some(d)) => {
            if now - d.at <= every {
                Verdict::Met
            } else {
                problems.push(format!(
                    "last drill is {} old, drills are due every {}",
                    show(now - d.at),
                    show(every)
                ));
                Verdict::Breached
            }
        }
    };
    let copies = if f.copies.is_empty() {
        Verdict::NotApplicable
    } else {
        let mut v = Verdict::Met;
        for (repo, newest) in &f.copies {
            match (newest, f.newest_point) {
                (None, _) => {
                    problems.push(format!("no copy in repository {repo:?}"));
                    v = Verdict::Breached;
                }
                (Some(c), Some(p)) if *c < p => {
                    problems.push(format!(
                        "newest recovery point is not yet copied to {repo:?} (newest copy {})",
                        c.format("%Y-%m-%d %H:%M")
                    ));
                    v = Verdict::Breached;
                }
                _ => {}
            }
        }
        // A continuous source's copy holds its log too: the other location's RPO is how far
        // its newest copied batch lags behind the newest one.
        if let (Some(c), Some(rpo)) = (&f.continuous, f.rpo) {
            for (repo, copied) in &c.batch_copies {
                match (copied, c.newest_batch) {
                    (None, Some(_)) => {
                        problems.push(format!("no log batch copied to {repo:?}"));
                        v = Verdict::Breached;
                    }
                    (Some(copied), Some(newest)) if newest - *copied > rpo => {
                        problems.push(format!(
                            "the log copied to {repo:?} is {} behind, more than the RPO of {}",
                            show(newest - *copied),
                            show(rpo)
                        ));
                        v = Verdict::Breached;
                    }
                    _ => {}
                }
            }
        }
        v
    };
    SourceStatus {
        name: f.name.clone(),
        rpo,
        age_seconds: age.map(|a| a.num_seconds()),
        rto,
        drill_seconds: f.last_drill.as_ref().map(|d| d.seconds),
        drill_fresh,
        copies,
        window,
        problems,
    }
}

/// The RPO verdict of a continuous source, after its window's age (`rpo`): shipping that
/// fails on this host, or more log waiting than the queue may hold, breaches it at once (what
/// is not shipped is lost with the server, whatever the age of the last shipped change); gaps
/// and damaged pieces are named (the control `log-chain-whole` fails on them).
fn judge_log(
    c: &ContinuousFacts,
    now: DateTime<Utc>,
    rpo: Verdict,
    problems: &mut Vec<String>,
) -> Verdict {
    let mut v = rpo;
    for g in &c.window.gaps {
        let span = match (g.after, g.resumes) {
            (Some(a), Some(r)) => format!(
                "nothing between {} and {} can be restored",
                a.format("%Y-%m-%d %H:%M:%S"),
                r.format("%Y-%m-%d %H:%M:%S")
            ),
            (Some(a), None) => format!(
                "nothing after {} can be restored until the next base backup",
                a.format("%Y-%m-%d %H:%M:%S")
            ),
            (None, Some(r)) => format!(
                "nothing before {} can be restored",
                r.format("%Y-%m-%d %H:%M:%S")
            ),
            (None, None) => "the window it breaks is unknown".into(),
        };
        problems.push(format!(
            "change log gap: {} missing{}; {span}",
            g.missing,
            if g.count > 1 {
                format!(" (and {} more)", g.count - 1)
            } else {
                String::new()
            }
        ));
    }
    problems.extend(c.window.problems.iter().map(|p| format!("change log: {p}")));
    if let Some(h) = &c.health {
        problems.extend(h.notes.iter().cloned());
        if let Some(since) = h.failing_since {
            problems.push(format!(
                "shipping the change log has failed for {} (since {}){}: changes since then are not protected",
                show(now - since),
                since.format("%Y-%m-%d %H:%M:%S"),
                h.last_error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
            v = Verdict::Breached;
        }
        if let (Some(w), Some(max)) = (h.waiting_bytes, h.queue_max) {
            if w > max {
                problems.push(format!(
                    "{w} bytes of change log wait to be archived, more than queue-max ({max}): the server's disk fills until the archive works again"
                ));
                v = Verdict::Breached;
            }
        }
    }
    v
}

/// A workload-level control.
#[derive(Debug, Clone, Serialize)]
pub struct Control {
    /// Stable identifier.
    pub id: &'static str,
    /// What it checks.
    pub title: &'static str,
    /// Whether every source passes.
    pub passed: bool,
    /// Sources that fail it.
    pub failing: Vec<String>,
}

/// Evaluate the controls over every source.
pub fn controls(facts: &[SourceFacts], statuses: &[SourceStatus]) -> Vec<Control> {
    let mut out = Vec::new();
    let mut add = |id, title, fail: &dyn Fn(&SourceFacts, &SourceStatus) -> bool| {
        let failing: Vec<String> = facts
            .iter()
            .zip(statuses)
            .filter(|(f, s)| fail(f, s))
            .map(|(f, _)| f.name.clone())
            .collect();
        out.push(Control {
            id,
            title,
            passed: failing.is_empty(),
            failing,
        });
    };
    add(
        "protected-by-plan",
        "every source has a class and a strategy (backup or reproduce)",
        &|f, _| f.class.is_none() || f.strategy.is_none(),
    );
    add(
        "frequency-and-retention",
        "backed-up sources have an RPO and a retention policy",
        &|f, _| f.strategy == Some(Strategy::Backup) && (f.rpo.is_none() || !f.has_retention),
    );
    add(
        "recovery-point-within-rpo",
        "the newest recovery point is within the RPO",
        &|_, s| s.rpo.fails(),
    );
    add(
        "restore-time-meets-rto",
        "the last measured restore or reproduction meets the RTO",
        &|_, s| s.rto.fails(),
    );
    add(
        "drills-on-schedule",
        "restore drills are run as often as the class requires",
        &|_, s| s.drill_fresh.fails(),
    );
    add(
        "copy-in-another-location",
        "classes that require copies have them, up to date",
        &|_, s| s.copies.fails(),
    );
    add(
        "log-chain-whole",
        "continuous sources' change logs have no gap from their oldest base backup on",
        &|f, _| f.continuous.as_ref().is_some_and(|c| !c.window.whole()),
    );
    add(
        "recovery-points-encrypted",
        "recovery points are encrypted",
        &|f, _| f.strategy == Some(Strategy::Backup) && !f.encrypted,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
    }

    fn facts() -> SourceFacts {
        SourceFacts {
            mechanism: "files".into(),
            name: "db".into(),
            class: Some("critical".into()),
            criticality: Some(Criticality::Critical),
            strategy: Some(Strategy::Backup),
            rpo: Some(Duration::minutes(15)),
            rto: Some(Duration::hours(1)),
            drill_every: Some(Duration::days(7)),
            has_retention: true,
            newest_point: Some(now() - Duration::minutes(5)),
            points: 3,
            last_drill: Some(DrillFact {
                at: now() - Duration::days(1),
                seconds: 30.0,
                passed: true,
            }),
            copies: vec![],
            encrypted: true,
            continuous: None,
        }
    }

    #[test]
    fn table() {
        type Case = (&'static str, fn(&mut SourceFacts), Verdict, Verdict);
        let cases: Vec<Case> = vec![
            ("all good", |_| {}, Verdict::Met, Verdict::Met),
            (
                "point too old",
                |f| f.newest_point = Some(now() - Duration::minutes(16)),
                Verdict::Breached,
                Verdict::Met,
            ),
            (
                "exactly at the RPO",
                |f| f.newest_point = Some(now() - Duration::minutes(15)),
                Verdict::Met,
                Verdict::Met,
            ),
            (
                "no point",
                |f| f.newest_point = None,
                Verdict::Breached,
                Verdict::Met,
            ),
            (
                "point from the future (clock change)",
                |f| f.newest_point = Some(now() + Duration::hours(2)),
                Verdict::Met,
                Verdict::Met,
            ),
            (
                "never drilled",
                |f| f.last_drill = None,
                Verdict::Met,
                Verdict::NotMeasured,
            ),
            (
                "slow drill",
                |f| f.last_drill.as_mut().unwrap().seconds = 3601.0,
                Verdict::Met,
                Verdict::Breached,
            ),
            (
                "failed drill",
                |f| f.last_drill.as_mut().unwrap().passed = false,
                Verdict::Met,
                Verdict::Breached,
            ),
            (
                "no RPO",
                |f| f.rpo = None,
                Verdict::NotMeasured,
                Verdict::Met,
            ),
            (
                "reproduce",
                |f| f.strategy = Some(Strategy::Reproduce),
                Verdict::NotApplicable,
                Verdict::Met,
            ),
        ];
        for (name, tweak, rpo, rto) in cases {
            let mut f = facts();
            tweak(&mut f);
            let s = evaluate(&f, now());
            assert_eq!((s.rpo, s.rto), (rpo, rto), "{name}: {:?}", s.problems);
        }
    }

    #[test]
    fn copies_and_drill_freshness() {
        let mut f = facts();
        f.copies = vec![("offsite".into(), None)];
        assert_eq!(evaluate(&f, now()).copies, Verdict::Breached);
        f.copies = vec![("offsite".into(), Some(now() - Duration::hours(1)))];
        assert_eq!(
            evaluate(&f, now()).copies,
            Verdict::Breached,
            "copy older than the newest point"
        );
        f.copies = vec![("offsite".into(), f.newest_point)];
        assert_eq!(evaluate(&f, now()).copies, Verdict::Met);
        f.last_drill.as_mut().unwrap().at = now() - Duration::days(8);
        assert_eq!(evaluate(&f, now()).drill_fresh, Verdict::Breached);
    }

    #[test]
    fn controls_fail_per_source() {
        let good = facts();
        let mut bad = facts();
        bad.name = "logs".into();
        bad.newest_point = None;
        bad.class = None;
        let fs = vec![good, bad];
        let ss: Vec<_> = fs.iter().map(|f| evaluate(f, now())).collect();
        let cs = controls(&fs, &ss);
        let get = |id| cs.iter().find(|c| c.id == id).unwrap();
        assert!(!get("recovery-point-within-rpo").passed);
        assert_eq!(
            get("recovery-point-within-rpo").failing,
            vec!["logs".to_string()]
        );
        assert!(!get("protected-by-plan").passed);
        assert!(get("recovery-points-encrypted").passed);
        // No sources: every control passes vacuously.
        assert!(controls(&[], &[]).iter().all(|c| c.passed));
    }

    fn continuous(to_age: Option<i64>) -> ContinuousFacts {
        ContinuousFacts {
            window: crate::sources::pitr::Window {
                from: Some(now() - Duration::days(2)),
                to: to_age.map(|m| now() - Duration::minutes(m)),
                ..Default::default()
            },
            health: None,
            newest_batch: None,
            batch_copies: vec![],
        }
    }

    #[test]
    fn a_continuous_source_s_copy_holds_its_log_within_the_rpo() {
        let mut f = facts();
        f.copies = vec![("offsite".into(), f.newest_point)];
        let mut c = continuous(Some(1));
        c.newest_batch = Some(now() - Duration::minutes(1));
        for (copied, verdict) in [
            (Some(now() - Duration::minutes(16)), Verdict::Met),
            (Some(now() - Duration::minutes(17)), Verdict::Breached),
            (None, Verdict::Breached),
            (Some(now() - Duration::minutes(1)), Verdict::Met),
        ] {
            c.batch_copies = vec![("offsite".into(), copied)];
            f.continuous = Some(c.clone());
            let s = evaluate(&f, now());
            assert_eq!(s.copies, verdict, "{copied:?}: {:?}", s.problems);
        }
    }

    #[test]
    fn a_continuous_source_is_judged_by_its_log_not_its_base_backup() {
        use crate::sources::pitr::{Gap, LogHealth};
        type Case = (&'static str, fn(&mut SourceFacts), Verdict, bool);
        let cases: Vec<Case> = vec![
            (
                "fresh log, old base backup",
                |f| {
                    f.newest_point = Some(now() - Duration::days(2));
                    f.continuous = Some(continuous(Some(5)));
                },
                Verdict::Met,
                true,
            ),
            (
                "stale log, fresh base backup",
                |f| {
                    f.newest_point = Some(now() - Duration::minutes(1));
                    f.continuous = Some(continuous(Some(16)));
                },
                Verdict::Breached,
                true,
            ),
            (
                "log exactly at the RPO",
                |f| f.continuous = Some(continuous(Some(15))),
                Verdict::Met,
                true,
            ),
            (
                "no log yet",
                |f| f.continuous = Some(continuous(None)),
                Verdict::Breached,
                true,
            ),
            (
                "shipping fails now, last shipped change still fresh",
                |f| {
                    let mut c = continuous(Some(1));
                    c.health = Some(LogHealth {
                        failing_since: Some(now() - Duration::seconds(30)),
                        last_error: Some("store unreachable".into()),
                        ..Default::default()
                    });
                    f.continuous = Some(c);
                },
                Verdict::Breached,
                true,
            ),
            (
                "queue over its bound",
                |f| {
                    let mut c = continuous(Some(1));
                    c.health = Some(LogHealth {
                        waiting_bytes: Some(1025),
                        queue_max: Some(1024),
                        ..Default::default()
                    });
                    f.continuous = Some(c);
                },
                Verdict::Breached,
                true,
            ),
            (
                "queue exactly at its bound",
                |f| {
                    let mut c = continuous(Some(1));
                    c.health = Some(LogHealth {
                        waiting_bytes: Some(1024),
                        queue_max: Some(1024),
                        ..Default::default()
                    });
                    f.continuous = Some(c);
                },
                Verdict::Met,
                true,
            ),
            (
                "a gap in the middle: latest is recoverable, the chain is not whole",
                |f| {
                    let mut c = continuous(Some(1));
                    c.window.gaps.push(Gap {
                        missing: "000000010000000000000017".into(),
                        count: 2,
                        after: Some(now() - Duration::hours(30)),
                        resumes: Some(now() - Duration::hours(24)),
                    });
                    f.continuous = Some(c);
                },
                Verdict::Met,
                false,
            ),
            (
                "a damaged piece",
                |f| {
                    let mut c = continuous(Some(1));
                    c.window.problems.push("piece x pushed twice".into());
                    f.continuous = Some(c);
                },
                Verdict::Met,
                false,
            ),
        ];
        for (name, tweak, rpo, whole) in cases {
            let mut f = facts();
            tweak(&mut f);
            let s = evaluate(&f, now());
            assert_eq!(s.rpo, rpo, "{name}: {:?}", s.problems);
            let cs = controls(std::slice::from_ref(&f), std::slice::from_ref(&s));
            let c = cs.iter().find(|c| c.id == "log-chain-whole").unwrap();
            assert_eq!(c.passed, whole, "{name}: {:?}", s.problems);
            if !whole {
                assert!(
                    s.problems
                        .iter()
                        .any(|p| p.contains("000000010000000000000017")
                            || p.contains("pushed twice")),
                    "{name}: the problem names what is missing: {:?}",
                    s.problems
                );
            }
        }
        // A plain source keeps its base backup's age.
        let mut f = facts();
        f.newest_point = Some(now() - Duration::minutes(16));
        assert_eq!(evaluate(&f, now()).rpo, Verdict::Breached);
    }
}
