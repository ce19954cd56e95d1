//! The workload commands as library calls: `protect`, `drill`, `status` and `plan` do here
//! exactly what the command line prints, so another front end gets the same answers.

use std::path::Path;

use holdfast_core::progress::Progress;
use holdfast_core::records::{DrillRecord, JobState};
use serde::Serialize;

use super::{Runtime, RuntimeError};
use crate::config::Workload;
use crate::discover::{self as disc, Found};
use crate::findings::{self, Finding, ScheduleLine, Severity};
use crate::jobs::{self, JobError, ProtectLine};
use crate::observe;
use crate::report::StatusReport;

/// What `protect` did, and the status of the whole workload after it.
#[derive(Debug, Serialize)]
pub struct Protected {
    /// Per source: the action and its jobs.
    pub protect: Vec<ProtectLine>,
    /// Status of every source (not only those run).
    pub status: StatusReport,
    /// Why this host's report (heartbeat) could not be written, if it could not: other hosts'
    /// fleet view then shows this host as not reporting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_error: Option<String>,
}

impl Protected {
    /// Whether a job failed.
    pub fn failed(&self) -> bool {
        self.protect
            .iter()
            .flat_map(|l| &l.jobs)
            .any(|j| j.state == JobState::Failed)
    }

    /// Whether a job completed with warnings (a backup that skipped or may have lost
    /// something): `protect` then exits 3, never plain success.
    pub fn warned(&self) -> bool {
        self.protect
            .iter()
            .flat_map(|l| &l.jobs)
            .any(|j| j.state == JobState::CompletedWithWarnings)
    }
}

/// What `plan` found.
#[derive(Debug, Serialize)]
pub struct Plan {
    /// Anti-patterns, with their fixes.
    pub findings: Vec<Finding>,
    /// The cadence derived from each RPO.
    pub schedule: Vec<ScheduleLine>,
    /// Repositories that could not be read.
    pub unreadable: Vec<String>,
}

impl Plan {
    /// Whether a finding is of high severity.
    pub fn high(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::High)
    }
}

/// What discovery finds on this host (`host`: also servers, mounts and well-known data
/// directories, not only the workload's roots), marked against the workload.
pub fn discovered(w: &Workload, host: bool) -> Vec<Found> {
    let opts = disc::Options {
        roots: w.discover.roots.clone(),
        host,
        ..Default::default()
    };
    disc::discover(Some(w), &opts)
}

impl Runtime {
    /// Run every job that is due now (only `only`'s, if given), creating repositories that do
    /// not exist yet; then the status of the whole workload, and this host's report
    /// ([`crate::fleet::heartbeat`]) into every repository its sources use, due again after
    /// `[service] heartbeat` (default 5 minutes: cron runs `protect` every minute; whoever runs
    /// it less often sets `[service] heartbeat` to that period, or the fleet view shows this
    /// host as stopped).
    pub fn protect(
        &self,
        w: &Workload,
        only: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<Protected, RuntimeError> {
        let mut run = w.clone();
        if let Some(o) = only {
            if w.source(o).is_none() {
                return Err(JobError::unknown_source(w, o).into());
            }
            run.sources.retain(|s| s.name() == o);
        }
        let mut protect = self.with_env(&run, true, progress, jobs::protect)?;
        // Inside the maintenance window, once per window: retention of every source (only a
        // run over the whole workload does it, so the window is not spent on one source).
        if only.is_none() && self.with_env(w, false, progress, crate::maintenance::due) {
            protect.extend(self.with_env(w, false, progress, crate::maintenance::retain)?);
        }
        let (status, heartbeat) = self.with_env(w, false, progress, |env| {
            let status = observe::status(env);
            let beat = crate::fleet::heartbeat(env, &status, w.service.heartbeat());
            (status, beat)
        });
        let heartbeat_error = heartbeat.err().map(|e| {
            tracing::warn!("{e}");
            e.to_string()
        });
        Ok(Protected {
            protect,
            status,
            heartbeat_error,
        })
    }

    /// Apply every scheduled source's keep policy now (and prune), as the maintenance window
    /// does; then the status.
    pub fn retain(&self, w: &Workload, progress: &dyn Progress) -> Result<Protected, RuntimeError> {
        let protect = self.with_env(w, false, progress, crate::maintenance::retain)?;
        let status = self.with_env(w, false, progress, observe::status);
        Ok(Protected {
            protect,
            status,
            heartbeat_error: None,
        })
    }

    /// Drill `source`, or every source whose drill is due (never drilled, or older than its
    /// class's `drill-every`), restoring under `scratch`.
    pub fn drill(
        &self,
        w: &Workload,
        source: Option<&str>,
        random: bool,
        scratch: &Path,
        progress: &dyn Progress,
    ) -> Result<Vec<DrillRecord>, RuntimeError> {
        self.with_env(w, true, progress, |env| {
            let names: Vec<String> = match source {
                Some(s) => vec![s.to_string()],
                None => observe::status(env)
                    .sources
                    .iter()
                    .filter(|s| {
                        s.facts.strategy.is_some()
                            && (s.facts.last_drill.is_none() || s.status.drill_fresh.fails())
                    })
                    .map(|s| s.facts.name.clone())
                    .collect(),
            };
            names
                .iter()
                .map(|n| jobs::drill(env, n, random, scratch).map_err(RuntimeError::from))
                .collect()
        })
    }

    /// Per source: RPO and RTO met or not; the workload controls. With `discover`, host
    /// discovery too (else the report says it was not run).
    pub fn status(&self, w: &Workload, discover: bool, progress: &dyn Progress) -> StatusReport {
        let r = self.with_env(w, false, progress, observe::status);
        if discover {
            r.with_discovery(discovered(w, true))
        } else {
            r
        }
    }

    /// The anti-patterns of REL09-BP01 in the workload and the cadence; with `discover`, data
    /// on this host that nobody declared counts too.
    pub fn plan(&self, w: &Workload, discover: bool, progress: &dyn Progress) -> Plan {
        self.with_env(w, false, progress, |env| {
            let o = observe::observe(env);
            let unprotected = if discover {
                discovered(w, true)
            } else {
                Vec::new()
            };
            let (mut fs, schedule) = findings::findings(w, &o.measured(), &unprotected, env.now);
            fs.extend(crate::preflight::findings(w));
            Plan {
                findings: fs,
                schedule,
                unreadable: o.unreadable,
            }
        })
    }
}
