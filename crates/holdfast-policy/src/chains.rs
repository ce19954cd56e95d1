//! A continuous source's base backups and log batches among a repository's snapshots, and the
//! change-log chains a repository holds for the workload's continuous sources, as `check`
//! proves them: for each continuous source with base backups or log batches in the repository,
//! its recoverable window (gaps and damaged pieces included), computed by the source's kind
//! from the snapshots alone.

use holdfast_core::logs::{LogBatch, LogKind};
use holdfast_core::snapshot::SnapshotEntry;

use crate::config::{SourceConfig, Workload};
use crate::sources::pitr::Window;

/// A continuous source's own base backups and log batches, oldest first.
pub struct Owned<'a> {
    /// Its complete recovery points (the base backups).
    pub bases: Vec<&'a SnapshotEntry>,
    /// Its log batches of the kind's log.
    pub logs: Vec<(&'a SnapshotEntry, &'a LogBatch)>,
}

impl<'a> Owned<'a> {
    /// Those of `s` among `all` that count for host `me` (another host's only for a shared
    /// source), or, with `host`, exactly those host `host` made (a restore of its points).
    pub fn of(
        s: &SourceConfig,
        kind: LogKind,
        all: &'a [SnapshotEntry],
        me: &str,
        host: Option<&str>,
    ) -> Owned<'a> {
        let mine = |source: Option<&str>, made_by: &str| match host {
            Some(h) => source == Some(s.name()) && made_by == h,
            None => s.owns(source, made_by, me),
        };
        Owned {
            bases: all
                .iter()
                .filter(|x| x.snapshot.complete)
                .filter(|x| mine(x.snapshot.source.as_deref(), &x.snapshot.hostname))
                .collect(),
            logs: all
                .iter()
                .filter_map(|x| x.snapshot.log.as_ref().map(|l| (x, l)))
                .filter(|(x, l)| l.kind == kind && mine(Some(&l.source), &x.snapshot.hostname))
                .collect(),
        }
    }

    /// Owned copies, for the kinds' jobs that take slices of entries.
    pub fn cloned(&self) -> (Vec<SnapshotEntry>, Vec<SnapshotEntry>) {
        (
            self.bases.iter().map(|e| (*e).clone()).collect(),
            self.logs.iter().map(|(e, _)| (*e).clone()).collect(),
        )
    }
}

/// Per continuous source of `w` found in `all` (the repository's snapshots): its window, as
/// host `me` owns its points (another host's points count only for a shared source).
pub fn windows(w: &Workload, all: &[SnapshotEntry], me: &str) -> Vec<(String, Window)> {
    let mut out = Vec::new();
    for s in &w.sources {
        let Some(c) = s.driver().continuous() else {
            continue;
        };
        let o = Owned::of(s, c.log_kind(), all, me, None);
        if o.bases.is_empty() && o.logs.is_empty() {
            continue;
        }
        out.push((s.name().to_string(), c.window(&o.bases, &o.logs)));
    }
    out
}
