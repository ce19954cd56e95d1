//! The live status page. (Placeholder interface: the page owner replaces the body.)

use crate::snapshot::Snapshot;

/// The page: the status report's HTML, refreshed in place.
pub fn html(s: &Snapshot) -> String {
    match &s.status {
        Some(r) => holdfast_policy::report::html(r),
        None => "<!doctype html><title>holdfast</title><p>status not computed yet".into(),
    }
}
