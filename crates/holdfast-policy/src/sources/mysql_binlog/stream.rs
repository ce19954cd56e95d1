//! `holdfast replicate` for a continuous mysql source: a `mariadb-binlog --raw --stop-never`
//! child writes the server's binary log into a spool directory as it is written; each round
//! stores the complete events it has not stored yet (whole closed files and the grown tail of
//! the current one) as one batch, and only then moves its cursor. When the child exits (the
//! connection dropped, the server restarted) it is started again at the start of the file the
//! archive ends in, and storing goes on from the archive's end in that file: no gap, no
//! piece twice. When it starts it resumes where this host's archive ends.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use holdfast_core::logs::{self, LogKind, NewPiece};
use holdfast_core::progress::NoProgress;
use holdfast_core::{snapshot, Repository};

use super::events::{self, next_name, seq, valid_name};
use super::window::Chain;
use super::{meta, BinlogError, BinlogSettings};
use crate::sources::pitr::{Replicator, Shipped};
use crate::sources::tool::{my_tool, output};
use crate::sources::{Conn, SourceError};

/// The most bytes one round stores (the rest waits for the next round).
const ROUND_BYTES: usize = 64 << 20;

/// Where the archive ends: the next byte to store.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    file: String,
    pos: u64,
}

/// The stream of one source.
pub struct BinlogStream {
    s: BinlogSettings,
    child: Option<Child>,
    cursor: Option<Cursor>,
    last_stored: Option<Instant>,
    starts: u64,
}

impl BinlogStream {
    /// A stream not started yet (the first round starts it).
    pub fn new(s: BinlogSettings) -> Self {
        BinlogStream {
            s,
            child: None,
            cursor: None,
            last_stored: None,
            starts: 0,
        }
    }

    fn spool(&self) -> Result<PathBuf, BinlogError> {
        match &self.s.spool {
            Some(p) => Ok(p.clone()),
            None => holdfast_core::localstate::state_dir()
                .map(|d| d.join("binlog").join(&self.s.name))
                .ok_or_else(|| {
                    BinlogError::Server(
                        "no state directory for the binary log spool: set HOLDFAST_STATE_DIR or log.spool".into(),
                    )
                }),
        }
    }

    fn conn(&self) -> Result<Conn, BinlogError> {
        Ok(self.s.server.conn()?)
    }

    /// Where this host's archive ends, or where to begin (the newest base's file, else the
    /// server's current file).
    fn resume(&self, repo: &Repository, conn: &Conn) -> Result<Cursor, BinlogError> {
        let (all, _) = snapshot::load_all(repo)?;
        let me = holdfast_core::util::hostname();
        let mine: Vec<_> = logs::batches(&all, &self.s.name, LogKind::Binlog)
            .into_iter()
            .filter(|(e, _)| e.snapshot.hostname == me)
            .collect();
        let chain = Chain::of(&mine);
        let last = chain
            .segments
            .iter()
            .flat_map(|s| s.chunks.iter())
            .max_by_key(|c| (c.seq, c.end));
        if let Some(c) = last {
            return Ok(if c.closed {
                Cursor {
                    file: next_name(c.file).unwrap_or_default(),
                    pos: 0,
                }
            } else {
                Cursor {
                    file: c.file.to_string(),
                    pos: c.end,
                }
            });
        }
        if let Some(m) = chain
            .marks
            .values()
            .max_by_key(|m| (seq(&m.file), m.consistent_by))
        {
            return Ok(Cursor {
                file: m.file.clone(),
                pos: 0,
            });
        }
        let (file, _) = master_status(conn)?;
        Ok(Cursor { file, pos: 0 })
    }

