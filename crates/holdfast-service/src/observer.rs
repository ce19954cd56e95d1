//! The observer: reads the repositories (in its own thread, so a slow store never stalls the
//! service loop or an HTTP request) and hands back what the loop needs: the status report,
//! the per-source states, recent records, repository statistics, and the jobs that are due.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use holdfast_core::records::{DrillRecord, JobRecord};
use holdfast_policy::config::{DrillPoint, Workload};
use holdfast_policy::report::StatusReport;
use holdfast_policy::runtime::Runtime;
use holdfast_policy::{jobs, observe};
use holdfast_storage::ObjectKind;

use crate::schedule::{Due, Kind};
use crate::snapshot::{self, RepoState, SourceState};

/// A job the workload wants, with how to run it.
#[derive(Debug, Clone)]
pub struct Wanted {
    /// When and what.
    pub due: Due,
    /// Drill a random recovery point.
    pub random: bool,
    /// Stop it after this long.
    pub complete_window: Option<Duration>,
    /// Its cadence: how long until the next regular run.
    pub interval: Duration,
}

/// One observation.
#[derive(Debug, Clone)]
pub struct Observation {
    /// When it was made.
    pub at: DateTime<Utc>,
    /// The status report.
    pub report: StatusReport,
    /// Per source.
    pub sources: Vec<SourceState>,
    /// Recent job records (newest first).
    pub jobs: Vec<JobRecord>,
    /// Recent drill records (newest first).
    pub drills: Vec<DrillRecord>,
    /// Per repository.
    pub repositories: Vec<RepoState>,
    /// What is due (or will be).
    pub wanted: Vec<Wanted>,
    /// Continuous sources this service replicates (their kind ships its own log).
    pub replicated: Vec<String>,
    /// The fleet view, when it was asked for.
    pub fleet: Option<holdfast_policy::fleet::FleetReport>,
}

/// Observe the workload now; with `beat`, also write this host's report (heartbeat) into
/// its repositories (the fleet view's evidence that the host is alive); with `fleet`, read
/// every host's reports too.
pub fn observe(rt: &Runtime, w: &Arc<Workload>, beat: bool, fleet: bool) -> Observation {
    let progress = holdfast_core::progress::NoProgress;
    rt.with_env(w, false, &progress, |env| {
        let o = observe::observe(env);
        let report = observe::status_from(env, &o);
        if beat {
            if let Err(e) = holdfast_policy::fleet::heartbeat(env, &report, w.service.heartbeat()) {
                tracing::warn!("{e}");
            }
        }
        let sources = snapshot::sources(&report, &o, env.now);
        let jobs = snapshot::recent(o.jobs.values().cloned(), |j: &JobRecord| j.started);
        let drills = snapshot::recent(o.drills.values().cloned(), |d: &DrillRecord| d.started);
        let mut wanted = Vec::new();
        for s in &w.sources {
            let class = w.class_of(s).map(|(_, c)| c);
            if let Some((at, interval)) = jobs::protect_due(env, &o, s) {
                wanted.push(Wanted {
                    due: Due {
                        source: s.name().into(),
                        kind: Kind::Backup,
                        due_at: at,
                        start_window: class.and_then(|c| c.start_window),
                    },
                    random: false,
                    complete_window: class.and_then(|c| c.complete_window),
                    interval,
                });
            }
            // Drills: on the class's drill-every, once there is something to drill.
            if let (Some(c), Some(_)) = (class, s.strategy) {
                if let Some(every) = c.drill_every {
                    let last = o
                        .drills
                        .get(s.name())
                        .and_then(|d| d.last())
                        .map(|d| d.started);
                    let drillable = s.strategy
                        == Some(holdfast_policy::config::Strategy::Reproduce)
                        || o.newest_point(s.name()).is_some();
                    if drillable {
                        wanted.push(Wanted {
                            due: Due {
                                source: s.name().into(),
                                kind: Kind::Drill,
                                due_at: last.map(|l| l + every).unwrap_or(DateTime::<Utc>::MIN_UTC),
                                start_window: None,
                            },
                            random: c.drill_point == Some(DrillPoint::Random),
                            complete_window: None,
                            interval: every,
                        });
                    }
                }
            }
        }
        if holdfast_policy::maintenance::due(env) {
            wanted.push(Wanted {
                due: Due {
                    source: "*".into(),
                    kind: Kind::Maintenance,
                    due_at: env.now,
                    start_window: None,
                },
                random: false,
                complete_window: None,
                interval: Duration::days(1),
            });
        }
        let replicated = w
            .sources
            .iter()
            .filter(|s| s.driver().replicator(s.name()).is_some())
            .map(|s| s.name().to_string())
            .collect();
        let repositories = w
            .repositories
            .iter()
            .map(|(name, r)| repo_state(rt, w, name, &r.url, o.repo_info.get(name)))
            .collect();
        Observation {
            at: env.now,
            report,
            sources,
            jobs,
            drills,
            repositories,
            wanted,
            replicated,
            fleet: fleet.then(|| holdfast_policy::fleet::observe(env)),
        }
    })
}

fn repo_state(
    rt: &Runtime,
    w: &Workload,
    name: &str,
    url: &str,
    info: Option<&observe::RepoInfo>,
) -> RepoState {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        w.resolve(Path::new(url)).display().to_string()
    };
    let storage = rt.storage(&url).ok();
    let list = |k: ObjectKind| storage.as_ref().and_then(|s| s.list(k).ok());
    let packs = list(ObjectKind::Pack);
    RepoState {
        name: name.into(),
        // The observation keeps a repository's info only once it opened and listed it.
        readable: info.is_some(),
        size_bytes: packs.as_ref().map(|p| p.iter().map(|o| o.size).sum()),
        packs: packs.as_ref().map(|p| p.len() as u64),
        sessions: list(ObjectKind::Session).map(|v| v.len() as u64),
        gc_plans: list(ObjectKind::Gc).map(|v| v.len() as u64),
        retention_lock_seconds: info
            .and_then(|i| i.retention_lock.as_ref().ok().cloned().flatten())
            .map(|l| l.min_age_seconds),
        object_lock_seconds: info
            .and_then(|i| i.object_lock.as_ref().ok().cloned().flatten())
            .map(|l| l.window),
    }
}
