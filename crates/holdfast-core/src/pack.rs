//! Pack files: many stored blobs followed by an encrypted header that lists them.
//!
//! ```text
//! pack   = blob* header header_len
//! header = encrypt(aad = "holdfast pack header", plain_header)   (nonce || ct || tag)
//! header_len = u32 little endian: length of `header`
//! plain_header = "HFP1" count:u32le entry*count
//! entry  = type:u8 id:[32] length:u32le raw_len:u32le       (41 bytes)
//! ```
//! Blob `i` starts at the sum of the lengths of blobs `0..i`. A pack's name is the BLAKE3 hash
//! of its whole bytes, so `check` verifies a pack without a key.

use crate::blob::BlobType;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::Id;

const MAGIC: &[u8; 4] = b"HFP1";
const HEADER_AAD: &[u8] = b"holdfast pack header";
/// Size of one header entry.
pub const ENTRY_LEN: usize = 41;
/// Largest header a reader accepts (bounds allocation on damaged input).
pub const MAX_HEADER: u32 = 64 << 20;

/// A blob's place in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    /// Blob type.
    pub blob_type: BlobType,
    /// Blob id.
    pub id: Id,
    /// Offset of the stored blob in the pack.
    pub offset: u32,
    /// Length of the stored (encrypted) blob.
    pub length: u32,
    /// Length of the plaintext.
    pub raw_len: u32,
}

/// Accumulates stored blobs into a pack in memory.
#[derive(Default)]
pub struct PackBuilder {
    data: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl PackBuilder {
    /// An empty pack with room for `cap` bytes.
    pub fn with_capacity(cap: usize) -> Self {
        PackBuilder {
            data: Vec::with_capacity(cap),
            entries: Vec::new(),
        }
    }

    /// Append a stored blob.
    pub fn add(&mut self, blob_type: BlobType, id: Id, stored: &[u8], raw_len: u32) {
        let offset = self.data.len() as u32;
        self.data.extend_from_slice(stored);
        self.entries.push(PackEntry {
            blob_type,
            id,
            offset,
            length: stored.len() as u32,
            raw_len,
        });
    }

    /// Bytes of blobs so far.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Blobs so far.
    pub fn count(&self) -> usize {
        self.entries.len()
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Append the header; returns the pack's bytes, its id and its entries.
    pub fn finish(mut self, key: &MasterKey) -> (Vec<u8>, Id, Vec<PackEntry>) {
        let header = encode_header(&self.entries);
        let sealed = key.encrypt(HEADER_AAD, &header);
        self.data.extend_from_slice(&sealed);
        self.data
            .extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        let id = Id::of_bytes(&self.data);
        (self.data, id, self.entries)
    }
}

fn encode_header(entries: &[PackEntry]) -> Vec<u8> {
    let mut h = Vec::with_capacity(8 + entries.len() * ENTRY_LEN);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        h.push(e.blob_type as u8);
        h.extend_from_slice(&e.id.0);
        h.extend_from_slice(&e.length.to_le_bytes());
        h.extend_from_slice(&e.raw_len.to_le_bytes());
    }
    h
}

/// Parse a decrypted pack header. `blobs_end` is where the header starts: the blobs must fit.
pub fn decode_header(what: &str, h: &[u8], blobs_end: u64) -> Result<Vec<PackEntry>> {
    let bad = |d: &str| Error::corrupt(format!("header of pack {what}"), d.to_string());
    if h.len() < 8 || &h[..4] != MAGIC {
        return Err(bad("bad magic"));
    }
    let count = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes")) as usize;
    if h.len() != 8 + count * ENTRY_LEN {
        return Err(bad("length does not match its entry count"));
    }
    let mut out = Vec::with_capacity(count);
    let mut offset: u64 = 0;
    for e in h[8..].chunks_exact(ENTRY_LEN) {
        let blob_type = BlobType::from_u8(e[0]).ok_or_else(|| bad("unknown blob type"))?;
        let id = Id(e[1..33].try_into().expect("32 bytes"));
        let length = u32::from_le_bytes(e[33..37].try_into().expect("4 bytes"));
        let raw_len = u32::from_le_bytes(e[37..41].try_into().expect("4 bytes"));
        if offset + length as u64 > blobs_end {
            return Err(bad("entry points past the blobs"));
        }
        crate::blob::check_lengths(blob_type, length, raw_len)
            .map_err(|d| bad(&format!("blob {id}: {d}")))?;
        out.push(PackEntry {
            blob_type,
            id,
            offset: offset as u32,
            length,
            raw_len,
        });
        offset += length as u64;
    }
    Ok(out)
}

/// Where the header of a pack of `pack_len` bytes is, given its last 4 bytes.
pub fn header_range(what: &str, pack_len: u64, trailer: [u8; 4]) -> Result<(u64, u64)> {
    let hl = u32::from_le_bytes(trailer) as u64;
    if hl > MAX_HEADER as u64 || hl + 4 > pack_len {
        return Err(Error::corrupt(
            format!("pack {what}"),
            format!("header length {hl} does not fit a pack of {pack_len} bytes"),
        ));
    }
    Ok((pack_len - 4 - hl, hl))
}

/// Decrypt and parse the header of a whole pack in memory.
pub fn read_header(key: &MasterKey, what: &str, pack: &[u8]) -> Result<Vec<PackEntry>> {
    if pack.len() < 4 {
        return Err(Error::corrupt(
            format!("pack {what}"),
            "shorter than its trailer",
        ));
    }
    let trailer: [u8; 4] = pack[pack.len() - 4..].try_into().expect("4 bytes");
    let (start, len) = header_range(what, pack.len() as u64, trailer)?;
    let sealed = &pack[start as usize..(start + len) as usize];
    decrypt_header(key, what, sealed, start)
}

/// Decrypt and parse a sealed header that starts at `start`.
pub fn decrypt_header(
    key: &MasterKey,
    what: &str,
    sealed: &[u8],
    start: u64,
) -> Result<Vec<PackEntry>> {
    let h = key
        .decrypt(HEADER_AAD, sealed)
        .map_err(|e| Error::corrupt(format!("header of pack {what}"), e.to_string()))?;
    decode_header(what, &h, start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{self, Compressor};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pack_round_trip(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 0..20)) {
            let k = MasterKey::generate();
            let mut c = Compressor::new(3);
            let mut b = PackBuilder::default();
            for d in &blobs {
                let id = k.blob_id(d);
                let s = c.seal(&k, BlobType::Data, &id, d);
                b.add(BlobType::Data, id, &s, d.len() as u32);
            }
            let (bytes, id, entries) = b.finish(&k);
            prop_assert_eq!(Id::of_bytes(&bytes), id);
            let parsed = read_header(&k, "t", &bytes).unwrap();
            prop_assert_eq!(&parsed, &entries);
            for (e, d) in parsed.iter().zip(&blobs) {
                let s = &bytes[e.offset as usize..(e.offset + e.length) as usize];
                prop_assert_eq!(&blob::open(&k, e.blob_type, &e.id, s, e.raw_len).unwrap(), d);
            }
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let k = MasterKey::generate();
            let _ = read_header(&k, "g", &data);
            let _ = decode_header("g", &data, 1000);
        }
    }

