//! The pieces of a journal source's snapshot: `NAME/piece-00000001.export`, … each holding the
//! export entries one run read, in order, with what the run recorded about them (JSON in the
//! file's `user.holdfast.journal` attribute, [`PieceMeta`]). Read back from a repository, the
//! pieces are hostile input: their number, names, order, attribute size, cursors and counts
//! are checked here before anything uses them.

use std::io::{self, Read};

use holdfast_core::blob::BlobType;
use holdfast_core::index::Index;
use holdfast_core::tree::{FsName, Node, NodeKind, Xattr};
use holdfast_core::{Id, Repository};
use serde::{Deserialize, Serialize};

use super::journal_export::valid_cursor;

/// The attribute of each piece file that holds its [`PieceMeta`] (hex of JSON).
pub const META_XATTR: &str = "user.holdfast.journal";

/// The most pieces a snapshot may hold (one per backup run: a run every minute for years).
pub const MAX_PIECES: usize = 4_000_000;

/// The largest attribute value read (hex characters).
pub const MAX_META_HEX: usize = 16 << 10;

/// What a run recorded about the entries it stored in one piece.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceMeta {
    /// Its position (1, 2, …).
    pub seq: u64,
    /// Export entries in it.
    pub entries: u64,
    /// Bytes of it.
    pub bytes: u64,
    /// The cursor of its first entry.
    pub first_cursor: String,
    /// The cursor of its last entry: the next run reads the entries after it.
    pub last_cursor: String,
    /// Realtime of its first entry (microseconds since the epoch).
    #[serde(default)]
    pub first_realtime: Option<u64>,
    /// Realtime of its last entry.
    #[serde(default)]
    pub last_realtime: Option<u64>,
    /// Set when the entries before it may be incomplete: the previous cursor was no longer in
    /// the journal when it was read (what was lost, as the warning said).
    #[serde(default)]
    pub gap_before: Option<String>,
}

/// A piece as found in a snapshot: its node (content ids) and what was recorded.
#[derive(Debug, Clone)]
pub struct Piece {
    /// The file node (reused as it is by the next snapshot).
    pub node: Node,
    /// What was recorded.
    pub meta: PieceMeta,
}

/// A snapshot's pieces are not what holdfast writes.
#[derive(Debug, thiserror::Error)]
#[error("the journal snapshot's pieces are damaged or forged: {0}; run `holdfast check`, and restore another recovery point")]
pub struct BadPieces(pub String);

/// The file name of piece `seq`.
pub fn piece_name(seq: u64) -> String {
    format!("piece-{seq:08}.export")
}

impl PieceMeta {
    /// The attribute holding it.
    pub fn xattr(&self) -> Xattr {
        Xattr {
            name: FsName(META_XATTR.as_bytes().to_vec()),
            value: hex::encode(serde_json::to_vec(self).unwrap_or_default()),
        }
    }

    fn of(n: &Node) -> Result<PieceMeta, BadPieces> {
        let name = n.name.display();
        let x = n
            .xattrs
            .iter()
            .find(|x| x.name.0 == META_XATTR.as_bytes())
            .ok_or_else(|| BadPieces(format!("{name} has no {META_XATTR} attribute")))?;
        if x.value.len() > MAX_META_HEX {
            return Err(BadPieces(format!(
                "{name}: its attribute is {} characters, more than {MAX_META_HEX}",
                x.value.len()
            )));
        }
        let raw = hex::decode(&x.value)
            .map_err(|e| BadPieces(format!("{name}: its attribute is not hex: {e}")))?;
        serde_json::from_slice(&raw)
            .map_err(|e| BadPieces(format!("{name}: its attribute is not a piece record: {e}")))
    }
}

