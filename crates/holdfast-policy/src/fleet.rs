//! The fleet view: many hosts protect into one repository, and every host's sources are judged
//! from the repository alone (`status --all-hosts`).
//!
//! Each host writes a [`HostReport`] (a heartbeat) into every repository its sources use, at
//! the end of every `protect` and every `[service] heartbeat`: its sources with their
//! objectives. A viewer (any host holding the repository's password, no workload needed)
//! reads the snapshots, the job and drill records and the host reports, and judges each host's
//! sources NOW from the measurements: the age of the newest recovery point that belongs to that
//! host and that source against its RPO, the last drill of that host and source against its
//! RTO. A host whose newest report is older than twice its interval plus [`GRACE`] has stopped
//! reporting and fails; a host seen only in recovery points or records, with no report at all,
//! fails too (its objectives are unknown). The judging functions are pure.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use holdfast_core::records::{self, DrillRecord, HostReport, HostSource, Record};
use holdfast_core::snapshot;
use holdfast_core::Repository;
use serde::Serialize;

use crate::compliance::{within, DrillFact, Verdict};
use crate::config::Strategy;
use crate::duration::show;
use crate::env::{Env, JobError};
use crate::report::StatusReport;

/// Slack beyond twice the interval before a silent host counts as stopped.
pub const GRACE: Duration = Duration::minutes(1);
/// How far ahead of the viewer's clock a report may be before it is distrusted (a host whose
/// clock runs a day ahead would otherwise look alive for a day after it stopped).
pub const CLOCK_AHEAD: Duration = Duration::minutes(5);

/// This host's report for one repository: the sources whose recovery points go to it (their
/// own repository, or a copy the class requires), with their objectives and this host's
/// verdicts from `report`. `None`: no source uses the repository.
pub fn report_for(
    env: &Env,
    report: &StatusReport,
    repository: &str,
    interval: Duration,
) -> Option<HostReport> {
    let w = env.workload;
    let mut sources = Vec::new();
    for s in &w.sources {
        let own = w.repository_of(s).is_some_and(|(n, _)| n == repository);
        let copy = w
            .class_of(s)
            .is_some_and(|(_, c)| c.copies.iter().any(|r| r.get_ref() == repository));
        if !own && !copy {
            continue;
        }
        let row = report.sources.iter().find(|r| r.facts.name == s.name());
        let met = |v: Verdict| match v {
            Verdict::NotApplicable => None,
            v => Some(!v.fails()),
        };
        sources.push(HostSource {
            name: s.name().to_string(),
            class: s.class_name().map(String::from),
            strategy: s.strategy.map(strategy_name),
            shared: s.shared,
            continuous: s.driver().continuous().is_some(),
            rpo_seconds: row.and_then(|r| r.rpo_seconds),
            rto_seconds: row.and_then(|r| r.rto_seconds),
            drill_every_seconds: w
                .class_of(s)
                .and_then(|(_, c)| c.drill_every)
                .map(|d| d.num_seconds()),
            recoverable_to: row.and_then(|r| r.status.window).map(|(_, to)| to),
            // A source missing from the status was not judged: not met.
            rpo_met: row.map_or(Some(false), |r| met(r.status.rpo)),
            rto_met: row.map_or(Some(false), |r| met(r.status.rto)),
        });
    }
    if sources.is_empty() {
        return None;
    }
    Some(HostReport {
        host: holdfast_core::util::hostname(),
        at: env.now,
        interval_seconds: interval
            .num_seconds()
            .clamp(1, records::MAX_HOST_INTERVAL_SECONDS),
        program: program(),
        sources,
        retired: None,
    })
}

fn program() -> String {
    format!("holdfast {}", env!("CARGO_PKG_VERSION"))
}

/// The report that retires `host` (a decommissioned host, or one renamed): written by this
/// host at `now`, with `reason`. Until `host` writes anything newer, the fleet view shows it
/// retired and does not judge it.
pub fn retirement(host: &str, reason: &str, now: DateTime<Utc>) -> HostReport {
    HostReport {
        host: host.into(),
        at: now,
        interval_seconds: records::MAX_HOST_INTERVAL_SECONDS,
        program: program(),
        sources: Vec::new(),
        retired: Some(format!(
            "retired by {}: {reason}",
            holdfast_core::util::hostname()
        )),
    }
}

