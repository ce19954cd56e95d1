//! A scratch PostgreSQL server whose `archive_command` is the built `holdfast wal-push`, with
//! a workload naming it as a continuous source (the point-in-time tests, `pitr_pg_*.rs`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use holdfast_policy::sources::pg_scratch;

/// The source's name in the workload.
pub const SOURCE: &str = "pg";

/// Whether the tests run as root (the server then runs as `postgres`).
pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Run a program as the server's user (PostgreSQL runs its archive and restore commands as
/// that user, so the repository and the state are that user's).
pub fn as_pg(prog: &Path) -> Command {
    if root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ]);
        c.arg(prog);
        c
    } else {
        Command::new(prog)
    }
}

/// The server, its work directory (`holdfast.toml`, `pw`, `repo`, `state`) and the workload.
pub struct ArchivedPg {
    /// The server.
    pub server: pg_scratch::Server,
    /// The work directory.
    pub dir: PathBuf,
    _scratch: tempfile::TempDir,
}

impl ArchivedPg {
    /// A server and a workload whose source `pg` has these extra lines (`verify = ...`, a
    /// `[source.log]` table), owned by the server's user; archiving is not set up yet.
    pub fn new(password: &str, extra: &str) -> ArchivedPg {
        let scratch = tempfile::tempdir().unwrap();
        let server = pg_scratch::Server::start(scratch.path(), Duration::from_secs(60))
            .expect("a PostgreSQL server (scripts/test.sh installs the postgresql package)");
        let dir = scratch.path().join("work");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("pw"), format!("{password}\n")).unwrap();
        let port = server.conn().port.unwrap();
        fs::write(
            dir.join("holdfast.toml"),
            format!(
                "[repository.main]\nurl = \"{}\"\npassword-file = \"{}\"\n\n[class.critical]\nrpo = \"5m\"\nrto = \"10m\"\nkeep = {{ last = 5 }}\n\n[[source]]\nname = \"{SOURCE}\"\nkind = \"postgres\"\nmode = \"continuous\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"postgres\"\nclass = \"critical\"\nstrategy = \"backup\"\n{extra}",
                dir.join("repo").display(),
                dir.join("pw").display(),
            ),
        )
        .unwrap();
        if root() {
            // The archiver runs as postgres: it must own the repository and the state.
            let o = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&dir)
                .output()
                .unwrap();
            assert!(o.status.success());
        }
        ArchivedPg {
            server,
            dir,
            _scratch: scratch,
        }
    }

    /// The environment of the archiver's holdfast.
    pub fn env(&self) -> String {
        format!(
            "HOLDFAST_INSECURE_TEST_KDF=1 HOLDFAST_STATE_DIR={} HOLDFAST_HOSTNAME=pg-host",
            self.state().display()
        )
    }

    /// `holdfast ... wal-push --source pg %p` with that environment.
    pub fn archive_command(&self) -> String {
        format!(
            "{} {} --config {} wal-push --source {SOURCE} %p",
            self.env(),
            env!("CARGO_BIN_EXE_holdfast"),
            self.dir.join("holdfast.toml").display()
        )
    }

    /// Set `archive_command` and reload.
    pub fn set_archive_command(&self, c: &str) {
        self.psql(&format!(
            "ALTER SYSTEM SET archive_command = '{}'",
            c.replace('\'', "''")
        ));
        self.psql("SELECT pg_reload_conf()");
    }

    /// Turn archiving on through `holdfast wal-push`, with these other settings
    /// (`archive_timeout = '1s'`), and restart the server.
    pub fn archive(&self, settings: &[&str]) {
        self.psql("ALTER SYSTEM SET archive_mode = on");
        self.set_archive_command(&self.archive_command());
        for s in settings {
            self.psql(&format!("ALTER SYSTEM SET {s}"));
        }
        self.server.restart().unwrap();
    }

    /// The state directory holdfast uses (the archiver's and the tests').
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// holdfast as the server's user, with the archiver's environment.
    pub fn holdfast(&self, args: &[&str]) -> Command {
        let mut c = as_pg(Path::new(env!("CARGO_BIN_EXE_holdfast")));
        c.env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .env("HOLDFAST_STATE_DIR", self.state())
            .env("HOLDFAST_HOSTNAME", "pg-host")
            .env("HOLDFAST_CONFIG", self.dir.join("holdfast.toml"))
            .env_remove("HOLDFAST_REPOSITORY")
            .env_remove("HOLDFAST_NOW")
            .current_dir(&self.dir)
            .args(args);
        c
    }

    /// holdfast on the repository itself (`--repo`, `--password-file`), then `args`.
    pub fn on_repo(&self, args: &[&str]) -> Command {
        let (repo, pw) = (self.dir.join("repo"), self.dir.join("pw"));
        let mut a = vec![
            "--repo",
            repo.to_str().unwrap(),
            "--password-file",
            pw.to_str().unwrap(),
        ];
        a.extend_from_slice(args);
        self.holdfast(&a)
    }

    /// A query on the server (as `postgres`); its output, trimmed. Panics if it fails.
    pub fn psql(&self, q: &str) -> String {
        let conn = self.server.conn();
        let o = Command::new("psql")
            .env("PGHOST", conn.host.as_deref().unwrap())
            .env("PGPORT", conn.port.unwrap().to_string())
            .env("PGUSER", "postgres")
            .args(["-X", "-At", "-d", "postgres", "-c", q])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "psql {q}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// The WAL files PostgreSQL marked with this suffix (`.ready`, `.done`).
    pub fn marked(&self, suffix: &str) -> std::collections::BTreeSet<String> {
        fs::read_dir(self.server.data_dir().join("pg_wal/archive_status"))
            .unwrap()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_suffix(suffix)
                    .map(String::from)
            })
            .collect()
    }

    /// The name of the WAL segment being written (the one holding the insert position; on a
    /// segment boundary, as right after `pg_switch_wal()`, the next one).
    pub fn current_segment(&self) -> String {
        let row = self
            .psql("SELECT pg_walfile_name(pg_current_wal_lsn()) || ' ' || pg_current_wal_lsn()");
        let (name, lsn) = row.split_once(' ').unwrap();
        let (hi, lo) = lsn.split_once('/').unwrap();
        let pos = u64::from_str_radix(hi, 16).unwrap() << 32 | u64::from_str_radix(lo, 16).unwrap();
        let seg = pos / (16 << 20);
        format!("{}{:08X}{:08X}", &name[..8], seg >> 8, seg & 0xff)
    }

    /// Wait until PostgreSQL has nothing left to archive, the segment a `pg_switch_wal()` just
    /// finished included.
    pub fn wait_archived(&self, limit: Duration) {
        let t = Instant::now();
        let current = self.current_segment();
        let wal = self.server.data_dir().join("pg_wal");
        // Every complete segment is marked `.done`; right after `pg_switch_wal()` the finished
        // segment's `.ready` may not exist yet, so its absence alone proves nothing.
        let pending = || {
            let done = self.marked(".done");
            !self.marked(".ready").is_empty()
                || fs::read_dir(&wal).unwrap().flatten().any(|e| {
                    let n = e.file_name().to_string_lossy().to_string();
                    n.len() == 24 && n[..8] == current[..8] && n < current && !done.contains(&n)
                })
        };
        while pending() {
            assert!(
                t.elapsed() < limit,
                "still waiting to be archived after {limit:?}: {:?}\n{}",
                self.marked(".ready"),
                self.psql("SELECT * FROM pg_stat_archiver")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
