//! A `[[source]]` table as written in the workload file: every key any kind accepts, checked
//! only for syntax and types. Each kind's module turns it into its own typed configuration
//! ([`super::KINDS`]); the workload file's syntax is this struct's.

use std::path::{Path, PathBuf};

use chrono::Duration;
use serde::Deserialize;
use toml::Spanned;

use crate::duration;

/// Backup or reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Back it up.
    Backup,
    /// Reproduce it from other sources.
    Reproduce,
}

/// How to reproduce a source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// What it is reproduced from (a source name or a description).
    #[serde(default)]
    pub from: Option<Spanned<String>>,
    /// The command that reproduces it. `$HOLDFAST_SCRATCH` is a scratch directory during drills.
    #[serde(default)]
    pub command: Option<String>,
    /// A command that checks the result (exit 0 = good).
    #[serde(default)]
    pub verify: Option<String>,
}

/// One `[[source]]` table, before its kind has read its settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawSource {
    /// Unique name.
    pub name: Spanned<String>,
    /// Kind, a name in [`super::KINDS`].
    pub kind: Spanned<String>,
    /// What it reads (kind `path`, `sqlite`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Several paths (kind `path`).
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// Criticality class.
    #[serde(default)]
    pub class: Option<Spanned<String>>,
    /// Backup or reproduce.
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// Repository (default: the only one).
    #[serde(default)]
    pub repository: Option<Spanned<String>>,
    /// Recipe for `reproduce`.
    #[serde(default)]
    pub reproduce: Option<Recipe>,
    /// Why a backup is not needed (for `reproduce`).
    #[serde(default)]
    pub why_not_backup: Option<String>,
    /// Exclude globs (kind `path`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Tags for its snapshots.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Command run before the backup (freeze, flush); failing fails the job.
    #[serde(default)]
    pub pre: Option<String>,
    /// Command run after the backup, whatever happened.
    #[serde(default)]
    pub post: Option<String>,
    /// Limit for each hook.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub hook_timeout: Option<Duration>,
    /// What checks a restored copy during a drill (a command or a query, by kind).
    #[serde(default)]
    pub verify: Option<String>,
    /// The database a `postgres`/`mysql` drill runs its `verify` query in.
    #[serde(default)]
    pub verify_database: Option<String>,
    /// Database name (`postgres`, `mysql`); default: every database (with globals).
    #[serde(default)]
    pub database: Option<String>,
    /// `logical` (pg_dump, default) or `physical` (pg_basebackup) for `postgres`;
    /// `continuous` (base backups plus the change log, for point-in-time recovery) for
    /// `postgres`, `sqlite` and `mysql`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Settings of continuous protection (`mode = "continuous"`), as a `[source.log]` table.
    #[serde(default)]
    pub log: Option<LogSettings>,
    /// Server host or socket directory (`postgres`, `mysql`).
    #[serde(default)]
    pub host: Option<String>,
    /// Server port.
    #[serde(default)]
    pub port: Option<u16>,
    /// Database user.
    #[serde(default)]
    pub user: Option<String>,
    /// Environment variable holding the database password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Command whose standard output is the data (`command` sources).
    #[serde(default)]
    pub command: Option<String>,
    /// Command that takes the data on standard input to restore it (`command` sources).
    #[serde(default)]
    pub restore_command: Option<String>,
    /// File name of the data inside the snapshot (`command` sources; default `NAME.out`).
    #[serde(default)]
    pub file_name: Option<String>,
    /// The mount point to freeze (`fsfreeze`) while a `volume` source is read, for a
    /// crash-consistent capture of a mounted ext4/XFS file system without LVM.
    #[serde(default)]
    pub freeze: Option<PathBuf>,
    /// The longest a `volume` source's file system stays frozen (default 10m): a watchdog
    /// thaws it then, and the backup fails rather than record an inconsistent capture.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub freeze_timeout: Option<Duration>,
    /// `"lvm"` on a `volume` source: read an LVM snapshot of the logical volume, removed
    /// afterwards. `"btrfs"` on a `path` source: read a read-only snapshot of the btrfs
    /// subvolume holding each path, taken after the `pre` hook and deleted afterwards.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// The copy-on-write size of a `volume` source's LVM snapshot (lvcreate's `-L`, e.g.
    /// `"1G"`; default 20% of the origin).
    #[serde(default)]
    pub snapshot_size: Option<String>,
    /// The source is one thing reached from several hosts.
    #[serde(default)]
    pub shared: bool,
    /// The bucket (`s3` sources).
    #[serde(default)]
    pub bucket: Option<String>,
    /// The key prefix inside the bucket (`s3` sources; default the whole bucket).
    #[serde(default)]
    pub prefix: Option<String>,
    /// The S3 endpoint URL (`s3` sources; default `PREFIX_ENDPOINT_URL`, else AWS).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The region (`s3` sources; default `PREFIX_REGION`, else `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// The prefix of the environment variables holding the credentials (`s3` sources:
    /// `PREFIX_ACCESS_KEY_ID`, `PREFIX_SECRET_ACCESS_KEY`, or their `_FILE` forms naming a
    /// file; default `AWS`).
    #[serde(default)]
    pub credentials_env: Option<String>,
    /// Also keep every object version of a versioned bucket (`s3` sources; default false).
    #[serde(default)]
    pub versions: bool,
    /// Also keep each object's tags (`s3` sources; default true: one `GetObjectTagging` per
    /// object read, none where the store does not implement tagging).
    #[serde(default)]
    pub object_tags: Option<bool>,
    /// The journal directory (`journal` sources: `journalctl --directory`; default the
    /// system journal).
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// Only these systemd units' entries (`journal` sources: `journalctl --unit`).
    #[serde(default)]
    pub units: Vec<String>,
    /// Discovered locations this source protects, by identity.
    #[serde(default)]
    pub covers: Vec<String>,
}

