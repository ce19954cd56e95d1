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

/// A name that is not UTF-8, as written: `{"hex": "..."}` (read by [`crate::textrepr`]).
#[derive(Serialize)]
struct HexName {
    hex: String,
}

impl Serialize for FsName {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) => s.serialize_str(t),
            Err(_) => HexName {
                hex: hex::encode(&self.0),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for FsName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::textrepr::deserialize::<crate::textrepr::Hex, _>(d).map(FsName)
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

/// A file time: seconds since the epoch and nanoseconds, the whole range of a `timespec`
/// (a time as nanoseconds in an `i64` only covers the years 1677 to 2262).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FileTime {
    /// Seconds since the epoch (negative before 1970).
    pub sec: i64,
    /// Nanoseconds within the second, `0..1_000_000_000`.
    pub nsec: u32,
}

const NS: i64 = 1_000_000_000;

impl FileTime {
    /// From `stat`'s seconds and nanoseconds (nanoseconds outside `0..1e9` carry into seconds).
    pub fn new(sec: i64, nsec: i64) -> Self {
        FileTime {
            sec: sec.saturating_add(nsec.div_euclid(NS)),
            nsec: nsec.rem_euclid(NS) as u32,
        }
    }

    /// From nanoseconds since the epoch (the encoding of trees written before seconds and
    /// nanoseconds were stored apart).
    pub fn from_nanos(ns: i64) -> Self {
        FileTime::new(ns.div_euclid(NS), ns.rem_euclid(NS))
    }

    /// Nanoseconds since the epoch, if they fit in an `i64` (years 1677 to 2262).
    pub fn nanos(&self) -> Option<i64> {
        self.sec
            .checked_mul(NS)
            .and_then(|s| s.checked_add(self.nsec as i64))
    }

    /// Nanoseconds since the epoch, saturated to the `i64` range.
    pub fn nanos_saturating(&self) -> i64 {
        self.nanos()
            .unwrap_or(if self.sec < 0 { i64::MIN } else { i64::MAX })
    }

    /// Nanoseconds since the epoch, exact for every time.
    pub fn nanos_wide(&self) -> i128 {
        self.sec as i128 * NS as i128 + self.nsec as i128
    }
}

/// One entry of a directory.
///
/// Serialized as the fields below, in this order; times as `mtime`/`ctime` in nanoseconds
/// (saturated to `i64`), plus `mtime_sec`/`mtime_nsec` (and `ctime_…`) only when the nanoseconds
/// do not fit, so trees of ordinary files are byte for byte what earlier versions wrote (and
/// deduplicate with them), and earlier versions still read every tree. See docs/DESIGN.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Name within the directory.
    pub name: FsName,
    /// Type.
    pub kind: NodeKind,
    /// Permission bits (including setuid/setgid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: FileTime,
    /// Status change time (used to detect changes; not restored).
    pub ctime: FileTime,
    /// Inode number (change detection and hard links).
    pub inode: u64,
    /// Device of the file system (hard links).
    pub dev: u64,
    /// Number of hard links.
    pub links: u64,
    /// Size in bytes (files).
    pub size: u64,
    /// Content blobs, in order (files).
    pub content: Vec<Id>,
    /// The whole content of a small file, stored in the tree instead of as blobs (repository
    /// format 3; see [`crate::inline`]). When set, `content` is empty and its length is `size`.
    pub inline: Option<Vec<u8>>,
    /// Subtree (directories).
    pub subtree: Option<Id>,
    /// Link target (symlinks).
    pub target: Option<FsName>,
    /// Device number (device nodes).
    pub rdev: Option<u64>,
    /// Extended attributes.
    pub xattrs: Vec<Xattr>,
    /// The file kept changing while the backup read it (it was read again, and changed again):
    /// its stored content may mix bytes from before and after a change.
    pub changed_while_read: bool,
}

