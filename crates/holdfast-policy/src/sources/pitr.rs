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
    /// Restoring another host's points (`--host`): a log fetch command must fetch that host's.
    pub host: Option<&'a str>,
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
    /// Let the restored server ship its log into the source's as the source did (false: a
    /// copy beside the source, which must not add a new timeline to the source's log).
    pub archive: bool,
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
    /// What the restore could not give (newer changes behind a gap): the command exits 3.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// How the shipping of a change log is doing on this host right now, from local state (what a
/// repository cannot say: that the last push failed, how much log waits to be archived).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LogHealth {
    /// Shipping has failed since then (and not succeeded since).
    pub failing_since: Option<DateTime<Utc>>,
    /// The last failure.
    pub last_error: Option<String>,
    /// Bytes of log waiting to be archived (PostgreSQL: ready segments in `pg_wal`).
    pub waiting_bytes: Option<u64>,
    /// The most that may wait before status fails (`[source.log] queue-max`).
    pub queue_max: Option<u64>,
    /// What status should say without failing (shipping never measured on this host, ...).
    pub notes: Vec<String>,
}

/// A drill of a continuous source: restore to `target` in a scratch place (a scratch server,
/// a scratch file), confirm the target was reached, run the verify step.
pub struct PitrDrill<'a> {
    /// The repository.
    pub repo: &'a Repository,
    /// The source's name in the workload.
    pub source: &'a str,
    /// The workload file (absolute): what the scratch server's log fetch command reads.
    pub workload: &'a std::path::Path,
    /// The source's base backups (complete, its own, oldest first).
    pub bases: &'a [SnapshotEntry],
    /// The source's log batches of its kind (oldest first).
    pub logs: &'a [SnapshotEntry],
    /// The instant drilled (a random one inside the window).
    pub target: &'a RecoveryTarget,
    /// An empty scratch directory.
    pub scratch: &'a std::path::Path,
    /// Limit for scratch servers and verify steps.
    pub timeout: std::time::Duration,
    /// Progress.
    pub progress: &'a dyn Progress,
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
    /// Drill a point-in-time restore (see [`PitrDrill`]). A kind that cannot fails the drill.
    fn drill_at(&self, _job: &PitrDrill) -> Result<super::DrillOutcome, SourceError> {
        Err(SourceError::new(
            "continuous",
            std::io::Error::other(
                "point-in-time drills are not supported for this kind: the restore time is not measured",
            ),
        ))
    }
    /// The log batches retention may remove once `kept_bases` are the base backups kept
    /// (default: [`prunable_batches`], never a piece [`Continuous::keep_always`] names).
    fn prunable<'a>(
        &self,
        kept_bases: &[&SnapshotEntry],
        batches: &[(&'a SnapshotEntry, &'a holdfast_core::logs::LogBatch)],
    ) -> Vec<&'a SnapshotEntry> {
        prunable_batches(kept_bases, batches, &|p| self.keep_always(p))
    }
    /// Asked of the live source: the instant up to which everything it has written is among
    /// `batches` (an idle server whose newest archived piece is old but holds its last write).
    /// `None` when it cannot say (unreachable, or not everything is archived).
    fn shipped_until(
        &self,
        _batches: &[(&SnapshotEntry, &holdfast_core::logs::LogBatch)],
    ) -> Option<DateTime<Utc>> {
        None
    }
    /// How often `protect` takes a base backup (`[source.log] base-every`, default 1 day): the
    /// log meets the RPO, base backups bound how much log a restore replays.
    fn base_every(&self) -> chrono::Duration {
        chrono::Duration::days(1)
    }
    /// Whether retention must keep a piece whatever its age (PostgreSQL timeline history
    /// files, which every later restore may need).
    fn keep_always(&self, _piece: &holdfast_core::logs::Piece) -> bool {
        false
    }
    /// How shipping is doing on this host (`state_dir` is the workload's state directory),
    /// when the kind keeps local state about it.
    fn health(&self, _name: &str, _state_dir: &std::path::Path) -> Option<LogHealth> {
        None
    }
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
/// log stream): one instance per source, driven in rounds.
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

/// The instant a drill restores to: uniformly drawn from the window by `r` (a random number),
/// never inside a gap; `None` when the window is empty.
pub fn drill_target(w: &Window, r: u64) -> Option<DateTime<Utc>> {
    let (from, to) = (w.from?, w.to?);
    if to < from {
        return None;
    }
    // The recoverable spans: the window minus its gaps.
    let mut spans = vec![(from, to)];
    for g in &w.gaps {
        let (ga, gr) = (g.after.unwrap_or(from), g.resumes.unwrap_or(to));
        spans = spans
            .into_iter()
            .flat_map(|(a, b)| {
                // `ga` and `gr` themselves are recoverable; what lies strictly between is not.
                if ga >= b || gr <= a {
                    return vec![(a, b)];
                }
                let mut out = Vec::new();
                if a <= ga {
                    out.push((a, ga));
                }
                if gr <= b {
                    out.push((gr, b));
                }
                out
            })
            .collect();
    }
    let total: i64 = spans
        .iter()
        .map(|(a, b)| (*b - *a).num_milliseconds() + 1)
        .sum();
    if total <= 0 {
        return None;
    }
    let mut k = (r % total as u64) as i64;
    for (a, b) in spans {
        let len = (b - a).num_milliseconds() + 1;
        if k < len {
            return Some(a + chrono::Duration::milliseconds(k));
        }
        k -= len;
    }
    None
}

