//! Bounded reading of binary log files and dump headers: event boundaries and timestamps
//! (v4 event headers), whether a file is closed, and the binary log coordinates a
//! `--master-data=2` dump writes in its header. Everything read here may be hostile (a spool
//! file being written, a repository piece): every length is checked before it is used.

use std::io::Read;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// The four bytes every binary log file starts with.
pub const MAGIC: &[u8; 4] = b"\xfebin";
/// The length of a v4 event header.
pub const HEADER: usize = 19;
/// The largest event accepted (MariaDB's `max_allowed_packet` limit is 1 GiB).
pub const MAX_EVENT: u64 = 1 << 30;
const STOP_EVENT: u8 = 3;
const ROTATE_EVENT: u8 = 4;

/// One event's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Its position in the file.
    pub pos: u64,
    /// Seconds since the epoch (the start of the statement that wrote it).
    pub timestamp: u32,
    /// Event type code.
    pub kind: u8,
    /// The server that wrote it.
    pub server_id: u32,
    /// Its length, header included.
    pub size: u64,
}

impl Event {
    /// Whether it ends its file (a Rotate or Stop event).
    pub fn closes(&self) -> bool {
        self.kind == ROTATE_EVENT || self.kind == STOP_EVENT
    }
    /// Its time.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(i64::from(self.timestamp), 0)
    }
}

/// Why bytes are not a binary log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The file does not start with the binary log magic.
    #[error("not a binary log file (no magic number at its start)")]
    NoMagic,
    /// An event header makes no sense at this position.
    #[error("no valid event at position {pos}: {why}")]
    Bad {
        /// The position.
        pos: u64,
        /// What was wrong.
        why: String,
    },
}

/// What [`walk`] found: the complete events from `from` on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walk {
    /// Complete events, in order.
    pub events: Vec<Event>,
    /// The end of the last complete event (`from` when there is none).
    pub end: u64,
    /// The file ended with a Rotate or Stop event: nothing more will be written to it (the
    /// server goes on in the file of the next number).
    pub closed: bool,
}

/// The complete events in `buf`, the bytes of a binary log file from position `at` (0 = the
/// file's start: the magic is checked; otherwise an event boundary) as far as written,
/// reading at most `limit` bytes of it. A partial event at the end is left for later. An
/// event's `end_log_pos` must be its own end: a position that is no event boundary is
/// refused, never misread.
pub fn walk(buf: &[u8], at: u64, limit: usize) -> Result<Walk, EventError> {
    let buf = &buf[..buf.len().min(limit)];
    let mut off = 0usize;
    if at == 0 {
        if buf.len() < 4 {
            return Ok(Walk::default());
        }
        if &buf[..4] != MAGIC {
            return Err(EventError::NoMagic);
        }
        off = 4;
    } else if at < 4 {
        return Err(EventError::Bad {
            pos: at,
            why: "inside the magic number".into(),
        });
    }
    let mut w = Walk {
        end: at + off as u64,
        ..Default::default()
    };
    while off + HEADER <= buf.len() && !w.closed {
        let pos = at + off as u64;
        let h = &buf[off..off + HEADER];
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let size = u64::from(u32_at(9));
        let end_log_pos = u64::from(u32_at(13));
        let bad = |why: String| EventError::Bad { pos, why };
        if size < HEADER as u64 || size > MAX_EVENT {
            return Err(bad(format!("event length {size}")));
        }
        if end_log_pos != (pos + size) & 0xffff_ffff {
            return Err(bad(format!(
                "the event says it ends at {end_log_pos}, its length says {}",
                pos + size
            )));
        }
        if off as u64 + size > buf.len() as u64 {
            break;
        }
        let e = Event {
            pos,
            timestamp: u32_at(0),
            kind: h[4],
            server_id: u32_at(5),
            size,
        };
        w.closed = e.closes();
        w.events.push(e);
        off += size as usize;
        w.end = pos + size;
    }
    Ok(w)
}

/// Whether `name` is a binary log file name holdfast accepts: `BASE.NNNNNN`, only letters,
/// digits, `.`, `_`, `-`, at most 200 bytes (it becomes a file name in batches and restores).
pub fn valid_name(name: &str) -> bool {
    name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        && seq(name).is_some()
}

