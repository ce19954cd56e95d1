//! `holdfast replicate`: log shipping in the foreground for every continuous source whose
//! kind ships its own log (SQLite WAL frames, binary log streams), one thread
//! per source, each driving its [`Replicator`] in rounds until asked to stop.
//!
//! A round that fails is reported and retried at the next one; a replicator never reports as
//! shipped what it did not store. A stalled replication shows in `status` as the age of the
//! source's newest archived piece (its RPO), never as silence.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Runtime, RuntimeError};
use crate::config::Workload;
use crate::jobs::JobError;
use crate::sources::pitr::{Replicator, Shipped};

/// Which sources to replicate, and for how long.
#[derive(Debug, Clone, Default)]
pub struct ReplicateOptions {
    /// Only these sources (empty: every source that has a replicator).
    pub sources: Vec<String>,
    /// Stop after this many rounds per source (tests, cron-style use).
    pub rounds: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// What happened in one round, as reported to the front end.
pub enum RoundEvent<'a> {
    /// A replicator started.
    Started {
        /// The source.
        source: &'a str,
        /// What it ships.
        what: &'a str,
    },
    /// A round ended.
    Round {
        /// The source.
        source: &'a str,
        /// What it shipped, or why it failed.
        result: &'a Result<Shipped, String>,
    },
}

/// What a replicate run did, per source.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Replicated {
    /// The source.
    pub source: String,
    /// Rounds run.
    pub rounds: u64,
    /// Rounds that failed.
    pub failed_rounds: u64,
    /// Pieces stored.
    pub pieces: usize,
    /// Bytes stored.
    pub bytes: u64,
    /// The last failure, if the last round failed.
    pub last_error: Option<String>,
}

impl Runtime {
    /// Run every selected source's replicator until `stop` is set (or the limits in `opts`).
    /// `report` is called from the sources' threads.
    pub fn replicate(
        &self,
        w: &Workload,
        opts: &ReplicateOptions,
        stop: &AtomicBool,
        report: &(dyn Fn(RoundEvent) + Sync),
    ) -> Result<Vec<Replicated>, RuntimeError> {
        for n in &opts.sources {
            if w.source(n).is_none() {
                return Err(JobError::unknown_source(w, n).into());
            }
        }
        let mut jobs: Vec<(String, Box<dyn Replicator>, holdfast_core::Repository)> = Vec::new();
        for s in &w.sources {
            let name = s.name();
            if !opts.sources.is_empty() && !opts.sources.iter().any(|n| n == name) {
                continue;
            }
            let Some(r) = s.driver().replicator(name) else {
                if !opts.sources.is_empty() {
                    return Err(RuntimeError::Replicate {
                        source_name: name.into(),
                        message: "it ships no log: only continuous SQLite and MySQL/MariaDB sources are replicated (a continuous PostgreSQL source archives through archive_command = holdfast wal-push)".into(),
                    });
                }
                continue;
            };
            let (rname, rcfg) = w.repository_of(s).ok_or_else(|| RuntimeError::Replicate {
                source_name: name.into(),
                message: "the source has no repository: give it `repository = NAME`".into(),
            })?;
            let repo = self.open_workload_repository(w, rname, rcfg, true)?;
            jobs.push((name.to_string(), r, repo));
        }
        if jobs.is_empty() {
            return Err(RuntimeError::Replicate {
                source_name: String::new(),
                message: "no source of the workload ships a log: declare one continuous (see `holdfast plan`)".into(),
            });
        }
        let started = Instant::now();
        let out = std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|(name, mut r, repo)| {
                    scope.spawn(move || {
                        let what = r.describe();
                        report(RoundEvent::Started {
                            source: &name,
                            what: &what,
                        });
                        let mut done = Replicated {
                            source: name.clone(),
                            ..Default::default()
                        };
                        loop {
                            let result = r.round(&repo).map_err(|e| e.to_string());
                            done.rounds += 1;
                            match &result {
                                Ok(s) => {
                                    done.pieces += s.pieces;
                                    done.bytes += s.bytes;
                                    done.last_error = None;
                                }
                                Err(e) => {
                                    done.failed_rounds += 1;
                                    done.last_error = Some(e.clone());
                                }
                            }
                            report(RoundEvent::Round {
                                source: &name,
                                result: &result,
                            });
                            if opts.rounds.is_some_and(|n| done.rounds >= n) {
                                break;
                            }
                            if !pause(r.interval(), stop, started, opts.duration) {
                                break;
                            }
                        }
                        r.stop();
                        done
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect::<Vec<_>>()
        });
        Ok(out)
    }
}

/// Sleep `d` in short steps; false when it is time to stop.
fn pause(d: Duration, stop: &AtomicBool, started: Instant, limit: Option<Duration>) -> bool {
    let until = Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) || limit.is_some_and(|l| started.elapsed() >= l) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}
