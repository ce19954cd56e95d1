//! Blobs: the unit of deduplication. A blob's plaintext is a chunk of file data or a serialized
//! directory tree; its id is the keyed BLAKE3 of that plaintext.
//!
//! Stored form: `encrypt(aad = type byte || id, flag || payload)` where `flag` is 0 for a raw
//! payload and 1 for a zstd frame. Data that does not shrink by at least 1/32 is stored raw.

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::Id;

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlobType {
    /// File content.
    Data = 0,
    /// A serialized directory tree.
    Tree = 1,
}

impl BlobType {
    /// From the stored byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

thread_local! {
    /// One zstd decompression context per thread, reused for every blob (creating one per
    /// blob cost 15% of a restore).
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().ok());
}

/// Largest plaintext of a data blob: the largest chunk the chunker may cut (its `max` is at
/// most 16 MiB, see `ChunkerParams::validate`). Lengths read from a repository are checked
/// against it before anything is allocated.
pub const MAX_DATA_LEN: u32 = 16 << 20;
/// Largest plaintext of a tree blob (a directory of about a million entries). A backup refuses
/// to store a larger directory listing, and a reader refuses a larger length.
pub const MAX_TREE_LEN: u32 = 256 << 20;
/// Largest stored (framed and encrypted) blob: a raw frame of the largest tree.
pub const MAX_STORED_LEN: u32 = MAX_TREE_LEN + 1 + crate::crypto::OVERHEAD as u32;

/// The largest plaintext a blob of type `t` may have.
pub fn max_raw_len(t: BlobType) -> u32 {
    match t {
        BlobType::Data => MAX_DATA_LEN,
        BlobType::Tree => MAX_TREE_LEN,
    }
}

/// Check the lengths a pack header or index entry gives for a blob: the plaintext within the
/// type's bound, and the stored length no more than a raw frame of it (a writer stores raw
/// when compression does not help). Returns what is wrong.
pub fn check_lengths(t: BlobType, length: u32, raw_len: u32) -> std::result::Result<(), String> {
    if raw_len > max_raw_len(t) {
        return Err(format!(
            "plaintext length {raw_len} exceeds the largest {} blob ({})",
            if t == BlobType::Tree { "tree" } else { "data" },
            max_raw_len(t)
        ));
    }
    let most = raw_len as u64 + 1 + crate::crypto::OVERHEAD as u64;
    if (length as u64) > most || (length as usize) < 1 + crate::crypto::OVERHEAD {
        return Err(format!(
            "stored length {length} is impossible for a plaintext of {raw_len} bytes"
        ));
    }
    Ok(())
}

const RAW: u8 = 0;
const ZSTD: u8 = 1;

fn aad(t: BlobType, id: &Id) -> [u8; 33] {
    let mut a = [0u8; 33];
    a[0] = t as u8;
    a[1..].copy_from_slice(&id.0);
    a
}

/// Compresses blobs, reusing one zstd context (one per worker thread).
pub struct Compressor {
    level: i32,
    ctx: Option<zstd::bulk::Compressor<'static>>,
}

impl Compressor {
    /// A compressor at a zstd level; level 0 disables compression.
    pub fn new(level: i32) -> Self {
        let ctx = if level == 0 {
            None
        } else {
            zstd::bulk::Compressor::new(level).ok()
        };
        Compressor { level, ctx }
    }

    /// The zstd level.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// Frame and encrypt a blob; returns the stored bytes.
    pub fn seal(&mut self, key: &MasterKey, t: BlobType, id: &Id, plain: &[u8]) -> Vec<u8> {
        let mut framed = Vec::with_capacity(plain.len() + 1);
        let mut compressed = false;
        if let (Some(ctx), true) = (self.ctx.as_mut(), plain.len() >= 64) {
            let bound = zstd::zstd_safe::compress_bound(plain.len());
            framed.resize(1 + bound, 0);
            if let Ok(n) = ctx.compress_to_buffer(plain, &mut framed[1..]) {
                if n + n / 32 < plain.len() {
                    framed.truncate(1 + n);
                    framed[0] = ZSTD;
                    compressed = true;
                }
            }
        }
        if !compressed {
            framed.clear();
            framed.push(RAW);
            framed.extend_from_slice(plain);
        }
        key.encrypt(&aad(t, id), &framed)
    }
}

