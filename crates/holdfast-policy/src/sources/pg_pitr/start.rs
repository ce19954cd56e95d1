//! Starting a server on a data directory restored for point-in-time recovery, waiting until
//! recovery ends (the server promoted), and reading where it ended: never reported as reached
//! unless the server says so.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::conf::{self, shell_word, Stop};
use super::names;
use crate::sources::pg_scratch;
use crate::sources::tool::{output, ToolError};
use crate::sources::Conn;

/// Why the restored server did not reach the target.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// PostgreSQL's programs are missing.
    #[error(transparent)]
    Missing(#[from] crate::sources::ScratchError),
    /// pg_ctl or psql failed.
    #[error("{error}; server log ({}): {log}", .path.display())]
    Tool {
        /// What failed.
        #[source]
        error: Box<ToolError>,
        /// The server log.
        path: PathBuf,
        /// Its last lines.
        log: String,
    },
    /// Recovery did not end in time.
    #[error("recovery did not end within {waited:?} (the server is still replaying; see its log {})", .log.display())]
    Timeout {
        /// How long it waited.
        waited: Duration,
        /// The server log.
        log: PathBuf,
    },
    /// The server stopped short of the target or went past it.
    #[error("{0}")]
    Short(String),
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

/// A server recovered and promoted.
#[derive(Debug, Clone)]
pub struct Started {
    /// Its port.
    pub port: u16,
    /// Where to connect (`-h`): its socket directory, or 127.0.0.1.
    pub host: String,
    /// Its log.
    pub log: PathBuf,
    /// The commit time of the last transaction replayed, if any was.
    pub reached: Option<DateTime<Utc>>,
    /// The last WAL position replayed.
    pub replay_lsn: Option<u64>,
    /// The timeline it runs on now.
    pub timeline: Option<u32>,
    /// What happened, for people.
    pub lines: Vec<String>,
    owner: Option<(u32, u32)>,
}

fn as_owner(owner: Option<(u32, u32)>, exe: &Path) -> Command {
    match owner {
        Some((u, g)) => {
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={u}"),
                format!("--regid={g}"),
                "--clear-groups".into(),
                "--".into(),
            ])
            .arg(exe);
            c
        }
        None => Command::new(exe),
    }
}

fn pick_port(wanted: Option<u16>) -> Result<u16, StartError> {
    let io = |source| StartError::Io {
        what: "finding a free port".into(),
        source,
    };
    if let Some(p) = wanted {
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return Ok(p);
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io)?;
    Ok(l.local_addr().map_err(io)?.port())
}

fn log_tail(path: &Path, n: usize) -> String {
    let log = fs::read_to_string(path).unwrap_or_default();
    let mut v: Vec<&str> = log.lines().rev().take(n).collect();
    v.reverse();
    v.join(" | ")
}

/// psql errors that mean the server will not let us in (no use waiting).
const REFUSED: &[&str] = &[
    "password authentication failed",
    "no pg_hba.conf entry",
    "Peer authentication failed",
    "does not exist",
    "fe_sendauth: no password supplied",
];

const NOT_REACHED: &str = "recovery ended before configured recovery target was reached";

