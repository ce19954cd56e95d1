//! `plan`: the workload checked against every anti-pattern of REL09-BP01. Pure function.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cadence;
use crate::config::{Criticality, Strategy, Workload};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Data can be lost.
    High,
    /// Recovery is at risk.
    Medium,
    /// Worth fixing.
    Low,
}

/// One anti-pattern found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable code.
    pub code: &'static str,
    /// The seed's anti-pattern this is an instance of.
    pub anti_pattern: &'static str,
    /// Source or class concerned.
    pub subject: String,
    /// Severity.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

/// Anti-patterns as the seed names them.
pub mod anti {
    /// Not aware of all data sources and their criticality.
    pub const UNKNOWN: &str =
        "Not aware of all data sources for the workload and their criticality";
    /// Critical data without backup.
    pub const NO_BACKUP: &str = "Not taking backups of critical data sources";
    /// Backups chosen without criticality.
    pub const NO_CRITERION: &str =
        "Taking backups of only some data sources without using criticality as a criterion";
    /// No RPO or a cadence that cannot meet it.
    pub const NO_RPO: &str = "No defined RPO, or backup frequency cannot meet RPO";
    /// No decision between backup and reproduction.
    pub const NO_DECISION: &str =
        "Not evaluating if a backup is necessary or if data can be reproduced from other sources";
}

/// What has been measured per source (read from the repository).
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Durations of recent completed backups, seconds, oldest first.
    pub backup_seconds: Vec<f64>,
    /// Newest passed reproduce drill.
    pub reproduce_proved: Option<DateTime<Utc>>,
}

/// A source's derived schedule, for the plan's table.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleLine {
    /// Source.
    pub source: String,
    /// RPO seconds.
    pub rpo_seconds: Option<i64>,
    /// The cadence.
    pub cadence: Option<cadence::Cadence>,
}

