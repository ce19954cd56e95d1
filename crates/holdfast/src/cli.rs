//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// holdfast: keep every piece of a workload's data recoverable within its recovery objectives.
#[derive(Debug, Parser)]
#[command(name = "holdfast", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Repository location (a directory).
    #[arg(short = 'r', long, env = "HOLDFAST_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// Read the password from this file (first line).
    #[arg(long, env = "HOLDFAST_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the password.
    #[arg(long, env = "HOLDFAST_PASSWORD_COMMAND", global = true)]
    pub password_command: Option<String>,
    /// Workload file for the policy commands (discover, plan, protect, drill, status).
    #[arg(
        long,
        env = "HOLDFAST_CONFIG",
        global = true,
        default_value = "holdfast.toml"
    )]
    pub config: PathBuf,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors and warnings.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log output (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The log's format on stderr: `text`, or `json` (one object per line, for journald and
    /// log collectors).
    #[arg(long, env = "HOLDFAST_LOG_FORMAT", global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository.
    Init {
        /// zstd compression level for new data (0 = off).
        #[arg(long, default_value_t = 3)]
        compression: i32,
        /// Target pack size in MiB.
        #[arg(long, default_value_t = 16)]
        pack_size_mib: u32,
        /// Files of at most this many bytes are stored inside their directory's tree instead of
        /// as data blobs (0 = never; at most 16384).
        #[arg(long, default_value_t = holdfast_core::inline::DEFAULT_INLINE_MAX)]
        inline_max: u32,
    },
    /// Back up files and directories into a new snapshot.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots {
        #[command(flatten)]
        filter: SnapshotFilter,
    },
    /// List the contents of a snapshot.
    Ls {
        #[command(flatten)]
        filter: SnapshotFilter,
        /// Snapshot id prefix, or `latest` (the newest that matches --host/--path/--tag/--of).
        snapshot: String,
        /// Only this path (relative to the snapshot root) and below.
        path: Option<String>,
        /// Show details (mode, size, time).
        #[arg(short, long)]
        long: bool,
    },
    /// Show what changed between two snapshots.
    Diff {
        /// First snapshot.
        a: String,
        /// Second snapshot.
        b: String,
    },
    /// Repository and snapshot statistics.
    Stats {
        #[command(flatten)]
        filter: SnapshotFilter,
        /// Only this snapshot.
        snapshot: Option<String>,
    },
    /// Restore a snapshot into a directory.
    Restore(RestoreArgs),
    /// Verify the repository.
    Check {
        /// Read and verify every byte of every pack.
        #[arg(long, conflicts_with = "read_data_subset")]
        read_data: bool,
        /// Read and verify a random share of the packs, e.g. `10%`.
        #[arg(long, value_name = "N%")]
        read_data_subset: Option<String>,
    },
    /// Remove snapshots according to a keep-policy.
    Forget(ForgetArgs),
    /// Remove data no snapshot references.
    Prune {
        /// Show what would be done.
        #[arg(long)]
        dry_run: bool,
        /// Repack packs with more than this percentage unused.
        #[arg(long, default_value_t = 10.0)]
        max_unused: f64,
        /// Also remove session records that cannot be read, whatever their age (needed only
        /// on a store that does not say when they were written; make sure no backup runs).
        #[arg(long)]
        remove_unreadable_sessions: bool,
    },
    /// Find data sources on this host and show the ones the workload does not protect.
    Discover {
        /// Also search these directories (added to the workload's [discover] roots).
        #[arg(long)]
        root: Vec<PathBuf>,
        /// Print a ready-to-paste [[source]] block for each unprotected location.
        #[arg(long)]
        suggest: bool,
        /// Only search the roots (skip mounts, servers and well-known directories).
        #[arg(long)]
        no_host: bool,
    },
    /// Check the workload against the anti-patterns of REL09-BP01 and show the cadence.
    Plan {
        /// Skip discovery of unprotected data.
        #[arg(long)]
        no_discover: bool,
    },
    /// Run every job that is due now (backups by cadence, retention), then show status.
    Protect {
        /// Only this source.
        #[arg(long)]
        source: Option<String>,
        /// Only apply the classes' keep policies (and prune) now, as the maintenance window
        /// does; no backups.
        #[arg(long, conflicts_with = "source")]
        retain: bool,
    },
    /// Restore-test a source (or reproduce it) in a scratch place, timed and validated.
    Drill {
        /// The source (default: every source whose drill is due).
        source: Option<String>,
        /// Drill a random recovery point instead of the newest.
        #[arg(long)]
        random: bool,
        /// Where to restore (default: the system temporary directory).
        #[arg(long)]
        scratch: Option<PathBuf>,
    },
    /// Run as a service: schedule every job and drill of the workload, host the replication
    /// tasks, serve the status page, a JSON API and Prometheus metrics over HTTP, and send
    /// notifications; until SIGTERM (SIGHUP reloads the workload file).
    Serve {
        /// Listen here instead of `[service] listen` (IP:PORT, or `off`).
        #[arg(long)]
        listen: Option<String>,
        /// Where drills restore (default: the system temporary directory).
        #[arg(long)]
        scratch: Option<PathBuf>,
    },
    /// Ship the change logs of continuous sources (SQLite WAL, MariaDB/MySQL binary logs) into
    /// their repositories, in the foreground, until stopped (SIGINT, SIGTERM).
    Replicate {
        /// Only this source (repeatable; default every source that ships a log).
        #[arg(long)]
        source: Vec<String>,
        /// Stop after this many rounds per source.
        #[arg(long)]
        rounds: Option<u64>,
        /// Stop after this long (e.g. `30s`, `1h`).
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
    },
    /// PostgreSQL's archive_command for a continuous source: store one WAL file (and the
    /// other ready ones) durably; `archive_command = 'holdfast --config W wal-push --source
    /// NAME %p'`.
    WalPush {
        /// The continuous PostgreSQL source.
        #[arg(long, value_name = "NAME")]
        source: String,
        /// The WAL file (`%p`).
        path: PathBuf,
    },
    /// PostgreSQL's restore_command for a continuous source: `restore_command = 'holdfast
    /// --config W wal-fetch --source NAME %f %p'`. Exits 1 when the file is not archived,
    /// 126 on any other failure (so PostgreSQL aborts recovery instead of ending it early).
    WalFetch {
        /// The continuous PostgreSQL source.
        #[arg(long, value_name = "NAME")]
        source: String,
        /// Fetch the WAL another host archived (a restore of that host's points here).
        #[arg(long, value_name = "HOST")]
        host: Option<String>,
        /// The WAL file's name (`%f`).
        name: String,
        /// Where to write it (`%p`).
        path: PathBuf,
    },
    /// Per source: RPO and RTO met or not, from measurements; workload controls.
    Status {
        /// Also write a self-contained HTML page.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Skip host discovery (the control "every data location is covered" is then not
        /// evaluated, and the report says so).
        #[arg(long)]
        no_discover: bool,
        /// Every host's sources, from the repositories alone (the workload's, or --repo): each
        /// host's recovery points, drills and reports (heartbeats); a host that stopped
        /// reporting fails.
        #[arg(long)]
        all_hosts: bool,
    },
    /// Retire a host from the fleet view (decommissioned or renamed): `status --all-hosts`
    /// shows it retired instead of failing, until it writes anything newer.
    RetireHost {
        /// The host's name, as `status --all-hosts` shows it.
        host: String,
        /// Why (shown wherever the host is listed).
        #[arg(long)]
        reason: String,
    },
    /// Copy snapshots to another repository (another region); only missing data travels.
    Copy {
        /// Source repository (directory or s3://bucket/prefix).
        #[arg(long)]
        from: String,
        /// Destination repository.
        #[arg(long)]
        to: String,
        /// Password file of the source (else HOLDFAST_FROM_PASSWORD, else the usual password).
        #[arg(long, env = "HOLDFAST_FROM_PASSWORD_FILE")]
        from_password_file: Option<PathBuf>,
        /// Password file of the destination (else HOLDFAST_TO_PASSWORD, else the usual password).
        #[arg(long, env = "HOLDFAST_TO_PASSWORD_FILE")]
        to_password_file: Option<PathBuf>,
        /// Snapshots to copy (id prefixes or `latest`); default all.
        snapshots: Vec<String>,
    },
    /// Show or set the repository's retention lock: snapshots younger than the minimum age are
    /// never forgotten; in compliance mode the lock can never be lowered.
    RetentionLock {
        /// Minimum age (e.g. `30d`); without it, show the lock in force.
        #[arg(long)]
        min_age: Option<String>,
        /// Compliance mode: the lock can never be lowered.
        #[arg(long, requires = "min_age")]
        compliance: bool,
    },
    /// Bring a format 1 repository to format 2: authenticate its config with the master key
    /// and record its snapshots in the history, so that tampering with either is detected.
    Migrate,
    /// Audit the history of recovery points: list snapshots that vanished outside `forget` and
    /// history entries that were deleted or damaged (exit 1 if any).
    History {
        /// After investigating a finding: accept the lost entries and vanished snapshots, so
        /// they are no longer reported and `forget` runs again.
        #[arg(long)]
        accept_loss: bool,
    },
    /// Show the store's Object Lock on this repository (S3 buckets created with Object Lock and
    /// a default retention rule); extend it over what young recovery points need; or verify it
    /// with the store, object by object. `backup` and `copy` extend it by themselves.
    ObjectLock {
        /// Extend the locks of every object the recovery points younger than the bucket's
        /// retention need (reused packs included).
        #[arg(long)]
        extend: bool,
        /// Ask the store for the lock of each of those objects; exit 4 if any is too short.
        #[arg(long)]
        verify: bool,
        /// Undo every delete made since TIME (RFC 3339, or a duration ago such as `6h`): each
        /// object of the repository deleted since then whose data is still a version in the
        /// bucket comes back. Works without the password, even with `config` deleted.
        #[arg(long, value_name = "TIME", conflicts_with_all = ["extend", "verify"])]
        undelete_since: Option<String>,
        /// With --undelete-since: only list what would come back.
        #[arg(long, requires = "undelete_since")]
        dry_run: bool,
    },
    /// Manage key slots (passwords).
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Files and directories to back up.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable).
    #[arg(long)]
    pub tag: Vec<String>,
    /// Exclude paths matching a glob (repeatable). With a `/` it matches the whole path,
    /// without one any file name.
    #[arg(short, long)]
    pub exclude: Vec<String>,
    /// Read exclude globs from a file, one per line.
    #[arg(long)]
    pub exclude_file: Vec<PathBuf>,
    /// Do not cross file-system boundaries.
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Read everything and report, store nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Compare with this snapshot instead of the newest of the same host and paths.
    #[arg(long, conflicts_with = "force")]
    pub parent: Option<String>,
    /// Read every file, even unchanged ones.
    #[arg(short, long)]
    pub force: bool,
    /// Host name to record.
    #[arg(long)]
    pub host: Option<String>,
    /// Snapshot time (RFC 3339), default now.
    #[arg(long, env = "HOLDFAST_NOW", hide = true)]
    pub time: Option<String>,
    /// Back up the contents of one block device or disk image (its allocated extents, as
    /// one file `NAME/NAME.img`) instead of the device node.
    #[arg(long, conflicts_with_all = ["exclude", "exclude_file", "one_file_system", "dry_run", "parent"])]
    pub device_contents: bool,
}

