//! Directory trees: one JSON blob per directory, listing its entries sorted by name bytes.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::error::{Error, Result};
use crate::id::Id;

/// A file name or link target as bytes. Serialized as a JSON string when it is UTF-8, and as
/// `{"hex": "..."}` otherwise, so names that are not UTF-8 round-trip exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FsName(pub Vec<u8>);

impl FsName {
    /// From an OS string.
    pub fn from_os(s: &OsStr) -> Self {
        FsName(s.as_bytes().to_vec())
    }
    /// As an OS string.
    pub fn to_os(&self) -> OsString {
        OsString::from_vec(self.0.clone())
    }
    /// For display (lossy).
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum FsNameRepr {
    Text(String),
    Bytes { hex: String },
}

impl Serialize for FsName {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) => s.serialize_str(t),
            Err(_) => FsNameRepr::Bytes {
                hex: hex::encode(&self.0),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for FsName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match FsNameRepr::deserialize(d)? {
            FsNameRepr::Text(t) => Ok(FsName(t.into_bytes())),
            FsNameRepr::Bytes { hex } => hex::decode(hex)
                .map(FsName)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// The type of a tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device.
    Chardev,
    /// Block device.
    Blockdev,
    /// Unix socket (recorded, restored as nothing: sockets cannot be recreated meaningfully).
    Socket,
}

/// An extended attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    /// Attribute name.
    pub name: FsName,
    /// Value, hex.
    pub value: String,
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Name within the directory.
    pub name: FsName,
    /// Type.
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission bits (including setuid/setgid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime: i64,
    /// Status change time, nanoseconds since the epoch (used to detect changes; not restored).
    pub ctime: i64,
    /// Inode number (change detection and hard links).
    pub inode: u64,
    /// Device of the file system (hard links).
    pub dev: u64,
    /// Number of hard links.
    pub links: u64,
    /// Size in bytes (files).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Content blobs, in order (files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Id>,
    /// Subtree (directories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    /// Link target (symlinks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<FsName>,
    /// Device number (device nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
    /// Extended attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A directory's entries.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tree {
    /// Entries sorted by name bytes, names unique.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Serialize (entries must already be sorted).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializable")
    }

    /// Parse and validate.
    pub fn decode(id: &Id, data: &[u8]) -> Result<Tree> {
        let t: Tree = serde_json::from_slice(data)
            .map_err(|e| Error::corrupt(format!("tree {id}"), e.to_string()))?;
        for w in t.nodes.windows(2) {
            if w[0].name >= w[1].name {
                return Err(Error::corrupt(
                    format!("tree {id}"),
                    "entries not sorted or not unique",
                ));
            }
        }
        for n in &t.nodes {
            if n.name.0.is_empty()
                || n.name.0 == b"."
                || n.name.0 == b".."
                || n.name.0.contains(&b'/')
                || n.name.0.contains(&0)
            {
                return Err(Error::corrupt(
                    format!("tree {id}"),
                    format!("entry name {:?} is not a plain file name", n.name.display()),
                ));
            }
        }
        Ok(t)
    }

    /// Find an entry by name.
    pub fn get(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.0.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &[u8]) -> Node {
        Node {
            name: FsName(name.to_vec()),
            kind: NodeKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1,
            ctime: 1,
            inode: 1,
            dev: 1,
            links: 1,
            size: 3,
            content: vec![Id([1; 32])],
            subtree: None,
            target: None,
            rdev: None,
            xattrs: vec![],
        }
    }

    #[test]
    fn non_utf8_names_round_trip() {
        let t = Tree {
            nodes: vec![node(b"a\xff\xfe"), node("é".as_bytes())],
        };
        let enc = t.encode();
        assert!(String::from_utf8_lossy(&enc).contains("\"hex\""));
        let back = Tree::decode(&Id::default(), &enc).unwrap();
        assert_eq!(back, t);
        assert!(back.get(b"a\xff\xfe").is_some());
    }

    #[test]
    fn rejects_unsorted_and_path_names() {
        let t = Tree {
            nodes: vec![node(b"b"), node(b"a")],
        };
        assert!(Tree::decode(&Id::default(), &t.encode()).is_err());
        let t = Tree {
            nodes: vec![node(b"../x")],
        };
        assert!(Tree::decode(&Id::default(), &t.encode()).is_err());
        assert!(Tree::decode(&Id::default(), b"{").is_err());
    }
}
