//! The SQLite WAL file format, read directly: the 32-byte header, 24-byte frame headers, the
//! salts and the cumulative checksums. Nothing is trusted that does not validate: a frame is
//! taken only when its salts are the header's and its checksum continues the chain, and only
//! whole commit groups (up to a frame whose "database size after commit" is non-zero) are
//! handed on. See <https://www.sqlite.org/fileformat2.html#walformat>.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Bytes of the WAL header.
pub const WAL_HEADER: u64 = 32;
/// Bytes of a frame header.
pub const FRAME_HEADER: u64 = 24;
/// The WAL magic with little-endian checksums; `| 1` for big-endian ones.
pub const MAGIC: u32 = 0x377f_0682;
/// The most bytes of WAL read in one round (a bound on memory; the rest is read next round).
pub const MAX_READ: u64 = 256 << 20;

/// One WAL file's identity: a restart of the WAL (by any checkpoint) changes the salts and
/// increments the checkpoint sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalId {
    /// Header magic (its low bit says the checksum words are big-endian).
    pub magic: u32,
    /// Database page size.
    pub page_size: u32,
    /// Checkpoint sequence number.
    pub ckpt: u32,
    /// Salt 1 (incremented by each restart).
    pub salt1: u32,
    /// Salt 2 (random at each restart).
    pub salt2: u32,
}

/// A validated WAL header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Which WAL.
    pub id: WalId,
    /// The checksum of the header: the chain's start.
    pub cksum: (u32, u32),
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// SQLite's WAL checksum over `data` (a multiple of 8 bytes), continuing from `s`.
pub fn checksum(big_endian: bool, data: &[u8], s: (u32, u32)) -> (u32, u32) {
    let (mut s1, mut s2) = s;
    for w in data.chunks_exact(8) {
        let (x0, x1) = if big_endian {
            (be32(&w[0..4]), be32(&w[4..8]))
        } else {
            (
                u32::from_le_bytes([w[0], w[1], w[2], w[3]]),
                u32::from_le_bytes([w[4], w[5], w[6], w[7]]),
            )
        };
        s1 = s1.wrapping_add(x0).wrapping_add(s2);
        s2 = s2.wrapping_add(x1).wrapping_add(s1);
    }
    (s1, s2)
}

/// Read a WAL header; `None` when it is not a valid one (an empty or reset WAL, a header
/// being written).
pub fn parse_header(b: &[u8]) -> Option<Header> {
    if b.len() < WAL_HEADER as usize {
        return None;
    }
    let magic = be32(&b[0..4]);
    if magic & !1 != MAGIC || be32(&b[4..8]) != 3_007_000 {
        return None;
    }
    let page_size = be32(&b[8..12]);
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return None;
    }
    let ck = checksum(magic & 1 == 1, &b[0..24], (0, 0));
    if ck != (be32(&b[24..28]), be32(&b[28..32])) {
        return None;
    }
    Some(Header {
        id: WalId {
            magic,
            page_size,
            ckpt: be32(&b[12..16]),
            salt1: be32(&b[16..20]),
            salt2: be32(&b[20..24]),
        },
        cksum: ck,
    })
}

/// Whole commit groups of one WAL, validated: the raw frames (headers included) from byte
/// `start` to `end` of the WAL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frames {
    /// The WAL they belong to.
    pub id: WalId,
    /// Offset of the first frame in the WAL file.
    pub start: u64,
    /// Offset after the last frame (a commit frame).
    pub end: u64,
    /// The chain's checksum before the first frame.
    pub cksum_start: (u32, u32),
    /// The chain's checksum after the last frame.
    pub cksum_end: (u32, u32),
    /// Database size in pages after the last commit.
    pub db_size: u32,
    /// The raw frames.
    pub bytes: Vec<u8>,
}

impl Frames {
    /// Frames in the bytes.
    pub fn count(&self) -> u64 {
        self.bytes.len() as u64 / (FRAME_HEADER + u64::from(self.id.page_size))
    }
}

