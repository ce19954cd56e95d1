//! PostgreSQL WAL archiving for `mode = "continuous"`: `wal-push` (PostgreSQL's
//! `archive_command`) stores WAL files as log batches ([`holdfast_core::logs`], kind
//! [`LogKind::PgWal`](holdfast_core::logs::LogKind::PgWal)), `wal-fetch` (its
//! `restore_command`) reads them back, and [`archive_health`] tells `status` whether archiving
//! is failing and how much WAL waits in `pg_wal`.
//!
//! Pieces are named exactly as PostgreSQL names them (`%f`): segments
//! (`000000010000000000000003`), timeline history files (`00000002.history`), backup history
//! files (`000000010000000000000002.00000028.backup`) and `.partial` segments. A name is
//! archived once: the same bytes again succeed without storing, other bytes fail loudly
//! (PostgreSQL's archive_command contract).
//!
//! Local state (`<state dir>/wal/<source>/`, or `[source.log] spool`/`<source>`, mode 0700):
//! `<name>.ok` records a file as durable in the repository (with its BLAKE3), `queue.json`
//! the WAL waiting in `pg_wal` at the last push, `failing.json` the ongoing outage, `fetch/`
//! the prefetched pieces of `wal-fetch`, `lock` serializes pushes.

pub mod catalog;
pub mod fetch;
pub mod idle;
pub mod push;
pub mod settings;
pub mod spool;

use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::RawSource;

/// The default `[source.log] queue-max`: 1 GiB of WAL waiting in `pg_wal`.
pub const DEFAULT_QUEUE_MAX: u64 = 1 << 30;

/// The settings of a continuous PostgreSQL source's WAL archive.
#[derive(Debug, Clone, PartialEq)]
pub struct WalSettings {
    /// WAL waiting in `pg_wal` (not yet archived) beyond which `status` fails at once.
    pub queue_max: u64,
    /// Where the local state lives instead of `<state dir>/wal` (`[source.log] spool`).
    pub spool: Option<PathBuf>,
    /// The most files one `wal-push` stores in one batch (the one asked for included).
    pub batch_files: usize,
    /// The most bytes one `wal-push` stores in one batch (the one asked for is always stored).
    pub batch_bytes: u64,
    /// How often `protect` takes a base backup (`[source.log] base-every`; default 1 day).
    pub base_every: Option<chrono::Duration>,
    /// How many pieces `wal-fetch` fetches ahead into its spool.
    pub prefetch_files: usize,
    /// The most bytes `wal-fetch` fetches ahead.
    pub prefetch_bytes: u64,
}

impl Default for WalSettings {
    fn default() -> Self {
        WalSettings {
            queue_max: DEFAULT_QUEUE_MAX,
            spool: None,
            batch_files: 16,
            batch_bytes: 256 << 20,
            prefetch_files: 8,
            prefetch_bytes: 256 << 20,
            base_every: None,
        }
    }
}

impl WalSettings {
    /// The settings of a `[[source]]` table (`[source.log] queue-max`, `spool`).
    pub fn of(r: &RawSource) -> Result<WalSettings, String> {
        let mut s = WalSettings::default();
        if let Some(log) = &r.log {
            if let Some(q) = &log.queue_max {
                s.queue_max = parse_size(q)
                    .map_err(|e| format!("source {:?}: [source.log] queue-max: {e}", r.name()))?;
            }
            s.spool = log.spool.clone();
            s.base_every = log.base_every;
            if log.streaming {
                return Err(format!(
                    "source {:?}: [source.log] streaming (pg_receivewal) is not supported yet: the RPO of a continuous PostgreSQL source is bounded by archive_timeout; remove the key",
                    r.name()
                ));
            }
            if log.interval.is_some() || log.heartbeat.is_some() {
                return Err(format!(
                    "source {:?}: [source.log] interval and heartbeat are for sources `holdfast replicate` ships (sqlite, mysql); a PostgreSQL source archives through archive_command (set archive_timeout instead)",
                    r.name()
                ));
            }
        }
        Ok(s)
    }

    /// The local state directory of `source`: `<spool>/<source>` or
    /// `<state_dir>/wal/<source>`.
    pub fn state_dir(&self, state_dir: &Path, source: &str) -> PathBuf {
        match &self.spool {
            Some(s) => s.join(source),
            None => state_dir.join("wal").join(source),
        }
    }
}

