//! PostgreSQL's small archive files: backup history files (`.backup`, written when a base
//! backup ends) and timeline history files (`.history`, written by a promote). Both are read
//! from the repository, so both are bounded and parsed strictly: a file that is too big or
//! does not say what it must is refused, never guessed at.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::names::{parse_lsn, SegName};

/// The largest backup or timeline history file read (PostgreSQL's are a few hundred bytes; a
/// timeline history file grows by one line per promote).
pub const MAX_BYTES: u64 = 64 * 1024;

/// What a backup history file says about one base backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupHistory {
    /// The piece's name (`...backup`).
    pub name: String,
    /// The segment it started in (from the file name).
    pub start: SegName,
    /// `START WAL LOCATION`.
    pub start_lsn: u64,
    /// `STOP WAL LOCATION`, when known.
    pub stop_lsn: Option<u64>,
    /// `STOP TIME` (whole seconds: the backup is consistent within a second after it), when
    /// known.
    pub stop_time: Option<DateTime<Utc>>,
    /// `LABEL`, when known.
    pub label: Option<String>,
    /// `START TIMELINE`.
    pub timeline: u32,
}

/// Why a history file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// Bigger than [`MAX_BYTES`].
    #[error(
        "{name} is {size} bytes, more than any PostgreSQL history file ({MAX_BYTES}): refused"
    )]
    TooBig {
        /// The file.
        name: String,
        /// Its size.
        size: u64,
    },
    /// A line it must have is missing or wrong.
    #[error("{name} is not a PostgreSQL history file: {why}")]
    Malformed {
        /// The file.
        name: String,
        /// What is wrong.
        why: String,
    },
}

fn malformed(name: &str, why: impl Into<String>) -> HistoryError {
    HistoryError::Malformed {
        name: name.to_string(),
        why: why.into(),
    }
}

/// Read a time as PostgreSQL writes it in a backup history file (`2026-12-01 10:41:06 UTC`,
/// in the server's log_timezone). Zones other than UTC/GMT or a numeric offset give `None`
/// (an abbreviation such as `CET` or `IST` is ambiguous).
pub fn parse_pg_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    let (dt, zone) = s.rsplit_once(' ')?;
    let naive = NaiveDateTime::parse_from_str(dt.trim(), "%Y-%m-%d %H:%M:%S%.f").ok()?;
    let offset_secs: i64 = match zone {
        "UTC" | "GMT" | "Z" | "UCT" => 0,
        z if z.starts_with(['+', '-']) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let digits: String = z[1..].chars().filter(|c| *c != ':').collect();
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let (h, m) = match digits.len() {
                1 | 2 => (digits.parse::<i64>().ok()?, 0),
                4 => (digits[..2].parse().ok()?, digits[2..].parse().ok()?),
                _ => return None,
            };
            if h > 15 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    Some(naive.and_utc() - chrono::Duration::seconds(offset_secs))
}

fn text<'a>(name: &str, bytes: &'a [u8]) -> Result<&'a str, HistoryError> {
    if bytes.len() as u64 > MAX_BYTES {
        return Err(HistoryError::TooBig {
            name: name.into(),
            size: bytes.len() as u64,
        });
    }
    std::str::from_utf8(bytes).map_err(|_| malformed(name, "not UTF-8 text"))
}

/// The segment and offset a backup history file's name gives.
fn backup_name(name: &str) -> Result<(SegName, u32), HistoryError> {
    match super::names::parse(name) {
        Some(super::names::WalFile::Backup(s, off)) => Ok((s, off)),
        _ => Err(malformed(name, "its name is not SEGMENT.OFFSET.backup")),
    }
}