/// Which snapshots `latest` (and listings) choose from, like restic's `--host/--path/--tag`.
#[derive(Debug, Args, Clone, Default)]
pub struct SnapshotFilter {
    /// Only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots of exactly this backed-up path (repeatable: the set of paths).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
    /// Only snapshots with this tag (repeatable: all of them).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only recovery points of this workload source.
    #[arg(long = "of", value_name = "SOURCE")]
    pub of_source: Option<String>,
}

impl SnapshotFilter {
    /// Whether no criterion is set.
    pub fn is_empty(&self) -> bool {
        self.host.is_none()
            && self.paths.is_empty()
            && self.tags.is_empty()
            && self.of_source.is_none()
    }

    /// Whether a snapshot matches.
    pub fn matches(&self, s: &holdfast_core::snapshot::Snapshot) -> bool {
        let mut want: Vec<String> = self
            .paths
            .iter()
            .map(|p| {
                std::path::absolute(p)
                    .map(|a| a.display().to_string())
                    .unwrap_or_else(|_| p.clone())
            })
            .collect();
        want.sort();
        let mut have = s.paths.clone();
        have.sort();
        self.host.as_ref().is_none_or(|h| &s.hostname == h)
            && (want.is_empty() || want == have)
            && self.tags.iter().all(|t| s.tags.contains(t))
            && self
                .of_source
                .as_ref()
                .is_none_or(|o| s.source.as_ref() == Some(o))
    }
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub filter: SnapshotFilter,
    /// Snapshot id prefix, or `latest` (with --source: default the source's newest).
    #[arg(required_unless_present = "source")]
    pub snapshot: Option<String>,
    /// Where to restore: a directory (or give it as --target).
    #[arg(value_name = "TARGET", required_unless_present_any = ["target_opt", "source"])]
    pub target: Option<PathBuf>,
    /// Where to restore. Files: a directory. With --source: what the source restores into
    /// (path sources: a directory; SQLite: a file; PostgreSQL: a database name, or an empty
    /// data directory for physical backups; command sources: HOLDFAST_RESTORE_TARGET).
    #[arg(
        short = 't',
        long = "target",
        value_name = "TARGET",
        alias = "into",
        conflicts_with = "target"
    )]
    pub target_opt: Option<PathBuf>,
    /// Restore only this path (repeatable), relative to the snapshot root or as backed up.
    #[arg(short, long)]
    pub include: Vec<String>,
    /// Restore over what is at the target: a non-empty directory, an existing file or
    /// database.
    #[arg(long, alias = "overwrite")]
    pub replace: bool,
    /// Restore a workload source (from --config) with its own tool: a database into a server,
    /// an SQLite file, a command's restore-command.
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Point-in-time recovery of a continuous source: `latest`, a time (RFC 3339, or
    /// `YYYY-MM-DD HH:MM:SS` in UTC) or a duration ago (`"2m ago"`).
    #[arg(long, value_name = "TIME", requires = "source", conflicts_with_all = ["snapshot", "lsn"])]
    pub at: Option<String>,
    /// Point-in-time recovery of a continuous PostgreSQL source to a log sequence number.
    #[arg(
        long,
        value_name = "LSN",
        requires = "source",
        conflicts_with = "snapshot"
    )]
    pub lsn: Option<String>,
    /// After a point-in-time restore, start the server on the restored data and wait until it
    /// reached the target.
    #[arg(long, requires = "source")]
    pub start: bool,
    /// After a point-in-time restore, the restored server does not archive its log (a copy
    /// restored beside the source, to look at: it must not archive a new timeline into the
    /// source's log). Without it, the restored server archives as the source did.
    #[arg(long, requires = "source")]
    pub no_archive: bool,
}

