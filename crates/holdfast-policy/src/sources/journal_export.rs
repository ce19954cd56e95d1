//! The systemd journal's export format (`journalctl -o export`), read one entry at a time:
//! each entry is `NAME=value\n` text fields and binary fields (`NAME\n`, a little-endian
//! 64-bit size, the bytes, `\n`), ended by an empty line. [`Entries`] passes the entries it
//! keeps through as bytes (a [`Read`]) and counts them, their first and last cursor and
//! realtime; a rule decides by each entry's cursor whether it is kept.
//!
//! The stream is hostile as far as its sizes go (it is journalctl's output on backup, and a
//! repository's bytes on restore): an entry larger than [`MAX_ENTRY_BYTES`] or a field size
//! past the entry limit is an error, never an allocation.

use std::io::{self, BufRead, Read};

/// The largest entry accepted (journald's own limit on an entry is below this).
pub const MAX_ENTRY_BYTES: usize = 128 << 20;

/// The longest cursor accepted (journald's are about 130 characters).
pub const MAX_CURSOR: usize = 512;

/// What is known of one entry once it is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryInfo {
    /// `__CURSOR`, if the entry has one.
    pub cursor: Option<String>,
    /// `__REALTIME_TIMESTAMP` (microseconds since the epoch), if present and a number.
    pub realtime: Option<u64>,
}

/// Whether `c` looks like a journal cursor: `key=value` parts separated by `;`, of letters,
/// digits, `=` and `;` only, and not too long. Cursors read from a repository are checked
/// with this before they are given to journalctl.
pub fn valid_cursor(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= MAX_CURSOR
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b';')
        && c.split(';').all(|p| p.split_once('=').is_some())
}

/// The sequence number source id and number of a cursor (`s=...;i=...`), if it has them.
pub fn seqnum(c: &str) -> Option<(&str, u64)> {
    let mut s = None;
    let mut i = None;
    for p in c.split(';') {
        match p.split_once('=') {
            Some(("s", v)) => s = Some(v),
            Some(("i", v)) => i = u64::from_str_radix(v, 16).ok(),
            _ => {}
        }
    }
    Some((s?, i?))
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Read one entry's bytes into `buf` (cleared first); `None` at the end of the stream.
pub fn read_entry(r: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Option<EntryInfo>> {
    buf.clear();
    let mut info = EntryInfo::default();
    loop {
        let start = buf.len();
        let n = r
            .by_ref()
            .take((MAX_ENTRY_BYTES + 1 - start.min(MAX_ENTRY_BYTES)) as u64)
            .read_until(b'\n', buf)?;
        if buf.len() > MAX_ENTRY_BYTES {
            return Err(bad(format!(
                "a journal entry is larger than {MAX_ENTRY_BYTES} bytes: not an export stream holdfast accepts"
            )));
        }
        if n == 0 {
            if start == 0 {
                return Ok(None);
            }
            return Err(bad(
                "the export stream ends inside an entry (it was cut short)".into(),
            ));
        }
        let line = &buf[start..];
        if line.last() != Some(&b'\n') {
            return Err(bad(
                "the export stream ends inside a field (it was cut short)".into(),
            ));
        }
        if line == b"\n" {
            if start == 0 {
                // Blank lines between entries: tolerated, not kept.
                buf.clear();
                continue;
            }
            return Ok(Some(info));
        }
        let line = &line[..line.len() - 1];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let (name, value) = (&line[..eq], &line[eq + 1..]);
            match name {
                b"__CURSOR" => {
                    let c = String::from_utf8_lossy(value).into_owned();
                    if !valid_cursor(&c) {
                        return Err(bad(format!("an entry's __CURSOR {c:?} is not a cursor")));
                    }
                    info.cursor = Some(c);
                }
                b"__REALTIME_TIMESTAMP" => {
                    info.realtime = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok())
                }
                _ => {}
            }
            continue;
        }
        // A binary field: its name, then the size and the bytes, then a newline.
        let mut size = [0u8; 8];
        r.read_exact(&mut size)
            .map_err(|e| bad(format!("a binary field's size is cut short: {e}")))?;
        let size = u64::from_le_bytes(size);
        if size > (MAX_ENTRY_BYTES - buf.len()) as u64 {
            return Err(bad(format!(
                "a binary field of {size} bytes: larger than an entry may be ({MAX_ENTRY_BYTES} bytes)"
            )));
        }
        buf.extend_from_slice(&(size).to_le_bytes());
        let at = buf.len();
        buf.resize(at + size as usize + 1, 0);
        r.read_exact(&mut buf[at..])
            .map_err(|e| bad(format!("a binary field is cut short: {e}")))?;
        if buf.last() != Some(&b'\n') {
            return Err(bad("a binary field does not end with a newline".into()));
        }
    }
}

