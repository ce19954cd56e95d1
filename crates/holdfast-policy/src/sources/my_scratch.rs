//! Throwaway MariaDB/MySQL servers on a free loopback port, for drills (and tests).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::scratch::{io, log_tail, ScratchError};
use super::tool::{my_tool, output};
use super::Conn;

/// A running scratch server.
pub struct Server {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    options: Vec<String>,
}

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/libexec", "/usr/local/sbin"].map(PathBuf::from));
    names
        .iter()
        .find_map(|n| dirs.iter().map(|d| d.join(n)).find(|p| p.is_file()))
}

fn daemon() -> Result<PathBuf, ScratchError> {
    which(&["mariadbd", "mysqld"]).ok_or(ScratchError::Missing(
        "mariadbd not found: install the mariadb-server package",
    ))
}

fn user_arg() -> String {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        "--user=root".to_string()
    } else {
        format!("--user={}", holdfast_core::util::username())
    }
}

/// Make an empty data directory `data` with the system tables (temporary files in `tmp`: two
/// servers set up at once must not share them).
fn install(data: &Path, tmp: &Path) -> Result<(), ScratchError> {
    let install = which(&["mariadb-install-db", "mysql_install_db"]).ok_or(
        ScratchError::Missing("mariadb-install-db not found: install the mariadb-server package"),
    )?;
    let mut c = Command::new(&install);
    c.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .args([
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            &user_arg(),
        ]);
    output(c, "mariadb-install-db")?;
    Ok(())
}

impl Server {
    /// Initialise a data directory under `scratch` and start a server on it (without a binary
    /// log).
    pub fn start(scratch: &Path, timeout: Duration) -> Result<Server, ScratchError> {
        Server::start_with(scratch, timeout, &["--skip-log-bin"])
    }

    /// The same, with these server options (e.g. `--log-bin=binlog`, `--server-id=7`) instead
    /// of `--skip-log-bin`.
    pub fn start_with(
        scratch: &Path,
        timeout: Duration,
        options: &[&str],
    ) -> Result<Server, ScratchError> {
        daemon()?;
        let dir = tempfile::Builder::new()
            .prefix("my-")
            .tempdir_in(scratch)
            .map_err(io(format!("scratch directory in {}", scratch.display())))?
            .keep();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(io("finding a free loopback port"))?;
        let mut s = Server {
            dir,
            port,
            child: None,
            options: options.iter().map(|o| o.to_string()).collect(),
        };
        let tmp = s.dir.join("tmp");
        fs::create_dir_all(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
        install(&s.data_dir(), &tmp)?;
        s.spawn(timeout)?;
        Ok(s)
    }

    /// Its data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Kill the server at once (SIGKILL: no shutdown, like a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the server again on the same data directory, socket and port.
    pub fn start_again(&mut self, timeout: Duration) -> Result<(), ScratchError> {
        self.kill();
        self.spawn(timeout)
    }

    /// Kill the server, delete its data directory, and start a fresh one (empty, new system
    /// tables) on the same socket and port: a lost server replaced.
    pub fn replace_with_empty(&mut self, timeout: Duration) -> Result<(), ScratchError> {
        self.kill();
        let data = self.data_dir();
        fs::remove_dir_all(&data).map_err(io(format!("deleting {}", data.display())))?;
        install(&data, &self.dir.join("tmp"))?;
        self.spawn(timeout)
    }

    fn spawn(&mut self, timeout: Duration) -> Result<(), ScratchError> {
        let daemon = daemon()?;
        let dir = self.dir.clone();
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .map_err(io("creating the server log"))?;
        let child = Command::new(&daemon)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir().display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .args([
                "--bind-address=127.0.0.1",
                "--innodb-flush-log-at-trx-commit=0",
                &user_arg(),
            ])
            .args(&self.options)
            .stdout(log.try_clone().map_err(io("the server log"))?)
            .stderr(log)
            .spawn()
            .map_err(io(format!("starting {}", daemon.display())))?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + timeout.max(Duration::from_secs(30));
        loop {
            let mut c = Command::new(my_tool("mariadb-admin", "mysqladmin"));
            self.conn().my(&mut c);
            c.arg("ping");
            if c.stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|st| st.success())
            {
                return Ok(());
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(ScratchError::Exited {
                    status: st,
                    log: log_tail(&self.dir.join("server.log")),
                });
            }
            if std::time::Instant::now() > deadline {
                return Err(ScratchError::Timeout);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Client settings for this server (over its unix socket, as root without password).
    pub fn conn(&self) -> Conn {
        Conn {
            host: Some(self.dir.join("sock").display().to_string()),
            port: None,
            user: Some("root".into()),
            password: None,
        }
    }

    /// Its TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let mut a = Command::new(my_tool("mariadb-admin", "mysqladmin"));
            self.conn().my(&mut a);
            let _ = a
                .arg("shutdown")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
