//! What the repositories say about the workload: snapshots, job and drill records and each
//! repository's protections, observed once; and the per-source facts and the status report
//! built from them.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use holdfast_core::objlock::{self, LockPolicy};
use holdfast_core::records::{self, DrillRecord, JobRecord, JobState, Record, RetentionLock};
use holdfast_core::snapshot::{self, SnapshotEntry};

use crate::compliance::{self, DrillFact, SourceFacts, SourceStatus};
use crate::config::Strategy;
use crate::env::Env;
use crate::findings::Measured;

/// What protects one repository's recovery points.
#[derive(Debug, Clone)]
pub struct RepoInfo {
    /// The cipher ("xchacha20-poly1305").
    pub cipher: String,
    /// holdfast's own retention lock, if set, or why it cannot be verified.
    pub retention_lock: Result<Option<RetentionLock>, String>,
    /// The store's Object Lock policy (`Ok(None)`: the store or bucket has none), or why it
    /// could not be read.
    pub object_lock: Result<Option<LockPolicy>, String>,
}

/// How a repository's recovery points are kept from deletion, in words. Pure, tested with a
/// table.
pub fn immutability(
    lock: &Result<Option<RetentionLock>, String>,
    object_lock: &Result<Option<LockPolicy>, String>,
) -> String {
    let lock = match lock {
        Ok(l) => l.as_ref(),
        Err(e) => {
            return format!(
                "unknown: the retention lock cannot be verified ({e}); forget refuses until it is"
            )
        }
    };
    let holdfast = lock.map(|l| {
        format!(
            "retention lock {}{}",
            crate::duration::show(Duration::seconds(l.min_age_seconds)),
            if l.compliance {
                ", compliance mode"
            } else {
                ""
            }
        )
    });
    match (object_lock, holdfast) {
        (Ok(Some(p)), h) => format!(
            "S3 Object Lock {} mode, {} per recovery point (enforced by the store){}",
            p.mode.as_str(),
            crate::duration::show(Duration::seconds(p.window)),
            h.map(|h| format!("; {h}")).unwrap_or_default()
        ),
        (Ok(None), Some(h)) => format!(
            "{h} (enforced by holdfast only: the store has no object lock, so credentials with delete permission can still remove recovery points)"
        ),
        (Ok(None), None) => {
            "none: anyone with delete permission on the store can remove recovery points".into()
        }
        (Err(e), h) => format!(
            "unknown: the store's object lock could not be read ({e}){}",
            h.map(|h| format!("; {h}")).unwrap_or_default()
        ),
    }
}

/// Everything read from the repositories about the sources.
pub struct Observed {
    /// Snapshots of each source, oldest first.
    pub snapshots: HashMap<String, Vec<SnapshotEntry>>,
    /// Log batches of each continuous source (in its own repository), oldest first.
    pub logs: HashMap<String, Vec<SnapshotEntry>>,
    /// Job records per source, oldest first.
    pub jobs: HashMap<String, Vec<JobRecord>>,
    /// Drill records per source, oldest first.
    pub drills: HashMap<String, Vec<DrillRecord>>,
    /// Per repository: snapshots (for copies), by source.
    pub by_repo: HashMap<String, HashMap<String, Vec<DateTime<Utc>>>>,
    /// Per repository: the newest log batch of each continuous source (for copies).
    pub logs_by_repo: HashMap<String, HashMap<String, DateTime<Utc>>>,
    /// Repositories that could not be read, and why.
    pub unreadable: Vec<String>,
    /// What the repositories' history says went wrong outside holdfast: recovery points that
    /// disappeared without `forget`, a history cut or rolled back, a lock that cannot be
    /// verified.
    pub alarms: Vec<String>,
    /// Per repository: cipher and protections.
    pub repo_info: HashMap<String, RepoInfo>,
}

