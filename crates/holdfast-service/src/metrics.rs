//! `/metrics`: the snapshot in Prometheus text format. (Placeholder interface: the metrics
//! owner replaces the body.)

use crate::snapshot::Snapshot;

/// The snapshot in the Prometheus text exposition format.
pub fn render(s: &Snapshot) -> String {
    format!("holdfast_up 1\nholdfast_sources {}\n", s.sources.len())
}
