//! Key slots (plaintext JSON in `keys/`): `serde_json::from_slice::<KeySlot>` and, when the
//! Argon2 parameters are cheap enough to run thousands of times a second,
//! `KeySlot::unwrap_key`. Neither may panic.
#![no_main]

use holdfast_core::keys::KeySlot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(slot) = serde_json::from_slice::<KeySlot>(data) else {
        return;
    };
    let p = slot.params;
    if p.m_cost > 64 || p.t_cost > 2 || p.p_cost > 2 {
        return;
    }
    let _ = slot.unwrap_key(b"pw", "repo");
});
