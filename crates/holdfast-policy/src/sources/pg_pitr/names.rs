//! PostgreSQL WAL file names and log sequence numbers, parsed without trusting them.
//!
//! A segment is named `TTTTTTTTLLLLLLLLSSSSSSSS` (timeline, log id, segment within the log id,
//! upper-case hex); a log id holds `0x1_0000_0000 / wal_segment_size` segments, so with 16 MiB
//! segments the low word runs `00`..`FF` and then the log id goes up by one. Timeline history
//! files are `TTTTTTTT.history`, backup history files `TTTTTTTTLLLLLLLLSSSSSSSS.OOOOOOOO.backup`
//! (the start segment and the start offset in it), the last segment of a timeline that was
//! left by a promote `TTTTTTTTLLLLLLLLSSSSSSSS.partial`.

/// One file of a WAL archive, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalFile {
    /// A whole segment.
    Segment(SegName),
    /// The last, incomplete segment of a timeline that was left (`.partial`).
    Partial(SegName),
    /// A backup history file: the base backup's start segment and its offset in it.
    Backup(SegName, u32),
    /// A timeline history file.
    History(u32),
}

/// A segment name's three numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegName {
    /// Timeline.
    pub tli: u32,
    /// Log id (the high 32 bits of the LSN).
    pub log: u32,
    /// Segment within the log id.
    pub seg: u32,
}

fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(s, 16).ok())
        .flatten()
}

fn seg_name(s: &str) -> Option<SegName> {
    if s.len() != 24 || !s.is_ascii() {
        return None;
    }
    Some(SegName {
        tli: hex8(&s[0..8])?,
        log: hex8(&s[8..16])?,
        seg: hex8(&s[16..24])?,
    })
}

/// Read a WAL archive file name (`%f`); `None` for anything else.
pub fn parse(name: &str) -> Option<WalFile> {
    if let Some(t) = name.strip_suffix(".history") {
        return hex8(t).filter(|t| *t > 0).map(WalFile::History);
    }
    if let Some(p) = name.strip_suffix(".partial") {
        return seg_name(p).map(WalFile::Partial);
    }
    if let Some(b) = name.strip_suffix(".backup") {
        let (s, off) = b.split_once('.')?;
        return Some(WalFile::Backup(seg_name(s)?, hex8(off)?));
    }
    seg_name(name).map(WalFile::Segment)
}

/// Segments per log id for a segment size, if the size is one PostgreSQL allows (a power of
/// two from 1 MiB to 1 GiB).
pub fn per_log(seg_size: u64) -> Option<u64> {
    (seg_size.is_power_of_two() && (1 << 20..=1 << 30).contains(&seg_size))
        .then(|| 0x1_0000_0000 / seg_size)
}

impl SegName {
    /// Its position in the WAL (`log * segments per log id + seg`), if `seg` fits the size.
    pub fn segno(&self, per_log: u64) -> Option<u64> {
        (u64::from(self.seg) < per_log).then(|| u64::from(self.log) * per_log + u64::from(self.seg))
    }

    /// The name of segment `segno` on timeline `tli`.
    pub fn of(tli: u32, segno: u64, per_log: u64) -> SegName {
        SegName {
            tli,
            log: (segno / per_log) as u32,
            seg: (segno % per_log) as u32,
        }
    }
}

impl std::fmt::Display for SegName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08X}{:08X}{:08X}", self.tli, self.log, self.seg)
    }
}

/// Read an LSN (`16/B374D848`).
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let ok = |p: &str| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok(hi) || !ok(lo) {
        return None;
    }
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Write an LSN as PostgreSQL does.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_table() {
        let s = |tli, log, seg| SegName { tli, log, seg };
        let cases: &[(&str, Option<WalFile>)] = &[
            (
                "000000010000000000000002",
                Some(WalFile::Segment(s(1, 0, 2))),
            ),
            (
                "0000000A00000003000000FF",
                Some(WalFile::Segment(s(10, 3, 255))),
            ),
            (
                "0000000a00000003000000ff",
                Some(WalFile::Segment(s(10, 3, 255))),
            ),
            ("00000002.history", Some(WalFile::History(2))),
            ("00000000.history", None),
            (
                "000000010000000000000002.00000028.backup",
                Some(WalFile::Backup(s(1, 0, 2), 0x28)),
            ),
            (
                "000000010000000000000005.partial",
                Some(WalFile::Partial(s(1, 0, 5))),
            ),
            ("00000001000000000000000", None),
            ("0000000100000000000000020", None),
            ("00000001000000000000000G", None),
            ("0000000100000000000000é", None),
            ("000000010000000000000002.backup", None),
            ("RECOVERYHISTORY", None),
            ("", None),
        ];
        for (name, want) in cases {
            assert_eq!(parse(name), *want, "{name}");
        }
    }

    #[test]
    fn segment_numbers_follow_the_segment_size() {
        let p16 = per_log(16 << 20).unwrap();
        let p1 = per_log(1 << 20).unwrap();
        assert_eq!((p16, p1), (256, 4096));
        assert_eq!(per_log(3 << 20), None);
        assert_eq!(per_log(512 << 10), None);
        assert_eq!(per_log(2 << 30), None);
        let n = |t: &str| match parse(t) {
            Some(WalFile::Segment(s)) => s,
            _ => panic!("{t}"),
        };
        // The low word wraps at 0xFF with 16 MiB segments, at 0xFFF with 1 MiB segments.
        assert_eq!(n("0000000100000000000000FF").segno(p16), Some(255));
        assert_eq!(n("000000010000000100000000").segno(p16), Some(256));
        assert_eq!(n("000000010000000000000100").segno(p16), None);
        assert_eq!(n("000000010000000000000100").segno(p1), Some(256));
        assert_eq!(n("000000010000000000000FFF").segno(p1), Some(4095));
        assert_eq!(n("000000010000000100000000").segno(p1), Some(4096));
        assert_eq!(
            SegName::of(1, 256, p16).to_string(),
            "000000010000000100000000"
        );
        assert_eq!(
            SegName::of(2, 255, p16).to_string(),
            "0000000200000000000000FF"
        );
        assert_eq!(
            SegName::of(1, 4096, p1).to_string(),
            "000000010000000100000000"
        );
    }

    #[test]
    fn lsns_table() {
        for (text, want) in [
            ("0/2000028", Some(0x200_0028)),
            ("16/B374D848", Some(0x16_B374_D848)),
            (" 0/0 ", Some(0)),
            ("FFFFFFFF/FFFFFFFF", Some(u64::MAX)),
            ("1FFFFFFFF/0", None),
            ("0/", None),
            ("/1", None),
            ("0-1", None),
            ("x/1", None),
        ] {
            assert_eq!(parse_lsn(text), want, "{text}");
        }
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(format_lsn(0x200_0028), "0/2000028");
    }
}