/// Decrypt, decompress and verify a stored blob. `raw_len` is the plaintext length from the
/// index (an upper bound for decompression).
pub fn open(key: &MasterKey, t: BlobType, id: &Id, stored: &[u8], raw_len: u32) -> Result<Vec<u8>> {
    let what = || {
        format!(
            "{} blob {}",
            if t == BlobType::Tree { "tree" } else { "data" },
            id
        )
    };
    // Lengths come from the index or a pack header: bound them before anything is allocated.
    check_lengths(t, stored.len() as u32, raw_len).map_err(|d| Error::corrupt(what(), d))?;
    let framed = key
        .decrypt(&aad(t, id), stored)
        .map_err(|e| Error::corrupt(what(), e.to_string()))?;
    let (flag, payload) = framed
        .split_first()
        .ok_or_else(|| Error::corrupt(what(), "empty"))?;
    let plain = match *flag {
        RAW => payload.to_vec(),
        ZSTD if raw_len <= 16 << 20 => DECOMPRESSOR
            .with(|d| match d.borrow_mut().as_mut() {
                Some(d) => d.decompress(payload, raw_len as usize),
                None => zstd::bulk::decompress(payload, raw_len as usize),
            })
            .map_err(|e| Error::corrupt(what(), format!("zstd: {e}")))?,
        ZSTD => {
            // Large (tree) blobs: grow the output as data arrives (never trust raw_len for the allocation), and
            // stop one byte past it so an oversized frame is detected without reading it all.
            use std::io::Read;
            let mut out = Vec::with_capacity(
                (raw_len as usize)
                    .min(payload.len().saturating_mul(8))
                    .min(16 << 20),
            );
            zstd::stream::read::Decoder::with_buffer(payload)
                .map_err(|e| Error::corrupt(what(), format!("zstd: {e}")))?
                .take(raw_len as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Error::corrupt(what(), format!("zstd: {e}")))?;
            out
        }
        f => return Err(Error::corrupt(what(), format!("unknown framing byte {f}"))),
    };
    if plain.len() != raw_len as usize {
        return Err(Error::corrupt(
            what(),
            format!("length {} where the index says {raw_len}", plain.len()),
        ));
    }
    if key.blob_id(&plain) != *id {
        return Err(Error::corrupt(what(), "content does not match its id"));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn seal_open_round_trip(data in proptest::collection::vec(any::<u8>(), 0..20000), level in 0i32..6, rep in any::<bool>()) {
            let data = if rep { data.repeat(3) } else { data };
            let k = MasterKey::generate();
            let id = k.blob_id(&data);
            let mut c = Compressor::new(level);
            let s = c.seal(&k, BlobType::Data, &id, &data);
            prop_assert!(s.len() <= data.len() + 1 + crate::crypto::OVERHEAD);
            let back = open(&k, BlobType::Data, &id, &s, data.len() as u32).unwrap();
            prop_assert_eq!(back, data);
        }
    }

    #[test]
    fn a_huge_claimed_length_is_refused_before_decompressing() {
        let k = MasterKey::generate();
        let data = vec![0u8; 100_000];
        let id = k.blob_id(&data);
        let s = Compressor::new(3).seal(&k, BlobType::Tree, &id, &data);
        for raw_len in [u32::MAX, MAX_TREE_LEN + 1] {
            let err = open(&k, BlobType::Tree, &id, &s, raw_len).unwrap_err();
            assert!(err.to_string().contains("exceeds"), "{err}");
        }
        assert_eq!(open(&k, BlobType::Tree, &id, &s, 100_000).unwrap(), data);
    }

    #[test]
    fn compresses_and_detects_swaps() {
        let k = MasterKey::generate();
        let data = vec![7u8; 100_000];
        let id = k.blob_id(&data);
        let s = Compressor::new(3).seal(&k, BlobType::Data, &id, &data);
        assert!(s.len() < 1000);
        // The same bytes presented as a tree, or under another id, fail authentication.
        assert!(open(&k, BlobType::Tree, &id, &s, 100_000).is_err());
        let other = k.blob_id(b"other");
        assert!(open(&k, BlobType::Data, &other, &s, 100_000).is_err());
        assert!(open(&k, BlobType::Data, &id, &s, 99).is_err());
    }
}
