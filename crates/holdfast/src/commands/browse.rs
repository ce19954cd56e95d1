//! snapshots, ls, diff, stats.

use anyhow::Result;
use holdfast_core::browse;
use holdfast_core::tree::NodeKind;
use holdfast_core::trees::Trees;
use holdfast_core::util::human_bytes;
use holdfast_core::{snapshot, Error};
use holdfast_storage::ObjectKind;

use super::{open, print_json, select};
use crate::cli::{Global, SnapshotFilter};
use crate::exit;

pub fn snapshots(g: &Global, filter: &SnapshotFilter) -> Result<u8> {
    let repo = open(g)?;
    let (all, bad) = snapshot::load_all(&repo)?;
    for e in &bad {
        eprintln!("warning: {e}");
    }
    let list: Vec<_> = all.iter().filter(|s| filter.matches(&s.snapshot)).collect();
    if g.json {
        let v: Vec<_> = list
            .iter()
            .map(|s| {
                let mut j = serde_json::to_value(&s.snapshot).unwrap_or_default();
                j["id"] = s.id.to_hex().into();
                j
            })
            .collect();
        print_json(&v)?;
        return Ok(exit::OK);
    }
    outln!(
        "{:<10} {:<20} {:<16} {:<12} {:>10}  paths",
        "id",
        "time (UTC)",
        "host",
        "tags",
        "size"
    );
    for s in &list {
        let sn = &s.snapshot;
        outln!(
            "{:<10} {:<20} {:<16} {:<12} {:>10}  {}{}",
            s.id.short(),
            sn.time.format("%Y-%m-%d %H:%M:%S"),
            sn.hostname,
            sn.tags.join(","),
            human_bytes(sn.summary.total_bytes),
            sn.paths.join(" "),
            incomplete_mark(sn)
        );
    }
    outln!("{} snapshot(s)", list.len());
    Ok(exit::OK)
}

/// What the `snapshots` table says after an incomplete snapshot's paths.
fn incomplete_mark(s: &snapshot::Snapshot) -> String {
    if s.complete {
        return String::new();
    }
    let mut why = Vec::new();
    if !s.errors.is_empty() {
        why.push(format!("{} skipped", s.errors.len()));
    }
    if !s.changed_while_read.is_empty() {
        why.push(format!("{} changed while read", s.changed_while_read.len()));
    }
    if why.is_empty() {
        "  (INCOMPLETE)".into()
    } else {
        format!("  (INCOMPLETE: {})", why.join(", "))
    }
}

pub fn ls(
    g: &Global,
    filter: &SnapshotFilter,
    spec: &str,
    path: Option<&str>,
    long: bool,
) -> Result<u8> {
    let repo = open(g)?;
    let (all, _) = snapshot::load_all(&repo)?;
    let s = select(&all, filter, spec)?;
    let (index, _) = repo.load_index()?;
    let (root, prefix) = match path.map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) {
        None => (s.snapshot.tree, String::new()),
        Some(p) => match browse::find_node(&repo, &index, &s.snapshot.tree, p)? {
            Some(n) if n.kind == NodeKind::Dir => (n.subtree.unwrap_or_default(), format!("/{p}")),
            Some(n) => {
                print_entries(g, long, &[(format!("/{p}"), n)])?;
                return Ok(exit::OK);
            }
            None => {
                return Err(Error::PathNotInSnapshot {
                    path: p.to_string(),
                    snapshot: s.id.short(),
                }
                .into())
            }
        },
    };
    let mut entries = Vec::new();
    let trees = Trees::prefetch(&repo, &index, &[root], &|_| true);
    browse::walk(&trees, &root, &prefix, &mut |p, n| {
        entries.push((p.to_string(), n.clone()))
    })?;
    print_entries(g, long, &entries)?;
    Ok(exit::OK)
}

