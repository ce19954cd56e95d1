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
//!
//! Memory: what is read ahead is kept as the stored (compressed, encrypted) bytes, decoded
//! when asked for, and at most [`READ_AHEAD_BYTES`] of them: a snapshot of millions of files
//! has hundreds of megabytes of decoded trees. Past that budget trees are read on demand.
//! [`Trees::take`] hands a tree over and forgets it (a restore visits each directory once).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use holdfast_storage::ObjectKind;

use crate::blob::BlobType;
use crate::error::Result;
use crate::fetch;
use crate::id::Id;
use crate::index::Index;
use crate::repo::Repository;
use crate::tree::{NodeKind, Tree};

/// The most stored tree bytes read ahead and kept at once.
pub const READ_AHEAD_BYTES: usize = 64 << 20;

/// A tree blob read ahead: its stored bytes and where they came from.
struct Stored {
    pack: Id,
    bytes: Vec<u8>,
    raw_len: u32,
}

/// Trees read ahead, with a fallback to reading on demand.
pub struct Trees<'a> {
    repo: &'a Repository,
    index: &'a Index,
    loaded: Mutex<HashMap<Id, Stored>>,
    /// Stored bytes in `loaded`.
    held: AtomicUsize,
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
            loaded: Mutex::new(HashMap::new()),
            held: AtomicUsize::new(0),
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
        Trees::prefetch_within(repo, index, roots, wanted, READ_AHEAD_BYTES)
    }

    /// [`Trees::prefetch`], keeping at most `budget` stored bytes read ahead: the trees of each
    /// level come first, then the other trees of their packs; past the budget reading ahead
    /// stops and the walk reads the rest on demand.
    pub fn prefetch_within(
        repo: &'a Repository,
        index: &'a Index,
        roots: &[Id],
        wanted: Wanted<'_>,
        budget: usize,
    ) -> Trees<'a> {
        let t = Trees::lazy(repo, index);
        let threads = repo.storage().read_concurrency().max(1);
        let by_pack = trees_by_pack(index);
        let mut requested: HashSet<Id> = HashSet::new();
        let mut seen: HashSet<Id> = roots.iter().copied().collect();
        let mut level: Vec<(Vec<Vec<u8>>, Id)> = seen.iter().map(|id| (vec![], *id)).collect();
        while !level.is_empty() {
            let started = std::time::Instant::now();
            let mut room = budget.saturating_sub(t.held.load(Ordering::Relaxed)) as u64;
            // This level's trees not read yet, then every other tree of their packs.
            let mut items = Vec::new();
            let mut packs = Vec::new();
            for (_, id) in &level {
                if t.has(id) || requested.contains(id) {
                    continue;
                }
                if let Some((p, loc)) = index.get(id) {
                    if room < loc.length as u64 {
                        break;
                    }
                    room -= loc.length as u64;
                    requested.insert(*id);
                    items.push(((), *id));
                    packs.push(p);
                }
            }
            packs.sort();
            packs.dedup();
            'packs: for p in &packs {
                for id in by_pack.get(p).into_iter().flatten() {
                    let Some((_, loc)) = index.get(id) else {
                        continue;
                    };
                    if requested.contains(id) {
                        continue;
                    }
                    if room < loc.length as u64 {
                        break 'packs;
                    }
                    room -= loc.length as u64;
                    requested.insert(*id);
                    items.push(((), *id));
                }
            }
            let (batches, _unindexed) =
                fetch::batches(items, index, fetch::MAX_GAP, fetch::TREE_SPAN);
            let reads = batches.len();
            let (tx, rx) = crossbeam_channel::unbounded();
            for b in batches {
                let _ = tx.send(b);
            }
            drop(tx);
            std::thread::scope(|s| {
                for _ in 0..threads.min(reads) {
                    let (rx, t) = (rx.clone(), &t);
                    s.spawn(move || {
                        for b in rx.iter() {
                            for (id, stored) in read_batch(repo, &b) {
                                t.held.fetch_add(stored.bytes.len(), Ordering::Relaxed);
                                t.lock().insert(id, stored);
                            }
                        }
                    });
                }
            });
            let mut next = Vec::new();
            for (path, id) in &level {
                let Some(tree) = t.peek(id) else {
                    continue; // not read ahead: Trees::get reads it (and reports why it fails)
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Stored>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn has(&self, id: &Id) -> bool {
        self.lock().contains_key(id)
    }

    /// A tree read ahead, decoded (none if it was not read ahead or does not open).
    fn peek(&self, id: &Id) -> Option<Tree> {
        let l = self.lock();
        let s = l.get(id)?;
        let data = self
            .repo
            .open_blob(BlobType::Tree, id, &s.pack, &s.bytes, s.raw_len)
            .ok()?;
        drop(l);
        Tree::decode(id, &data).ok()
    }

    /// How many trees are held read ahead.
    pub fn prefetched(&self) -> usize {
        self.lock().len()
    }

    /// Stored bytes of the trees held read ahead.
    pub fn held_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// A tree: from what was read ahead, else read now.
    pub fn get(&self, id: &Id) -> Result<Arc<Tree>> {
        if let Some(t) = self.peek(id) {
            return Ok(Arc::new(t));
        }
        let data = self.repo.read_blob(self.index, BlobType::Tree, id)?;
        Ok(Arc::new(Tree::decode(id, &data)?))
    }

    /// [`Trees::get`], forgetting what was read ahead of it: for a walk that visits each tree
    /// once, so what it has walked is not held.
    pub fn take(&self, id: &Id) -> Result<Arc<Tree>> {
        let tree = self.get(id)?;
        if let Some(s) = self.lock().remove(id) {
            self.held.fetch_sub(s.bytes.len(), Ordering::Relaxed);
        }
        Ok(tree)
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
/// error is reported against its path). Blobs are opened when asked for ([`Trees::get`]).
fn read_batch(repo: &Repository, b: &fetch::Batch<()>) -> Vec<(Id, Stored)> {
    let Ok(buf) =
        repo.storage()
            .get_range(ObjectKind::Pack, &b.pack.to_hex(), b.start, b.end - b.start)
    else {
        return Vec::new();
    };
    b.items
        .iter()
        .filter_map(|(_, id, loc)| {
            let stored = b.slice(&buf, loc)?;
            Some((
                *id,
                Stored {
                    pack: b.pack,
                    bytes: stored.to_vec(),
                    raw_len: loc.raw_len,
                },
            ))
        })
        .collect()
}
