//! Writer sessions and garbage-collection plans (decrypted JSON in `sessions/` and `gc/`):
//! `serde_json::from_slice` into `SessionRecord` and `GcPlan` must not panic, nor the time
//! arithmetic `live_sessions` does on a record's heartbeat.
#![no_main]

use holdfast_core::session::{GcPlan, SessionRecord, STALE_AFTER};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = serde_json::from_slice::<SessionRecord>(data) {
        // As in session::live_sessions.
        let now = chrono::Utc::now();
        for t in [rec.heartbeat, rec.started] {
            let age = now.signed_duration_since(t);
            let _ = age.to_std().map(|a| a < STALE_AFTER).unwrap_or(true);
        }
        let _ = serde_json::to_vec(&rec).expect("serializable");
    }
    if let Ok(plan) = serde_json::from_slice::<GcPlan>(data) {
        let _ = serde_json::to_vec(&plan).expect("serializable");
    }
});