impl RestoreArgs {
    /// The target, however it was spelled (positional, `--target`, or the old `--into`).
    pub fn target(&self) -> Option<&std::path::Path> {
        self.target.as_deref().or(self.target_opt.as_deref())
    }
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Keep the N newest snapshots.
    #[arg(long)]
    pub keep_last: Option<u32>,
    /// Keep one snapshot per hour for N hours.
    #[arg(long)]
    pub keep_hourly: Option<u32>,
    /// Keep one per day for N days.
    #[arg(long)]
    pub keep_daily: Option<u32>,
    /// Keep one per week for N weeks.
    #[arg(long)]
    pub keep_weekly: Option<u32>,
    /// Keep one per month for N months.
    #[arg(long)]
    pub keep_monthly: Option<u32>,
    /// Keep one per year for N years.
    #[arg(long)]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot newer than this duration (e.g. `7d`, `36h`).
    #[arg(long)]
    pub keep_within: Option<String>,
    /// Prune afterwards.
    #[arg(long)]
    pub prune: bool,
    /// Show what would be removed.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Add a password (from HOLDFAST_NEW_PASSWORD, --new-password-file or a prompt).
    Add {
        /// File holding the new password.
        #[arg(long, env = "HOLDFAST_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
    },
    /// List key slots.
    List,
    /// Remove a key slot.
    Remove {
        /// Key slot id prefix.
        id: String,
    },
    /// Change the password of the key slot in use.
    Passwd {
        /// File holding the new password.
        #[arg(long, env = "HOLDFAST_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
    },
}