/// Read a size: a number of bytes with an optional unit (`B`, `KB`, `KiB`, `MB`, `MiB`, `GB`,
/// `GiB`, `TB`, `TiB`; `K`, `M`, `G`, `T` are binary).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is no size (write e.g. \"1GiB\" or \"512MiB\")"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        u => {
            return Err(format!(
                "{text:?}: unknown unit {u:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
            ))
        }
    };
    let v = n * mult as f64;
    if !(v.is_finite() && v >= 1.0 && v < u64::MAX as f64) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(v as u64)
}

/// The label of a continuous source's base backup (`pg_basebackup -l`): `holdfast SOURCE
/// TIME`, the job's time in RFC 3339 with nanoseconds, UTC (the restore side matches a base
/// backup's `.backup` history file to its snapshot by it).
pub fn base_label(source: &str, time: DateTime<Utc>) -> String {
    format!(
        "holdfast {source} {}",
        time.to_rfc3339_opts(SecondsFormat::Nanos, true)
    )
}

/// What a WAL file name names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WalFileKind {
    /// A segment: `TTTTTTTTXXXXXXXXYYYYYYYY`.
    Segment,
    /// The last, incomplete segment of a timeline left at a promotion: `SEGMENT.partial`.
    Partial,
    /// A timeline history file: `TTTTTTTT.history`.
    History,
    /// A backup history file: `SEGMENT.OFFSET.backup`.
    Backup,
}

fn hex(s: &str, n: usize) -> bool {
    s.len() == n
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
}

/// What `name` is, if it is a WAL file name PostgreSQL archives (anything else, including a
/// path, is refused: names come from PostgreSQL and from the repository).
pub fn classify(name: &str) -> Option<WalFileKind> {
    if hex(name, 24) {
        return Some(WalFileKind::Segment);
    }
    if let Some(seg) = name.strip_suffix(".partial") {
        return hex(seg, 24).then_some(WalFileKind::Partial);
    }
    if let Some(tli) = name.strip_suffix(".history") {
        return hex(tli, 8).then_some(WalFileKind::History);
    }
    if let Some(rest) = name.strip_suffix(".backup") {
        let (seg, off) = rest.split_once('.')?;
        return (hex(seg, 24) && hex(off, 8)).then_some(WalFileKind::Backup);
    }
    None
}

/// The order PostgreSQL's log runs in: by timeline; a timeline's history file first; then by
/// position (a backup history file after its segment, a `.partial` with its segment).
pub fn log_key(name: &str) -> (String, String, u8, String) {
    let tli = name.get(..8).unwrap_or(name).to_string();
    match classify(name) {
        Some(WalFileKind::History) => (tli, String::new(), 0, name.into()),
        Some(WalFileKind::Segment) => (tli, name[8..24].into(), 1, name.into()),
        Some(WalFileKind::Partial) => (tli, name[8..24].into(), 2, name.into()),
        Some(WalFileKind::Backup) => (tli, name[8..24].into(), 3, name.into()),
        None => (tli, String::new(), 9, name.into()),
    }
}

/// Why archiving or fetching WAL failed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The file name is not one PostgreSQL archives.
    #[error("{0:?} is not a WAL file name (a segment, NAME.partial, TIMELINE.history or NAME.backup): archive_command must pass %p, restore_command %f and %p")]
    NotWal(String),
    /// The same name was archived with other bytes.
    #[error("{name} is already archived with other bytes: the repository holds BLAKE3 {archived} (batch {batch}), this file has BLAKE3 {here}; refusing to overwrite it (two clusters archiving into one source? give each its own source name)")]
    Conflict {
        /// The file.
        name: String,
        /// BLAKE3 of the archived copy.
        archived: String,
        /// BLAKE3 of the file pushed now.
        here: String,
        /// The batch holding the archived copy (short id).
        batch: String,
    },
    /// The repository failed (opening it, reading or storing).
    #[error("repository: {0}")]
    Repository(String),
    /// Local I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> WalError {
    let what = what.into();
    move |source| WalError::Io { what, source }
}

