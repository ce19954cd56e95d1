//! Snapshots (decrypted JSON in `snapshots/`): `serde_json::from_slice::<Snapshot>` must not
//! panic, and an accepted snapshot must re-serialize (the engine `expect`s that to succeed).
#![no_main]

use holdfast_core::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = serde_json::from_slice::<Snapshot>(data) else { return };
    let enc = serde_json::to_vec(&s).expect("serializable");
    // Not asserted: whether `enc` parses back (see docs/FUZZING.md on times past year 9999).
    let _ = serde_json::from_slice::<Snapshot>(&enc);
});