/// Write this host's report into every repository the workload's sources use (see
/// [`report_for`]); `interval`: when the next one is due. Tries every repository; fails, after
/// trying them all, naming each that could not be written. Returns the repositories written.
pub fn heartbeat(
    env: &Env,
    report: &StatusReport,
    interval: Duration,
) -> Result<Vec<String>, JobError> {
    let mut written = Vec::new();
    let mut failed = Vec::new();
    for (name, cfg) in &env.workload.repositories {
        let Some(r) = report_for(env, report, name, interval) else {
            continue;
        };
        let res =
            (env.open)(name, cfg).and_then(|repo| Ok(records::save(&repo, &Record::Host(r))?));
        match res {
            Ok(_) => written.push(name.clone()),
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    if failed.is_empty() {
        Ok(written)
    } else {
        Err(JobError::Invalid(format!(
            "the host report (heartbeat) could not be written to {}; other hosts' `status --all-hosts` will show this host as not reporting until it is",
            failed.join("; ")
        )))
    }
}

/// Everything the fleet view reads from repositories.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// Complete recovery points (not log batches): host, source, time.
    pub points: Vec<(String, String, DateTime<Utc>)>,
    /// Hosts and sources seen in anything else (log batches, incomplete points, job
    /// records), with the time.
    pub seen: Vec<(String, String, DateTime<Utc>)>,
    /// Drill records.
    pub drills: Vec<DrillRecord>,
    /// Host reports, with the repository they were read from.
    pub reports: Vec<(String, HostReport)>,
}

/// Read one repository's evidence into `ev`; damaged snapshots and records are returned (any of
/// them may be the point or report that would change a verdict).
pub fn read(
    name: &str,
    repo: &Repository,
    ev: &mut Evidence,
) -> Result<Vec<String>, holdfast_core::Error> {
    let mut damaged = Vec::new();
    let (snaps, bad) = snapshot::load_all(repo)?;
    damaged.extend(bad.iter().map(|e| format!("repository {name:?}: {e}")));
    for s in snaps {
        let s = s.snapshot;
        if let Some(l) = &s.log {
            ev.seen.push((s.hostname.clone(), l.source.clone(), s.time));
        } else if let Some(src) = s.source.clone() {
            if s.complete {
                ev.points.push((s.hostname.clone(), src, s.time));
            } else {
                ev.seen.push((s.hostname.clone(), src, s.time));
            }
        }
    }
    let (rs, bad) = records::load_checked(repo)?;
    damaged.extend(bad.iter().map(|e| format!("repository {name:?}: {e}")));
    for r in rs {
        match r {
            Record::Job(j) => ev.seen.push((j.host, j.source, j.started)),
            Record::Drill(d) => ev.drills.push(d),
            Record::Host(h) => ev.reports.push((name.to_string(), h)),
            Record::RetentionLock(_) | Record::ObjectLocks(_) => {}
        }
    }
    Ok(damaged)
}

/// Whether a host reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Its newest report is within twice its interval (plus [`GRACE`]).
    Reporting,
    /// Its newest report is overdue: the host (or its service, or its cron) stopped.
    Stopped,
    /// It wrote recovery points or records, but never a report: its objectives are unknown.
    NeverReported,
    /// Its newest report is from the future (more than [`CLOCK_AHEAD`]): its clock is wrong,
    /// so whether it still reports cannot be told.
    ClockAhead,
    /// Retired on purpose (`holdfast retire-host`), and nothing newer from it since: not
    /// judged.
    Retired,
}

/// Judge a host's liveness from its newest report (`at`, interval seconds). Pure.
pub fn host_state(newest: Option<(DateTime<Utc>, i64)>, now: DateTime<Utc>) -> (HostState, String) {
    let Some((at, interval)) = newest else {
        return (
            HostState::NeverReported,
            "never reported: its objectives are unknown (run a holdfast with host reports there: `protect` or `serve`)".into(),
        );
    };
    let interval = Duration::seconds(interval.clamp(1, records::MAX_HOST_INTERVAL_SECONDS));
    if at - now > CLOCK_AHEAD {
        return (
            HostState::ClockAhead,
            format!(
                "its newest report is dated {} UTC, {} ahead of this clock: fix its clock (or this one)",
                at.format("%Y-%m-%d %H:%M:%S"),
                show(at - now)
            ),
        );
    }
    let deadline = at + interval * 2 + GRACE;
    if now > deadline {
        return (
            HostState::Stopped,
            format!(
                "stopped reporting: its newest report is {} old (due every {}); is its service or cron running?",
                show(now - at),
                show(interval)
            ),
        );
    }
    (HostState::Reporting, String::new())
}

