//! Notifications on changes of state: one message when an alert begins to fire, one when it
//! is resolved, a reminder every `[service.notify] reminder` while it fires, nothing else.
//!
//! [`machine`] decides (pure); [`format`] shapes the bodies (pure); [`deliver`] sends them,
//! one thread per destination, in order, with retries and exponential backoff. The firing set
//! and the messages not yet delivered live in `<state dir>/service/alerts.json`, written
//! atomically at every change, so a restarted service neither sends an alert again nor loses
//! one it had not delivered.

pub mod deliver;
pub mod format;
pub mod machine;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use chrono::{DateTime, Duration, Utc};
use holdfast_policy::config::NotifyConfig;
use serde::{Deserialize, Serialize};

use crate::alerts::Alert;
pub use deliver::Destination;
pub use machine::{Event, Message};

/// The most messages waiting for one destination; beyond it the oldest is dropped (and
/// logged), so a destination that is down for long cannot grow the state without bound.
pub const MAX_QUEUE: usize = 1000;

/// One message waiting for one destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// Order of queueing (unique).
    pub id: u64,
    /// The destination's identity ([`Destination::id`]).
    pub dest: String,
    /// What to send.
    pub message: Message,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// What `alerts.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    /// The alerts firing (and those waiting out their hold).
    #[serde(flatten)]
    pub alerts: machine::State,
    /// Messages not yet delivered, in order.
    pub outbox: Vec<Pending>,
}

/// The state shared by the service loop and the delivery threads.
pub(crate) struct Shared {
    pub(crate) state: Mutex<Persisted>,
    pub(crate) wake: Condvar,
    pub(crate) stop: AtomicBool,
    path: PathBuf,
}

impl Shared {
    /// Write the state atomically (temporary file, fsync, rename); log if it cannot.
    pub(crate) fn save(&self, p: &Persisted) {
        if let Err(e) = write_atomic(
            &self.path,
            &serde_json::to_vec_pretty(p).expect("serializes"),
        ) {
            tracing::error!(path = %self.path.display(), "cannot save the notification state (a restart may send alerts again or lose undelivered ones): {e}");
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The state file under a state directory.
pub fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join("service").join("alerts.json")
}

/// Read the state; a missing file is an empty state, an unreadable one is logged and
/// replaced (its alerts are sent again rather than never).
pub fn load(path: &Path) -> Persisted {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::error!(path = %path.display(), "the notification state is unreadable ({e}); starting afresh: alerts firing now are sent again");
            Persisted::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
        Err(e) => {
            tracing::error!(path = %path.display(), "cannot read the notification state ({e}); starting afresh: alerts firing now are sent again");
            Persisted::default()
        }
    }
}

/// Sends one message per change of state.
pub struct Notifier {
    reminder: Option<Duration>,
    host: String,
    dests: Vec<String>,
    shared: Arc<Shared>,
    next_id: u64,
}

impl Notifier {
    /// A notifier for this configuration; its state lives under `state_dir`. Starts one
    /// delivery thread per destination, which first delivers what a previous service left
    /// undelivered.
    pub fn new(cfg: &NotifyConfig, state_dir: &Path, host: &str) -> Notifier {
        let path = state_path(state_dir);
        let mut st = load(&path);
        let dests = deliver::destinations(cfg);
        let ids: Vec<String> = dests.iter().map(Destination::id).collect();
        let before = st.outbox.len();
        st.outbox.retain(|p| ids.contains(&p.dest));
        if st.outbox.len() < before {
            tracing::warn!(
                dropped = before - st.outbox.len(),
                "undelivered notifications for destinations no longer configured are dropped"
            );
        }
        let next_id = st.outbox.iter().map(|p| p.id + 1).max().unwrap_or(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(st),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            path,
        });
        for d in dests {
            deliver::spawn(d, shared.clone());
        }
        Notifier {
            reminder: cfg.reminder,
            host: host.to_string(),
            dests: ids,
            shared,
            next_id,
        }
    }

