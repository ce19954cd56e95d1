//! Delivery: one thread per destination takes that destination's messages in order and
//! sends each until it is accepted, retrying with exponential backoff (1 s doubling to
//! [`MAX_BACKOFF`]) and giving up after [`GIVE_UP`]. Failures are logged; the service loop
//! never waits for a destination.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_policy::config::{NotifyConfig, WebhookConfig};

use super::machine::Message;
use super::{format, Shared};

/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A message not delivered this long after it was made is dropped (and logged).
pub const GIVE_UP: Duration = Duration::from_secs(3600);
/// A webhook request or a notify-command that takes longer has failed.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Where messages go.
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    /// `[[service.notify.webhook]]`.
    Webhook(WebhookConfig),
    /// `[service.notify] command`.
    Command(String),
}

/// The destinations of a configuration (webhooks in order, then the command).
pub fn destinations(cfg: &NotifyConfig) -> Vec<Destination> {
    let mut d: Vec<Destination> = cfg
        .webhook
        .iter()
        .cloned()
        .map(Destination::Webhook)
        .collect();
    if let Some(c) = &cfg.command {
        d.push(Destination::Command(c.clone()));
    }
    d
}

/// The wait after `attempts` failed attempts: 1 s, 2 s, 4 s ... up to [`MAX_BACKOFF`].
pub fn backoff(attempts: u32) -> Duration {
    let secs = 1u64 << attempts.saturating_sub(1).min(20);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

impl Destination {
    /// A stable identity (what undelivered messages are filed under).
    pub fn id(&self) -> String {
        match self {
            Destination::Webhook(w) => format!("webhook {} {}", w.format, w.url),
            Destination::Command(c) => format!("command {c}"),
        }
    }

    /// Send one message; `Err` says why it was not accepted.
    pub fn send(&self, m: &Message, http: &reqwest::blocking::Client) -> Result<(), String> {
        match self {
            Destination::Webhook(w) => post(w, m, http),
            Destination::Command(c) => run(c, m),
        }
    }
}

fn post(w: &WebhookConfig, m: &Message, http: &reqwest::blocking::Client) -> Result<(), String> {
    let r = format::render(&w.format, m).ok_or_else(|| {
        format!(
            "unknown format {:?}: give one of {}",
            w.format,
            format::FORMATS.join(", ")
        )
    })?;
    let mut req = http
        .post(&w.url)
        .header("Content-Type", r.content_type)
        .header(
            "User-Agent",
            concat!("holdfast/", env!("CARGO_PKG_VERSION")),
        )
        .body(r.body);
    for (k, v) in r.headers {
        req = req.header(k, v);
    }
    if let Some(p) = &w.token_file {
        let t =
            std::fs::read_to_string(p).map_err(|e| format!("token-file {}: {e}", p.display()))?;
        req = req.bearer_auth(t.trim());
    }
    let resp = req.send().map_err(|e| {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(c) = src {
            s.push_str(&format!(": {c}"));
            src = c.source();
        }
        s
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body: String = resp.text().unwrap_or_default().chars().take(200).collect();
    Err(format!("HTTP {status}: {body}"))
}

/// The message's fields as `HOLDFAST_ALERT_*` variables.
pub fn env_of(m: &Message) -> Vec<(&'static str, String)> {
    vec![
        ("HOLDFAST_ALERT_EVENT", m.event.as_str().into()),
        (
            "HOLDFAST_ALERT_KIND",
            serde_json::to_value(m.kind)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
        ),
        ("HOLDFAST_ALERT_KEY", m.key.clone()),
        (
            "HOLDFAST_ALERT_SOURCE",
            m.source.clone().unwrap_or_default(),
        ),
        ("HOLDFAST_ALERT_SUMMARY", m.summary.clone()),
        ("HOLDFAST_ALERT_HOST", m.host.clone()),
        ("HOLDFAST_ALERT_AT", m.at.to_rfc3339()),
        ("HOLDFAST_ALERT_SINCE", m.since.to_rfc3339()),
        ("HOLDFAST_ALERT_TITLE", format::title(m)),
    ]
}

fn run(cmd: &str, m: &Message) -> Result<(), String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .envs(env_of(m))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run sh -c {cmd:?}: {e}"))?;
    let json = serde_json::to_vec(m).expect("messages serialize");
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input is fine.
        let _ = stdin.write_all(&json).and_then(|_| stdin.write_all(b"\n"));
    }
    let mut err = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = e.take(64 * 1024).read_to_string(&mut s);
        }
        s
    });
    let t = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if t.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "command {cmd:?} did not finish within {TIMEOUT:?}: killed"
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("command {cmd:?}: {e}")),
        }
    };
    let stderr = reader.join().unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        let tail: String = stderr.trim().chars().take(300).collect();
        Err(format!("command {cmd:?} failed ({status}): {tail}"))
    }
}