/// A node as written.
#[derive(Serialize)]
struct NodeOut<'a> {
    name: &'a FsName,
    #[serde(rename = "type")]
    kind: NodeKind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    ctime: i64,
    inode: u64,
    dev: u64,
    links: u64,
    #[serde(skip_serializing_if = "is_zero")]
    size: u64,
    #[serde(skip_serializing_if = "no_ids")]
    content: &'a [Id],
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::inline::serialize"
    )]
    inline: Option<&'a Vec<u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subtree: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a FsName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rdev: Option<u64>,
    #[serde(skip_serializing_if = "no_xattrs")]
    xattrs: &'a [Xattr],
    #[serde(skip_serializing_if = "Option::is_none")]
    mtime_sec: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtime_nsec: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ctime_sec: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ctime_nsec: Option<u32>,
    #[serde(skip_serializing_if = "is_false")]
    changed_while_read: bool,
}

/// A node as read: both time encodings.
#[derive(Deserialize)]
struct NodeIn {
    name: FsName,
    #[serde(rename = "type")]
    kind: NodeKind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    ctime: i64,
    inode: u64,
    dev: u64,
    links: u64,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    content: Vec<Id>,
    #[serde(default, deserialize_with = "crate::inline::deserialize")]
    inline: Option<Vec<u8>>,
    #[serde(default)]
    subtree: Option<Id>,
    #[serde(default)]
    target: Option<FsName>,
    #[serde(default)]
    rdev: Option<u64>,
    #[serde(default)]
    xattrs: Vec<Xattr>,
    #[serde(default)]
    mtime_sec: Option<i64>,
    #[serde(default)]
    mtime_nsec: Option<u32>,
    #[serde(default)]
    ctime_sec: Option<i64>,
    #[serde(default)]
    ctime_nsec: Option<u32>,
    #[serde(default)]
    changed_while_read: bool,
}

/// The exact time from `*_sec`/`*_nsec` when present, else from the nanoseconds.
fn read_time(
    which: &str,
    ns: i64,
    sec: Option<i64>,
    nsec: Option<u32>,
) -> std::result::Result<FileTime, String> {
    match (sec, nsec) {
        (None, None) => Ok(FileTime::from_nanos(ns)),
        (Some(sec), Some(nsec)) if (nsec as i64) < NS => Ok(FileTime { sec, nsec }),
        (Some(_), Some(nsec)) => Err(format!("{which}_nsec {nsec} is not below one second")),
        _ => Err(format!("{which}_sec and {which}_nsec must come together")),
    }
}

