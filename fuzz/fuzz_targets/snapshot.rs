//! Snapshots (decrypted JSON in `snapshots/`): `serde_json::from_slice::<Snapshot>` must not
//! panic; an accepted snapshot must re-serialize (the engine `expect`s that to succeed) and
//! parse back to an equal value. `summary.seconds` is left out of the comparison: without
//! serde_json's `float_roundtrip` feature a float may come back one ulp off, which is
//! serde_json's documented behaviour and harmless here.
#![no_main]

use holdfast_core::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = serde_json::from_slice::<Snapshot>(data) else {
        return;
    };
    let enc = serde_json::to_vec(&s).expect("serializable");
    let mut back =
        serde_json::from_slice::<Snapshot>(&enc).expect("re-serialized snapshot must parse");
    back.summary.seconds = s.summary.seconds;
    assert_eq!(back, s, "decode(encode(s)) != s");
});