/// One source of one host, judged now.
#[derive(Debug, Clone, Serialize)]
pub struct FleetSource {
    /// Name.
    pub name: String,
    /// Class, from the host's report.
    pub class: Option<String>,
    /// Strategy, from the host's report.
    pub strategy: Option<String>,
    /// RPO seconds.
    pub rpo_seconds: Option<i64>,
    /// RTO seconds.
    pub rto_seconds: Option<i64>,
    /// Newest complete recovery point of this host and source (any host's, if shared).
    pub newest_point: Option<DateTime<Utc>>,
    /// Age of the recovery point judged (a continuous source: the end of its window).
    pub age_seconds: Option<i64>,
    /// RPO verdict now.
    pub rpo: Verdict,
    /// Last drill of this host and source.
    pub last_drill: Option<DrillFact>,
    /// RTO verdict.
    pub rto: Verdict,
    /// Whether the last drill is within `drill-every`.
    pub drill_fresh: Verdict,
    /// Whether the host's newest report lists it (a source only seen in old recovery points is
    /// shown, not judged, when its host reports and no longer lists it).
    pub reported: bool,
    /// One line per problem.
    pub problems: Vec<String>,
}

impl FleetSource {
    /// Whether a verdict fails.
    pub fn failing(&self) -> bool {
        self.rpo.fails() || self.rto.fails() || self.drill_fresh.fails()
    }
}

/// Judge one source now. `s`: its entry in its host's newest report (`None`: objectives
/// unknown); `reporting`: whether its host reports (else a source it no longer lists is still
/// judged, as unknown). Pure.
pub fn judge_source(
    name: &str,
    s: Option<&HostSource>,
    reporting: bool,
    newest_point: Option<DateTime<Utc>>,
    last_drill: Option<DrillFact>,
    now: DateTime<Utc>,
) -> FleetSource {
    let mut problems = Vec::new();
    let mut out = FleetSource {
        name: name.into(),
        class: s.and_then(|s| s.class.clone()),
        strategy: s.and_then(|s| s.strategy.clone()),
        rpo_seconds: s.and_then(|s| s.rpo_seconds),
        rto_seconds: s.and_then(|s| s.rto_seconds),
        newest_point,
        age_seconds: None,
        rpo: Verdict::NotMeasured,
        last_drill: last_drill.clone(),
        rto: Verdict::NotMeasured,
        drill_fresh: Verdict::NotApplicable,
        reported: s.is_some(),
        problems: Vec::new(),
    };
    let Some(s) = s else {
        if reporting {
            out.rpo = Verdict::NotApplicable;
            out.rto = Verdict::NotApplicable;
            out.problems
                .push("not in its host's newest report: no longer one of its sources".into());
        } else {
            out.problems
                .push("its objectives are unknown: its host never reported them".into());
        }
        return out;
    };
    let reproduce = s.strategy.as_deref() == Some("reproduce");
    // A continuous source's recovery point is the end of its window, as its host measured it.
    let point = if s.continuous {
        newest_point.max(s.recoverable_to)
    } else {
        newest_point
    };
    out.age_seconds = point.map(|p| (now - p).num_seconds());
    out.rpo = match (reproduce, s.rpo_seconds, point) {
        (true, _, _) => Verdict::NotApplicable,
        (_, None, _) => {
            problems.push("no RPO in its host's report".into());
            Verdict::NotMeasured
        }
        (_, Some(_), None) => {
            problems.push("no recovery point of this host and source in the repository".into());
            Verdict::Breached
        }
        (_, Some(rpo), Some(p)) if now - p > Duration::seconds(rpo) => {
            problems.push(format!(
                "newest recovery point is {} old, RPO is {}",
                show(now - p),
                show(Duration::seconds(rpo))
            ));
            Verdict::Breached
        }
        _ => Verdict::Met,
    };
    // What only the host can see (its log shipping failing) makes its own verdict stricter.
    if s.continuous && out.rpo == Verdict::Met && s.rpo_met == Some(false) {
        problems.push("its host measured the RPO breached in its newest report".into());
        out.rpo = Verdict::Breached;
    }
    out.rto = match (s.rto_seconds, &last_drill) {
        (None, _) => {
            problems.push("no RTO in its host's report".into());
            Verdict::NotMeasured
        }
        (Some(_), None) => {
            problems.push("restore time never measured on this host: run `holdfast drill`".into());
            Verdict::NotMeasured
        }
        (Some(_), Some(d)) if !d.passed => {
            problems.push(format!(
                "last drill ({}) failed",
                d.at.format("%Y-%m-%d %H:%M")
            ));
            Verdict::Breached
        }
        (Some(rto), Some(d)) if !within(d.seconds, Duration::seconds(rto)) => {
            problems.push(format!(
                "last drill took {:.1}s, RTO is {}",
                d.seconds,
                show(Duration::seconds(rto))
            ));
            Verdict::Breached
        }
        _ => Verdict::Met,
    };
    out.drill_fresh = match (s.drill_every_seconds, &last_drill) {
        (None, _) => Verdict::NotApplicable,
        (Some(_), None) => Verdict::NotMeasured,
        (Some(every), Some(d)) if now - d.at > Duration::seconds(every) => {
            problems.push(format!(
                "last drill is {} old, drills are due every {}",
                show(now - d.at),
                show(Duration::seconds(every))
            ));
            Verdict::Breached
        }
        _ => Verdict::Met,
    };
    out.problems = problems;
    out
}

