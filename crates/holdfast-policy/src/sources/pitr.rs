//! Continuous protection (point-in-time recovery): what every kind with a change log shares.
//!
//! A continuous source keeps base backups (ordinary recovery points, on the class's cadence)
//! and archives its change log between them as log batches ([`holdfast_core::logs`]). Each
//! kind knows how its pieces chain (PostgreSQL segment numbers and timelines, SQLite WAL
//! generations and offsets, binary log files and positions) and implements [`Continuous`];
//! status, check, drills and restore read only the [`Window`] it returns, so a gap is reported
//! the same way for every kind.

use chrono::{DateTime, Utc};
use holdfast_core::progress::Progress;
use holdfast_core::snapshot::SnapshotEntry;
use holdfast_core::Repository;
use serde::Serialize;

use super::{Conn, SourceError};

/// Where a point-in-time restore stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryTarget {
    /// Everything archived.
    Latest,
    /// Every change committed at or before this instant, and none after.
    Time(DateTime<Utc>),
    /// A PostgreSQL log sequence number (`16/B374D848`), or a kind's own position.
    Position(String),
}

impl std::fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoveryTarget::Latest => f.write_str("latest"),
            RecoveryTarget::Time(t) => write!(f, "{}", t.to_rfc3339()),
            RecoveryTarget::Position(p) => f.write_str(p),
        }
    }
}

/// A hole in a log chain: pieces that should be in the repository and are not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gap {
    /// The first missing piece, by the kind's own name (`000000010000000000000017`).
    pub missing: String,
    /// How many pieces are missing from there (1 when only one is known to be).
    pub count: u64,
    /// The last instant recoverable before the gap.
    pub after: Option<DateTime<Utc>>,
    /// The first instant recoverable again after it (the next base backup), if any.
    pub resumes: Option<DateTime<Utc>>,
}

/// What a continuous source can be recovered to, from what the repository holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Window {
    /// The earliest instant recoverable (the end of the oldest usable base backup).
    pub from: Option<DateTime<Utc>>,
    /// Every change committed at or before this instant is recoverable (the newest archived
    /// piece's last time, reached through an unbroken chain). Its age is the source's RPO.
    pub to: Option<DateTime<Utc>>,
    /// Holes in the chain after a kept base backup; each makes the span from its `after` to
    /// its `resumes` unrecoverable.
    pub gaps: Vec<Gap>,
    /// Other findings that make the window untrustworthy (a piece pushed twice with different
    /// bytes, a damaged batch, a base backup with no log after it).
    pub problems: Vec<String>,
    /// Base backups and pieces counted (for people).
    pub bases: usize,
    /// Pieces archived.
    pub pieces: usize,
}

impl Window {
    /// Whether the chain is whole: no gap and no problem.
    pub fn whole(&self) -> bool {
        self.gaps.is_empty() && self.problems.is_empty()
    }

    /// Whether `t` can be recovered to exactly.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        let (Some(from), Some(to)) = (self.from, self.to) else {
            return false;
        };
        t >= from
            && t <= to
            && !self
                .gaps
                .iter()
                .any(|g| g.after.is_none_or(|a| t > a) && g.resumes.is_none_or(|r| t < r))
    }
}

/// A point-in-time restore.
pub struct PitrRestore<'a> {
    /// The repository.
    pub repo: &'a Repository,
    /// The source's name in the workload.
    pub source: &'a str,
    /// The workload file (absolute): what a restored server's log fetch command reads
    /// (`restore_command = 'holdfast --config WORKLOAD wal-fetch ...'`).
    pub workload: &'a std::path::Path,
    /// The source's base backups (its own complete recovery points, oldest first).
    pub bases: &'a [SnapshotEntry],
    /// The source's log batches of its kind, made by the hosts whose base backups count
    /// (oldest first).
    pub logs: &'a [SnapshotEntry],
    /// Where to stop.
    pub target: &'a RecoveryTarget,
    /// Where to restore into (the kind's meaning: an empty data directory, a file).
    pub into: Option<&'a str>,
    /// Replace what is there.
    pub replace: bool,
    /// The server to restore into, where the kind restores into one.
    pub conn: &'a Conn,
    /// Start the restored server and wait until it reached the target (PostgreSQL).
    pub start: bool,
    /// Progress.
    pub progress: &'a dyn Progress,
}

/// What a point-in-time restore did.
#[derive(Debug, Clone, Serialize)]
pub struct PitrRestored {
    /// The base backup used (hex id).
    pub base: String,
    /// The target asked for.
    pub target: RecoveryTarget,
    /// The instant actually recovered to, when known.
    pub reached: Option<DateTime<Utc>>,
    /// What was done, one line each.
    pub done: Vec<String>,
}

