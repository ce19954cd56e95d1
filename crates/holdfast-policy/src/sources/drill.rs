//! Drills of stream sources: restore into a scratch place (a scratch database server on a free
//! loopback port for PostgreSQL and MariaDB), check it, and run the source's verify query or
//! command.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use holdfast_core::snapshot::SnapshotEntry;
use holdfast_core::Repository;

use super::{my_tool, output, restore, Conn};
use crate::config::{SourceConfig, SourceKind};

/// Result of a database drill.
pub struct DrillOutcome {
    /// Passed.
    pub passed: bool,
    /// What was done and checked.
    pub messages: Vec<String>,
    /// Bytes of dumps restored.
    pub bytes: u64,
}

/// Record a step's messages (or its error); true if it succeeded.
fn noted(r: Result<Vec<String>, String>, messages: &mut Vec<String>) -> bool {
    match r {
        Ok(m) => {
            messages.extend(m);
            true
        }
        Err(e) => {
            messages.push(e);
            false
        }
    }
}

/// Run a verify query with a client command; records what it returned; true if it passed.
fn verify_query(c: Command, messages: &mut Vec<String>) -> bool {
    match output(c, "verify query") {
        Ok(out) => {
            messages.push(format!("verify query returned {:?}", out.trim()));
            truthy(&out)
        }
        Err(e) => {
            messages.push(e);
            false
        }
    }
}

fn truthy(s: &str) -> bool {
    let v = s.lines().next().unwrap_or("").trim();
    !(v.is_empty() || v == "f" || v == "false" || v == "0")
}