impl BackupHistory {
    /// Parse a backup history file's bytes.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<BackupHistory, HistoryError> {
        let (start, _) = backup_name(name)?;
        let t = text(name, bytes)?;
        let mut fields = BTreeMap::new();
        for line in t.lines() {
            if let Some((k, v)) = line.split_once(": ") {
                fields.insert(k.trim(), v.trim());
            }
        }
        let lsn_of = |k: &str| -> Result<Option<u64>, HistoryError> {
            match fields.get(k) {
                None => Ok(None),
                Some(v) => parse_lsn(v.split_whitespace().next().unwrap_or(""))
                    .map(Some)
                    .ok_or_else(|| malformed(name, format!("{k} {v:?} is no LSN"))),
            }
        };
        let start_lsn = lsn_of("START WAL LOCATION")?
            .ok_or_else(|| malformed(name, "no START WAL LOCATION"))?;
        let stop_lsn = lsn_of("STOP WAL LOCATION")?;
        let timeline = match fields.get("START TIMELINE") {
            Some(v) => v
                .parse::<u32>()
                .map_err(|_| malformed(name, format!("START TIMELINE {v:?}")))?,
            None => start.tli,
        };
        let h = BackupHistory {
            name: name.to_string(),
            start,
            start_lsn,
            stop_lsn,
            stop_time: fields.get("STOP TIME").and_then(|v| parse_pg_time(v)),
            label: fields.get("LABEL").map(|l| l.to_string()),
            timeline,
        };
        h.consistent()
    }

    /// What the archive side recorded in the piece's `meta` (see docs/pitr/postgres-restore.md:
    /// `label`, `start-lsn`, `stop-lsn`, `stop-time`, `timeline`); the start comes from the
    /// name when `start-lsn` is absent.
    pub fn from_meta(
        name: &str,
        meta: &BTreeMap<String, String>,
    ) -> Result<BackupHistory, HistoryError> {
        let (start, off) = backup_name(name)?;
        let per_byte = |k: &str| meta.get(k).filter(|v| v.len() <= 200);
        let lsn = |k: &str| -> Result<Option<u64>, HistoryError> {
            per_byte(k)
                .map(|v| parse_lsn(v).ok_or_else(|| malformed(name, format!("meta {k} {v:?}"))))
                .transpose()
        };
        let start_lsn = match lsn("start-lsn")? {
            Some(l) => l,
            // Without the segment size, the start LSN is known only within the segment: the
            // chain uses the segment name, never this number, when meta has none.
            None => u64::from(start.log) << 32 | u64::from(off),
        };
        let h = BackupHistory {
            name: name.to_string(),
            start,
            start_lsn,
            stop_lsn: lsn("stop-lsn")?,
            stop_time: per_byte("stop-time")
                .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
                .map(|t| t.with_timezone(&Utc)),
            label: per_byte("label").cloned(),
            timeline: match per_byte("timeline") {
                Some(v) => v
                    .parse()
                    .map_err(|_| malformed(name, format!("meta timeline {v:?}")))?,
                None => start.tli,
            },
        };
        h.consistent()
    }

    fn consistent(self) -> Result<BackupHistory, HistoryError> {
        if self.timeline != self.start.tli {
            return Err(malformed(
                &self.name,
                format!(
                    "START TIMELINE {} is not the timeline of its name ({})",
                    self.timeline, self.start.tli
                ),
            ));
        }
        if self.stop_lsn.is_some_and(|s| s < self.start_lsn) {
            return Err(malformed(&self.name, "it stops before it starts"));
        }
        Ok(self)
    }

    /// The time in its label when the label is holdfast's (`holdfast SOURCE TIME`): the base
    /// snapshot's `time`, which matches the two.
    pub fn label_time(&self) -> Option<DateTime<Utc>> {
        let l = self.label.as_deref()?.strip_prefix("holdfast ")?;
        let (_, t) = l.trim().rsplit_once(' ')?;
        DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// A timeline's place in the history: it branched off `parent` at `switch` (an LSN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Branch {
    /// The timeline it came from.
    pub parent: u32,
    /// Where it starts (the parent's end).
    pub switch: u64,
}

/// Parse a timeline history file (`TTTTTTTT.history`): every ancestor with its end, oldest
/// first, so the timeline's own branch is the last line. Returns (timeline, branch) pairs for
/// the file's timeline and for each ancestor it names.
pub fn parse_timeline_history(
    tli: u32,
    name: &str,
    bytes: &[u8],
) -> Result<Vec<(u32, Branch)>, HistoryError> {
    let t = text(name, bytes)?;
    let mut lines = Vec::new();
    for line in t.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split_whitespace();
        let (Some(p), Some(l)) = (f.next(), f.next()) else {
            return Err(malformed(name, format!("line {line:?}")));
        };
        let parent: u32 = p
            .parse()
            .map_err(|_| malformed(name, format!("timeline {p:?}")))?;
        let lsn = parse_lsn(l).ok_or_else(|| malformed(name, format!("LSN {l:?}")))?;
        lines.push((parent, lsn));
    }
    if lines.is_empty() {
        return Err(malformed(name, "no timeline in it"));
    }
    // Ancestors are listed oldest first with rising numbers and switch points, all below tli.
    let mut out = Vec::new();
    for (i, (parent, lsn)) in lines.iter().enumerate() {
        let child = lines.get(i + 1).map(|x| x.0).unwrap_or(tli);
        if *parent >= child || (i > 0 && *lsn < lines[i - 1].1) {
            return Err(malformed(
                name,
                "its timelines or switch points go backwards",
            ));
        }
        out.push((
            child,
            Branch {
                parent: *parent,
                switch: *lsn,
            },
        ));
    }
    Ok(out)
}