/// One host of the fleet.
#[derive(Debug, Clone, Serialize)]
pub struct HostRow {
    /// Host name.
    pub host: String,
    /// Whether it reports.
    pub state: HostState,
    /// Its newest report's time.
    pub last_report: Option<DateTime<Utc>>,
    /// Its announced interval.
    pub interval_seconds: Option<i64>,
    /// What wrote its newest report.
    pub program: Option<String>,
    /// Its sources.
    pub sources: Vec<FleetSource>,
    /// Whether it fails (not reporting, or a source fails).
    pub failing: bool,
    /// Why, for people.
    pub problems: Vec<String>,
}

/// The time of the newest thing `host` wrote: a recovery point, a log batch or job, a drill, or
/// a report that is not a retirement.
fn last_activity(ev: &Evidence, host: &str) -> Option<DateTime<Utc>> {
    let points = ev.points.iter().filter(|p| p.0 == host).map(|p| p.2);
    let seen = ev.seen.iter().filter(|p| p.0 == host).map(|p| p.2);
    let drills = ev
        .drills
        .iter()
        .filter(|d| d.host == host)
        .map(|d| d.started);
    let reports = ev
        .reports
        .iter()
        .filter(|(_, r)| r.host == host && r.retired.is_none())
        .map(|(_, r)| r.at);
    points.chain(seen).chain(drills).chain(reports).max()
}

/// Judge every host from the evidence at `now`. Pure.
pub fn judge(ev: &Evidence, now: DateTime<Utc>) -> Vec<HostRow> {
    let mut hosts: BTreeSet<&str> = BTreeSet::new();
    hosts.extend(ev.points.iter().map(|(h, _, _)| h.as_str()));
    hosts.extend(ev.seen.iter().map(|(h, _, _)| h.as_str()));
    hosts.extend(ev.drills.iter().map(|d| d.host.as_str()));
    hosts.extend(ev.reports.iter().map(|(_, r)| r.host.as_str()));
    let mut rows = Vec::new();
    for host in hosts {
        // Its newest report in each repository: each lists the sources of that repository.
        let mut newest: BTreeMap<&str, &HostReport> = BTreeMap::new();
        for (repo, r) in ev
            .reports
            .iter()
            .filter(|(_, r)| r.host == host && r.retired.is_none())
        {
            let e = newest.entry(repo.as_str()).or_insert(r);
            if r.at > e.at {
                *e = r;
            }
        }
        // A retirement holds while nothing of the host is newer than it.
        let retired = ev
            .reports
            .iter()
            .filter(|(_, r)| r.host == host && r.retired.is_some())
            .max_by_key(|(_, r)| r.at)
            .map(|(_, r)| r);
        let activity = last_activity(ev, host);
        if let Some(r) = retired.filter(|r| activity.is_none_or(|t| t <= r.at)) {
            rows.push(HostRow {
                host: host.to_string(),
                state: HostState::Retired,
                last_report: Some(r.at),
                interval_seconds: None,
                program: Some(r.program.clone()),
                sources: Vec::new(),
                failing: false,
                problems: vec![format!(
                    "{} at {} UTC",
                    r.retired.as_deref().unwrap_or_default(),
                    r.at.format("%Y-%m-%d %H:%M:%S")
                )],
            });
            continue;
        }
        let latest = newest.values().max_by_key(|r| r.at).copied();
        let (state, why) = host_state(latest.map(|r| (r.at, r.interval_seconds)), now);
        let reporting = state == HostState::Reporting;
        let mut listed: BTreeMap<&str, HostSource> = BTreeMap::new();
        for r in newest.values() {
            for s in &r.sources {
                listed.entry(s.name.as_str()).or_insert_with(|| HostSource {
                    // A window cannot end after the report that measured it.
                    recoverable_to: s.recoverable_to.map(|t| t.min(r.at)),
                    ..s.clone()
                });
            }
        }
        let mut names: BTreeSet<&str> = listed.keys().copied().collect();
        names.extend(
            ev.points
                .iter()
                .filter(|p| p.0 == host)
                .map(|p| p.1.as_str()),
        );
        names.extend(ev.seen.iter().filter(|p| p.0 == host).map(|p| p.1.as_str()));
        names.extend(
            ev.drills
                .iter()
                .filter(|d| d.host == host)
                .map(|d| d.source.as_str()),
        );
        let sources: Vec<FleetSource> = names
            .into_iter()
            .map(|name| {
                let s = listed.get(name);
                let shared = s.is_some_and(|s| s.shared);
                // A recovery point belongs to a host and a source.
                let mine = |h: &str| shared || h == host;
                let point = ev
                    .points
                    .iter()
                    .filter(|(h, src, _)| src == name && mine(h))
                    .map(|p| p.2)
                    .max();
                let drill = ev
                    .drills
                    .iter()
                    .filter(|d| d.source == name && mine(&d.host))
                    .max_by_key(|d| d.started)
                    .map(|d| DrillFact {
                        at: d.started,
                        seconds: d.seconds,
                        passed: d.passed,
                    });
                judge_source(name, s, reporting, point, drill, now)
            })
            .collect();
        let mut problems = Vec::new();
        if !why.is_empty() {
            problems.push(why);
        }
        if let Some(r) = retired {
            problems.push(format!(
                "{} at {} UTC, but it wrote recovery points, records or reports after that: judged again",
                r.retired.as_deref().unwrap_or_default(),
                r.at.format("%Y-%m-%d %H:%M:%S")
            ));
        }
        let bad: Vec<&str> = sources
            .iter()
            .filter(|s| s.failing())
            .map(|s| s.name.as_str())
            .collect();
        if !bad.is_empty() {
            problems.push(format!("failing sources: {}", bad.join(", ")));
        }
        rows.push(HostRow {
            host: host.to_string(),
            state,
            last_report: latest.map(|r| r.at),
            interval_seconds: latest.map(|r| r.interval_seconds),
            program: latest.map(|r| r.program.clone()),
            failing: !reporting || !bad.is_empty(),
            sources,
            problems,
        });
    }
    rows
}