/// Settings of continuous protection (`mode = "continuous"`); every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LogSettings {
    /// How often `holdfast replicate` ships new changes (SQLite frames; default 1s).
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub interval: Option<Duration>,
    /// When nothing changed, record at least this often that the log is shipped up to now
    /// (default 1m), so that an idle source is not mistaken for a stalled one.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub heartbeat: Option<Duration>,
    /// The most change log waiting to be archived (PostgreSQL WAL in `pg_wal`) before
    /// `status` fails at once, e.g. `"1GiB"`.
    #[serde(default)]
    pub queue_max: Option<String>,
    /// PostgreSQL: also stream WAL with `pg_receivewal` under `holdfast replicate`, for an
    /// RPO below one segment.
    #[serde(default)]
    pub streaming: bool,
    /// How often `protect` takes a base backup (default 1 day): the log meets the RPO, base
    /// backups bound how much log a restore replays.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub base_every: Option<Duration>,
    /// Where pieces wait locally before they are stored (default: the state directory).
    #[serde(default)]
    pub spool: Option<PathBuf>,
}

impl RawSource {
    /// The source's name.
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }

    /// `path` and `paths`, non-empty, relative ones resolved against `base` (the workload
    /// file's directory). `kind` names the kind in the error ("Path", "Sqlite").
    pub fn required_paths(&self, kind: &str, base: &Path) -> Result<Vec<PathBuf>, String> {
        let n = self.name();
        let all: Vec<PathBuf> = self.path.iter().chain(&self.paths).cloned().collect();
        if all.is_empty() {
            return Err(format!("source {n:?} of kind {kind} needs path = \"...\""));
        }
        if all.iter().any(|p| p.as_os_str().is_empty()) {
            return Err(format!("source {n:?}: path is empty"));
        }
        Ok(all
            .into_iter()
            .map(|p| if p.is_relative() { base.join(p) } else { p })
            .collect())
    }

    /// Refuse `mode`, which only database sources take.
    pub fn no_mode(&self) -> Result<(), String> {
        match &self.mode {
            Some(m) => Err(mode_error(self.name(), m)),
            None => Ok(()),
        }
    }
}

/// The error for a `mode` a source cannot take.
pub fn mode_error(name: &str, m: &str) -> String {
    format!("source {name:?}: mode {m:?} is only for database sources: \"logical\" or \"physical\" (postgres), \"continuous\" (postgres, sqlite, mysql)")
}
