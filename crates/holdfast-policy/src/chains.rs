//! The change-log chains a repository holds for the workload's continuous sources, as `check`
//! proves them: for each continuous source with base backups or log batches in the repository,
//! its recoverable window (gaps and damaged pieces included), computed by the source's kind
//! from the snapshots alone.

use holdfast_core::snapshot::SnapshotEntry;

use crate::config::Workload;
use crate::sources::pitr::Window;

/// Per continuous source of `w` found in `all` (the repository's snapshots): its window, as
/// host `me` owns its points (another host's points count only for a shared source).
pub fn windows(w: &Workload, all: &[SnapshotEntry], me: &str) -> Vec<(String, Window)> {
    let mut out = Vec::new();
    for s in &w.sources {
        let Some(c) = s.driver().continuous() else {
            continue;
        };
        let bases: Vec<&SnapshotEntry> = all
            .iter()
            .filter(|x| x.snapshot.complete)
            .filter(|x| s.owns(x.snapshot.source.as_deref(), &x.snapshot.hostname, me))
            .collect();
        let kind = c.log_kind();
        let batches: Vec<_> = all
            .iter()
            .filter(|x| s.owns_log(&x.snapshot, me))
            .filter_map(|x| x.snapshot.log.as_ref().map(|l| (x, l)))
            .filter(|(_, l)| l.kind == kind)
            .collect();
        if bases.is_empty() && batches.is_empty() {
            continue;
        }
        out.push((s.name().to_string(), c.window(&bases, &batches)));
    }
    out
}