    #[test]
    fn impossible_lengths_in_a_header_are_refused() {
        let k = MasterKey::generate();
        let good = PackEntry {
            blob_type: BlobType::Data,
            id: k.blob_id(b"a"),
            offset: 0,
            length: 100,
            raw_len: 59,
        };
        assert!(decode_header("t", &encode_header(&[good]), 100).is_ok());
        for (t, length, raw_len) in [
            (BlobType::Data, 100, u32::MAX), // a 4 GiB decompression buffer
            (BlobType::Data, 100, crate::blob::MAX_DATA_LEN + 1),
            (BlobType::Tree, 100, crate::blob::MAX_TREE_LEN + 1),
            (BlobType::Data, 100, 10), // stored bigger than any framing of 10 bytes
            (BlobType::Data, 5, 0),    // shorter than nonce and tag
        ] {
            let e = PackEntry {
                blob_type: t,
                length,
                raw_len,
                ..good
            };
            let err = decode_header("t", &encode_header(&[e]), 100).unwrap_err();
            assert!(err.to_string().contains("length"), "{err}");
        }
    }

    #[test]
    fn truncated_pack_is_an_error() {
        let k = MasterKey::generate();
        let mut b = PackBuilder::default();
        b.add(BlobType::Data, k.blob_id(b"a"), b"xxxx", 1);
        let (bytes, _, _) = b.finish(&k);
        for cut in [0, 3, bytes.len() / 2, bytes.len() - 1] {
            assert!(read_header(&k, "t", &bytes[..cut]).is_err());
        }
    }
}