/// The sequence number of a binary log file name (`binlog.000017` is 17).
pub fn seq(name: &str) -> Option<u64> {
    let (base, n) = name.rsplit_once('.')?;
    if base.is_empty() || n.is_empty() || n.len() > 12 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// The name of the file after `name` (`binlog.000017` → `binlog.000018`).
pub fn next_name(name: &str) -> Option<String> {
    let (base, n) = name.rsplit_once('.')?;
    let v = seq(name)? + 1;
    Some(format!("{base}.{v:0width$}", width = n.len()))
}

/// Binary log coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinates {
    /// File name.
    pub file: String,
    /// Position.
    pub pos: u64,
}

/// How far into a dump its coordinates are looked for.
pub const HEADER_SCAN: usize = 1 << 20;
const MAX_LINE: usize = 4096;

/// The coordinates in a dump's header (`-- CHANGE MASTER TO MASTER_LOG_FILE='f',
/// MASTER_LOG_POS=n;`, MySQL 8's `CHANGE REPLICATION SOURCE TO SOURCE_LOG_FILE=...`, with or
/// without the comment), read from the whole lines of the first [`HEADER_SCAN`] bytes, lines
/// of at most 4 KiB.
pub fn dump_coordinates(head: &[u8]) -> Option<Coordinates> {
    let head = &head[..head.len().min(HEADER_SCAN)];
    // Only whole lines: a line still being read could end in a cut number.
    let whole = head
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(&[][..], |i| &head[..i]);
    whole
        .split(|&b| b == b'\n')
        .filter(|l| l.len() <= MAX_LINE)
        .find_map(|l| coordinates_line(std::str::from_utf8(l).ok()?))
}

fn coordinates_line(l: &str) -> Option<Coordinates> {
    let l = l.trim().trim_start_matches("--").trim();
    let rest = l
        .strip_prefix("CHANGE MASTER TO ")
        .or_else(|| l.strip_prefix("CHANGE REPLICATION SOURCE TO "))?;
    let mut file = None;
    let mut pos = None;
    for part in rest.trim_end_matches(';').split(',') {
        let (k, v) = part.split_once('=')?;
        match k.trim() {
            "MASTER_LOG_FILE" | "SOURCE_LOG_FILE" => {
                file = Some(v.trim().strip_prefix('\'')?.strip_suffix('\'')?.to_string())
            }
            "MASTER_LOG_POS" | "SOURCE_LOG_POS" => pos = v.trim().parse::<u64>().ok(),
            _ => {}
        }
    }
    let file = file.filter(|f| valid_name(f))?;
    Some(Coordinates { file, pos: pos? })
}

/// What a dump's reader saw: its coordinates, and when they were written (the consistent
/// snapshot was taken before).
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The coordinates, once read.
    pub coordinates: Option<Coordinates>,
    /// When the line was read.
    pub at: Option<DateTime<Utc>>,
}

/// A reader passing a dump through while it looks for its coordinates in the first
/// [`HEADER_SCAN`] bytes.
pub struct ScanReader<R> {
    inner: R,
    head: Vec<u8>,
    seen: Arc<Mutex<Seen>>,
}

impl<R> ScanReader<R> {
    /// Wrap `inner`; what it finds goes to `seen`.
    pub fn new(inner: R, seen: Arc<Mutex<Seen>>) -> Self {
        ScanReader {
            inner,
            head: Vec::new(),
            seen,
        }
    }
}

