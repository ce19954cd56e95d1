//! Small files stored inside their directory's tree node (repository format 3).
//!
//! A file of at most the repository's `inline_max` bytes (512 by default) is stored in its tree
//! node's `inline` field instead of as a data blob. Each data blob costs about 130 bytes of its
//! own (AEAD nonce and tag, pack header entry, index entry) plus a 64-digit id in the tree; for
//! a 100-byte file that is more than the file. In the tree, the bytes are compressed with their
//! neighbours and sealed with the tree, so they are as authenticated as any blob.
//!
//! A reader older than format 3 would see an `inline` field it does not know and restore an
//! empty file, so inline nodes are written only into repositories whose config says version 3
//! (which such a reader refuses to open), and `copy` into an older repository turns them back
//! into data blobs. See docs/DESIGN.md, "Inline content".

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use base64::Engine;
use serde::{Deserializer, Serialize, Serializer};

use crate::repo::Repository;
use crate::tree::{Node, NodeKind};

/// The first repository format version whose readers understand inline content.
pub const INLINE_VERSION: u32 = 3;

/// The inline limit a new repository gets: files of at most this many bytes are inlined.
pub const DEFAULT_INLINE_MAX: u32 = 512;

/// The largest inline limit a config may set, and the largest inline content a tree may hold
/// (anything read from a repository is bounded).
pub const INLINE_LIMIT: u32 = 16 << 10;

/// The inline limit writers use for `repo`: its config's, or 0 (never inline) for a repository
/// older than format 3.
pub fn inline_max(repo: &Repository) -> u64 {
    let c = repo.config();
    if c.version >= INLINE_VERSION {
        c.inline_max.unwrap_or(0) as u64
    } else {
        0
    }
}

/// Inline content as JSON is a string when it is UTF-8 (text files stay readable and compress
/// as text), else this: `{"b64": "..."}` (standard alphabet, padded). Both forms are read by
/// [`crate::textrepr`].
#[derive(Serialize)]
struct B64 {
    b64: String,
}

/// Serialize `Node::inline` (only called when it is `Some`).
pub(crate) fn serialize<S: Serializer>(
    data: &Option<&Vec<u8>>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    let data = data.map(|d| d.as_slice()).unwrap_or_default();
    match std::str::from_utf8(data) {
        Ok(t) => s.serialize_str(t),
        Err(_) => B64 {
            b64: base64::engine::general_purpose::STANDARD.encode(data),
        }
        .serialize(s),
    }
}

/// Deserialize `Node::inline`.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Vec<u8>>, D::Error> {
    crate::textrepr::deserialize::<crate::textrepr::B64, _>(d).map(Some)
}

/// Why a node's inline content is not valid, if it is not: only a file has it, never beside
/// content blobs, its length is the node's size, and it is at most [`INLINE_LIMIT`] bytes.
pub fn invalid(n: &Node) -> Option<String> {
    let d = n.inline.as_ref()?;
    if n.kind != NodeKind::File {
        return Some("has inline content but is not a file".into());
    }
    if !n.content.is_empty() {
        return Some("has both inline content and content blobs".into());
    }
    if d.len() as u64 != n.size {
        return Some(format!(
            "has {} bytes of inline content but a size of {}",
            d.len(),
            n.size
        ));
    }
    if d.len() > INLINE_LIMIT as usize {
        return Some(format!(
            "has {} bytes of inline content, more than the {INLINE_LIMIT} any holdfast writes",
            d.len()
        ));
    }
    None
}

/// Whether the file at `path` holds exactly the content `n` records: its inline bytes, or
/// content blobs with the ids the file's chunks have in `repo`. Used to verify a restore.
pub fn file_matches(repo: &Repository, path: &Path, n: &Node) -> io::Result<bool> {
    match &n.inline {
        Some(want) => {
            let mut got = Vec::with_capacity(want.len());
            File::open(path)?
                .take(want.len() as u64 + 1)
                .read_to_end(&mut got)?;
            Ok(&got == want)
        }
        None => Ok(crate::fileread::content_ids(repo, path)? == n.content),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;
    use crate::tree::Tree;

    fn file(inline: Option<&[u8]>, size: u64) -> Node {
        let mut n = crate::tree::tests::node(b"f");
        n.size = size;
        n.content = Vec::new();
        n.inline = inline.map(|d| d.to_vec());
        n
    }

    #[test]
    fn text_binary_and_empty_content_round_trip_exactly() {
        let cases: &[&[u8]] = &[
            b"plain text\n",
            b"\"quotes\" \\ and \x01 control",
            "é ünïcode ✓".as_bytes(),
            &[0xff, 0xfe, 0x00, 0x80],
            b"",
        ];
        for &c in cases {
            let t = Tree {
                nodes: vec![file(Some(c), c.len() as u64)],
            };
            let enc = t.encode();
            let back = Tree::decode(&Id([0; 32]), &enc).unwrap();
            assert_eq!(back.nodes[0].inline.as_deref(), Some(c), "{c:?}");
            let text = String::from_utf8_lossy(&enc);
            assert_eq!(
                text.contains("\"b64\""),
                std::str::from_utf8(c).is_err(),
                "{text}"
            );
        }
    }

    #[test]
    fn a_node_without_inline_content_encodes_as_before() {
        let t = Tree {
            nodes: vec![file(None, 0)],
        };
        assert!(!String::from_utf8(t.encode()).unwrap().contains("inline"));
    }

    #[test]
    fn malformed_inline_content_is_refused() {
        let mut dir = file(Some(b"x"), 1);
        dir.kind = NodeKind::Dir;
        let mut both = file(Some(b"x"), 1);
        both.content = vec![Id([1; 32])];
        let cases = [
            (dir, "not a file"),
            (both, "both"),
            (file(Some(b"abc"), 2), "size of 2"),
            (file(Some(b"abc"), 4), "size of 4"),
            (
                file(
                    Some(&vec![b'a'; INLINE_LIMIT as usize + 1]),
                    INLINE_LIMIT as u64 + 1,
                ),
                "more than",
            ),
        ];
        for (n, want) in cases {
            let enc = Tree { nodes: vec![n] }.encode();
            let err = Tree::decode(&Id([0; 32]), &enc).unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
        let enc = br#"{"nodes":[{"name":"f","type":"file","mode":420,"uid":0,"gid":0,"mtime":1,"ctime":1,"inode":1,"dev":1,"links":1,"size":1,"inline":{"b64":"!!"}}]}"#;
        assert!(Tree::decode(&Id([0; 32]), enc).is_err());
    }
}