/// The log batches retention may remove: those whose every piece ended before the oldest
/// kept base backup started (`last_time`, or the batch's time when a piece has none), so no
/// kept base backup can need them; never a batch holding a piece `keep_always` names (a
/// PostgreSQL timeline history file). With no base backup kept, nothing is removed: the log is
/// all that is left. Pure.
pub fn prunable_batches<'a>(
    kept_bases: &[&SnapshotEntry],
    batches: &[(&'a SnapshotEntry, &'a holdfast_core::logs::LogBatch)],
    keep_always: &dyn Fn(&holdfast_core::logs::Piece) -> bool,
) -> Vec<&'a SnapshotEntry> {
    let Some(oldest) = kept_bases.iter().map(|b| b.snapshot.time).min() else {
        return Vec::new();
    };
    batches
        .iter()
        .filter(|(e, l)| {
            !l.pieces.is_empty()
                && l.pieces
                    .iter()
                    .all(|p| !keep_always(p) && p.last_time.unwrap_or(e.snapshot.time) < oldest)
                && e.snapshot.time < oldest
        })
        .map(|(e, _)| *e)
        .collect()
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

    fn entry(n: u8, time: &str, log: Option<holdfast_core::logs::LogBatch>) -> SnapshotEntry {
        SnapshotEntry {
            id: holdfast_core::Id::from_hex(&format!("{n:02x}").repeat(32)).unwrap(),
            snapshot: holdfast_core::snapshot::Snapshot {
                time: at(time),
                tree: holdfast_core::Id::from_hex(&"00".repeat(32)).unwrap(),
                paths: vec![],
                hostname: "h".into(),
                username: "u".into(),
                tags: vec![],
                copied_from: None,
                source: log.is_none().then(|| "pg".to_string()),
                parent: None,
                complete: true,
                errors: vec![],
                warnings: vec![],
                changed_while_read: vec![],
                summary: Default::default(),
                program: "test".into(),
                log,
            },
        }
    }

    fn batch(names: &[(&str, &str)]) -> holdfast_core::logs::LogBatch {
        holdfast_core::logs::LogBatch {
            source: "pg".into(),
            kind: holdfast_core::logs::LogKind::PgWal,
            pieces: names
                .iter()
                .map(|(n, t)| holdfast_core::logs::Piece {
                    name: n.to_string(),
                    size: 1,
                    blake3: String::new(),
                    first_time: None,
                    last_time: Some(at(t)),
                    meta: Default::default(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_drill_target_is_inside_the_window_and_outside_its_gaps() {
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
        let mut seen_early = false;
        let mut seen_late = false;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let t = drill_target(&w, x).unwrap();
            assert!(w.contains(t), "{t}");
            seen_early |= t < at("2026-12-01T08:30:00Z");
            seen_late |= t > at("2026-12-01T09:00:00Z");
        }
        assert!(seen_early && seen_late, "both spans are drilled");
        // The edges are reachable.
        assert_eq!(drill_target(&w, 0), Some(at("2026-12-01T08:00:00Z")));
        assert!(drill_target(&Window::default(), 1).is_none());
        let point = Window {
            from: Some(at("2026-12-01T08:00:00Z")),
            to: Some(at("2026-12-01T08:00:00Z")),
            ..Default::default()
        };
        assert_eq!(
            drill_target(&point, 12345),
            Some(at("2026-12-01T08:00:00Z"))
        );
    }

    #[test]
    fn retention_removes_only_batches_no_kept_base_needs() {
        let base = entry(1, "2026-12-01T10:00:00Z", None);
        let old = entry(
            2,
            "2026-12-01T09:00:00Z",
            Some(batch(&[("a", "2026-12-01T09:00:00Z")])),
        );
        // Ends after the base started: the base may need it (its redo point).
        let straddles = entry(
            3,
            "2026-12-01T09:59:00Z",
            Some(batch(&[
                ("b", "2026-12-01T09:59:00Z"),
                ("c", "2026-12-01T10:00:01Z"),
            ])),
        );
        let history = entry(
            4,
            "2026-12-01T08:00:00Z",
            Some(batch(&[("00000002.history", "2026-12-01T08:00:00Z")])),
        );
        let newer = entry(
            5,
            "2026-12-01T11:00:00Z",
            Some(batch(&[("d", "2026-12-01T11:00:00Z")])),
        );
        let all = [&old, &straddles, &history, &newer];
        let batches: Vec<_> = all
            .iter()
            .map(|e| (*e, e.snapshot.log.as_ref().unwrap()))
            .collect();
        let keep_history = |p: &holdfast_core::logs::Piece| p.name.ends_with(".history");
        let got: Vec<_> = prunable_batches(&[&base], &batches, &keep_history)
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(got, vec![old.id]);
        // Without a kept base backup, the log is all there is: nothing goes.
        assert!(prunable_batches(&[], &batches, &keep_history).is_empty());
    }
}
