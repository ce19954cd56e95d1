//! Notifications on changes of state. (Placeholder interface: the notifications owner
//! replaces the body.)

use std::path::Path;

use chrono::{DateTime, Utc};
use holdfast_policy::config::NotifyConfig;

use crate::alerts::Alert;

/// Sends one message per change of state.
pub struct Notifier {
    _cfg: NotifyConfig,
}

impl Notifier {
    /// A notifier for this configuration; its state lives under `state_dir`.
    pub fn new(cfg: &NotifyConfig, _state_dir: &Path, _host: &str) -> Notifier {
        Notifier { _cfg: cfg.clone() }
    }
    /// Take the alerts firing now.
    pub fn observe(&mut self, _alerts: &[Alert], _now: DateTime<Utc>) {}
}
