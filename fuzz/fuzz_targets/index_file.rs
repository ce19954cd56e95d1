//! Index files: `IndexFile::decode` on plaintext, and `IndexFile::open` on the same plaintext
//! sealed with the fixed key.
//!
//! Properties: never panics; an accepted file re-encodes to exactly the input bytes (the
//! format has no slack) and decodes again to an equal value; `open(seal(x))` agrees with
//! `decode(x)`.
#![no_main]

use holdfast_core::crypto::MasterKey;
use holdfast_core::index::{IndexFile, AAD};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn key() -> &'static MasterKey {
    static KEY: OnceLock<MasterKey> = OnceLock::new();
    KEY.get_or_init(|| MasterKey::from_secret([7u8; 64]))
}

fuzz_target!(|data: &[u8]| {
    let decoded = IndexFile::decode("fuzz", data);
    if let Ok(f) = &decoded {
        let enc = f.encode();
        let again = IndexFile::decode("fuzz", &enc).expect("re-encoded index must decode");
        assert_eq!(&again, f, "decode(encode(x)) != x");
        assert_eq!(enc.as_slice(), data, "encode(decode(bytes)) != bytes");
    }
    // Garbage ciphertext: must be rejected without panicking.
    let _ = IndexFile::open(key(), "fuzz", data);
    // Authentic ciphertext of the fuzz input: must agree with decode.
    let sealed = key().encrypt(AAD, data);
    match (IndexFile::open(key(), "fuzz", &sealed), decoded) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("open and decode disagree: {a:?} vs {b:?}"),
    }
});
