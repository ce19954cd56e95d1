//! Copies of recovery points to another repository (another region), which may use other keys.
//!
//! Blob ids are keyed per repository, so a copy re-identifies every chunk under the
//! destination's key: data blobs are read and authenticated from the source, their destination
//! id computed, and stored only if the destination lacks them (only missing data travels);
//! trees are rewritten with the new ids. A copy is recorded (its snapshot written, with
//! `copied_from`) only after every blob it references was verified present in the destination.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::backup::writable_index;
use crate::blob::{BlobType, Compressor};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::Index;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::session::Session;
use crate::snapshot::{self, SnapshotEntry};
use crate::tree::Tree;
use crate::writer::Dedup;

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    /// (source snapshot, destination snapshot) for every snapshot copied now.
    pub copied: Vec<(String, String)>,
    /// Snapshots the destination already had.
    pub already_present: usize,
    /// Blobs uploaded.
    pub blobs_added: u64,
    /// Stored bytes uploaded.
    pub bytes_added: u64,
}

struct Translator<'a> {
    src: &'a Repository,
    src_index: &'a Index,
    dst: &'a Dedup<'a>,
    c: Compressor,
    trees: HashMap<Id, Id>,
    blobs: HashMap<Id, Id>,
    /// The destination reads inline content (format 3); if not, it is stored as a data blob.
    dst_inline: bool,
}

impl Translator<'_> {
    fn data(&mut self, id: &Id) -> Result<Id> {
        if let Some(d) = self.blobs.get(id) {
            return Ok(*d);
        }
        let plain = self.src.read_blob(self.src_index, BlobType::Data, id)?;
        let d = self.dst.store(&mut self.c, BlobType::Data, &plain)?;
        self.blobs.insert(*id, d);
        Ok(d)
    }

    fn tree(&mut self, id: &Id) -> Result<Id> {
        if let Some(d) = self.trees.get(id) {
            return Ok(*d);
        }
        let mut t = Tree::decode(id, &self.src.read_blob(self.src_index, BlobType::Tree, id)?)?;
        for n in &mut t.nodes {
            if !self.dst_inline {
                // A reader of the destination's format would take the file for empty.
                if let Some(data) = n.inline.take().filter(|d| !d.is_empty()) {
                    n.content = vec![self.dst.store(&mut self.c, BlobType::Data, &data)?];
                    continue;
                }
            }
            let content = std::mem::take(&mut n.content);
            n.content = content
                .iter()
                .map(|c| self.data(c))
                .collect::<Result<_>>()?;
            if let Some(s) = n.subtree {
                n.subtree = Some(self.tree(&s)?);
            }
        }
        let d = self.dst.store(&mut self.c, BlobType::Tree, &t.encode())?;
        self.trees.insert(*id, d);
        Ok(d)
    }
}

/// Every blob a tree references, for verification.
fn referenced(repo: &Repository, index: &Index, root: &Id, out: &mut HashSet<Id>) -> Result<()> {
    let mut stack = vec![*root];
    while let Some(t) = stack.pop() {
        if !out.insert(t) {
            continue;
        }
        let tree = Tree::decode(&t, &repo.read_blob(index, BlobType::Tree, &t)?)?;
        for n in tree.nodes {
            out.extend(n.content);
            if let Some(s) = n.subtree {
                stack.push(s);
            }
        }
    }
    Ok(())
}

/// Copy the selected snapshots of `src` that `dst` does not hold yet.
pub fn copy(
    src: &Repository,
    dst: &Repository,
    select: &dyn Fn(&SnapshotEntry) -> bool,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let mut report = CopyReport::default();
    let (src_snaps, _) = snapshot::load_all(src)?;
    let (dst_snaps, _) = snapshot::load_all(dst)?;
    let present: HashSet<Id> = dst_snaps
        .iter()
        .filter_map(|s| s.snapshot.copied_from)
        .chain(dst_snaps.iter().map(|s| s.id))
        .collect();
    let todo: Vec<&SnapshotEntry> = src_snaps.iter().filter(|s| select(s)).collect();
    let (src_index, _) = src.load_index()?;
    let _session = Session::start(dst, "copy")?;
    let dst_index = writable_index(dst, true)?;
    let dedup = Dedup::new(dst, &dst_index, false);
    let mut t = Translator {
        src,
        src_index: &src_index,
        dst: &dedup,
        c: Compressor::new(dst.config().compression),
        trees: HashMap::new(),
        blobs: HashMap::new(),
        dst_inline: dst.config().version >= crate::inline::INLINE_VERSION,
    };
    progress.phase("copy");
    let mut pending = Vec::new();
    for s in todo {
        if present.contains(&s.id) {
            report.already_present += 1;
            continue;
        }
        let root = t.tree(&s.snapshot.tree)?;
        progress.inc(1, 0);
        pending.push((s, root));
    }
    dedup.writer.finish()?;
    (report.blobs_added, report.bytes_added) = dedup.added();
    if pending.is_empty() {
        return Ok(report);
    }
    // Verify against a fresh read of the destination's index before recording anything.
    let (check_index, _) = dst.load_index()?;
    for (s, root) in &pending {
        let mut refs = HashSet::new();
        referenced(dst, &check_index, root, &mut refs)?;
        if let Some(missing) = refs.iter().find(|b| !check_index.contains(b)) {
            return Err(Error::MissingBlob {
                id: missing.to_hex(),
                by: format!(
                    "the copy of snapshot {} (nothing was recorded)",
                    s.id.short()
                ),
            });
        }
    }
    for (s, root) in pending {
        let mut snap = s.snapshot.clone();
        snap.tree = root;
        snap.parent = None;
        snap.copied_from = Some(s.id);
        let id = snapshot::save(dst, &snap)?;
        report.copied.push((s.id.to_hex(), id.to_hex()));
    }
    progress.finish();
    Ok(report)
}