/// Which entries [`Entries`] keeps.
pub enum Rule {
    /// Every entry.
    All,
    /// The stream must start with the entry of this cursor (`journalctl --cursor`), which is
    /// dropped (it is stored already); every later entry is kept.
    After(String),
    /// Drop entries of this sequence number source up to and including this number (they
    /// are stored already); keep every other.
    NotUpTo(String, u64),
}

/// Counts of the entries kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counted {
    /// Entries kept.
    pub entries: u64,
    /// Bytes kept.
    pub bytes: u64,
    /// Entries dropped by the rule.
    pub dropped: u64,
    /// The first kept entry's cursor and realtime.
    pub first: EntryInfo,
    /// The last kept entry's cursor and realtime.
    pub last: EntryInfo,
}

/// The kept entries of an export stream, as bytes.
pub struct Entries<R> {
    inner: io::BufReader<R>,
    rule: Rule,
    entry: Vec<u8>,
    pos: usize,
    started: bool,
    /// What was kept so far.
    pub counted: Counted,
}

impl<R: Read> Entries<R> {
    /// Read `inner` by `rule`.
    pub fn new(inner: R, rule: Rule) -> Self {
        Entries {
            inner: io::BufReader::with_capacity(1 << 20, inner),
            rule,
            entry: Vec::new(),
            pos: 0,
            started: false,
            counted: Counted::default(),
        }
    }

    /// Read up to the first entry the rule keeps. For [`Rule::After`]: `false` when the
    /// stream does not start with the cursor's entry (the cursor is no longer in the journal),
    /// and nothing is kept.
    pub fn start(&mut self) -> io::Result<bool> {
        if self.started {
            return Ok(true);
        }
        self.started = true;
        if let Rule::After(c) = &self.rule {
            let c = c.clone();
            match read_entry(&mut self.inner, &mut self.entry)? {
                Some(e) if e.cursor.as_deref() == Some(c.as_str()) => {
                    self.counted.dropped += 1;
                    self.entry.clear();
                }
                _ => {
                    self.entry.clear();
                    return Ok(false);
                }
            }
            self.rule = Rule::All;
        }
        self.next_kept()?;
        Ok(true)
    }

    fn next_kept(&mut self) -> io::Result<()> {
        self.pos = 0;
        loop {
            let Some(e) = read_entry(&mut self.inner, &mut self.entry)? else {
                self.entry.clear();
                return Ok(());
            };
            let keep = match &self.rule {
                Rule::NotUpTo(s, i) => !e
                    .cursor
                    .as_deref()
                    .and_then(seqnum)
                    .is_some_and(|(es, ei)| es == s && ei <= *i),
                _ => true,
            };
            if !keep {
                self.counted.dropped += 1;
                continue;
            }
            let c = &mut self.counted;
            if c.entries == 0 {
                c.first = e.clone();
            }
            c.entries += 1;
            c.bytes += self.entry.len() as u64;
            c.last = e;
            return Ok(());
        }
    }
}

