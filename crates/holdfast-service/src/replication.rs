//! The continuous replication tasks (`holdfast replicate --source S` for every continuous
//! source whose kind ships its own log: SQLite WAL, MariaDB/MySQL binary logs), one child
//! process each, restarted when it dies with exponential backoff (1 s doubling to 5 min, reset
//! after a minute of healthy running).
//!
//! A task that runs but makes no progress is a failure too: when its log lags behind now by
//! more than its RPO it is `stalled` (an alert), and after another RPO it is restarted.

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::runner::{signal_group, Launcher};
use crate::snapshot::{TaskHealth, TaskState};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

struct Task {
    child: Option<Child>,
    started: Instant,
    restarts: u32,
    backoff: Duration,
    retry_at: Option<Instant>,
    health: TaskHealth,
    since: DateTime<Utc>,
    stalled_at: Option<Instant>,
    last_error: Option<String>,
}

/// The tasks this service hosts.
#[derive(Default)]
pub struct Supervisor {
    tasks: BTreeMap<String, Task>,
}

/// Per source: how far its log lags (seconds) and its RPO (seconds), from the newest snapshot.
pub type Lag = BTreeMap<String, (Option<i64>, Option<i64>)>;

impl Supervisor {
    /// Run exactly these sources' tasks: start the new ones, stop those no longer wanted (a
    /// reload).
    pub fn sync(&mut self, wanted: &[String], launcher: &Launcher) {
        let gone: Vec<String> = self
            .tasks
            .keys()
            .filter(|k| !wanted.contains(k))
            .cloned()
            .collect();
        for g in gone {
            if let Some(mut t) = self.tasks.remove(&g) {
                stop(&mut t);
            }
        }
        for w in wanted {
            if !self.tasks.contains_key(w) {
                let mut t = Task {
                    child: None,
                    started: Instant::now(),
                    restarts: 0,
                    backoff: FIRST_BACKOFF,
                    retry_at: None,
                    health: TaskHealth::Running,
                    since: Utc::now(),
                    stalled_at: None,
                    last_error: None,
                };
                launch(w, &mut t, launcher);
                self.tasks.insert(w.clone(), t);
            }
        }
    }

    /// Reap, restart, judge progress. Returns the sources whose state changed.
    pub fn poll(&mut self, launcher: &Launcher, lag: &Lag) -> Vec<String> {
        let mut changed = Vec::new();
        for (name, t) in self.tasks.iter_mut() {
            let before = t.health;
            if let Some(c) = &mut t.child {
                if let Ok(Some(status)) = c.try_wait() {
                    t.child = None;
                    t.last_error = Some(format!("replicate exited ({status})"));
                    if t.started.elapsed() > HEALTHY_AFTER {
                        t.backoff = FIRST_BACKOFF;
                    }
                    t.retry_at = Some(Instant::now() + t.backoff);
                    t.backoff = (t.backoff * 2).min(MAX_BACKOFF);
                    t.health = TaskHealth::Restarting;
                    tracing::warn!(source = %name, %status, "replication task died; restarting after backoff");
                }
            }
            if t.child.is_none() && t.retry_at.is_some_and(|r| Instant::now() >= r) {
                t.restarts += 1;
                launch(name, t, launcher);
            }
            if t.child.is_some() {
                let stalled = matches!(lag.get(name), Some((Some(l), Some(rpo))) if l > rpo);
                if stalled {
                    let at = *t.stalled_at.get_or_insert_with(Instant::now);
                    t.health = TaskHealth::Stalled;
                    let rpo = lag.get(name).and_then(|x| x.1).unwrap_or(60).max(1) as u64;
                    if at.elapsed() > Duration::from_secs(rpo) {
                        tracing::warn!(source = %name, "replication makes no progress; restarting it");
                        t.last_error =
                            Some("no progress for longer than its RPO: restarted".into());
                        stop(t);
                        t.restarts += 1;
                        t.stalled_at = None;
                        launch(name, t, launcher);
                        t.health = TaskHealth::Stalled;
                    }
                } else {
                    t.stalled_at = None;
                    t.health = TaskHealth::Running;
                }
            }
            if t.health != before {
                t.since = Utc::now();
                changed.push(name.clone());
            }
        }
        changed
    }

    /// The tasks' states.
    pub fn states(&self) -> Vec<TaskState> {
        self.tasks
            .iter()
            .map(|(n, t)| TaskState {
                source: n.clone(),
                health: t.health,
                restarts: t.restarts,
                since: t.since,
                last_error: t.last_error.clone(),
            })
            .collect()
    }

    /// Stop every task (SIGTERM, then SIGKILL after 10 s) and wait for them.
    pub fn stop_all(&mut self) {
        for t in self.tasks.values_mut() {
            stop(t);
        }
        self.tasks.clear();
    }
}

fn launch(name: &str, t: &mut Task, launcher: &Launcher) {
    t.started = Instant::now();
    t.retry_at = None;
    match launcher.replicate(name) {
        Ok(c) => t.child = Some(c),
        Err(e) => {
            t.last_error = Some(format!("cannot start replicate: {e}"));
            t.health = TaskHealth::Restarting;
            t.retry_at = Some(Instant::now() + t.backoff);
            t.backoff = (t.backoff * 2).min(MAX_BACKOFF);
        }
    }
}

fn stop(t: &mut Task) {
    if let Some(mut c) = t.child.take() {
        signal_group(c.id(), libc::SIGTERM);
        let until = Instant::now() + crate::runner::GRACE;
        while Instant::now() < until {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        signal_group(c.id(), libc::SIGKILL);
        let _ = c.wait();
    }
}