/// A timeline history piece's branch from its `meta` (`parent`, `switch-lsn`), if recorded.
pub fn branch_from_meta(meta: &BTreeMap<String, String>) -> Option<Branch> {
    let parent = meta.get("parent")?.parse().ok()?;
    let switch = parse_lsn(meta.get("switch-lsn")?)?;
    Some(Branch { parent, switch })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const PG15: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTOP WAL LOCATION: 0/2000138 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-12-01 10:41:06 UTC\nLABEL: holdfast db 2026-12-01T10:41:05.123456789Z\nSTART TIMELINE: 1\nSTOP TIME: 2026-12-01 10:41:07 UTC\nSTOP TIMELINE: 1\n";

    #[test]
    fn a_backup_history_file_is_read_strictly() {
        let n = "000000010000000000000002.00000028.backup";
        let h = BackupHistory::parse(n, PG15.as_bytes()).unwrap();
        assert_eq!(h.start_lsn, 0x200_0028);
        assert_eq!(h.stop_lsn, Some(0x200_0138));
        assert_eq!(h.stop_time, Some(at("2026-12-01T10:41:07Z")));
        assert_eq!(h.label_time(), Some(at("2026-12-01T10:41:05.123456789Z")));
        assert_eq!(h.timeline, 1);
        let big = vec![b'x'; MAX_BYTES as usize + 1];
        assert!(matches!(
            BackupHistory::parse(n, &big),
            Err(HistoryError::TooBig { .. })
        ));
        for bad in [
            "STOP WAL LOCATION: 0/2000138 (file 000000010000000000000002)\n".to_string(),
            PG15.replace("0/2000028", "zz"),
            PG15.replace("START TIMELINE: 1", "START TIMELINE: 2"),
            PG15.replace("0/2000138", "0/1000000"),
        ] {
            assert!(BackupHistory::parse(n, bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(BackupHistory::parse("000000010000000000000002.backup", PG15.as_bytes()).is_err());
        assert!(BackupHistory::parse(n, &[0xff, 0xfe]).is_err());
        // A foreign label has no holdfast time.
        let other = PG15.replace(
            "holdfast db 2026-12-01T10:41:05.123456789Z",
            "pg_basebackup base backup",
        );
        assert_eq!(
            BackupHistory::parse(n, other.as_bytes())
                .unwrap()
                .label_time(),
            None
        );
    }

    #[test]
    fn meta_gives_the_same_facts() {
        let n = "000000010000000000000002.00000028.backup";
        let meta: BTreeMap<String, String> = [
            ("label", "holdfast db 2026-12-01T10:41:05.123456789Z"),
            ("start-lsn", "0/2000028"),
            ("stop-lsn", "0/2000138"),
            ("stop-time", "2026-12-01T10:41:07Z"),
            ("timeline", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            BackupHistory::from_meta(n, &meta).unwrap(),
            BackupHistory::parse(n, PG15.as_bytes()).unwrap()
        );
        let bare = BackupHistory::from_meta(n, &BTreeMap::new()).unwrap();
        assert_eq!(
            (bare.stop_lsn, bare.stop_time, bare.label),
            (None, None, None)
        );
    }

    #[test]
    fn pg_times_table() {
        for (text, want) in [
            ("2026-12-01 10:41:06 UTC", Some("2026-12-01T10:41:06Z")),
            ("2026-12-01 10:41:06 GMT", Some("2026-12-01T10:41:06Z")),
            ("2026-12-01 11:41:06 +01", Some("2026-12-01T10:41:06Z")),
            ("2026-12-01 05:11:06 -0530", Some("2026-12-01T10:41:06Z")),
            ("2026-12-01 16:11:06 +05:30", Some("2026-12-01T10:41:06Z")),
            ("2026-12-01 11:41:06 CET", None),
            ("2026-12-01 10:41:06", None),
            ("2026-13-01 10:41:06 UTC", None),
            ("2026-12-01 10:41:06 +99", None),
        ] {
            assert_eq!(parse_pg_time(text), want.map(at), "{text}");
        }
    }

    #[test]
    fn timeline_history_files() {
        let t3 =
            "1\t0/3000060\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n";
        assert_eq!(
            parse_timeline_history(3, "00000003.history", t3.as_bytes()).unwrap(),
            vec![
                (
                    2,
                    Branch {
                        parent: 1,
                        switch: 0x300_0060
                    }
                ),
                (
                    3,
                    Branch {
                        parent: 2,
                        switch: 0x500_0000
                    }
                ),
            ]
        );
        for bad in [
            "",
            "# only a comment\n",
            "x\t0/1\n",
            "1\tzz\n",
            "3\t0/1\n",
            "1\t0/5\n2\t0/4\n",
        ] {
            assert!(
                parse_timeline_history(3, "00000003.history", bad.as_bytes()).is_err(),
                "{bad:?}"
            );
        }
    }
}
