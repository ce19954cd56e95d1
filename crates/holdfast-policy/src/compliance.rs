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
    let age = f.newest_point.map(|t| now - t);
    let rpo = match (f.strategy, f.rpo, age) {
        (Some(Strategy::Reproduce), _, _) => Verdict::NotApplicable,
        (_, None, _) => {
            problems.push("no RPO defined for its class".into());
            Verdict::NotMeasured
        }
        (_, Some(_), None) => {
            problems.push("no recovery point yet".into());
            Verdict::Breached
        }
        (_, Some(rpo), Some(age)) => {
            if age <= rpo {
                Verdict::Met
            } else {
                problems.push(format!(
                    "newest recovery point is {} old, RPO is {}",
                    show(age),
                    show(rpo)
                ));
                Verdict::Breached
            }
        }
    };
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
        problems,
    }
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
}