/// The pieces under the source's directory tree `dir`, checked: files named
/// `piece-N.export` for N = 1, 2, … in order, each with a valid record whose size matches
/// the file's, whose cursors are cursors, and whose count fits its bytes.
pub fn load(repo: &Repository, index: &Index, dir: &Id) -> Result<Vec<Piece>, super::SourceError> {
    let tree = holdfast_core::browse::load_tree(repo, index, dir)?;
    if tree.nodes.len() > MAX_PIECES {
        return Err(bad(format!(
            "{} pieces, more than {MAX_PIECES}",
            tree.nodes.len()
        )));
    }
    let mut out: Vec<Piece> = Vec::with_capacity(tree.nodes.len());
    let mut total: u64 = 0;
    for (i, n) in tree.nodes.into_iter().enumerate() {
        let seq = i as u64 + 1;
        let name = n.name.display();
        if name != piece_name(seq) || n.kind != NodeKind::File {
            return Err(bad(format!(
                "entry {seq} is {name:?}, expected the file {}",
                piece_name(seq)
            )));
        }
        let meta = PieceMeta::of(&n).map_err(super::SourceError::from)?;
        let why = if meta.seq != seq {
            Some(format!("records position {}", meta.seq))
        } else if meta.bytes != n.size {
            Some(format!(
                "records {} bytes, the file holds {}",
                meta.bytes, n.size
            ))
        } else if meta.entries == 0 || meta.entries > meta.bytes / 2 {
            Some(format!(
                "records {} entries in {} bytes",
                meta.entries, meta.bytes
            ))
        } else if !valid_cursor(&meta.first_cursor) || !valid_cursor(&meta.last_cursor) {
            Some("records a cursor that is not one".into())
        } else if meta.gap_before.as_ref().is_some_and(|g| g.len() > 4096) {
            Some("records an overlong warning".into())
        } else {
            None
        };
        if let Some(why) = why {
            return Err(bad(format!("{name} {why}")));
        }
        total = total
            .checked_add(meta.entries)
            .ok_or_else(|| bad("the entry counts overflow".into()))?;
        out.push(Piece { node: n, meta });
    }
    Ok(out)
}

fn bad(m: String) -> super::SourceError {
    BadPieces(m).into()
}

impl From<BadPieces> for super::SourceError {
    fn from(e: BadPieces) -> Self {
        super::SourceError::new("journal", e)
    }
}

/// A piece's bytes, read blob by blob (each authenticated by the repository).
pub struct PieceReader<'a> {
    repo: &'a Repository,
    index: &'a Index,
    ids: std::slice::Iter<'a, Id>,
    buf: Vec<u8>,
    pos: usize,
}

impl<'a> PieceReader<'a> {
    /// Read the content of `node`.
    pub fn new(repo: &'a Repository, index: &'a Index, node: &'a Node) -> Self {
        PieceReader {
            repo,
            index,
            ids: node.content.iter(),
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for PieceReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(id) = self.ids.next() else {
                return Ok(0);
            };
            self.buf = self
                .repo
                .read_blob(self.index, BlobType::Data, id)
                .map_err(io::Error::other)?;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_hostile_ones_are_refused() {
        let m = PieceMeta {
            seq: 1,
            entries: 2,
            bytes: 100,
            first_cursor: "s=a;i=1".into(),
            last_cursor: "s=a;i=2".into(),
            first_realtime: Some(1),
            last_realtime: Some(2),
            gap_before: None,
        };
        let mut n = Node {
            name: FsName(piece_name(1).into_bytes()),
            kind: NodeKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: holdfast_core::tree::FileTime::from_nanos(0),
            ctime: holdfast_core::tree::FileTime::from_nanos(0),
            inode: 0,
            dev: 0,
            links: 1,
            size: 100,
            content: Vec::new(),
            inline: None,
            subtree: None,
            target: None,
            rdev: None,
            xattrs: vec![m.xattr()],
            changed_while_read: false,
        };
        assert_eq!(PieceMeta::of(&n).unwrap(), m);
        n.xattrs[0].value = "00".repeat(MAX_META_HEX);
        assert!(PieceMeta::of(&n).unwrap_err().0.contains("more than"));
        n.xattrs.clear();
        assert!(PieceMeta::of(&n)
            .unwrap_err()
            .0
            .contains("no user.holdfast"));
        assert_eq!(piece_name(12), "piece-00000012.export");
    }
}