/// Start PostgreSQL on `data`, wait until recovery ended, and check it reached `stop`;
/// `last_segno` is the last archived segment of the chain (recovery must replay into it
/// whenever it replays to the end), `seg_size` the segment size. Leaves the server running.
pub fn start_and_wait(
    data: &Path,
    conn: &Conn,
    stop: &Stop,
    last_segno: u64,
    seg_size: u64,
    timeout: Duration,
) -> Result<Started, StartError> {
    let bin = pg_scratch::bindir()?;
    let io = |what: String| move |source| StartError::Io { what, source };
    let m = fs::metadata(data.join("PG_VERSION")).map_err(io(format!("{}", data.display())))?;
    // SAFETY: geteuid has no preconditions.
    let owner = (unsafe { libc::geteuid() } == 0).then_some((m.uid(), m.gid()));
    let port = pick_port(conn.port)?;
    let name = data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let log = data
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("{name}.holdfast-recovery.log"));
    fs::write(&log, "").map_err(io(format!("creating {}", log.display())))?;
    if let Some((u, g)) = owner {
        std::os::unix::fs::chown(&log, Some(u), Some(g))
            .map_err(io(format!("chown {}", log.display())))?;
    }
    // The socket in the data directory (short enough for a socket path), else TCP only.
    let socket = data.to_path_buf();
    let sock_ok = socket.as_os_str().len() < 90;
    let opts = if sock_ok {
        format!("-p {port} -k {}", shell_word(&socket.to_string_lossy()))
    } else {
        format!("-p {port} -k '' -c listen_addresses=127.0.0.1")
    };
    let host = if sock_ok {
        socket.to_string_lossy().into_owned()
    } else {
        "127.0.0.1".into()
    };
    let mut s = Started {
        port,
        host: host.clone(),
        log: log.clone(),
        reached: None,
        replay_lsn: None,
        timeline: None,
        lines: Vec::new(),
        owner,
    };
    let pg_ctl = |action: &str| {
        let mut c = as_owner(owner, &bin.join("pg_ctl"));
        c.arg("-D").arg(data).arg("-l").arg(&log);
        c.args([
            "-w",
            "-t",
            &timeout.as_secs().max(30).to_string(),
            "-o",
            &opts,
            action,
        ]);
        output(c, "pg_ctl start")
    };
    let tool_err = |error| StartError::Tool {
        error: Box::new(error),
        path: log.clone(),
        log: log_tail(&log, 8),
    };
    let started = Instant::now();
    let mut fell_back = false;
    // A target after the last commit archived: PostgreSQL replays everything and refuses to
    // end recovery. Every commit up to the target was replayed (the chain reaches the target),
    // so the target is dropped and the end of the archive is taken instead, checked below to
    // be the archive's last segment.
    let mut fall_back = |s: &mut Started| -> Result<bool, StartError> {
        if fell_back
            || *stop == Stop::End
            || !fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(NOT_REACHED)
        {
            return Ok(false);
        }
        fell_back = true;
        let _ = stop_server(data, owner, &bin);
        conf::drop_target(data).map_err(io(format!("editing {}", data.display())))?;
        s.lines.push(
            "no commit after the target is archived: every commit up to it was replayed, so recovery went on to the end of the archive".into(),
        );
        Ok(true)
    };
    'start: loop {
        if let Err(e) = pg_ctl("start") {
            if fall_back(&mut s)? {
                continue 'start;
            }
            return Err(tool_err(e));
        }
        loop {
            match psql(owner, &bin, &host, port, conn, "SELECT pg_is_in_recovery()") {
                Ok(v) if v.trim() == "f" => break 'start,
                Ok(_) => {}
                Err(e) => {
                    // The server runs but refuses us: waiting would not help.
                    let m = e.to_string();
                    if REFUSED.iter().any(|r| m.contains(r)) {
                        return Err(StartError::Short(format!(
                            "the restored server runs (port {port}) but refuses to answer whether recovery ended: {m} (connect as a superuser its pg_hba.conf lets in over the socket in {host}: set the source's user)"
                        )));
                    }
                    if crate::sources::pg_physical::running_postmaster(data).is_none() {
                        if fall_back(&mut s)? {
                            continue 'start;
                        }
                        return Err(tool_err(e));
                    }
                }
            }
            if started.elapsed() > timeout {
                return Err(StartError::Timeout {
                    waited: timeout,
                    log: log.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let fell_back = s
        .lines
        .iter()
        .any(|l| l.starts_with("no commit after the target"));
    let row = psql(
        owner,
        &bin,
        &host,
        port,
        conn,
        "SELECT coalesce(to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), ''), coalesce(pg_last_wal_replay_lsn()::text, ''), (SELECT timeline_id FROM pg_control_checkpoint())",
    )
    .map_err(tool_err)?;
    let f: Vec<&str> = row.trim().split('|').collect();
    s.reached = f
        .first()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    s.replay_lsn = f.get(1).and_then(|l| names::parse_lsn(l));
    s.timeline = f.get(2).and_then(|t| t.trim().parse().ok());
    for l in fs::read_to_string(&log).unwrap_or_default().lines() {
        if l.contains("recovery stopping")
            || l.contains("last completed transaction")
            || l.contains("selected new timeline ID")
        {
            s.lines.push(format!("server: {}", l.trim()));
        }
    }
    // Ending at the end of the archive must mean its last segment was replayed (a fetch that
    // failed on the way would end recovery early, silently).
    if *stop == Stop::End || fell_back {
        let got = s.replay_lsn.map(|l| l / seg_size);
        if got.is_none_or(|g| g < last_segno) {
            return Err(StartError::Short(format!(
                "recovery ended at {} before the archive's last segment (number {last_segno}): a WAL fetch failed on the way (see {}); the server holds an earlier state than asked",
                s.replay_lsn.map(names::format_lsn).unwrap_or_else(|| "?".into()),
                log.display()
            )));
        }
    }
    if let (Stop::Time(t), Some(r)) = (stop, s.reached) {
        if r > *t {
            return Err(StartError::Short(format!(
                "the server replayed a commit of {} after the target {}",
                r.to_rfc3339(),
                t.to_rfc3339()
            )));
        }
    }
    if let (Stop::Lsn(l), Some(r)) = (stop, s.replay_lsn) {
        if r < *l {
            return Err(StartError::Short(format!(
                "recovery ended at {} before the target {}",
                names::format_lsn(r),
                names::format_lsn(*l)
            )));
        }
    }
    Ok(s)
}

fn psql(
    owner: Option<(u32, u32)>,
    bin: &Path,
    host: &str,
    port: u16,
    conn: &Conn,
    q: &str,
) -> Result<String, ToolError> {
    let psql = if bin.join("psql").is_file() {
        bin.join("psql")
    } else {
        PathBuf::from("psql")
    };
    let mut c = as_owner(owner, &psql);
    c.args([
        "-X",
        "-At",
        "--no-password",
        "-h",
        host,
        "-p",
        &port.to_string(),
    ])
    .args([
        "-U",
        conn.user.as_deref().unwrap_or("postgres"),
        "-d",
        "postgres",
        "-c",
        q,
    ]);
    if let Some(pw) = &conn.password {
        c.env("PGPASSWORD", pw);
    }
    output(c, "psql (waiting for recovery)")
}

fn stop_server(data: &Path, owner: Option<(u32, u32)>, bin: &Path) -> Result<(), ToolError> {
    let mut c = as_owner(owner, &bin.join("pg_ctl"));
    c.arg("-D").arg(data).args(["-m", "fast", "-w", "stop"]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let _ = c.status();
    Ok(())
}

impl Started {
    /// Stop the server (a drill's scratch server).
    pub fn stop(&self, data: &Path) {
        if let Ok(bin) = pg_scratch::bindir() {
            let _ = stop_server(data, self.owner, &bin);
        }
    }

    /// Run a query on it as the restored cluster's superuser (`user`).
    pub fn query(&self, conn: &Conn, db: &str, q: &str) -> Result<String, ToolError> {
        let bin = pg_scratch::bindir().map_err(|e| ToolError::Io {
            what: "finding psql".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let psql = if bin.join("psql").is_file() {
            bin.join("psql")
        } else {
            PathBuf::from("psql")
        };
        let mut c = as_owner(self.owner, &psql);
        c.args(["-X", "-At", "--no-password", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.host)
            .args(["-p", &self.port.to_string()])
            .args([
                "-U",
                conn.user.as_deref().unwrap_or("postgres"),
                "-d",
                db,
                "-c",
                q,
            ]);
        output(c, "psql")
    }
}
