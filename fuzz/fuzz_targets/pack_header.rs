//! Pack headers: `pack::decode_header`, `pack::header_range` and `pack::read_header`.
//!
//! Input: `blobs_end: u64 LE` followed by `payload`.
//! - `decode_header(payload, blobs_end)` must not panic; when it accepts, the entries must tile
//!   the blob area from offset 0 without gaps and stay below `blobs_end`.
//! - `header_range(pack_len = blobs_end, trailer = payload[..4])` must not panic; when it
//!   accepts, the range must lie inside the pack.
//! - `read_header(payload)`: whole-pack garbage (fails authentication; must not panic).
//! - `read_header` on a pack whose header is `payload` sealed with the fixed key, after a blob
//!   area of `blobs_end % 65536` bytes: this reaches the parser through the real reading path and
//!   must agree with `decode_header` on the same plaintext.
#![no_main]

use holdfast_core::crypto::MasterKey;
use holdfast_core::pack::{self, MAX_HEADER};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// Associated data of pack headers (private in `pack.rs`; checked against `PackBuilder` below).
const HEADER_AAD: &[u8] = b"holdfast pack header";

fn key() -> &'static MasterKey {
    static KEY: OnceLock<MasterKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let k = MasterKey::from_secret([7u8; 64]);
        // Guard the harness itself: a pack from the engine must decrypt with our AAD.
        let (bytes, _, _) = pack::PackBuilder::default().finish(&k);
        let hl = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()) as usize;
        let sealed = &bytes[bytes.len() - 4 - hl..bytes.len() - 4];
        assert!(
            k.decrypt(HEADER_AAD, sealed).is_ok(),
            "harness HEADER_AAD is stale"
        );
        k
    })
}

fuzz_target!(|data: &[u8]| {
    let key = key();
    if data.len() < 8 {
        let _ = pack::read_header(key, "fuzz", data);
        return;
    }
    let blobs_end = u64::from_le_bytes(data[..8].try_into().unwrap());
    let payload = &data[8..];

    // 1. The plaintext parser.
    if let Ok(entries) = pack::decode_header("fuzz", payload, blobs_end) {
        // Offsets are u32: beyond 4 GiB they cannot be represented (see docs/FUZZING.md), so
        // the tiling invariant is only checked where they can.
        if blobs_end <= u32::MAX as u64 {
            let mut next = 0u64;
            for e in &entries {
                assert_eq!(e.offset as u64, next, "entries do not tile the blob area");
                next += e.length as u64;
            }
            assert!(next <= blobs_end, "entries end past the blobs");
        }
    }

    // 2. Where the header is, from the trailer.
    if payload.len() >= 4 {
        let trailer: [u8; 4] = payload[..4].try_into().unwrap();
        if let Ok((start, len)) = pack::header_range("fuzz", blobs_end, trailer) {
            assert!(len <= MAX_HEADER as u64);
            assert_eq!(start + len + 4, blobs_end);
        }
    }

    // 3. Garbage as a whole pack.
    let _ = pack::read_header(key, "fuzz", payload);

    // 4. An authentic pack whose header plaintext is the fuzz input.
    let blobs_len = (blobs_end % 65536) as usize;
    let sealed = key.encrypt(HEADER_AAD, payload);
    let mut p = vec![0u8; blobs_len];
    p.extend_from_slice(&sealed);
    p.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    let via_pack = pack::read_header(key, "fuzz", &p);
    let direct = pack::decode_header("fuzz", payload, blobs_len as u64);
    match (via_pack, direct) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("read_header and decode_header disagree: {a:?} vs {b:?}"),
    }
});
