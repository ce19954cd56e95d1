//! Throwaway PostgreSQL servers on a free loopback port, for drills (and tests).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub use super::scratch::ScratchError;
use super::scratch::{io, log_tail};
use super::tool::output;
use super::Conn;

/// The directory of PostgreSQL's server programs (initdb, pg_ctl).
pub fn bindir() -> Result<PathBuf, ScratchError> {
    if let Some(d) = std::env::var_os("HOLDFAST_PG_BINDIR") {
        return Ok(d.into());
    }
    let mut found: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|r| {
            r.flatten()
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(d) = found.pop() {
        return Ok(d);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|d| d.join("initdb").is_file())
        .ok_or(ScratchError::Missing("PostgreSQL server programs (initdb, pg_ctl) not found: install the postgresql package or set HOLDFAST_PG_BINDIR"))
}

fn free_port() -> Result<u16, ScratchError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io("finding a free loopback port"))
}

/// A running scratch server.
pub struct Server {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    timeout: Duration,
    as_user: Option<String>,
    running: std::cell::Cell<bool>,
}

impl Server {
    fn cmd(&self, prog: &str) -> Command {
        let exe = self.bin.join(prog);
        match &self.as_user {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.args([
                    format!("--reuid={u}"),
                    format!("--regid={u}"),
                    "--init-groups".into(),
                    "--".into(),
                ])
                .arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    /// initdb and start a server under `scratch` (as user `postgres` when running as root:
    /// PostgreSQL refuses to run as root).
    pub fn start(scratch: &Path, timeout: Duration) -> Result<Server, ScratchError> {
        let bin = bindir()?;
        let dir = tempfile::Builder::new()
            .prefix("pg-")
            .tempdir_in(scratch)
            .map_err(io(format!("scratch directory in {}", scratch.display())))?
            .keep();
        // SAFETY: geteuid has no preconditions.
        let as_user = (unsafe { libc::geteuid() } == 0).then(|| "postgres".to_string());
        if let Some(u) = &as_user {
            let o = Command::new("chown")
                .arg("-R")
                .arg(format!("{u}:"))
                .arg(&dir)
                .output()
                .map_err(io("running chown"))?;
            if !o.status.success() {
                return Err(ScratchError::Chown {
                    dir: dir.display().to_string(),
                    user: u.clone(),
                    stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
                });
            }
            // The parents must be traversable by that user.
            let mut p = dir.parent();
            while let Some(d) = p {
                use std::os::unix::fs::PermissionsExt;
                if let Ok(m) = fs::metadata(d) {
                    if m.permissions().mode() & 0o001 == 0 {
                        let _ = fs::set_permissions(
                            d,
                            fs::Permissions::from_mode(m.permissions().mode() | 0o711),
                        );
                    }
                }
                p = d.parent();
            }
        }
        let s = Server {
            dir,
            port: free_port()?,
            bin,
            timeout,
            as_user,
            running: std::cell::Cell::new(false),
        };
        let mut c = s.cmd("initdb");
        c.arg("-D").arg(s.data_dir()).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        output(c, "initdb")?;
        s.launch()?;
        Ok(s)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn launch(&self) -> Result<(), ScratchError> {
        let mut c = self.cmd("pg_ctl");
        c.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t"])
            .arg(self.timeout.as_secs().max(30).to_string())
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                self.port,
                self.dir.display()
            ));
        c.arg("start");
        match output(c, "pg_ctl start") {
            Ok(_) => {
                self.running.set(true);
                Ok(())
            }
            Err(error) => Err(ScratchError::Start {
                error,
                log: log_tail(&self.dir.join("server.log")),
            }),
        }
    }

    /// After a base backup was extracted into the data directory: fix ownership and mode,
    /// then start the server on it (it recovers from the WAL in the backup).
    pub fn adopt_restored_data(&self) -> Result<(), ScratchError> {
        use std::os::unix::fs::PermissionsExt;
        let d = self.data_dir();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700))
            .map_err(io(format!("chmod {}", d.display())))?;
        if let Some(u) = &self.as_user {
            let mut c = Command::new("chown");
            c.arg("-R").arg(format!("{u}:")).arg(&d);
            output(c, "chown")?;
        }
        self.launch()
    }

    /// Stop and start it again (after `ALTER SYSTEM` of a setting that needs a restart, such
    /// as `archive_mode`).
    pub fn restart(&self) -> Result<(), ScratchError> {
        self.stop();
        self.launch()
    }

    /// Client settings for this server.
    pub fn conn(&self) -> Conn {
        Conn {
            host: Some("127.0.0.1".into()),
            port: Some(self.port),
            user: Some("postgres".into()),
            password: None,
        }
    }

    /// Stop it (idempotent).
    pub fn stop(&self) {
        if self.running.replace(false) {
            let mut c = self.cmd("pg_ctl");
            c.arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "stop"]);
            let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
