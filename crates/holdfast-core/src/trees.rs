//! Loading a snapshot's trees ahead of a walk: level by level, many reads in flight.
//!
//! Walking a snapshot reads one tree blob per directory. Read one at a time, a walk of a large
//! tree on object storage costs one round trip per directory (the Linux sources have 5,000
//! directories; at 40 ms per request that is minutes). [`Trees::prefetch`] instead reads the
//! tree blobs breadth first, and whole packs of them: when a level needs a tree from a pack not
//! read yet, every tree blob of that pack is read, grouped into ranged reads
//! ([`crate::fetch::batches`]) that up to [`holdfast_storage::Storage::read_concurrency`]
//! workers fetch at once. A backup writes a snapshot's new trees together, so a walk costs a
//! round trip per pack generation rather than per directory or per level.
//!
//! Prefetching is only an optimisation. A tree it could not read is simply absent, and
//! [`Trees::get`] then reads it on its own, so errors surface exactly as without prefetching,
//! naming the directory they touch.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use holdfast_storage::ObjectKind;

use crate::blob::BlobType;
use crate::error::Result;
use crate::fetch;
use crate::id::Id;
use crate::index::Index;
use crate::repo::Repository;
use crate::tree::{NodeKind, Tree};

/// Trees read ahead, with a fallback to reading on demand.
pub struct Trees<'a> {
    repo: &'a Repository,
    index: &'a Index,
    loaded: HashMap<Id, Arc<Tree>>,
}

/// Decides, from a directory's path (its name components from the root), whether the walk will
/// go into it. Trees the walk will not enter are not fetched.
pub type Wanted<'f> = &'f (dyn Fn(&[Vec<u8>]) -> bool + Sync);

impl<'a> Trees<'a> {
    /// No trees loaded yet: every [`Trees::get`] reads from the repository.
    pub fn lazy(repo: &'a Repository, index: &'a Index) -> Trees<'a> {
        Trees {
            repo,
            index,
            loaded: HashMap::new(),
        }
    }

    /// Load every tree below `roots` that `wanted` accepts, breadth first, with parallel
    /// pack-grouped reads. A pack that holds a wanted tree has all its trees read at once: a
    /// backup writes a snapshot's new trees together, so most levels then need no request.
    pub fn prefetch(
        repo: &'a Repository,
        index: &'a Index,
        roots: &[Id],
        wanted: Wanted<'_>,
    ) -> Trees<'a> {
        let mut t = Trees::lazy(repo, index);
        let threads = repo.storage().read_concurrency().max(1);
        let by_pack = trees_by_pack(index);
        let mut requested: HashSet<Id> = HashSet::new();
        let mut seen: HashSet<Id> = roots.iter().copied().collect();
        let mut level: Vec<(Vec<Vec<u8>>, Id)> = seen.iter().map(|id| (vec![], *id)).collect();
        while !level.is_empty() {
            let started = std::time::Instant::now();
            // The packs of this level's trees not yet read, and every tree in them.
            let packs: HashSet<Id> = level
                .iter()
                .filter(|(_, id)| !t.loaded.contains_key(id) && !requested.contains(id))
                .filter_map(|(_, id)| index.get(id).map(|(p, _)| p))
                .collect();
            let mut items = Vec::new();
            for p in &packs {
                for id in by_pack.get(p).into_iter().flatten() {
                    if requested.insert(*id) {
                        items.push(((), *id));
                    }
                }
            }
            let (batches, _unindexed) =
                fetch::batches(items, index, fetch::MAX_GAP, fetch::TREE_SPAN);
            let reads = batches.len();
            let got = Mutex::new(Vec::new());
            let (tx, rx) = crossbeam_channel::unbounded();
            for b in batches {
                let _ = tx.send(b);
            }
            drop(tx);
            std::thread::scope(|s| {
                for _ in 0..threads.min(reads) {
                    let (rx, got) = (rx.clone(), &got);
                    s.spawn(move || {
                        for b in rx.iter() {
                            let found = read_batch(repo, &b);
                            got.lock().unwrap_or_else(|p| p.into_inner()).extend(found);
                        }
                    });
                }
            });
            for ((), id, tree) in got.into_inner().unwrap_or_else(|p| p.into_inner()) {
                t.loaded.insert(id, Arc::new(tree));
            }
            let mut next = Vec::new();
            for (path, id) in &level {
                let Some(tree) = t.loaded.get(id) else {
                    continue; // unreadable: Trees::get reads it again and reports why
                };
                for n in &tree.nodes {
                    if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
                        let mut p = path.clone();
                        p.push(n.name.0.clone());
                        if wanted(&p) && seen.insert(sub) {
                            next.push((p, sub));
                        }
                    }
                }
            }
            tracing::debug!(
                trees = level.len(),
                reads,
                ms = started.elapsed().as_millis() as u64,
                "tree level read ahead"
            );
            level = next;
        }
        t
    }

    /// How many trees were read ahead.
    pub fn prefetched(&self) -> usize {
        self.loaded.len()
    }

    /// A tree: from what was read ahead, else read now.
    pub fn get(&self, id: &Id) -> Result<Arc<Tree>> {
        if let Some(t) = self.loaded.get(id) {
            return Ok(t.clone());
        }
        let data = self.repo.read_blob(self.index, BlobType::Tree, id)?;
        Ok(Arc::new(Tree::decode(id, &data)?))
    }
}

/// The tree blobs of each pack.
fn trees_by_pack(index: &Index) -> HashMap<Id, Vec<Id>> {
    let mut m: HashMap<Id, Vec<Id>> = HashMap::new();
    for (id, pack, _) in index.trees() {
        m.entry(pack).or_default().push(id);
    }
    m
}

/// Read one batch of trees; any that fails is left out (and read again on demand, where its
/// error is reported against its path).
fn read_batch<P>(repo: &Repository, b: &fetch::Batch<P>) -> Vec<(P, Id, Tree)>
where
    P: Clone,
{
    let Ok(buf) =
        repo.storage()
            .get_range(ObjectKind::Pack, &b.pack.to_hex(), b.start, b.end - b.start)
    else {
        return Vec::new();
    };
    b.items
        .iter()
        .filter_map(|(path, id, loc)| {
            let stored = b.slice(&buf, loc)?;
            let data = repo
                .open_blob(BlobType::Tree, id, &b.pack, stored, loc.raw_len)
                .ok()?;
            Some((path.clone(), *id, Tree::decode(id, &data).ok()?))
        })
        .collect()
}
