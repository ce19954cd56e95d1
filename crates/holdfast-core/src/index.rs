//! The index: which pack holds each blob, and where.
//!
//! Index files are encrypted (aad `"holdfast index"`); their plaintext is
//! ```text
//! "HFI1" npacks:u32le pack*npacks nsuper:u32le superseded_id:[32]*nsuper
//! pack  = pack_id:[32] nblobs:u32le entry*nblobs
//! entry = type:u8 id:[32] offset:u32le length:u32le raw_len:u32le     (45 bytes)
//! ```
//! `superseded` names index files whose content this one includes (written by prune when it
//! rewrites the index); a reader may ignore them. An index file's name is the BLAKE3 of its
//! encrypted bytes.

use std::collections::HashMap;

use crate::blob::BlobType;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::pack::PackEntry;

const MAGIC: &[u8; 4] = b"HFI1";
/// Associated data of index files.
pub const AAD: &[u8] = b"holdfast index";
const ENTRY_LEN: usize = 45;

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Index into [`Index::packs`].
    pub pack: u32,
    /// Blob type.
    pub blob_type: BlobType,
    /// Offset in the pack.
    pub offset: u32,
    /// Stored length.
    pub length: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

/// One index file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexFile {
    /// Packs and their blobs.
    pub packs: Vec<(Id, Vec<PackEntry>)>,
    /// Index files this one includes.
    pub superseded: Vec<Id>,
}

impl IndexFile {
    /// Serialize to plaintext.
    pub fn encode(&self) -> Vec<u8> {
        let n: usize = self.packs.iter().map(|(_, e)| e.len()).sum();
        let mut out = Vec::with_capacity(16 + self.packs.len() * 36 + n * ENTRY_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for (pack, entries) in &self.packs {
            out.extend_from_slice(&pack.0);
            out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            for e in entries {
                out.push(e.blob_type as u8);
                out.extend_from_slice(&e.id.0);
                out.extend_from_slice(&e.offset.to_le_bytes());
                out.extend_from_slice(&e.length.to_le_bytes());
                out.extend_from_slice(&e.raw_len.to_le_bytes());
            }
        }
        out.extend_from_slice(&(self.superseded.len() as u32).to_le_bytes());
        for s in &self.superseded {
            out.extend_from_slice(&s.0);
        }
        out
    }

    /// Parse plaintext; never panics on malformed input.
    pub fn decode(what: &str, data: &[u8]) -> Result<Self> {
        let bad = |d: &str| Error::corrupt(format!("index {what}"), d.to_string());
        let mut r = Reader { data, pos: 0 };
        if r.take(4).ok_or_else(|| bad("truncated"))? != MAGIC {
            return Err(bad("bad magic"));
        }
        let npacks = r.u32().ok_or_else(|| bad("truncated"))? as usize;
        let mut packs = Vec::with_capacity(npacks.min(data.len() / 36));
        for _ in 0..npacks {
            let pack = r.id().ok_or_else(|| bad("truncated pack id"))?;
            let n = r.u32().ok_or_else(|| bad("truncated"))? as usize;
            if n > r.remaining() / ENTRY_LEN {
                return Err(bad("entry count exceeds the file"));
            }
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let t = r.take(1).ok_or_else(|| bad("truncated"))?[0];
                let blob_type = BlobType::from_u8(t).ok_or_else(|| bad("unknown blob type"))?;
                let id = r.id().ok_or_else(|| bad("truncated"))?;
                let offset = r.u32().ok_or_else(|| bad("truncated"))?;
                let length = r.u32().ok_or_else(|| bad("truncated"))?;
                let raw_len = r.u32().ok_or_else(|| bad("truncated"))?;
                crate::blob::check_lengths(blob_type, length, raw_len)
                    .map_err(|d| bad(&format!("blob {id}: {d}")))?;
                if offset.checked_add(length).is_none() {
                    return Err(bad(&format!(
                        "blob {id}: offset {offset} + length {length} overflows"
                    )));
                }
                entries.push(PackEntry {
                    blob_type,
                    id,
                    offset,
                    length,
                    raw_len,
                });
            }
            packs.push((pack, entries));
        }
        let ns = r.u32().ok_or_else(|| bad("truncated"))? as usize;
        if ns > r.remaining() / 32 {
            return Err(bad("superseded count exceeds the file"));
        }
        let superseded = (0..ns).filter_map(|_| r.id()).collect();
        if r.remaining() != 0 {
            return Err(bad("trailing bytes"));
        }
        Ok(IndexFile { packs, superseded })
    }

    /// Encrypt.
    pub fn seal(&self, key: &MasterKey) -> Vec<u8> {
        key.encrypt(AAD, &self.encode())
    }