/// Check the workload. `unprotected` lists discovered data locations that no source covers.
pub fn findings(
    w: &Workload,
    measured: &HashMap<String, Measured>,
    unprotected: &[crate::discover::Found],
    now: DateTime<Utc>,
) -> (Vec<Finding>, Vec<ScheduleLine>) {
    let mut out = Vec::new();
    let mut sched = Vec::new();
    let mut f = |code, anti_pattern, subject: &str, severity, message: String, fix: String| {
        out.push(Finding {
            code,
            anti_pattern,
            subject: subject.to_string(),
            severity,
            message,
            fix,
        })
    };
    for u in unprotected
        .iter()
        .filter(|u| u.protected_by.is_none() && !u.ignored)
    {
        let loc = &u.location;
        // A mounted file system is listed for completeness: the data on it is found and judged
        // location by location, so an uncovered mount alone is worth a look, not an alarm.
        let severity = if u.judged_elsewhere() {
            Severity::Low
        } else {
            Severity::High
        };
        let why = u
            .note
            .clone()
            .unwrap_or_else(|| "no [[source]] covers it".into());
        f("unknown-source", anti::UNKNOWN, loc, severity, format!("{loc} ({}) holds data, but {why}", u.detail), format!("add a [[source]] for it (`holdfast discover --suggest` prints one), or accept it on purpose: [[discover.accept]] location = \"{loc}\", reason = \"...\""));
    }
    for (name, c) in &w.classes {
        if c.rpo.is_none() {
            f(
                "class-without-rpo",
                anti::NO_RPO,
                name,
                Severity::High,
                format!("class {name:?} has no RPO"),
                format!("set rpo = \"...\" in [class.{name}]"),
            );
        }
        if c.rto.is_none() {
            f(
                "class-without-rto",
                anti::NO_RPO,
                name,
                Severity::Medium,
                format!("class {name:?} has no RTO"),
                format!("set rto = \"...\" in [class.{name}]"),
            );
        }
        let used: Vec<_> = w
            .sources
            .iter()
            .filter(|s| s.class_name() == Some(name))
            .collect();
        let crit = c.criticality(name);
        if crit <= Criticality::High
            && !used.is_empty()
            && used.iter().all(|s| s.strategy != Some(Strategy::Backup))
            && crit == Criticality::Critical
        {
            f(
                "critical-class-without-backup",
                anti::NO_BACKUP,
                name,
                Severity::High,
                format!("no source of critical class {name:?} is backed up"),
                "back up at least the sources the others are reproduced from".into(),
            );
        }
        if crit <= Criticality::High
            && c.copies.is_empty()
            && used.iter().any(|s| s.strategy == Some(Strategy::Backup))
        {
            f(
                "no-copy-elsewhere",
                anti::NO_BACKUP,
                name,
                Severity::Medium,
                format!("class {name:?} is {crit:?} but keeps no copy in another location"),
                format!("add copies = [\"<other repository>\"] to [class.{name}]"),
            );
        }
        if c.keep.as_ref().is_none_or(|k| k.is_empty())
            && used.iter().any(|s| s.strategy == Some(Strategy::Backup))
        {
            f("class-without-retention", anti::NO_RPO, name, Severity::Low, format!("class {name:?} has no retention (keep) policy: recovery points accumulate forever"), format!("set keep = {{ daily = 7, weekly = 4 }} in [class.{name}]"));
        }
    }
    for s in &w.sources {
        let n = s.name();
        let class = w.class_of(s);
        match (class.is_some(), s.strategy) {
            (false, Some(Strategy::Backup)) => f(
                "backup-without-criticality",
                anti::NO_CRITERION,
                n,
                Severity::Medium,
                format!("{n} is backed up but has no class: its RPO/RTO and retention are unknown"),
                "set class = \"...\"".into(),
            ),
            (false, _) => f(
                "source-without-class",
                anti::UNKNOWN,
                n,
                Severity::High,
                format!("{n} has no criticality class"),
                "set class = \"...\"".into(),
            ),
            _ => {}
        }
        match s.strategy {
            None => f(
                "no-backup-or-reproduce-decision",
                anti::NO_DECISION,
                n,
                Severity::High,
                format!("{n} has no strategy: neither backed up nor known to be reproducible"),
                "set strategy = \"backup\", or strategy = \"reproduce\" with a recipe".into(),
            ),
            Some(Strategy::Reproduce) => {
                let r = s.reproduce.clone().unwrap_or_default();
                if r.command.is_none() || r.from.is_none() {
                    f(
                        "reproduce-without-recipe",
                        anti::NO_DECISION,
                        n,
                        Severity::High,
                        format!(
                            "{n} is to be reproduced but its recipe lacks {}",
                            if r.command.is_none() {
                                "a command"
                            } else {
                                "`from`"
                            }
                        ),
                        "set reproduce = { from = \"...\", command = \"...\", verify = \"...\" }"
                            .into(),
                    );
                }
                if s.why_not_backup.is_none() {
                    f(
                        "reproduce-without-reason",
                        anti::NO_DECISION,
                        n,
                        Severity::Low,
                        format!("{n} is reproduced but says not why a backup is unnecessary"),
                        "set why-not-backup = \"...\"".into(),
                    );
                }
                let every = class.and_then(|(_, c)| c.drill_every);
                match measured.get(n).and_then(|m| m.reproduce_proved) {
                    None => f(
                        "reproduce-never-proved",
                        anti::NO_DECISION,
                        n,
                        Severity::High,
                        format!("the reproduction of {n} has never been proved"),
                        format!("run `holdfast drill {n}`"),
                    ),
                    Some(t) if every.is_some_and(|e| now - t > e) => f(
                        "reproduce-proof-stale",
                        anti::NO_DECISION,
                        n,
                        Severity::Medium,
                        format!(
                            "the reproduction of {n} was last proved {}",
                            t.format("%Y-%m-%d %H:%M")
                        ),
                        format!("run `holdfast drill {n}`"),
                    ),
                    _ => {}
                }
                if class.is_some_and(|(cn, c)| c.criticality(cn) == Criticality::Critical)
                    && r.from.as_ref().is_some_and(|from| {
                        w.source(from.get_ref())
                            .is_none_or(|fs| fs.strategy != Some(Strategy::Backup))
                    })
                {
                    f(
                        "reproduced-from-unprotected",
                        anti::NO_BACKUP,
                        n,
                        Severity::High,
                        format!(
                            "critical {n} is reproduced from something holdfast does not back up"
                        ),
                        "back up the source it is reproduced from, or declare it as a [[source]]"
                            .into(),
                    );
                }
            }
            Some(Strategy::Backup) => {}
        }
        if s.strategy == Some(Strategy::Backup) {
            if let Some((_, c)) = class {
                if let Some(rpo) = c.rpo {
                    let m = measured.get(n).cloned().unwrap_or_default();
                    let mut cad = cadence::cadence(rpo, cadence::expected_run(&m.backup_seconds));
                    if let Some(c) = s.driver().continuous() {
                        // The log meets the RPO: base backups follow their own cadence.
                        cad.interval = c.base_every();
                        cad.feasible = true;
                    }
                    if !cad.feasible {
                        f("cadence-cannot-meet-rpo", anti::NO_RPO, n, Severity::High,
                          format!("{n}: RPO {} cannot be met by periodic backups (a backup takes {}, protect runs every {})", crate::duration::show(rpo), crate::duration::show(cad.expected_run), crate::duration::show(cadence::tick())),
                          "raise the RPO, make the backup faster (exclude what is reproducible), or use continuous protection (WAL archiving / point-in-time recovery)".into());
                    }
                    sched.push(ScheduleLine {
                        source: n.to_string(),
                        rpo_seconds: Some(rpo.num_seconds()),
                        cadence: Some(cad),
                    });
                    continue;
                }
            }
            sched.push(ScheduleLine {
                source: n.to_string(),
                rpo_seconds: None,
                cadence: None,
            });
        }
    }
    out.sort_by(|a, b| {
        a.severity
            .cmp(&b.severity)
            .then(a.code.cmp(b.code))
            .then(a.subject.cmp(&b.subject))
    });
    (out, sched)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chrono::TimeZone;

    use super::*;

    /// A workload with one well-declared backed-up source and a proved reproducible one; each
    /// case edits it into one anti-pattern.
    const GOOD: &str = r#"
[repository.main]
url = "/r"
[repository.offsite]
url = "/o"

[class.critical]
rpo = "1h"
rto = "1h"
keep = { daily = 7 }
copies = ["offsite"]
drill-every = "7d"

[[source]]
name = "db"
kind = "path"
path = "/srv/db"
class = "critical"
strategy = "backup"
repository = "main"

[[source]]
name = "thumbs"
kind = "path"
path = "/srv/thumbs"
class = "critical"
strategy = "reproduce"
reproduce = { from = "db", command = "regen", verify = "check" }
why-not-backup = "derived from db"
"#;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
    }

    fn codes(text: &str, proved: Option<DateTime<Utc>>, slow: bool) -> Vec<(String, &'static str)> {
        let w = Workload::parse(Path::new("/w.toml"), text).unwrap();
        let mut m = HashMap::new();
        m.insert(
            "thumbs".to_string(),
            Measured {
                backup_seconds: vec![],
                reproduce_proved: proved,
            },
        );
        if slow {
            m.insert(
                "db".to_string(),
                Measured {
                    backup_seconds: vec![7200.0],
                    reproduce_proved: None,
                },
            );
        }
        findings(&w, &m, &[], now())
            .0
            .into_iter()
            .map(|f| (f.subject, f.code))
            .collect()
    }

    #[test]
    fn each_anti_pattern_is_found_and_only_then() {
        let fresh = Some(now() - chrono::Duration::days(1));
        let stale = Some(now() - chrono::Duration::days(30));
        // (edit of GOOD, proof of thumbs, slow backups of db, subject, code)
        type Case = (
            &'static str,
            &'static str,
            Option<DateTime<Utc>>,
            bool,
            &'static str,
            &'static str,
        );
        let cases: &[Case] = &[
            ("rpo = \"1h\"\n", "", fresh, false, "critical", "class-without-rpo"),
            ("rto = \"1h\"\n", "", fresh, false, "critical", "class-without-rto"),
            ("keep = { daily = 7 }\n", "", fresh, false, "critical", "class-without-retention"),
            ("copies = [\"offsite\"]\n", "", fresh, false, "critical", "no-copy-elsewhere"),
            ("class = \"critical\"\nstrategy = \"backup\"", "strategy = \"backup\"", fresh, false, "db", "backup-without-criticality"),
            ("class = \"critical\"\nstrategy = \"reproduce\"", "strategy = \"reproduce\"", fresh, false, "thumbs", "source-without-class"),
            ("strategy = \"backup\"\n", "", fresh, false, "db", "no-backup-or-reproduce-decision"),
            ("command = \"regen\", ", "", fresh, false, "thumbs", "reproduce-without-recipe"),
            ("why-not-backup = \"derived from db\"\n", "", fresh, false, "thumbs", "reproduce-without-reason"),
            ("", "", None, false, "thumbs", "reproduce-never-proved"),
            ("", "", stale, false, "thumbs", "reproduce-proof-stale"),
            ("strategy = \"backup\"\nrepository", "strategy = \"reproduce\"\nreproduce = { from = \"x\", command = \"c\" }\nwhy-not-backup = \"y\"\nrepository", fresh, false, "thumbs", "reproduced-from-unprotected"),
            ("", "", fresh, true, "db", "cadence-cannot-meet-rpo"),
        ];
        let good = codes(GOOD, fresh, false);
        assert!(good.is_empty(), "the good workload has findings: {good:?}");
        for (from, to, proved, slow, subject, code) in cases {
            let text = if from.is_empty() {
                GOOD.to_string()
            } else {
                assert!(GOOD.contains(from), "{from:?}");
                GOOD.replacen(from, to, 1)
            };
            let got = codes(&text, *proved, *slow);
            assert!(
                got.iter().any(|(s, c)| s == subject && c == code),
                "{code} for {subject} not found in {got:?}"
            );
        }
    }
}
