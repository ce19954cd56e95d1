//! Which alerts fire now, from a snapshot (pure). (Placeholder interface: the notifications
//! owner replaces the body.)

use serde::Serialize;

use crate::snapshot::Snapshot;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A source's newest job failed.
    JobFailed,
    /// A source's RPO is breached.
    RpoBreached,
    /// A source's RTO is breached.
    RtoBreached,
    /// A source's newest drill failed.
    DrillFailed,
    /// A replication task makes no progress.
    ReplicationStalled,
    /// The workload file could not be reloaded.
    ConfigInvalid,
    /// A repository cannot be read.
    RepositoryUnreadable,
}

/// One firing condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// Stable identity across snapshots (`rpo:SOURCE`).
    pub key: String,
    /// What.
    pub kind: AlertKind,
    /// The source, if it is about one.
    pub source: Option<String>,
    /// One line for people.
    pub summary: String,
}

/// The alerts firing in this snapshot.
pub fn evaluate(s: &Snapshot) -> Vec<Alert> {
    s.sources
        .iter()
        .filter(|x| x.rpo_met == Some(false))
        .map(|x| Alert {
            key: format!("rpo:{}", x.name),
            kind: AlertKind::RpoBreached,
            source: Some(x.name.clone()),
            summary: format!("{}: RPO breached", x.name),
        })
        .collect()
}