/// Validate frames of WAL `id` in `bytes` (starting at WAL offset `start`, chain at `cksum`)
/// and keep the longest prefix that ends with a commit frame. Stops at the first frame that
/// does not validate (a torn write, a frame of an older WAL, the end).
pub fn validate(id: WalId, start: u64, cksum: (u32, u32), bytes: &[u8]) -> Frames {
    let fsz = (FRAME_HEADER + u64::from(id.page_size)) as usize;
    let be = id.magic & 1 == 1;
    let (mut ck, mut ok_len, mut ok_ck, mut db_size) = (cksum, 0usize, cksum, 0u32);
    let mut at = 0usize;
    while at + fsz <= bytes.len() {
        let f = &bytes[at..at + fsz];
        let (pgno, commit) = (be32(&f[0..4]), be32(&f[4..8]));
        if pgno == 0 || be32(&f[8..12]) != id.salt1 || be32(&f[12..16]) != id.salt2 {
            break;
        }
        let c = checksum(be, &f[24..], checksum(be, &f[0..8], ck));
        if c != (be32(&f[16..20]), be32(&f[20..24])) {
            break;
        }
        ck = c;
        at += fsz;
        if commit != 0 {
            (ok_len, ok_ck, db_size) = (at, ck, commit);
        }
    }
    Frames {
        id,
        start,
        end: start + ok_len as u64,
        cksum_start: cksum,
        cksum_end: ok_ck,
        db_size,
        bytes: bytes[..ok_len].to_vec(),
    }
}

/// What the WAL file holds now.
#[derive(Debug)]
pub enum WalRead {
    /// No WAL file, or no valid header yet (empty after a TRUNCATE checkpoint).
    Empty,
    /// A WAL with this header.
    Wal(Header),
}

/// The `-wal` path of a database.
pub fn wal_path(db: &Path) -> std::path::PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    p.into()
}

/// Read the header of `db`'s WAL.
pub fn read_header(db: &Path) -> std::io::Result<WalRead> {
    let mut f = match File::open(wal_path(db)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(WalRead::Empty),
        Err(e) => return Err(e),
    };
    let mut b = Vec::with_capacity(WAL_HEADER as usize);
    (&mut f).take(WAL_HEADER).read_to_end(&mut b)?;
    Ok(parse_header(&b).map_or(WalRead::Empty, WalRead::Wal))
}