    /// Start the child at the start of `file` (after the previous one ended), into an empty
    /// spool.
    fn start(&mut self, conn: &Conn, file: &str) -> Result<String, BinlogError> {
        let spool = self.spool()?;
        let err = |source| BinlogError::Spool {
            path: spool.clone(),
            source,
        };
        let dir = spool.join("stream");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(err)?;
        let log = fs::File::create(spool.join("stream.log")).map_err(err)?;
        let tool = my_tool("mariadb-binlog", "mysqlbinlog");
        let mut c = Command::new(&tool);
        c.arg("--read-from-remote-server");
        conn.my(&mut c);
        c.args(["--raw", "--stop-never"])
            .arg(format!(
                "--stop-never-slave-server-id={}",
                stream_id(&self.s.name)
            ))
            .arg(format!("--result-file={}/", dir.display()))
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = c.spawn().map_err(|e| {
            BinlogError::Server(format!(
                "cannot run {tool}: {e} (install the MariaDB client)"
            ))
        })?;
        self.child = Some(child);
        self.starts += 1;
        Ok(format!("{tool} streams from {file}"))
    }

    /// Start the stream at the cursor's file if it is not running. A file the server no
    /// longer has (purged before it was archived: `expire_logs_days` shorter than an outage)
    /// is a gap: the stream goes on with the server's next file, and says so.
    fn restart(&mut self, conn: &Conn, cursor: &mut Cursor, shipped: &mut Shipped) {
        if self.child.is_some() {
            return;
        }
        if let Ok(files) = binary_logs(conn) {
            let have = |f: &str| files.iter().any(|x| x == f);
            let cur = seq(&cursor.file);
            if !have(&cursor.file) {
                if let Some(next) = files.iter().find(|f| seq(f) > cur) {
                    shipped.messages.push(format!(
                        "GAP: the server no longer has {} (purged before it was archived): the archive has a gap from {} position {} to {next}; take a base backup (holdfast protect) to be recoverable after it, and keep binary logs longer than replicate may be down",
                        cursor.file, cursor.file, cursor.pos
                    ));
                    *cursor = Cursor {
                        file: next.clone(),
                        pos: 0,
                    };
                }
            }
        }
        match self.start(conn, &cursor.file) {
            Ok(m) => shipped.messages.push(m),
            Err(e) => shipped.messages.push(e.to_string()),
        }
    }

    fn child_ended(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(None) => None,
            r => {
                self.child = None;
                let why = self
                    .spool()
                    .ok()
                    .and_then(|s| fs::read_to_string(s.join("stream.log")).ok())
                    .map(|t| t.trim().lines().last().unwrap_or("").to_string())
                    .unwrap_or_default();
                Some(format!(
                    "the binary log stream ended ({}{}{})",
                    r.map(|s| s.map(|s| s.to_string()).unwrap_or_default())
                        .unwrap_or_else(|e| e.to_string()),
                    if why.is_empty() { "" } else { ": " },
                    why
                ))
            }
        }
    }

    /// Read what the spool holds of `file` from `pos` on (at most `limit` bytes).
    fn read_spool(&self, file: &str, pos: u64, limit: usize) -> Result<Vec<u8>, BinlogError> {
        let path = self.spool()?.join("stream").join(file);
        let err = |source| BinlogError::Spool {
            path: path.clone(),
            source,
        };
        let mut f = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(err(e)),
        };
        let len = f.metadata().map_err(err)?.len();
        if len <= pos {
            return Ok(Vec::new());
        }
        f.seek(SeekFrom::Start(pos)).map_err(err)?;
        let mut buf = Vec::new();
        f.take((len - pos).min(limit as u64))
            .read_to_end(&mut buf)
            .map_err(err)?;
        Ok(buf)
    }
}

/// The server id the stream registers with: stable per source, in a high range that real
/// replicas rarely use (a second connection with the same id would drop the first).
fn stream_id(name: &str) -> u32 {
    let h = blake3::hash(format!("{}\0{name}", holdfast_core::util::hostname()).as_bytes());
    let b = h.as_bytes();
    0xF000_0000 | (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x0FFF_FFFF)
}