impl<R: Read> Read for Entries<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if !self.started {
            self.start()?;
        }
        if self.pos == self.entry.len() {
            if self.entry.is_empty() {
                return Ok(0);
            }
            self.next_kept()?;
            if self.entry.is_empty() {
                return Ok(0);
            }
        }
        let n = out.len().min(self.entry.len() - self.pos);
        out[..n].copy_from_slice(&self.entry[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64, s: &str) -> Vec<u8> {
        let mut e = format!(
            "__CURSOR=s={s};i={i:x};b=0;m=1;t=2;x=3\n__REALTIME_TIMESTAMP={}\nMESSAGE=m{i}\n",
            1000 + i
        )
        .into_bytes();
        // A binary field holding a newline and an `=`.
        e.extend_from_slice(b"DATA\n");
        e.extend_from_slice(&5u64.to_le_bytes());
        e.extend_from_slice(b"a\n=b\n\n\n");
        e
    }

    fn all(r: Rule, input: &[u8]) -> (Vec<u8>, Counted, bool) {
        let mut e = Entries::new(input, r);
        let ok = e.start().unwrap();
        let mut out = Vec::new();
        e.read_to_end(&mut out).unwrap();
        (out, e.counted, ok)
    }

    #[test]
    fn entries_with_binary_fields_are_counted_and_passed_through() {
        let s: Vec<u8> = (1..=3).flat_map(|i| entry(i, "aa")).collect();
        let (out, c, ok) = all(Rule::All, &s);
        assert!(ok);
        assert_eq!(out, s);
        assert_eq!(c.entries, 3);
        assert_eq!(c.first.realtime, Some(1001));
        assert_eq!(c.last.cursor.as_deref(), Some("s=aa;i=3;b=0;m=1;t=2;x=3"));
    }

    #[test]
    fn after_drops_the_cursor_entry_and_notices_a_missing_cursor() {
        let s: Vec<u8> = (1..=3).flat_map(|i| entry(i, "aa")).collect();
        let (out, c, ok) = all(Rule::After("s=aa;i=1;b=0;m=1;t=2;x=3".into()), &s);
        assert!(ok);
        assert_eq!(out, [entry(2, "aa"), entry(3, "aa")].concat());
        assert_eq!((c.entries, c.dropped), (2, 1));
        let (out, _, ok) = all(Rule::After("s=aa;i=9;b=0;m=1;t=2;x=3".into()), &s);
        assert!(!ok && out.is_empty());
        let (_, _, ok) = all(Rule::After("s=aa;i=9;b=0;m=1;t=2;x=3".into()), b"");
        assert!(!ok);
    }

    #[test]
    fn not_up_to_drops_only_entries_already_stored() {
        let s: Vec<u8> = [
            entry(1, "aa"),
            entry(2, "bb"),
            entry(2, "aa"),
            entry(3, "aa"),
        ]
        .concat();
        let (out, c, _) = all(Rule::NotUpTo("aa".into(), 2), &s);
        assert_eq!(out, [entry(2, "bb"), entry(3, "aa")].concat());
        assert_eq!((c.entries, c.dropped), (2, 2));
    }

    #[test]
    fn hostile_streams_are_refused_not_allocated() {
        let mut s = b"__CURSOR=s=a;i=1\nBIG\n".to_vec();
        s.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut buf = Vec::new();
        let e = read_entry(&mut &s[..], &mut buf).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        let e = read_entry(&mut &b"MESSAGE=x\n"[..], &mut buf).unwrap_err();
        assert!(e.to_string().contains("cut short"), "{e}");
        let e = read_entry(&mut &b"__CURSOR=a b\n\n"[..], &mut buf).unwrap_err();
        assert!(e.to_string().contains("not a cursor"), "{e}");
        assert!(!valid_cursor("--directory=/"));
        assert!(!valid_cursor(&"s=a;".repeat(200)));
        assert_eq!(seqnum("s=ab;i=1f;b=0"), Some(("ab", 31)));
    }
}