/// What `status --all-hosts` shows.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    /// When it was judged.
    pub now: DateTime<Utc>,
    /// The repositories read.
    pub repositories: Vec<String>,
    /// Every host seen.
    pub hosts: Vec<HostRow>,
    /// Repositories that could not be read, and damaged snapshots or records (any of them may
    /// hold what would change a verdict).
    pub unreadable: Vec<String>,
}

impl FleetReport {
    /// Whether every host reports and every source of every host meets its objectives, every
    /// repository was read whole, and there is at least one host (an empty or wrong repository
    /// is not a healthy fleet).
    pub fn ok(&self) -> bool {
        !self.hosts.is_empty()
            && self.unreadable.is_empty()
            && self.hosts.iter().all(|h| !h.failing)
    }
}

/// The fleet view of repositories (`Err`: it could not be opened, and why).
pub fn fleet(repos: &[(String, Result<Repository, String>)], now: DateTime<Utc>) -> FleetReport {
    let mut ev = Evidence::default();
    let mut unreadable = Vec::new();
    for (name, r) in repos {
        match r {
            Ok(repo) => match read(name, repo, &mut ev) {
                Ok(d) => unreadable.extend(d),
                Err(e) => unreadable.push(format!("repository {name:?}: {e}")),
            },
            Err(e) => unreadable.push(format!("repository {name:?}: {e}")),
        }
    }
    FleetReport {
        now,
        repositories: repos.iter().map(|(n, _)| n.clone()).collect(),
        hosts: judge(&ev, now),
        unreadable,
    }
}

/// The fleet view of the workload's repositories, opened with `env.open` (for the service's
/// snapshot and `status --all-hosts` with a workload), judged at `env.now`.
pub fn observe(env: &Env) -> FleetReport {
    let repos: Vec<(String, Result<Repository, String>)> = env
        .workload
        .repositories
        .iter()
        .map(|(name, cfg)| {
            (
                name.clone(),
                (env.open)(name, cfg).map_err(|e| e.to_string()),
            )
        })
        .collect();
    fleet(&repos, env.now)
}

/// The strategy names a host report uses.
pub fn strategy_name(s: Strategy) -> String {
    format!("{s:?}").to_lowercase()
}

#[path = "fleet_page.rs"]
mod page;
pub use page::{html, html_section};

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