/// `SHOW MASTER STATUS`: the file and position the server writes next.
fn master_status(conn: &Conn) -> Result<(String, u64), BinlogError> {
    let tool = my_tool("mariadb", "mysql");
    let mut c = Command::new(&tool);
    conn.my(&mut c);
    c.args(["-N", "-B", "-e", "SHOW MASTER STATUS"]);
    let out = output(c, &tool)?;
    let line = out.lines().next().unwrap_or("");
    let mut cols = line.split('\t');
    match (cols.next(), cols.next().and_then(|p| p.trim().parse().ok())) {
        (Some(f), Some(p)) if valid_name(f) => Ok((f.to_string(), p)),
        _ => Err(BinlogError::Server(
            "the server has no binary log (SHOW MASTER STATUS is empty): set log_bin and server_id (docs/pitr/mariadb.md)".into(),
        )),
    }
}

/// `SHOW BINARY LOGS`: the files the server has, oldest first.
fn binary_logs(conn: &Conn) -> Result<Vec<String>, BinlogError> {
    let tool = my_tool("mariadb", "mysql");
    let mut c = Command::new(&tool);
    conn.my(&mut c);
    c.args(["-N", "-B", "-e", "SHOW BINARY LOGS"]);
    let out = output(c, &tool)?;
    Ok(out
        .lines()
        .filter_map(|l| l.split('\t').next())
        .filter(|f| valid_name(f))
        .map(String::from)
        .collect())
}

/// Piece metadata for the range `start..end` of `file`.
fn piece<'a>(
    file: &str,
    start: u64,
    bytes: &'a [u8],
    walk: &events::Walk,
    caught_up: Option<DateTime<Utc>>,
) -> NewPiece<'a> {
    let end = start + bytes.len() as u64;
    let mut p = NewPiece::from_bytes(&format!("{file}@{start}"), bytes);
    p.piece.first_time = walk.events.first().and_then(|e| e.time());
    // Every change committed before the last event's second precedes it in the log; when
    // the stream is at the server's position, every change before the status query is in.
    p.piece.last_time = caught_up.or_else(|| walk.events.last().and_then(|e| e.time()));
    let m = &mut p.piece.meta;
    m.insert(meta::FILE.into(), file.into());
    m.insert(meta::START.into(), start.to_string());
    m.insert(meta::END.into(), end.to_string());
    if let Some(e) = walk.events.last() {
        m.insert(meta::SERVER_ID.into(), e.server_id.to_string());
    }
    if walk.closed {
        m.insert(meta::CLOSED.into(), "true".into());
    }
    p
}

impl Replicator for BinlogStream {
    fn describe(&self) -> String {
        format!(
            "binary log of {} streamed with mariadb-binlog --raw --stop-never",
            self.s.name
        )
    }

    fn interval(&self) -> Duration {
        self.s.interval
    }