    /// Decrypt and parse.
    pub fn open(key: &MasterKey, what: &str, data: &[u8]) -> Result<Self> {
        let plain = key
            .decrypt(AAD, data)
            .map_err(|e| Error::corrupt(format!("index {what}"), e.to_string()))?;
        Self::decode(what, &plain)
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn id(&mut self) -> Option<Id> {
        Some(Id(self.take(32)?.try_into().ok()?))
    }
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
}

/// The in-memory index of a repository: blob id to location.
#[derive(Debug, Default, Clone)]
pub struct Index {
    packs: Vec<Id>,
    pack_pos: HashMap<Id, u32>,
    blobs: HashMap<Id, Location>,
    /// Further locations of blobs stored more than once.
    alternates: HashMap<Id, Vec<Location>>,
}

impl Index {
    /// Add the entries of one pack. A blob already indexed keeps its first location.
    pub fn add_pack(&mut self, pack: Id, entries: &[PackEntry]) {
        let p = match self.pack_pos.get(&pack) {
            Some(&p) => p,
            None => {
                let p = self.packs.len() as u32;
                self.packs.push(pack);
                self.pack_pos.insert(pack, p);
                p
            }
        };
        self.blobs.reserve(entries.len());
        for e in entries {
            let loc = Location {
                pack: p,
                blob_type: e.blob_type,
                offset: e.offset,
                length: e.length,
                raw_len: e.raw_len,
            };
            match self.blobs.entry(e.id) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(loc);
                }
                std::collections::hash_map::Entry::Occupied(o) => {
                    // A second copy (concurrent writers, or a repack): remember it, so dropping
                    // the first pack does not lose the blob.
                    if o.get().pack != p {
                        self.alternates.entry(e.id).or_default().push(loc);
                    }
                }
            }
        }
    }

    /// Where a blob is.
    pub fn get(&self, id: &Id) -> Option<(Id, Location)> {
        self.blobs
            .get(id)
            .map(|l| (self.packs[l.pack as usize], *l))
    }

    /// Whether a blob is indexed.
    pub fn contains(&self, id: &Id) -> bool {
        self.blobs.contains_key(id)
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Every pack that holds at least one indexed blob.
    pub fn packs(&self) -> &[Id] {
        &self.packs
    }

    /// Whether a pack is known.
    pub fn has_pack(&self, pack: &Id) -> bool {
        self.pack_pos.contains_key(pack)
    }

    /// Iterate over every blob and its location.
    pub fn iter(&self) -> impl Iterator<Item = (&Id, Id, &Location)> + '_ {
        self.blobs
            .iter()
            .map(move |(id, l)| (id, self.packs[l.pack as usize], l))
    }

    /// Every location of every blob, duplicates included.
    pub fn iter_all(&self) -> impl Iterator<Item = (&Id, Id, &Location)> + '_ {
        self.iter().chain(
            self.alternates.iter().flat_map(move |(id, ls)| {
                ls.iter().map(move |l| (id, self.packs[l.pack as usize], l))
            }),
        )
    }

    /// A copy without the blobs of the given packs (used to avoid deduplicating against packs
    /// that garbage collection has condemned).
    pub fn without_packs(&self, drop: &std::collections::HashSet<Id>) -> Index {
        if drop.is_empty() {
            return self.clone();
        }
        let mut out = Index::default();
        let mut by_pack: HashMap<u32, Vec<PackEntry>> = HashMap::new();
        let all = self.blobs.iter().chain(
            self.alternates
                .iter()
                .flat_map(|(id, ls)| ls.iter().map(move |l| (id, l))),
        );
        for (id, l) in all {
            by_pack.entry(l.pack).or_default().push(PackEntry {
                blob_type: l.blob_type,
                id: *id,
                offset: l.offset,
                length: l.length,
                raw_len: l.raw_len,
            });
        }
        let mut ps: Vec<_> = by_pack.into_iter().collect();
        ps.sort_by_key(|(p, _)| *p);
        for (p, entries) in ps {
            let pack = self.packs[p as usize];
            if !drop.contains(&pack) {
                out.add_pack(pack, &entries);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(i: u8) -> PackEntry {
        PackEntry {
            blob_type: if i.is_multiple_of(2) {
                BlobType::Data
            } else {
                BlobType::Tree
            },
            id: Id([i; 32]),
            offset: i as u32 * 50,
            length: 50,
            raw_len: 20,
        }
    }

    #[test]
    fn encode_decode_and_lookup() {
        let f = IndexFile {
            packs: vec![
                (Id([1; 32]), vec![entry(1), entry(2)]),
                (Id([2; 32]), vec![entry(3)]),
            ],
            superseded: vec![Id([9; 32])],
        };
        let k = MasterKey::generate();
        let back = IndexFile::open(&k, "t", &f.seal(&k)).unwrap();
        assert_eq!(back, f);
        let mut idx = Index::default();
        for (p, e) in &back.packs {
            idx.add_pack(*p, e);
        }
        assert_eq!(idx.len(), 3);
        let (pack, loc) = idx.get(&Id([3; 32])).unwrap();
        assert_eq!(pack, Id([2; 32]));
        assert_eq!(loc.offset, 150);
        let dropped = idx.without_packs(&[Id([2; 32])].into_iter().collect());
        assert!(!dropped.contains(&Id([3; 32])));
        assert!(dropped.contains(&Id([1; 32])));
    }

    #[test]
    fn impossible_lengths_in_an_index_are_refused() {
        for (raw_len, length) in [(u32::MAX, 100), (20, 1000), (20, 3)] {
            let f = IndexFile {
                packs: vec![(
                    Id([1; 32]),
                    vec![PackEntry {
                        raw_len,
                        length,
                        ..entry(2)
                    }],
                )],
                superseded: vec![],
            };
            let err = IndexFile::decode("t", &f.encode()).unwrap_err();
            assert!(err.to_string().contains("length"), "{err}");
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = IndexFile::decode("g", &data);
            let mut d = b"HFI1".to_vec();
            d.extend_from_slice(&data);
            let _ = IndexFile::decode("g", &d);
        }
    }
}