/// Read snapshots and records of every repository the workload names.
pub fn observe(env: &Env) -> Observed {
    let mut o = Observed {
        snapshots: HashMap::new(),
        logs: HashMap::new(),
        jobs: HashMap::new(),
        drills: HashMap::new(),
        by_repo: HashMap::new(),
        logs_by_repo: HashMap::new(),
        unreadable: Vec::new(),
        alarms: Vec::new(),
        repo_info: HashMap::new(),
    };
    let me = holdfast_core::util::hostname();
    for (name, cfg) in &env.workload.repositories {
        let repo = match (env.open)(name, cfg) {
            Ok(r) => r,
            Err(e) => {
                o.unreadable.push(e.to_string());
                continue;
            }
        };
        let snaps = match snapshot::load_all(&repo) {
            Ok((s, _)) => s,
            Err(e) => {
                o.unreadable.push(format!("repository {name:?}: {e}"));
                continue;
            }
        };
        // The records and the history are read once each: the lock state, the alarms and the
        // jobs and drills all come from that one read.
        let audit = holdfast_core::history::audit(&repo);
        let loaded = records::load_checked(&repo);
        let lock = match (&loaded, &audit) {
            (Ok((rs, bad)), Ok(a)) => records::lock_state_of(rs, bad.clone(), a.clone())
                .in_force()
                .map_err(|e| e.to_string()),
            (Err(e), _) => Err(e.to_string()),
            (_, Err(e)) => Err(e.to_string()),
        };
        o.repo_info.insert(
            name.clone(),
            RepoInfo {
                cipher: repo.config().cipher.clone(),
                retention_lock: lock.clone(),
                object_lock: objlock::bucket_policy(&repo).map_err(|e| e.to_string()),
            },
        );
        match audit {
            Ok(a) => o.alarms.extend(
                a.errors()
                    .into_iter()
                    .map(|e| format!("repository {name:?}: {e}")),
            ),
            Err(e) => o.alarms.push(format!(
                "repository {name:?}: its history cannot be read: {e}"
            )),
        }
        if let Err(e) = lock {
            o.alarms.push(format!("repository {name:?}: {e}"));
        }
        let per = o.by_repo.entry(name.clone()).or_default();
        let owner = |source: &str, host: &str| {
            env.workload
                .source(source)
                .filter(|sc| sc.owns(Some(source), host, &me))
        };
        let own_repo = |sc: &crate::config::SourceConfig| {
            env.workload
                .repository_of(sc)
                .is_some_and(|(n, _)| n == name.as_str())
        };
        for s in snaps {
            if let Some(l) = &s.snapshot.log {
                // A log batch belongs to the host that shipped it and the source it names.
                let Some(sc) = owner(&l.source, &s.snapshot.hostname) else {
                    continue;
                };
                let newest = o
                    .logs_by_repo
                    .entry(name.clone())
                    .or_default()
                    .entry(l.source.clone())
                    .or_insert(s.snapshot.time);
                *newest = (*newest).max(s.snapshot.time);
                if own_repo(sc) {
                    o.logs.entry(l.source.clone()).or_default().push(s);
                }
                continue;
            }
            let Some(src) = s.snapshot.source.clone() else {
                continue;
            };
            // A recovery point belongs to a host and a source: another host's point of a
            // source with the same name protects nothing here (unless the source is shared).
            let Some(sc) = owner(&src, &s.snapshot.hostname) else {
                continue;
            };
            if s.snapshot.complete {
                per.entry(src.clone()).or_default().push(s.snapshot.time);
            }
            // Only the source's own repository holds its primary recovery points.
            if own_repo(sc) {
                o.snapshots.entry(src).or_default().push(s);
            }
        }
        match loaded {
            Ok((rs, bad)) => {
                for b in bad {
                    tracing::warn!("record skipped: {b}");
                }
                for r in rs {
                    match r {
                        Record::Job(j) if owner(&j.source, &j.host).is_some() => {
                            o.jobs.entry(j.source.clone()).or_default().push(j)
                        }
                        Record::Drill(d) if owner(&d.source, &d.host).is_some() => {
                            o.drills.entry(d.source.clone()).or_default().push(d)
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => o
                .unreadable
                .push(format!("repository {name:?}: records: {e}")),
        }
    }
    for v in o.snapshots.values_mut().chain(o.logs.values_mut()) {
        v.sort_by_key(|s| s.snapshot.time);
    }
    for v in o.jobs.values_mut() {
        v.sort_by_key(|j| j.started);
    }
    for v in o.drills.values_mut() {
        v.sort_by_key(|d| d.started);
    }
    o
}

impl Observed {
    /// The newest complete recovery point of a source.
    pub fn newest_point(&self, source: &str) -> Option<&SnapshotEntry> {
        self.snapshots
            .get(source)?
            .iter()
            .rev()
            .find(|s| s.snapshot.complete)
    }

    /// The window and shipping health of a continuous source.
    pub fn continuous_facts(
        &self,
        c: &dyn crate::sources::pitr::Continuous,
        source: &str,
        state_dir: &std::path::Path,
    ) -> crate::compliance::ContinuousFacts {
        let bases: Vec<&SnapshotEntry> = self
            .snapshots
            .get(source)
            .map(|v| v.iter().filter(|s| s.snapshot.complete).collect())
            .unwrap_or_default();
        let kind = c.log_kind();
        let batches: Vec<_> = self
            .logs
            .get(source)
            .map(|v| {
                v.iter()
                    .filter_map(|e| e.snapshot.log.as_ref().map(|l| (e, l)))
                    .filter(|(_, l)| l.kind == kind)
                    .collect()
            })
            .unwrap_or_default();
        let mut window = c.window(&bases, &batches);
        // An idle source proves, when asked, that what it wrote last is archived: its window
        // then reaches the moment it was asked (only over an unbroken chain).
        if window.whole() && window.to.is_some() {
            if let Some(t) = c.shipped_until(&batches) {
                window.to = window.to.max(Some(t));
            }
        }
        crate::compliance::ContinuousFacts {
            window,
            health: c.health(source, state_dir),
            newest_batch: self
                .logs
                .get(source)
                .and_then(|v| v.last())
                .map(|e| e.snapshot.time),
            batch_copies: Vec::new(),
        }
    }

    /// How long the completed backups of a source took, in seconds.
    pub fn backup_seconds(&self, source: &str) -> Vec<f64> {
        self.jobs
            .get(source)
            .map(|js| {
                js.iter()
                    .filter(|j| j.job == "backup" && j.state == JobState::Completed)
                    .map(|j| j.seconds)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What `plan` needs per source.
    pub fn measured(&self) -> HashMap<String, Measured> {
        let mut m: HashMap<String, Measured> = HashMap::new();
        for name in self.jobs.keys().chain(self.drills.keys()) {
            let e = m.entry(name.clone()).or_default();
            e.backup_seconds = self.backup_seconds(name);
            e.reproduce_proved = self.drills.get(name).and_then(|ds| {
                ds.iter()
                    .rev()
                    .find(|d| d.kind == "reproduce" && d.passed)
                    .map(|d| d.started)
            });
        }
        m
    }
}

/// Facts and verdicts for every source.
pub fn facts(env: &Env, o: &Observed) -> Vec<(SourceFacts, SourceStatus)> {
    let w = env.workload;
    let mut out: Vec<(SourceFacts, SourceStatus)> = Vec::new();
    for s in &w.sources {
        let class = w.class_of(s);
        let newest = o.newest_point(s.name());
        let f = SourceFacts {
            mechanism: match (s.strategy, s.reproduce.as_ref()) {
                (Some(Strategy::Reproduce), Some(r)) => format!(
                    "reproduced{}{}",
                    r.from
                        .as_ref()
                        .map(|f| format!(" from {}", f.get_ref()))
                        .unwrap_or_default(),
                    r.command
                        .as_ref()
                        .map(|c| format!(" by {c:?}"))
                        .unwrap_or_else(|| " (no recipe)".into())
                ),
                _ => crate::sources::AsSource::as_source(s).describe(),
            },
            name: s.name().to_string(),
            class: class.map(|(n, _)| n.to_string()),
            criticality: class.map(|(n, c)| c.criticality(n)),
            strategy: s.strategy,
            rpo: class.and_then(|(_, c)| c.rpo),
            rto: class.and_then(|(_, c)| c.rto),
            drill_every: class.and_then(|(_, c)| c.drill_every),
            has_retention: class
                .and_then(|(_, c)| c.keep.as_ref())
                .is_some_and(|k| !k.is_empty()),
            newest_point: newest.map(|n| n.snapshot.time),
            points: o
                .snapshots
                .get(s.name())
                .map(|v| v.iter().filter(|x| x.snapshot.complete).count())
                .unwrap_or(0),
            last_drill: o
                .drills
                .get(s.name())
                .and_then(|d| d.last())
                .map(|d| DrillFact {
                    at: d.started,
                    seconds: d.seconds,
                    passed: d.passed,
                }),
            copies: class
                .map(|(_, c)| {
                    c.copies
                        .iter()
                        .map(|r| {
                            let t = o
                                .by_repo
                                .get(r.get_ref())
                                .and_then(|m| m.get(s.name()))
                                .and_then(|v| v.iter().max().copied());
                            (r.get_ref().clone(), t)
                        })
                        .collect()
                })
                .unwrap_or_default(),
            // Known only from a repository that could be opened and read (with a wrong
            // password or an unreadable store, nothing is known, so the control fails).
            encrypted: w
                .repository_of(s)
                .and_then(|(r, _)| o.repo_info.get(r))
                .is_some_and(|i| i.cipher != "none" && !i.cipher.is_empty()),
            continuous: s.driver().continuous().map(|c| {
                let mut cf = o.continuous_facts(c, s.name(), &env.state_dir);
                cf.batch_copies = class
                    .map(|(_, cl)| {
                        cl.copies
                            .iter()
                            .map(|r| {
                                let t = o
                                    .logs_by_repo
                                    .get(r.get_ref())
                                    .and_then(|m| m.get(s.name()))
                                    .copied();
                                (r.get_ref().clone(), t)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                cf
            }),
        };
        let mut st = compliance::evaluate(&f, env.now);
        if s.strategy == Some(Strategy::Reproduce) {
            // Its recovery point is that of what it is reproduced from.
            if let Some(from) = s.reproduce.as_ref().and_then(|r| r.from.as_ref()) {
                if let Some((_, fst)) = out.iter().find(|(ff, _)| ff.name == *from.get_ref()) {
                    st.rpo = fst.rpo;
                    if fst.rpo.fails() {
                        st.problems.push(format!(
                            "reproduced from {}, whose RPO is not met",
                            from.get_ref()
                        ));
                    }
                }
            }
        }
        out.push((f, st));
    }
    out
}

/// The age of the newest recovery point, for people.
pub fn show_age(d: Option<i64>) -> String {
    d.map(|s| crate::duration::show(Duration::seconds(s)))
        .unwrap_or_else(|| "never".into())
}

/// Build the status report from what the repositories hold.
pub fn status(env: &Env) -> crate::report::StatusReport {
    let o = observe(env);
    status_from(env, &o)
}

/// Build the status report from already observed data.
pub fn status_from(env: &Env, o: &Observed) -> crate::report::StatusReport {
    let pairs = facts(env, o);
    let (fs, ss): (Vec<_>, Vec<_>) = pairs.iter().cloned().unzip();
    let controls = compliance::controls(&fs, &ss);
    let sources = pairs
        .into_iter()
        .map(|(f, st)| {
            let name = f.name.clone();
            crate::report::SourceRow {
                rpo_seconds: f.rpo.map(|d| d.num_seconds()),
                rto_seconds: f.rto.map(|d| d.num_seconds()),
                last_job: o.jobs.get(&name).and_then(|j| j.last()).map(|j| {
                    (
                        j.job.clone(),
                        serde_json::to_value(j.state)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default(),
                        j.started,
                    )
                }),
                points: o
                    .snapshots
                    .get(&name)
                    .map(|v| {
                        v.iter()
                            .filter(|s| s.snapshot.complete)
                            .map(|s| s.snapshot.time)
                            .collect()
                    })
                    .unwrap_or_default(),
                drills: o
                    .drills
                    .get(&name)
                    .map(|v| v.iter().map(|d| (d.started, d.passed, d.seconds)).collect())
                    .unwrap_or_default(),
                facts: f,
                status: st,
            }
        })
        .collect();
    crate::report::StatusReport {
        now: env.now,
        workload: env.workload.path.display().to_string(),
        sources,
        controls,
        unreadable: o.unreadable.clone(),
        alarms: o.alarms.clone(),
        unprotected: None,
        repositories: env
            .workload
            .repositories
            .iter()
            .map(|(name, cfg)| {
                let info = o.repo_info.get(name).cloned().unwrap_or_else(|| RepoInfo {
                    cipher: "unknown (unreadable)".into(),
                    retention_lock: Err("the repository could not be read".into()),
                    object_lock: Err("the repository could not be read".into()),
                });
                let mut holds: Vec<(String, DateTime<Utc>)> = o
                    .by_repo
                    .get(name)
                    .map(|m| {
                        m.iter()
                            .filter_map(|(s, ts)| ts.iter().max().map(|t| (s.clone(), *t)))
                            .collect()
                    })
                    .unwrap_or_default();
                holds.sort();
                crate::report::RepositoryRow {
                    name: name.clone(),
                    url: cfg.url.clone(),
                    encryption: info.cipher.clone(),
                    immutability: immutability(&info.retention_lock, &info.object_lock),
                    holds,
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_storage::LockMode;

    #[test]
    fn immutability_table() {
        let rl = RetentionLock {
            min_age_seconds: 30 * 86_400,
            compliance: true,
            set_at: Utc::now(),
            host: "h".into(),
        };
        let ol = Ok(Some(LockPolicy::from_rule(LockMode::Compliance, 7)));
        type Case<'a> = (
            Option<&'a RetentionLock>,
            Result<Option<LockPolicy>, String>,
            &'a [&'a str],
        );
        let cases: Vec<Case> = vec![
            (None, Ok(None), &["none:", "delete permission"]),
            (
                Some(&rl),
                Ok(None),
                &["retention lock 30d, compliance mode", "holdfast only"],
            ),
            (
                None,
                ol.clone(),
                &[
                    "S3 Object Lock COMPLIANCE mode, 7d",
                    "enforced by the store",
                ],
            ),
            (Some(&rl), ol, &["Object Lock", "; retention lock 30d"]),
            (
                None,
                Err("AccessDenied".into()),
                &["unknown", "AccessDenied"],
            ),
        ];
        let got = immutability(&Err("record abc is damaged".into()), &Ok(None));
        assert!(
            got.starts_with("unknown") && got.contains("forget refuses"),
            "{got}"
        );
        for (i, (l, o, want)) in cases.iter().enumerate() {
            let got = immutability(&Ok(l.cloned()), o);
            for w in *want {
                assert!(got.contains(w), "case {i}: {got:?} lacks {w:?}");
            }
        }
    }
}