    /// Take the alerts firing now: queue the messages their change of state calls for and
    /// return at once (delivery happens in the background).
    pub fn observe(&mut self, alerts: &[Alert], now: DateTime<Utc>) {
        let mut st = self.shared.state.lock().expect("not poisoned");
        let msgs = machine::step(&mut st.alerts, alerts, now, self.reminder, &self.host);
        if msgs.is_empty() {
            return;
        }
        for m in msgs {
            match m.event {
                Event::Resolved => {
                    tracing::info!(key = %m.key, event = m.event.as_str(), "alert: {}", m.summary)
                }
                _ => {
                    tracing::warn!(key = %m.key, event = m.event.as_str(), "alert: {}", m.summary)
                }
            }
            for d in &self.dests {
                st.outbox.push(Pending {
                    id: self.next_id,
                    dest: d.clone(),
                    message: m.clone(),
                    attempts: 0,
                });
                self.next_id += 1;
                let waiting: Vec<usize> = st
                    .outbox
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| &p.dest == d)
                    .map(|(i, _)| i)
                    .collect();
                if waiting.len() > MAX_QUEUE {
                    let old = st.outbox.remove(waiting[0]);
                    tracing::error!(dest = %d, key = %old.message.key, event = old.message.event.as_str(), "notification dropped: more than {MAX_QUEUE} wait for this destination");
                }
            }
        }
        self.shared.save(&st);
        drop(st);
        self.shared.wake.notify_all();
    }

    /// The alerts firing, as the notifier knows them.
    pub fn firing(&self) -> Vec<String> {
        let st = self.shared.state.lock().expect("not poisoned");
        st.alerts.firing.keys().cloned().collect()
    }

    /// How many messages wait for delivery.
    pub fn pending(&self) -> usize {
        self.shared.state.lock().expect("not poisoned").outbox.len()
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::AlertKind;
    use std::time::Instant;

    fn a(key: &str) -> Alert {
        Alert {
            key: key.into(),
            kind: AlertKind::JobFailed,
            source: Some("s".into()),
            summary: format!("{key} fires"),
        }
    }

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!(
                    "{} {}",
                    v["event"].as_str().unwrap(),
                    v["key"].as_str().unwrap()
                )
            })
            .collect()
    }

    fn wait(what: &str, f: impl Fn() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < std::time::Duration::from_secs(20), "{what}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// A destination that refuses keeps its messages, in order, across a restart of the
    /// notifier, and gets them once it accepts; the restarted notifier sends nothing new for
    /// alerts that still fire.
    #[test]
    fn undelivered_messages_survive_a_restart_and_arrive_in_order() {
        let d = tempfile::tempdir().unwrap();
        let ok = d.path().join("ok");
        let out = d.path().join("out.jsonl");
        let tries = d.path().join("tries");
        let cfg = NotifyConfig {
            command: Some(format!(
                "echo x >> {}; test -e {} && cat >> {}",
                tries.display(),
                ok.display(),
                out.display()
            )),
            ..Default::default()
        };
        let now = Utc::now();
        let mut n = Notifier::new(&cfg, d.path(), "h");
        n.observe(&[a("job:a"), a("job:b")], now);
        n.observe(&[a("job:a"), a("job:b")], now);
        wait("a failed attempt", || tries.exists());
        assert_eq!(n.pending(), 2);
        drop(n);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let saved = load(&state_path(d.path()));
        assert_eq!(saved.outbox.len(), 2, "{saved:?}");
        assert!(saved.outbox[0].attempts >= 1, "{saved:?}");
        assert!(lines(&out).is_empty());
        std::fs::write(&ok, "").unwrap();
        let mut n = Notifier::new(&cfg, d.path(), "h");
        n.observe(&[a("job:a"), a("job:b")], now + Duration::seconds(5));
        wait("delivery after the restart", || lines(&out).len() == 2);
        wait("an empty outbox", || n.pending() == 0);
        assert_eq!(lines(&out), ["firing job:a", "firing job:b"]);
        n.observe(&[a("job:b")], now + Duration::seconds(6));
        wait("the resolution", || lines(&out).len() == 3);
        assert_eq!(lines(&out)[2], "resolved job:a");
        assert_eq!(n.firing(), ["job:b"]);
        assert_eq!(load(&state_path(d.path())).alerts.firing.len(), 1);
    }

    #[test]
    fn an_unreadable_state_file_starts_afresh() {
        let d = tempfile::tempdir().unwrap();
        let p = state_path(d.path());
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "{not json").unwrap();
        assert_eq!(load(&p), Persisted::default());
        let mut n = Notifier::new(&NotifyConfig::default(), d.path(), "h");
        n.observe(&[a("job:a")], Utc::now());
        assert_eq!(load(&p).alerts.firing.len(), 1);
        assert!(!p.with_extension("json.tmp").exists());
    }
}
