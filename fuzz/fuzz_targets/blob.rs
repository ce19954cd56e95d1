//! Blobs: `blob::open`.
//!
//! Input: `raw_len: u32 LE` (capped at 1 MiB here, see below) followed by `framed`.
//! - `open(framed)` as stored bytes: garbage that must fail authentication without panicking.
//! - `open(seal(framed))`: `framed` (framing byte + payload) encrypted with the fixed key and
//!   the blob's associated data, so that the framing, zstd and length checks behind the
//!   authentication are reached. The id is the keyed hash of the payload, so a raw blob with the
//!   right length is accepted and must give back its payload.
//!
//! Why the cap: `blob::open` passes `raw_len` to `zstd::bulk::decompress` as its capacity, and
//! that allocates `raw_len` bytes up front (up to 4 GiB) whatever the frame holds; libFuzzer
//! would report every large `raw_len` as an out-of-memory. See docs/FUZZING.md.
#![no_main]

use holdfast_core::blob::{self, BlobType};
use holdfast_core::crypto::MasterKey;
use holdfast_core::Id;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const RAW_LEN_CAP: u32 = 1 << 20;

fn key() -> &'static MasterKey {
    static KEY: OnceLock<MasterKey> = OnceLock::new();
    KEY.get_or_init(|| MasterKey::from_secret([7u8; 64]))
}

/// The associated data `blob.rs` binds: type byte, then id.
fn aad(t: BlobType, id: &Id) -> [u8; 33] {
    let mut a = [0u8; 33];
    a[0] = t as u8;
    a[1..].copy_from_slice(&id.0);
    a
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let raw_len = u32::from_le_bytes(data[..4].try_into().unwrap()).min(RAW_LEN_CAP);
    let framed = &data[4..];
    let key = key();
    let id = key.blob_id(framed.get(1..).unwrap_or(&[]));

    let _ = blob::open(key, BlobType::Data, &id, framed, raw_len);

    let t = if raw_len & 1 == 0 {
        BlobType::Data
    } else {
        BlobType::Tree
    };
    let sealed = key.encrypt(&aad(t, &id), framed);
    match blob::open(key, t, &id, &sealed, raw_len) {
        Ok(plain) => {
            assert_eq!(plain.len(), raw_len as usize);
            assert_eq!(key.blob_id(&plain), id);
            if framed[0] == 0 {
                assert_eq!(plain.as_slice(), &framed[1..]);
            }
        }
        Err(_) => {
            // A raw blob whose length matches must be accepted.
            assert!(!(framed.first() == Some(&0) && framed.len() - 1 == raw_len as usize));
        }
    }
});