/// Whether a continuous PostgreSQL source's archiving is healthy, from its local state.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ArchiveHealth {
    /// Since when `wal-push` fails (every push since then failed); `None`: the last push
    /// succeeded (or none ran on this host).
    pub failing_since: Option<DateTime<Utc>>,
    /// The last failure's message, while failing.
    pub last_error: Option<String>,
    /// Failed pushes since `failing_since`.
    pub failures: u64,
    /// WAL files waiting in `pg_wal` to be archived at the last push.
    pub waiting_files: u64,
    /// Their bytes.
    pub waiting_bytes: u64,
    /// When the waiting WAL was measured (the last push, failed or not).
    pub measured_at: Option<DateTime<Utc>>,
    /// `[source.log] queue-max`.
    pub queue_max: u64,
    /// `waiting_bytes` exceeds `queue_max`: a failing control at once.
    pub over_limit: bool,
    /// The state directory read (when `measured_at` is `None`, no `wal-push` has run with
    /// it: archive_command is not set, or it uses another state directory or spool).
    pub state_dir: PathBuf,
}

impl ArchiveHealth {
    /// Whether `status` must report an RPO failure now: archiving is failing.
    pub fn failing(&self) -> bool {
        self.failing_since.is_some()
    }
}

/// The archive health of `source` from its local state (pure: what the last pushes recorded,
/// see [`spool::read_failing`], [`spool::read_queue`]).
pub fn health_of(
    failing: Option<&spool::Failing>,
    queue: Option<&spool::Queue>,
    queue_max: u64,
) -> ArchiveHealth {
    let waiting_bytes = queue.map_or(0, |q| q.waiting_bytes);
    ArchiveHealth {
        failing_since: failing.map(|f| f.since),
        last_error: failing.map(|f| f.last_error.clone()),
        failures: failing.map_or(0, |f| f.failures),
        waiting_files: queue.map_or(0, |q| q.waiting_files),
        waiting_bytes,
        measured_at: queue.map(|q| q.at),
        queue_max,
        over_limit: waiting_bytes > queue_max,
        state_dir: PathBuf::new(),
    }
}