/// Start the delivery thread of one destination.
pub(crate) fn spawn(dest: Destination, shared: Arc<Shared>) {
    let name = format!(
        "holdfast-notify-{}",
        dest.id().chars().take(20).collect::<String>()
    );
    let spawned = std::thread::Builder::new()
        .name(name)
        .spawn(move || worker(dest, shared));
    if let Err(e) = spawned {
        tracing::error!("cannot start a notification thread: {e}");
    }
}

fn worker(dest: Destination, shared: Arc<Shared>) {
    let id = dest.id();
    let http = match reqwest::blocking::Client::builder()
        .timeout(TIMEOUT)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(dest = %id, "cannot make an HTTP client; this destination gets no notifications: {e}");
            return;
        }
    };
    // The next attempt of the message at the head of the queue (by id).
    let mut retry: Option<(u64, Instant)> = None;
    loop {
        let head = {
            let mut st = shared.state.lock().expect("not poisoned");
            loop {
                if shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                let head = st.outbox.iter().find(|p| p.dest == id).cloned();
                let wait = match (&head, retry) {
                    (None, _) => Some(Duration::from_secs(1)),
                    (Some(h), Some((rid, at))) if rid == h.id && at > Instant::now() => {
                        Some(at - Instant::now())
                    }
                    _ => None,
                };
                match wait {
                    Some(w) => {
                        st = shared.wake.wait_timeout(st, w).expect("not poisoned").0;
                    }
                    None => break head.expect("a head when there is no wait"),
                }
            }
        };
        let sent = dest.send(&head.message, &http);
        let mut st = shared.state.lock().expect("not poisoned");
        let Some(i) = st.outbox.iter().position(|p| p.id == head.id) else {
            continue;
        };
        match sent {
            Ok(()) => {
                st.outbox.remove(i);
                retry = None;
                tracing::info!(dest = %id, key = %head.message.key, event = head.message.event.as_str(), attempts = head.attempts + 1, "notification delivered");
            }
            Err(why) => {
                let p = &mut st.outbox[i];
                p.attempts += 1;
                let age = (chrono::Utc::now() - p.message.at)
                    .to_std()
                    .unwrap_or_default();
                if age >= GIVE_UP {
                    tracing::error!(dest = %id, key = %p.message.key, event = p.message.event.as_str(), attempts = p.attempts, "notification dropped: not delivered within {GIVE_UP:?}: {why}");
                    st.outbox.remove(i);
                    retry = None;
                } else {
                    let wait = backoff(p.attempts);
                    tracing::warn!(dest = %id, key = %p.message.key, event = p.message.event.as_str(), attempts = p.attempts, "notification not delivered, retrying in {wait:?}: {why}");
                    retry = Some((p.id, Instant::now() + wait));
                }
            }
        }
        shared.save(&st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap() {
        let got: Vec<u64> = (1..=12).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
        // Giving up after an hour takes a bounded number of attempts.
        let mut total = Duration::ZERO;
        let mut n = 0;
        while total < GIVE_UP {
            n += 1;
            total += backoff(n);
        }
        assert!(n < 25, "{n}");
    }
}