    fn round(&mut self, repo: &Repository) -> Result<Shipped, SourceError> {
        let conn = self.conn()?;
        let mut shipped = Shipped::default();
        let mut cursor = match &self.cursor {
            Some(c) => c.clone(),
            None => {
                let c = self.resume(repo, &conn)?;
                shipped.messages.push(format!(
                    "the archive resumes at {} position {}",
                    c.file, c.pos
                ));
                c
            }
        };
        if !valid_name(&cursor.file) {
            return Err(BinlogError::Server(format!(
                "{:?} is no binary log file name",
                cursor.file
            ))
            .into());
        }
        self.cursor = Some(cursor.clone());
        if let Some(m) = self.child_ended() {
            shipped.messages.push(m);
        }
        // The server's position before the spool is read: if the archive reaches it, every
        // change committed before `asked` is stored.
        let asked = Utc::now();
        let status = master_status(&conn);
        let mut bufs: Vec<(String, u64, Vec<u8>, events::Walk)> = Vec::new();
        let mut budget = ROUND_BYTES;
        while budget > 0 {
            let buf = self.read_spool(&cursor.file, cursor.pos, budget)?;
            let w = events::walk(&buf, cursor.pos, budget).map_err(|e| BinlogError::Diverged {
                file: cursor.file.clone(),
                pos: cursor.pos,
                why: e.to_string(),
            })?;
            if w.end <= cursor.pos {
                // A file the server left without a closing event (it crashed): the stream
                // has gone on to the next file, so nothing more will come in this one.
                let next = next_name(&cursor.file).unwrap_or_default();
                if !self.spool()?.join("stream").join(&next).exists() {
                    break;
                }
                let w = events::Walk {
                    end: cursor.pos,
                    closed: true,
                    ..Default::default()
                };
                shipped.messages.push(format!(
                    "{} ended at position {} without a closing event (the server stopped without writing one); going on with {next}",
                    cursor.file, cursor.pos
                ));
                bufs.push((cursor.file.clone(), cursor.pos, Vec::new(), w));
                cursor = Cursor { file: next, pos: 0 };
                continue;
            }
            let n = (w.end - cursor.pos) as usize;
            budget = budget.saturating_sub(n);
            let mut buf = buf;
            buf.truncate(n);
            let (file, start, closed) = (cursor.file.clone(), cursor.pos, w.closed);
            cursor = if closed {
                Cursor {
                    file: next_name(&file).unwrap_or_default(),
                    pos: 0,
                }
            } else {
                Cursor {
                    file: file.clone(),
                    pos: w.end,
                }
            };
            bufs.push((file, start, buf, w));
            if !closed {
                break;
            }
        }
        let at_server = match &status {
            Ok((f, p)) => (seq(f), *p) <= (seq(&cursor.file), cursor.pos),
            Err(_) => false,
        };
        if let Err(e) = &status {
            shipped.messages.push(format!(
                "cannot read the server's position ({e}): piece times are event times"
            ));
        }
        let caught = at_server.then_some(asked);
        let n = bufs.len();
        let mut pieces: Vec<NewPiece> = bufs
            .iter()
            .enumerate()
            .map(|(i, (f, s, b, w))| piece(f, *s, b, w, if i + 1 == n { caught } else { None }))
            .collect();
        let heartbeat_due = self
            .last_stored
            .is_none_or(|t| t.elapsed() >= self.s.heartbeat);
        if pieces.is_empty() && at_server && heartbeat_due {
            let mut p =
                NewPiece::from_bytes(&format!("{}@{}.heartbeat", cursor.file, cursor.pos), &[]);
            p.piece.last_time = Some(asked);
            for (k, v) in [
                (meta::FILE, cursor.file.clone()),
                (meta::START, cursor.pos.to_string()),
                (meta::END, cursor.pos.to_string()),
                (meta::HEARTBEAT, "true".into()),
            ] {
                p.piece.meta.insert(k.into(), v);
            }
            pieces.push(p);
            shipped.messages.push(format!(
                "idle: heartbeat at {} position {}",
                cursor.file, cursor.pos
            ));
        }
        // A dead stream is started again only once what its spool holds is stored (the server
        // may be gone for good), and never with a round's budget used up.
        let drained = budget > 0;
        if pieces.is_empty() {
            drop(pieces);
            if drained {
                self.restart(&conn, &mut cursor, &mut shipped);
                self.cursor = Some(cursor);
            }
            return Ok(shipped);
        }
        let bytes: u64 = pieces.iter().map(|p| p.piece.size).sum();
        let count = pieces.len();
        logs::append(
            repo,
            &self.s.name,
            LogKind::Binlog,
            &[],
            pieces,
            &NoProgress,
        )
        .map_err(BinlogError::from)?;
        // Stored and durable: only now does the archive end move, and closed files leave the
        // spool (the stream has gone on to the next one).
        let closed: Vec<String> = bufs
            .iter()
            .filter(|b| b.3.closed)
            .map(|b| b.0.clone())
            .collect();
        if let Ok(dir) = self.spool().map(|s| s.join("stream")) {
            for f in closed {
                let _ = fs::remove_file(dir.join(f));
            }
        }
        self.last_stored = Some(Instant::now());
        shipped.pieces = count;
        shipped.bytes = bytes;
        if drained {
            self.restart(&conn, &mut cursor, &mut shipped);
        }
        self.cursor = Some(cursor);
        Ok(shipped)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for BinlogStream {
    fn drop(&mut self) {
        self.stop();
    }
}
