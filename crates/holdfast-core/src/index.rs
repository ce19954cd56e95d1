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

use crate::blob::BlobType;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::pack::PackEntry;

pub use crate::blobindex::{IdMode, Index, Location};

const MAGIC: &[u8; 4] = b"HFI1";
/// Associated data of index files.
pub const AAD: &[u8] = b"holdfast index";
const ENTRY_LEN: usize = 45;

/// What [`IndexFile::visit`] shows, in file order.
#[derive(Debug)]
pub enum Visit<'a> {
    /// A pack and how many entries follow for it.
    Pack(&'a Id, usize),
    /// One entry of the last pack.
    Entry(&'a PackEntry),
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
        let mut packs: Vec<(Id, Vec<PackEntry>)> = Vec::new();
        let superseded = Self::visit(what, data, |v| match v {
            Visit::Pack(pack, n) => packs.push((*pack, Vec::with_capacity(n))),
            Visit::Entry(e) => {
                if let Some((_, v)) = packs.last_mut() {
                    v.push(*e);
                }
            }
        })?;
        Ok(IndexFile { packs, superseded })
    }

    /// Parse plaintext without building an [`IndexFile`]: `f` sees each pack, then each of its
    /// entries (every one checked as [`IndexFile::decode`]
    /// does); returns the superseded ids. Never panics on malformed input; on an error, what
    /// was visited so far must be discarded.
    pub fn visit(what: &str, data: &[u8], mut f: impl FnMut(Visit<'_>)) -> Result<Vec<Id>> {
        let bad = |d: &str| Error::corrupt(format!("index {what}"), d.to_string());
        let mut r = Reader { data, pos: 0 };
        if r.take(4).ok_or_else(|| bad("truncated"))? != MAGIC {
            return Err(bad("bad magic"));
        }
        let npacks = r.u32().ok_or_else(|| bad("truncated"))? as usize;
        for _ in 0..npacks {
            let p = r.id().ok_or_else(|| bad("truncated pack id"))?;
            let n = r.u32().ok_or_else(|| bad("truncated"))? as usize;
            if n > r.remaining() / ENTRY_LEN {
                return Err(bad("entry count exceeds the file"));
            }
            f(Visit::Pack(&p, n));
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
                f(Visit::Entry(&PackEntry {
                    blob_type,
                    id,
                    offset,
                    length,
                    raw_len,
                }));
            }
        }
        let ns = r.u32().ok_or_else(|| bad("truncated"))? as usize;
        if ns > r.remaining() / 32 {
            return Err(bad("superseded count exceeds the file"));
        }
        let superseded = (0..ns).filter_map(|_| r.id()).collect();
        if r.remaining() != 0 {
            return Err(bad("trailing bytes"));
        }
        Ok(superseded)
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