/// Read and validate the frames of WAL `id` from offset `start` (chain at `cksum`), at most
/// [`MAX_READ`] bytes.
pub fn read_frames(db: &Path, id: WalId, start: u64, cksum: (u32, u32)) -> std::io::Result<Frames> {
    let mut b = Vec::new();
    match File::open(wal_path(db)) {
        Ok(mut f) => {
            f.seek(SeekFrom::Start(start))?;
            f.take(MAX_READ).read_to_end(&mut b)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(validate(id, start, cksum, &b))
}

/// Apply raw frames (as shipped) to a database file: each page written at its place, the file
/// cut or grown to the database size at each commit frame. The frames are validated again
/// against `id` and the chain at `cksum` first; returns the chain after them.
pub fn apply(
    f: &mut File,
    id: WalId,
    start: u64,
    cksum: (u32, u32),
    bytes: &[u8],
) -> Result<Frames, String> {
    use std::io::Write;
    let v = validate(id, start, cksum, bytes);
    if v.bytes.len() != bytes.len() {
        return Err(format!(
            "frames from WAL offset {start} do not validate after {} of {} bytes (salts or checksums do not match)",
            v.bytes.len(),
            bytes.len()
        ));
    }
    let ps = u64::from(id.page_size);
    let fsz = (FRAME_HEADER + ps) as usize;
    for fr in bytes.chunks_exact(fsz) {
        let (pgno, commit) = (u64::from(be32(&fr[0..4])), be32(&fr[4..8]));
        let w = f
            .seek(SeekFrom::Start((pgno - 1) * ps))
            .and_then(|_| f.write_all(&fr[24..]));
        w.map_err(|e| format!("writing page {pgno}: {e}"))?;
        if commit != 0 {
            f.set_len(u64::from(commit) * ps)
                .map_err(|e| format!("setting the database size to {commit} pages: {e}"))?;
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAL as SQLite writes it: header, then frames (pgno, commit) with pages of `fill`.
    pub(crate) fn wal(id: WalId, frames: &[(u32, u32, u8)]) -> Vec<u8> {
        let be = id.magic & 1 == 1;
        let mut b = Vec::new();
        for v in [
            id.magic,
            3_007_000,
            id.page_size,
            id.ckpt,
            id.salt1,
            id.salt2,
        ] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        let mut ck = checksum(be, &b, (0, 0));
        b.extend_from_slice(&ck.0.to_be_bytes());
        b.extend_from_slice(&ck.1.to_be_bytes());
        for &(pgno, commit, fill) in frames {
            let page = vec![fill; id.page_size as usize];
            let mut h = Vec::new();
            for v in [pgno, commit, id.salt1, id.salt2] {
                h.extend_from_slice(&v.to_be_bytes());
            }
            ck = checksum(be, &page, checksum(be, &h[0..8], ck));
            h.extend_from_slice(&ck.0.to_be_bytes());
            h.extend_from_slice(&ck.1.to_be_bytes());
            b.extend_from_slice(&h);
            b.extend_from_slice(&page);
        }
        b
    }

    pub(crate) fn id() -> WalId {
        WalId {
            magic: MAGIC,
            page_size: 512,
            ckpt: 3,
            salt1: 77,
            salt2: 0xdead_beef,
        }
    }

    #[test]
    fn only_whole_validated_commit_groups_are_taken() {
        for magic in [MAGIC, MAGIC | 1] {
            let id = WalId { magic, ..id() };
            let b = wal(id, &[(1, 0, 1), (2, 2, 2), (3, 0, 3), (2, 3, 4), (4, 0, 5)]);
            let h = parse_header(&b).unwrap();
            assert_eq!(h.id, id);
            let fs = validate(id, 32, h.cksum, &b[32..]);
            assert_eq!(fs.count(), 4, "the uncommitted last frame is left");
            assert_eq!(fs.db_size, 3);
            assert_eq!(fs.end, 32 + 4 * 536);
            // Continuing from the middle with the chain's checksum gives the same end.
            let first = validate(id, 32, h.cksum, &b[32..32 + 2 * 536]);
            let rest = validate(id, first.end, first.cksum_end, &b[first.end as usize..]);
            assert_eq!(rest.cksum_end, fs.cksum_end);
            assert_eq!(rest.count(), 2);
            // A flipped byte in a page, a frame of another WAL, a wrong chain: nothing after.
            let mut bad = b.clone();
            bad[32 + 536 + 100] ^= 1;
            assert_eq!(validate(id, 32, h.cksum, &bad[32..]).count(), 0);
            let other = WalId { salt2: 1, ..id };
            assert_eq!(validate(other, 32, h.cksum, &b[32..]).count(), 0);
            assert_eq!(validate(id, 32, (1, 2), &b[32..]).count(), 0);
            let mut hb = b.clone();
            hb[13] ^= 1;
            assert!(parse_header(&hb).is_none(), "a header that does not check");
        }
        assert!(parse_header(&[0u8; 32]).is_none());
        assert!(parse_header(&[0u8; 10]).is_none());
    }

    #[test]
    fn frames_of_a_real_wal_applied_to_the_checkpointed_file_give_the_same_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x, y);
             PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .unwrap();
        let copy = dir.path().join("copy.db");
        std::fs::copy(&db, &copy).unwrap();
        for i in 0..50 {
            c.execute("INSERT INTO t VALUES (?1, randomblob(700))", [i])
                .unwrap();
        }
        // An open transaction's frames may be in the WAL too: they are not taken.
        c.execute_batch("BEGIN; INSERT INTO t SELECT x, y FROM t;")
            .unwrap();
        let Ok(WalRead::Wal(h)) = read_header(&db) else {
            panic!("no WAL header")
        };
        let f = read_frames(&db, h.id, WAL_HEADER, h.cksum).unwrap();
        assert!(f.count() >= 50, "{} frames", f.count());
        let mut out = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&copy)
            .unwrap();
        let applied = apply(&mut out, h.id, WAL_HEADER, h.cksum, &f.bytes).unwrap();
        assert_eq!(applied.cksum_end, f.cksum_end);
        drop(out);
        c.execute_batch("ROLLBACK").unwrap();
        let r = rusqlite::Connection::open(&copy).unwrap();
        let q = "SELECT count(*), sum(x), sum(length(y)) FROM t";
        let row = |c: &rusqlite::Connection| -> (i64, i64, i64) {
            c.query_row(q, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
        };
        assert_eq!(row(&r), (50, 1225, 35000));
        assert_eq!(row(&r), row(&c));
        let ic: String = r
            .query_row("PRAGMA integrity_check", [], |x| x.get(0))
            .unwrap();
        assert_eq!(ic, "ok");
        // A frame changed in the shipped bytes is refused, never applied.
        let mut bad = f.bytes.clone();
        bad[500] ^= 1;
        let mut out = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&copy)
            .unwrap();
        assert!(apply(&mut out, h.id, WAL_HEADER, h.cksum, &bad).is_err());
    }
}