/// The archive health of a continuous PostgreSQL source on this host: `state_dir` is the
/// runtime's state directory, `settings` the source's ([`super::Source::pg_wal`]). A state
/// that cannot be read counts as failing (never as healthy).
pub fn archive_health(state_dir: &Path, source: &str, settings: &WalSettings) -> ArchiveHealth {
    let dir = settings.state_dir(state_dir, source);
    let (failing, queue) = (spool::read_failing(&dir), spool::read_queue(&dir));
    let unreadable = match (&failing, &queue) {
        (Err(e), _) | (_, Err(e)) => Some(e.to_string()),
        _ => None,
    };
    let mut h = health_of(
        failing.ok().flatten().as_ref(),
        queue.ok().flatten().as_ref(),
        settings.queue_max,
    );
    h.state_dir = dir;
    if let Some(e) = unreadable {
        h.failing_since.get_or_insert_with(Utc::now);
        h.last_error = Some(format!("the archive state cannot be read: {e}"));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_names_table() {
        use WalFileKind::*;
        let rows: &[(&str, Option<WalFileKind>)] = &[
            ("000000010000000000000003", Some(Segment)),
            ("0000000A00000001000000FF", Some(Segment)),
            ("0000000a00000001000000ff", None),
            ("00000001000000000000003", None),
            ("0000000100000000000000033", None),
            ("00000002.history", Some(History)),
            ("0000002.history", None),
            ("000000010000000000000002.00000028.backup", Some(Backup)),
            ("000000010000000000000002.0000028.backup", None),
            ("000000010000000000000005.partial", Some(Partial)),
            ("../000000010000000000000005", None),
            ("pg_wal/000000010000000000000005", None),
            ("RECOVERYXLOG", None),
            ("", None),
        ];
        for (n, want) in rows {
            assert_eq!(classify(n), *want, "{n}");
        }
    }

    #[test]
    fn log_order_puts_history_first_and_backup_after_its_segment() {
        let mut v = vec![
            "000000020000000000000006",
            "000000010000000000000005.partial",
            "000000010000000000000002.00000028.backup",
            "00000002.history",
            "000000010000000000000003",
            "000000010000000000000002",
            "000000010000000000000005",
        ];
        v.sort_by_key(|n| log_key(n));
        assert_eq!(
            v,
            [
                "000000010000000000000002",
                "000000010000000000000002.00000028.backup",
                "000000010000000000000003",
                "000000010000000000000005",
                "000000010000000000000005.partial",
                "00000002.history",
                "000000020000000000000006",
            ]
        );
    }

    #[test]
    fn sizes_table() {
        let rows: &[(&str, Option<u64>)] = &[
            ("1GiB", Some(1 << 30)),
            ("512MiB", Some(512 << 20)),
            ("2 GB", Some(2_000_000_000)),
            ("100", Some(100)),
            ("1.5G", Some(3 << 29)),
            ("0", None),
            ("-1GiB", None),
            ("1 parsec", None),
            ("GiB", None),
            ("", None),
        ];
        for (t, want) in rows {
            assert_eq!(parse_size(t).ok(), *want, "{t}");
        }
    }

    #[test]
    fn base_label_has_nanoseconds_in_utc() {
        let t = DateTime::parse_from_rfc3339("2026-12-01T11:31:24.123456789+01:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            base_label("db", t),
            "holdfast db 2026-12-01T10:31:24.123456789Z"
        );
    }

    #[test]
    fn health_table() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let f = spool::Failing {
            since: t("2026-12-01T10:00:00Z"),
            last_error: "repository: gone".into(),
            failures: 3,
        };
        let q = |bytes| spool::Queue {
            at: t("2026-12-01T10:05:00Z"),
            waiting_files: bytes >> 24,
            waiting_bytes: bytes,
        };
        let h = health_of(None, None, 100);
        assert!(!h.failing() && !h.over_limit && h.waiting_bytes == 0);
        let h = health_of(Some(&f), Some(&q(5 << 24)), 1 << 30);
        assert!(h.failing() && !h.over_limit);
        assert_eq!(h.failing_since, Some(t("2026-12-01T10:00:00Z")));
        assert_eq!(h.failures, 3);
        assert_eq!(h.waiting_files, 5);
        let h = health_of(None, Some(&q((1 << 30) + 1)), 1 << 30);
        assert!(!h.failing() && h.over_limit);
        let h = health_of(None, Some(&q(1 << 30)), 1 << 30);
        assert!(!h.over_limit, "at the limit is not over it");
    }

    #[test]
    fn workload_settings_table() {
        use crate::config::Workload;
        let src =
            |extra: &str| format!("[[source]]\nname = \"db\"\nkind = \"postgres\"\n{extra}\n");
        let rows: &[(&str, Result<Option<u64>, &str>)] = &[
            ("mode = \"continuous\"", Ok(Some(DEFAULT_QUEUE_MAX))),
            (
                "mode = \"continuous\"\n[source.log]\nqueue-max = \"64MiB\"",
                Ok(Some(64 << 20)),
            ),
            ("mode = \"physical\"", Ok(None)),
            ("", Ok(None)),
            (
                "mode = \"physical\"\n[source.log]\nqueue-max = \"64MiB\"",
                Err("only for mode = \"continuous\""),
            ),
            (
                "mode = \"continuous\"\n[source.log]\nqueue-max = \"lots\"",
                Err("queue-max"),
            ),
        ];
        for (extra, want) in rows {
            let w = Workload::parse(Path::new("/w.toml"), &src(extra));
            match (w, want) {
                (Ok(w), Ok(q)) => {
                    let got = w.sources[0].driver().pg_wal().map(|s| s.queue_max);
                    assert_eq!(got, *q, "{extra}");
                }
                (Err(e), Err(frag)) => assert!(e.to_string().contains(frag), "{extra}: {e}"),
                (w, _) => panic!("{extra}: {:?}", w.map(|_| ())),
            }
        }
    }

    #[test]
    fn unreadable_state_is_failing() {
        let d = tempfile::tempdir().unwrap();
        let s = WalSettings::default();
        let dir = s.state_dir(d.path(), "db");
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!archive_health(d.path(), "db", &s).failing());
        std::fs::write(dir.join("queue.json"), "{not json").unwrap();
        let h = archive_health(d.path(), "db", &s);
        assert!(h.failing(), "{h:?}");
        assert!(h.last_error.unwrap().contains("cannot be read"));
    }
}