/// Drill a stream source: restore into a scratch place (a scratch server for databases),
/// check it, run the verify query or command.
pub fn drill(
    repo: &Repository,
    s: &SourceConfig,
    snap: &SnapshotEntry,
    scratch: &Path,
    timeout: Duration,
) -> Result<DrillOutcome, String> {
    let mut messages = Vec::new();
    let bytes = snap.snapshot.summary.total_bytes;
    let passed = match s.kind {
        SourceKind::Sqlite => {
            let db = scratch.join("restored.sqlite");
            messages.extend(restore(
                repo,
                s,
                snap,
                Some(db.to_str().ok_or("scratch path is not UTF-8")?),
                false,
                &Conn::default(),
            )?);
            let c = rusqlite::Connection::open(&db).map_err(|e| e.to_string())?;
            let ic: String = c
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .map_err(|e| e.to_string())?;
            messages.push(format!("PRAGMA integrity_check: {ic}"));
            let mut ok = ic == "ok";
            let tables: Vec<String> = c
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY 1")
                .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
                .map_err(|e| e.to_string())?;
            for t in tables {
                let n: i64 = c
                    .query_row(
                        &format!("SELECT count(*) FROM \"{}\"", t.replace('"', "\"\"")),
                        [],
                        |r| r.get(0),
                    )
                    .map_err(|e| e.to_string())?;
                messages.push(format!("table {t}: {n} rows"));
            }
            if let Some(q) = &s.verify {
                match c.query_row(q, [], |r| r.get::<_, rusqlite::types::Value>(0)) {
                    Ok(v) => {
                        let t = match v {
                            rusqlite::types::Value::Integer(i) => i.to_string(),
                            rusqlite::types::Value::Text(t) => t,
                            rusqlite::types::Value::Real(r) => r.to_string(),
                            _ => String::new(),
                        };
                        messages.push(format!("verify query returned {t:?}"));
                        ok &= truthy(&t);
                    }
                    Err(e) => {
                        messages.push(format!("verify query failed: {e}"));
                        ok = false;
                    }
                }
            }
            ok
        }
        SourceKind::Postgres => {
            let server = pg_scratch::Server::start(scratch, timeout)?;
            let conn = server.conn();
            let physical = s.mode.as_deref() == Some("physical");
            let r = if physical {
                server.stop();
                let data = server.data_dir();
                fs::remove_dir_all(&data).map_err(|e| e.to_string())?;
                let msgs = restore(
                    repo,
                    s,
                    snap,
                    Some(data.to_str().unwrap_or_default()),
                    false,
                    &conn,
                )?;
                server.adopt_restored_data()?;
                Ok(msgs)
            } else {
                restore(repo, s, snap, None, false, &conn)
            };
            let mut ok = noted(r, &mut messages);
            if ok {
                if let Some(q) = &s.verify {
                    let db = s
                        .verify_database
                        .clone()
                        .or_else(|| s.database.clone().filter(|d| d != "all"))
                        .unwrap_or_else(|| "postgres".into());
                    messages.push(format!(
                        "verify query runs in database {db:?}{}",
                        if s.verify_database.is_none()
                            && s.database.as_deref().is_none_or(|d| d == "all")
                        {
                            " (whole cluster: name another with verify-database = \"...\")"
                        } else {
                            ""
                        }
                    ));
                    let mut c = Command::new("psql");
                    c.args([
                        "-X",
                        "-At",
                        "--no-password",
                        "-v",
                        "ON_ERROR_STOP=1",
                        "-d",
                        &db,
                        "-c",
                        q,
                    ]);
                    conn.pg(&mut c);
                    ok = verify_query(c, &mut messages);
                }
            }
            server.stop();
            ok
        }
        SourceKind::Mysql => {
            let server = my_scratch::Server::start(scratch, timeout)?;
            let conn = server.conn();
            let mut ok = noted(restore(repo, s, snap, None, false, &conn), &mut messages);
            if ok {
                if let Some(q) = &s.verify {
                    let tool = my_tool("mariadb", "mysql");
                    let mut c = Command::new(&tool);
                    conn.my(&mut c);
                    c.args(["-N", "-B"]);
                    if let Some(db) = s
                        .verify_database
                        .as_deref()
                        .or(s.database.as_deref().filter(|d| *d != "all"))
                    {
                        c.arg(format!("--database={db}"));
                        messages.push(format!("verify query runs in database {db:?}"));
                    }
                    c.args(["-e", q]);
                    ok = verify_query(c, &mut messages);
                }
            }
            drop(server);
            ok
        }
        SourceKind::Command => {
            let target = scratch.join("restored");
            fs::create_dir_all(&target).map_err(|e| e.to_string())?;
            let mut ok = true;
            match restore(
                repo,
                s,
                snap,
                Some(target.to_str().unwrap_or_default()),
                false,
                &Conn::default(),
            ) {
                Ok(m) => messages.extend(m),
                Err(e) => {
                    messages.push(e);
                    ok = false;
                }
            }
            if ok {
                if let Some(v) = &s.verify {
                    let (vok, out) =
                        crate::jobs::run_hook(v, timeout, &[("HOLDFAST_DRILL_DIR", &target)]);
                    messages.push(format!("verify: {}", if vok { "ok".into() } else { out }));
                    ok = vok;
                }
            }
            ok
        }
        SourceKind::Path | SourceKind::S3 => return Err("not a stream source".into()),
    };
    Ok(DrillOutcome {
        passed,
        messages,
        bytes,
    })
}

/// Throwaway PostgreSQL servers on a free loopback port, for drills (and tests).
pub mod pg_scratch {
    use super::*;

    /// The directory of PostgreSQL's server programs (initdb, pg_ctl).
    pub fn bindir() -> Result<PathBuf, String> {
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
            .ok_or_else(|| "PostgreSQL server programs (initdb, pg_ctl) not found: install the postgresql package or set HOLDFAST_PG_BINDIR".into())
    }