impl<R: Read> Read for ScanReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.head.len() < HEADER_SCAN && n > 0 {
            let take = n.min(HEADER_SCAN - self.head.len());
            self.head.extend_from_slice(&buf[..take]);
            let mut s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if s.coordinates.is_none() {
                if let Some(c) = dump_coordinates(&self.head) {
                    s.coordinates = Some(c);
                    s.at = Some(Utc::now());
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v4 event of `size` bytes at `pos`.
    fn ev(pos: u64, ts: u32, kind: u8, size: u32, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&ts.to_le_bytes());
        v.push(kind);
        v.extend_from_slice(&7u32.to_le_bytes());
        v.extend_from_slice(&size.to_le_bytes());
        v.extend_from_slice(&((pos + u64::from(size)) as u32).to_le_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(body);
        v.resize(size as usize, 0);
        v
    }

    fn file() -> Vec<u8> {
        let mut f = MAGIC.to_vec();
        f.extend(ev(4, 100, 15, 40, b""));
        f.extend(ev(44, 101, 2, 30, b""));
        let mut rot = 8u64.to_le_bytes().to_vec();
        rot.extend_from_slice(b"binlog.000002");
        rot.extend_from_slice(&[1, 2, 3, 0xab]);
        let size = (HEADER + rot.len()) as u32;
        f.extend(ev(74, 102, ROTATE_EVENT, size, &rot));
        f
    }

    #[test]
    fn walks_complete_events_and_stops_at_a_partial_one() {
        let f = file();
        let w = walk(&f, 0, usize::MAX).unwrap();
        assert_eq!(w.events.len(), 3);
        assert_eq!(w.end, f.len() as u64);
        assert!(w.closed);
        assert_eq!(w.events[1].timestamp, 101);
        // Cut inside the second event: only the first is complete.
        let w = walk(&f[..60], 0, usize::MAX).unwrap();
        assert_eq!((w.events.len(), w.end, w.closed), (1, 44, false));
        // From a boundary, given the bytes from there.
        let w = walk(&f[44..], 44, usize::MAX).unwrap();
        assert_eq!(w.events[0].pos, 44);
        assert_eq!(w.end, f.len() as u64);
        // The limit holds back what lies beyond it.
        let w = walk(&f, 0, 74).unwrap();
        assert_eq!((w.end, w.closed), (74, false));
        // Too short for the magic: nothing yet.
        assert_eq!(walk(&f[..3], 0, usize::MAX).unwrap().end, 0);
        // Nothing complete after a boundary: the end stays there.
        assert_eq!(walk(&f[44..50], 44, usize::MAX).unwrap().end, 44);
    }

    #[test]
    fn refuses_what_is_no_event_boundary() {
        let f = file();
        for (bytes, at) in [
            (&f[45..], 45u64),
            (&f[2..], 2),
            (&b"GIF89a......................................"[..], 0),
        ] {
            assert!(walk(bytes, at, usize::MAX).is_err(), "{at}");
        }
        let mut bad = f.clone();
        bad[4 + 9..4 + 13].copy_from_slice(&5u32.to_le_bytes());
        assert!(walk(&bad, 0, usize::MAX).is_err());
        let mut huge = MAGIC.to_vec();
        huge.extend(ev(4, 1, 2, 19, b""));
        huge[4 + 9..4 + 13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(walk(&huge, 0, usize::MAX).is_err());
    }

    #[test]
    fn names_table() {
        for (n, s, next, ok) in [
            ("binlog.000017", Some(17), Some("binlog.000018"), true),
            (
                "mysql-bin.999999",
                Some(999999),
                Some("mysql-bin.1000000"),
                true,
            ),
            ("binlog", None, None, false),
            ("binlog.", None, None, false),
            (".000001", None, None, false),
            ("../etc.000001", Some(1), Some("../etc.000002"), false),
            ("a b.000001", Some(1), Some("a b.000002"), false),
            ("binlog.0x1", None, None, false),
        ] {
            assert_eq!(seq(n), s, "{n}");
            assert_eq!(next_name(n).as_deref(), next, "{n}");
            assert_eq!(valid_name(n), ok, "{n}");
        }
    }

    #[test]
    fn dump_coordinates_table() {
        let c = |f: &str, p| {
            Some(Coordinates {
                file: f.into(),
                pos: p,
            })
        };
        for (text, want) in [
            (
                "-- MariaDB dump\n--\n-- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000003', MASTER_LOG_POS=1234;\n",
                c("binlog.000003", 1234),
            ),
            (
                "CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000001', MASTER_LOG_POS=4;\n",
                c("mysql-bin.000001", 4),
            ),
            (
                "-- CHANGE REPLICATION SOURCE TO SOURCE_LOG_FILE='binlog.000002', SOURCE_LOG_POS=157;\n",
                c("binlog.000002", 157),
            ),
            ("-- CHANGE MASTER TO MASTER_LOG_FILE='../x.000001', MASTER_LOG_POS=4;\n", None),
            ("-- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000001';\n", None),
            ("-- CHANGE MASTER TO MASTER_LOG_POS=x, MASTER_LOG_FILE='binlog.000001';\n", None),
            ("INSERT INTO t VALUES (1);\n", None),
        ] {
            assert_eq!(dump_coordinates(text.as_bytes()), want, "{text}");
        }
        // Beyond the scanned head: not found.
        let mut far = vec![b'x'; HEADER_SCAN];
        far.extend_from_slice(
            b"\n-- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000003', MASTER_LOG_POS=1;\n",
        );
        assert_eq!(dump_coordinates(&far), None);
    }

    #[test]
    fn the_scan_reader_passes_bytes_through_and_finds_the_line() {
        let text = b"-- head\n-- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000009', MASTER_LOG_POS=77;\nrest";
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut r = ScanReader::new(&text[..], seen.clone());
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, text);
        let s = seen.lock().unwrap();
        assert_eq!(s.coordinates.as_ref().unwrap().pos, 77);
        assert!(s.at.is_some());
    }
}
