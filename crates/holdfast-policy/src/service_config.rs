//! The `[service]` table of the workload file: how `holdfast serve` schedules, listens,
//! reports to the fleet and notifies. Every key has a default, so a workload without the table
//! runs under the service as it runs under cron.

use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::Duration;
use serde::Deserialize;

use crate::duration;

/// The address `holdfast serve` listens on by default (loopback only: anything else needs a
/// bearer token).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

/// `[service]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServiceConfig {
    /// Where the HTTP server listens (`127.0.0.1:9477`; `off` for none).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// A file holding the bearer token every request must carry (required when `listen` is
    /// not a loopback address).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM); with `tls-key`, the server speaks HTTPS only.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// The most jobs (backups, drills, maintenance) that run at once.
    #[serde(default = "default_max_jobs")]
    pub max_jobs: usize,
    /// Each source's start is delayed by a fixed share of this (from its name), so that many
    /// sources with one cadence do not all start in the same second.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub jitter: Option<Duration>,
    /// How often the status (and so `/metrics` and the alerts) is computed anew from the
    /// repositories, besides after every job.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub refresh: Option<Duration>,
    /// How often the service records in each repository that this host is alive, with its
    /// sources' objectives (the fleet view's evidence); default 5 minutes.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub heartbeat: Option<Duration>,
    /// How long SIGTERM waits for running jobs before it stops them (and records them failed).
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub stop_timeout: Option<Duration>,
    /// Daily window (`"02:00-04:00"`, UTC) in which retention and prune run; without it,
    /// retention runs right after each backup, as `protect` does.
    #[serde(default)]
    pub maintenance_window: Option<String>,
    /// Notifications.
    #[serde(default)]
    pub notify: NotifyConfig,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            listen: default_listen(),
            token_file: None,
            tls_cert: None,
            tls_key: None,
            max_jobs: default_max_jobs(),
            jitter: None,
            refresh: None,
            heartbeat: None,
            stop_timeout: None,
            maintenance_window: None,
            notify: NotifyConfig::default(),
        }
    }
}

fn default_listen() -> String {
    DEFAULT_LISTEN.into()
}

fn default_max_jobs() -> usize {
    2
}

impl ServiceConfig {
    /// How often the status is recomputed (default 30 s).
    pub fn refresh(&self) -> Duration {
        self.refresh.unwrap_or_else(|| Duration::seconds(30))
    }
    /// How often the heartbeat is written (default 5 min).
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat.unwrap_or_else(|| Duration::minutes(5))
    }
    /// How long SIGTERM waits for running jobs (default 60 s).
    pub fn stop_timeout(&self) -> Duration {
        self.stop_timeout.unwrap_or_else(|| Duration::seconds(60))
    }
    /// The listen address, `None` for `off`.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, String> {
        if self.listen == "off" {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|e| {
            format!(
                "[service] listen = {:?} is no address ({e}): give IP:PORT such as {DEFAULT_LISTEN}, or \"off\"",
                self.listen
            )
        })
    }
    /// The maintenance window as minutes since midnight UTC (start, end; end < start wraps).
    pub fn maintenance(&self) -> Result<Option<(u32, u32)>, String> {
        self.maintenance_window
            .as_deref()
            .map(parse_window)
            .transpose()
    }
    /// Check what serde cannot: addresses, the window, the token rule, TLS pairs.
    pub fn validate(&self) -> Result<(), String> {
        let addr = self.listen_addr()?;
        if let Some(a) = addr {
            if !a.ip().is_loopback() && self.token_file.is_none() {
                return Err(format!(
                    "[service] listen = {:?} is reachable from other machines: add token-file = \"PATH\" (a file holding the bearer token clients send), or listen on 127.0.0.1",
                    self.listen
                ));
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("[service] tls-cert and tls-key go together: give both or neither".into());
        }
        if self.max_jobs == 0 {
            return Err("[service] max-jobs must be at least 1".into());
        }
        self.maintenance()?;
        for w in &self.notify.webhook {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(format!(
                    "[[service.notify.webhook]] url {:?} must start with http:// or https://",
                    w.url
                ));
            }
            if !WEBHOOK_FORMATS.contains(&w.format.as_str()) {
                return Err(format!(
                    "[[service.notify.webhook]] format {:?} is unknown: give one of {}",
                    w.format,
                    WEBHOOK_FORMATS.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// Parse `"HH:MM-HH:MM"` into minutes since midnight.
pub fn parse_window(s: &str) -> Result<(u32, u32), String> {
    let bad = || {
        format!("[service] maintenance-window = {s:?}: give \"HH:MM-HH:MM\" in UTC, e.g. \"02:00-04:00\"")
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let hm = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (a, b) = (hm(a).ok_or_else(bad)?, hm(b).ok_or_else(bad)?);
    if a == b {
        return Err(bad());
    }
    Ok((a, b))
}

/// `[service.notify]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NotifyConfig {
    /// Repeat a still-firing alert this often (default: never).
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub reminder: Option<Duration>,
    /// Webhooks (`[[service.notify.webhook]]`).
    #[serde(default)]
    pub webhook: Vec<WebhookConfig>,
    /// A command run once per message, the message in its environment and on stdin (JSON).
    #[serde(default)]
    pub command: Option<String>,
}

/// One webhook.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: String,
    /// The body's shape: `json` (holdfast's own), `slack` (also Mattermost, Rocket.Chat),
    /// `discord`, `teams`, `ntfy`, `gotify`.
    #[serde(default = "default_format")]
    pub format: String,
    /// A file whose content is sent as `Authorization: Bearer ...`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// The webhook formats `holdfast serve` can send.
pub const WEBHOOK_FORMATS: &[&str] = &["json", "slack", "discord", "teams", "ntfy", "gotify"];

fn default_format() -> String {
    "json".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        for (s, want) in [
            ("02:00-04:00", Some((120, 240))),
            ("23:30-00:30", Some((1410, 30))),
            ("2:5-3:00", Some((125, 180))),
            ("24:00-01:00", None),
            ("02:00", None),
            ("02:00-02:00", None),
            ("02:60-03:00", None),
        ] {
            assert_eq!(parse_window(s).ok(), want, "{s}");
        }
    }

    #[test]
    fn webhook_formats_are_checked() {
        let hook = |format: &str| ServiceConfig {
            notify: NotifyConfig {
                webhook: vec![WebhookConfig {
                    url: "https://example.invalid/h".into(),
                    format: format.into(),
                    token_file: None,
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        for f in WEBHOOK_FORMATS {
            assert!(hook(f).validate().is_ok(), "{f}");
        }
        let e = hook("xml").validate().unwrap_err();
        assert!(
            e.contains("\"xml\" is unknown") && e.contains("ntfy"),
            "{e}"
        );
    }

    #[test]
    fn a_public_listen_address_needs_a_token() {
        let mut c = ServiceConfig {
            listen: "0.0.0.0:9477".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("token-file"));
        c.token_file = Some("/t".into());
        assert!(c.validate().is_ok());
        c.listen = "nonsense".into();
        assert!(c.validate().is_err());
        c.listen = "off".into();
        assert_eq!(c.listen_addr().unwrap(), None);
        assert!(ServiceConfig::default().validate().is_ok());
    }
}