    fn free_port() -> Result<u16, String> {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| e.to_string())
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
        pub fn start(scratch: &Path, timeout: Duration) -> Result<Server, String> {
            let bin = bindir()?;
            let dir = tempfile::Builder::new()
                .prefix("pg-")
                .tempdir_in(scratch)
                .map_err(|e| e.to_string())?
                .keep();
            // SAFETY: geteuid has no preconditions.
            let as_user = (unsafe { libc::geteuid() } == 0).then(|| "postgres".to_string());
            if let Some(u) = &as_user {
                let o = Command::new("chown")
                    .arg("-R")
                    .arg(format!("{u}:"))
                    .arg(&dir)
                    .output()
                    .map_err(|e| e.to_string())?;
                if !o.status.success() {
                    return Err(format!("chown {} to {u}: {} (a scratch PostgreSQL server must not run as root; the postgresql package creates the user)", dir.display(), String::from_utf8_lossy(&o.stderr).trim()));
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

        fn launch(&self) -> Result<(), String> {
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
                Err(e) => {
                    let log = fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                    Err(format!(
                        "{e}; server log: {}",
                        log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                    ))
                }
            }
        }

        /// After a base backup was extracted into the data directory: fix ownership and mode,
        /// then start the server on it (it recovers from the WAL in the backup).
        pub fn adopt_restored_data(&self) -> Result<(), String> {
            use std::os::unix::fs::PermissionsExt;
            let d = self.data_dir();
            fs::set_permissions(&d, fs::Permissions::from_mode(0o700))
                .map_err(|e| e.to_string())?;
            if let Some(u) = &self.as_user {
                let mut c = Command::new("chown");
                c.arg("-R").arg(format!("{u}:")).arg(&d);
                output(c, "chown")?;
            }
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
}

/// Throwaway MariaDB/MySQL servers on a free loopback port, for drills (and tests).
pub mod my_scratch {
    use super::*;

    /// A running scratch server.
    pub struct Server {
        dir: PathBuf,
        port: u16,
        child: Option<Child>,
    }

    fn which(names: &[&str]) -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        dirs.extend(["/usr/sbin", "/usr/libexec", "/usr/local/sbin"].map(PathBuf::from));
        names
            .iter()
            .find_map(|n| dirs.iter().map(|d| d.join(n)).find(|p| p.is_file()))
    }

    impl Server {
        /// Initialise a data directory under `scratch` and start a server on it.
        pub fn start(scratch: &Path, timeout: Duration) -> Result<Server, String> {
            let install = which(&["mariadb-install-db", "mysql_install_db"])
                .ok_or("mariadb-install-db not found: install the mariadb-server package")?;
            let daemon = which(&["mariadbd", "mysqld"])
                .ok_or("mariadbd not found: install the mariadb-server package")?;
            let dir = tempfile::Builder::new()
                .prefix("my-")
                .tempdir_in(scratch)
                .map_err(|e| e.to_string())?
                .keep();
            let data = dir.join("data");
            // SAFETY: geteuid has no preconditions.
            let root = unsafe { libc::geteuid() } == 0;
            let user = if root {
                "--user=root".to_string()
            } else {
                format!("--user={}", holdfast_core::util::username())
            };
            let mut c = Command::new(&install);
            c.arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .args([
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    &user,
                ]);
            output(c, "mariadb-install-db")?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| e.to_string())?;
            let log = File::create(dir.join("server.log")).map_err(|e| e.to_string())?;
            let child = Command::new(&daemon)
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}", dir.join("sock").display()))
                .arg(format!("--port={port}"))
                .arg(format!("--pid-file={}", dir.join("pid").display()))
                .args([
                    "--bind-address=127.0.0.1",
                    "--skip-log-bin",
                    "--innodb-flush-log-at-trx-commit=0",
                    &user,
                ])
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("starting {}: {e}", daemon.display()))?;
            let mut s = Server {
                dir,
                port,
                child: Some(child),
            };
            let deadline = std::time::Instant::now() + timeout.max(Duration::from_secs(30));
            loop {
                let mut c = Command::new(my_tool("mariadb-admin", "mysqladmin"));
                s.conn().my(&mut c);
                c.arg("ping");
                if c.stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|st| st.success())
                {
                    return Ok(s);
                }
                if let Some(Ok(Some(st))) = s.child.as_mut().map(|c| c.try_wait()) {
                    let log = fs::read_to_string(s.dir.join("server.log")).unwrap_or_default();
                    return Err(format!(
                        "the scratch MariaDB server exited ({st}): {}",
                        log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                    ));
                }
                if std::time::Instant::now() > deadline {
                    return Err("the scratch MariaDB server did not start in time".into());
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
}