/// A kind with a change log archived between base backups.
pub trait Continuous: Send + Sync {
    /// Which log its batches hold.
    fn log_kind(&self) -> holdfast_core::logs::LogKind;
    /// What can be recovered: `bases` are the source's base backups (complete, oldest first),
    /// `batches` its log batches (oldest first), as read from the repository.
    fn window(
        &self,
        bases: &[&SnapshotEntry],
        batches: &[(&SnapshotEntry, &holdfast_core::logs::LogBatch)],
    ) -> Window;
    /// Restore to a point in time.
    fn restore_at(&self, job: &PitrRestore) -> Result<PitrRestored, SourceError>;
}

/// What one round of log shipping did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Shipped {
    /// Pieces stored this round (0 when nothing was new).
    pub pieces: usize,
    /// Bytes stored.
    pub bytes: u64,
    /// What happened, for people (a new generation, a restarted stream, ...).
    pub messages: Vec<String>,
}

/// Log shipping run by `holdfast replicate` in the foreground (SQLite WAL frames, a binary
/// log stream, `pg_receivewal`): one instance per source, driven in rounds.
pub trait Replicator: Send {
    /// What it ships, for people.
    fn describe(&self) -> String;
    /// The pause between two rounds.
    fn interval(&self) -> std::time::Duration;
    /// Ship what is new since the last round. A round that fails is retried at the next one;
    /// nothing it did not store may be reported as shipped.
    fn round(&mut self, repo: &Repository) -> Result<Shipped, SourceError>;
    /// Stop: end child processes, release locks (also called when a round failed for good).
    fn stop(&mut self) {}
}

/// Read a `--at` value: `latest`; an RFC 3339 time (`2026-12-01T10:31:24.5Z`); a time without
/// offset, in UTC (`2026-12-01 10:31:24`, fractions allowed); or a duration ago (`2m ago`,
/// `90s ago`, in the workload's duration grammar), counted from `now`.
pub fn parse_target(text: &str, now: DateTime<Utc>) -> Result<RecoveryTarget, String> {
    let t = text.trim();
    if t == "latest" {
        return Ok(RecoveryTarget::Latest);
    }
    if let Some(d) = t.strip_suffix(" ago") {
        let d = crate::duration::parse(d.trim())
            .map_err(|e| format!("--at {text:?}: {e} (write e.g. \"2m ago\")"))?;
        return Ok(RecoveryTarget::Time(now - d));
    }
    if let Ok(x) = DateTime::parse_from_rfc3339(t) {
        return Ok(RecoveryTarget::Time(x.with_timezone(&Utc)));
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(x) = chrono::NaiveDateTime::parse_from_str(t, f) {
            return Ok(RecoveryTarget::Time(x.and_utc()));
        }
    }
    Err(format!(
        "--at {text:?} is no time: give `latest`, an RFC 3339 time (2026-12-01T10:31:24Z), a UTC time (2026-12-01 10:31:24) or a duration ago (\"2m ago\")"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn targets_table() {
        let now = at("2026-12-01T10:00:00Z");
        let t = |s| RecoveryTarget::Time(at(s));
        let cases: &[(&str, Option<RecoveryTarget>)] = &[
            ("latest", Some(RecoveryTarget::Latest)),
            (" latest ", Some(RecoveryTarget::Latest)),
            ("2m ago", Some(t("2026-12-01T09:58:00Z"))),
            ("90s ago", Some(t("2026-12-01T09:58:30Z"))),
            ("2026-12-01T09:30:00Z", Some(t("2026-12-01T09:30:00Z"))),
            ("2026-12-01T10:30:00+01:00", Some(t("2026-12-01T09:30:00Z"))),
            ("2026-12-01 09:30:00", Some(t("2026-12-01T09:30:00Z"))),
            (
                "2026-12-01 09:30:00.250",
                Some(t("2026-12-01T09:30:00.250Z")),
            ),
            ("2026-12-01T09:30:00", Some(t("2026-12-01T09:30:00Z"))),
            ("yesterday", None),
            ("2m", None),
            ("ago", None),
            ("2x ago", None),
            ("2026-13-01 00:00:00", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_target(text, now).ok(), *want, "{text:?}");
        }
    }

    #[test]
    fn a_window_contains_only_what_its_chain_reaches() {
        let w = Window {
            from: Some(at("2026-12-01T08:00:00Z")),
            to: Some(at("2026-12-01T10:00:00Z")),
            gaps: vec![Gap {
                missing: "x".into(),
                count: 1,
                after: Some(at("2026-12-01T08:30:00Z")),
                resumes: Some(at("2026-12-01T09:00:00Z")),
            }],
            ..Default::default()
        };
        for (t, inside) in [
            ("2026-12-01T07:59:59Z", false),
            ("2026-12-01T08:00:00Z", true),
            ("2026-12-01T08:30:00Z", true),
            ("2026-12-01T08:30:01Z", false),
            ("2026-12-01T08:59:59Z", false),
            ("2026-12-01T09:00:00Z", true),
            ("2026-12-01T10:00:00Z", true),
            ("2026-12-01T10:00:01Z", false),
        ] {
            assert_eq!(w.contains(at(t)), inside, "{t}");
        }
        assert!(!w.whole());
        assert!(!Window::default().contains(at("2026-12-01T08:00:00Z")));
    }
}