/// The split fields, written only when the nanoseconds do not fit an `i64`.
fn split(t: &FileTime) -> (Option<i64>, Option<u32>) {
    match t.nanos() {
        Some(_) => (None, None),
        None => (Some(t.sec), Some(t.nsec)),
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let (mtime_sec, mtime_nsec) = split(&self.mtime);
        let (ctime_sec, ctime_nsec) = split(&self.ctime);
        NodeOut {
            name: &self.name,
            kind: self.kind,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime: self.mtime.nanos_saturating(),
            ctime: self.ctime.nanos_saturating(),
            inode: self.inode,
            dev: self.dev,
            links: self.links,
            size: self.size,
            content: &self.content,
            inline: self.inline.as_ref(),
            subtree: self.subtree,
            target: self.target.as_ref(),
            rdev: self.rdev,
            xattrs: &self.xattrs,
            mtime_sec,
            mtime_nsec,
            ctime_sec,
            ctime_nsec,
            changed_while_read: self.changed_while_read,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let n = NodeIn::deserialize(d)?;
        let e = serde::de::Error::custom;
        Ok(Node {
            mtime: read_time("mtime", n.mtime, n.mtime_sec, n.mtime_nsec).map_err(e)?,
            ctime: read_time("ctime", n.ctime, n.ctime_sec, n.ctime_nsec).map_err(e)?,
            name: n.name,
            kind: n.kind,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            inode: n.inode,
            dev: n.dev,
            links: n.links,
            size: n.size,
            content: n.content,
            inline: n.inline,
            subtree: n.subtree,
            target: n.target,
            rdev: n.rdev,
            xattrs: n.xattrs,
            changed_while_read: n.changed_while_read,
        })
    }
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn no_ids(v: &&[Id]) -> bool {
    v.is_empty()
}

fn no_xattrs(v: &&[Xattr]) -> bool {
    v.is_empty()
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
            if let Some(why) = crate::inline::invalid(n) {
                return Err(Error::corrupt(
                    format!("tree {id}"),
                    format!("entry {:?} {why}", n.name.display()),
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
pub(crate) mod tests {
    use super::*;

    /// A file node named `name`, 3 bytes in one blob.
    pub(crate) fn node(name: &[u8]) -> Node {
        Node {
            name: FsName(name.to_vec()),
            kind: NodeKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: FileTime::from_nanos(1),
            ctime: FileTime::from_nanos(1),
            inode: 1,
            dev: 1,
            links: 1,
            size: 3,
            content: vec![Id([1; 32])],
            inline: None,
            subtree: None,
            target: None,
            rdev: None,
            xattrs: vec![],
            changed_while_read: false,
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

    /// A tree as versions before split times wrote it: read exactly, and written back byte for
    /// byte (ordinary trees deduplicate with old ones, and old versions read new trees).
    #[test]
    fn legacy_nanosecond_trees_read_and_write_back_identically() {
        let old = format!(
            concat!(
                r#"{{"nodes":[{{"name":"a","type":"file","mode":420,"uid":1,"gid":2,"#,
                r#""mtime":-1500000001,"ctime":1600000000123456789,"inode":7,"dev":8,"links":1,"#,
                r#""size":3,"content":["{}"],"xattrs":[{{"name":"user.x","value":"00ff"}}]}}]}}"#
            ),
            "01".repeat(32)
        );
        let t = Tree::decode(&Id::default(), old.as_bytes()).unwrap();
        let n = &t.nodes[0];
        assert_eq!(
            n.mtime,
            FileTime {
                sec: -2,
                nsec: 499_999_999
            }
        );
        assert_eq!(
            n.ctime,
            FileTime {
                sec: 1_600_000_000,
                nsec: 123_456_789
            }
        );
        assert!(!n.changed_while_read);
        assert_eq!(String::from_utf8(t.encode()).unwrap(), old);
    }

    /// Times before 1677 and after 2262 (outside nanoseconds in an i64) round-trip exactly.
    #[test]
    fn times_outside_the_nanosecond_range_round_trip_exactly() {
        let mut a = node(b"a");
        a.mtime = FileTime {
            sec: -20_000_000_000,
            nsec: 1,
        }; // about 1336
        a.ctime = FileTime {
            sec: 32_503_680_000,
            nsec: 999_999_999,
        }; // year 3000
        a.changed_while_read = true;
        let t = Tree { nodes: vec![a] };
        let enc = String::from_utf8(t.encode()).unwrap();
        assert!(
            enc.contains(r#""mtime_sec":-20000000000,"mtime_nsec":1"#),
            "{enc}"
        );
        assert!(enc.contains(&format!(r#""mtime":{}"#, i64::MIN)), "{enc}");
        assert!(enc.contains(&format!(r#""ctime":{}"#, i64::MAX)), "{enc}");
        assert!(enc.contains(r#""changed_while_read":true"#), "{enc}");
        assert_eq!(Tree::decode(&Id::default(), enc.as_bytes()).unwrap(), t);
        assert_eq!(
            FileTime::new(5, -1),
            FileTime {
                sec: 4,
                nsec: 999_999_999
            }
        );
        assert_eq!(t.nodes[0].mtime.nanos(), None);
        assert_eq!(
            t.nodes[0].mtime.nanos_wide(),
            -20_000_000_000i128 * 1_000_000_000 + 1
        );
    }

    #[test]
    fn malformed_split_times_are_rejected() {
        for bad in [
            r#""mtime_sec":1,"mtime_nsec":1000000000"#,
            r#""mtime_sec":1"#,
            r#""ctime_nsec":5"#,
        ] {
            let j = format!(
                r#"{{"nodes":[{{"name":"a","type":"dir","mode":493,"uid":0,"gid":0,"mtime":0,"ctime":0,"inode":1,"dev":1,"links":2,{bad}}}]}}"#
            );
            let e = Tree::decode(&Id::default(), j.as_bytes()).unwrap_err();
            assert!(e.to_string().contains("nsec"), "{bad}: {e}");
        }
    }
}