fn print_entries(
    g: &Global,
    long: bool,
    entries: &[(String, holdfast_core::tree::Node)],
) -> Result<()> {
    if g.json {
        let v: Vec<_> = entries
            .iter()
            .map(|(p, n)| {
                let mut j = serde_json::json!({
                    "path": p, "type": n.kind, "size": n.size, "mode": n.mode,
                    "uid": n.uid, "gid": n.gid, "mtime_ns": n.mtime.nanos_wide(),
                    "mtime_sec": n.mtime.sec, "mtime_nsec": n.mtime.nsec,
                });
                if n.changed_while_read {
                    j["changed_while_read"] = true.into();
                }
                j
            })
            .collect();
        return print_json(&v);
    }
    for (p, n) in entries {
        let mark = if n.changed_while_read {
            "  (CHANGED WHILE READ: content may be inconsistent)"
        } else {
            ""
        };
        if long {
            let t = match chrono::DateTime::from_timestamp(n.mtime.sec, 0) {
                Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
                None => format!("@{}", n.mtime.sec),
            };
            outln!(
                "{:?} {:o} {:>5} {:>5} {:>12} {} {}{mark}",
                n.kind,
                n.mode,
                n.uid,
                n.gid,
                n.size,
                t,
                p
            );
        } else {
            outln!("{p}{mark}");
        }
    }
    Ok(())
}

pub fn diff(g: &Global, a: &str, b: &str) -> Result<u8> {
    let repo = open(g)?;
    let (all, _) = snapshot::load_all(&repo)?;
    let sa = snapshot::find(&all, a)?;
    let sb = snapshot::find(&all, b)?;
    let (index, _) = repo.load_index()?;
    let mut out = Vec::new();
    let trees = Trees::prefetch(
        &repo,
        &index,
        &[sa.snapshot.tree, sb.snapshot.tree],
        &|_| true,
    );
    browse::diff(
        &trees,
        Some(&sa.snapshot.tree),
        Some(&sb.snapshot.tree),
        "",
        &mut out,
    )?;
    if g.json {
        print_json(&out)?;
    } else {
        for c in &out {
            outln!("{}  {}", c.change, c.path);
        }
        let count = |ch| out.iter().filter(|c| c.change == ch).count();
        outln!(
            "{} added, {} removed, {} modified, {} metadata only, {} type changed",
            count('+'),
            count('-'),
            count('M'),
            count('U'),
            count('T')
        );
    }
    Ok(exit::OK)
}

pub fn stats(g: &Global, filter: &SnapshotFilter, spec: Option<&str>) -> Result<u8> {
    let repo = open(g)?;
    let (all, _) = snapshot::load_all(&repo)?;
    let roots: Vec<_> = match spec {
        Some(s) => vec![select(&all, filter, s)?.snapshot.tree],
        None => all
            .iter()
            .filter(|s| filter.matches(&s.snapshot))
            .map(|s| s.snapshot.tree)
            .collect(),
    };
    let (index, _) = repo.load_index()?;
    let trees = Trees::prefetch(&repo, &index, &roots, &|_| true);
    let s = browse::snapshot_stats(&trees, &index, &roots)?;
    let packs = repo.storage().list(ObjectKind::Pack)?;
    let repo_bytes: u64 = packs.iter().map(|p| p.size).sum();
    if g.json {
        print_json(&serde_json::json!({
            "snapshots": s, "packs": packs.len(), "pack_bytes": repo_bytes, "blobs": index.len(),
        }))?;
        return Ok(exit::OK);
    }
    outln!("snapshots:            {}", s.snapshots);
    outln!(
        "files:                {} (in {} directories)",
        s.files,
        s.dirs
    );
    outln!("restore size:         {}", human_bytes(s.restore_size));
    outln!(
        "unique data:          {} in {} blobs",
        human_bytes(s.unique_raw_bytes),
        s.unique_blobs
    );
    outln!(
        "stored for that:      {}",
        human_bytes(s.unique_stored_bytes)
    );
    if s.unique_stored_bytes > 0 {
        outln!(
            "space saving:         {:.2}x dedup, {:.2}x compression",
            s.restore_size as f64 / s.unique_raw_bytes.max(1) as f64,
            s.unique_raw_bytes as f64 / s.unique_stored_bytes as f64
        );
    }
    outln!(
        "repository packs:     {} ({})",
        packs.len(),
        human_bytes(repo_bytes)
    );
    Ok(exit::OK)
}
