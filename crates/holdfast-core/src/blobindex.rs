//! The in-memory index: blob id to location, in sorted arrays of fixed-size entries.
//!
//! Layout (see docs/DESIGN.md, "The index in memory"): entries of the blob id's first 16 bytes
//! ([`IdMode::Compact`], 30 bytes an entry) or its whole id ([`IdMode::Full`], 46 bytes), the
//! first two bytes of which are the bucket and not stored, and a 16-byte location, in the
//! table of `blobtable.rs`. A blob stored in several packs has one entry per pack; the first is where it is
//! read from, the others are its alternates. A compact index keeps the full ids of tree blobs
//! (few) for the tree read-ahead; it cannot list the full ids of data blobs, so the code that
//! rewrites index files (prune) loads a full one.

use std::collections::{HashMap, HashSet};

use crate::blob::BlobType;
use crate::blobtable::{join, keyed, split, Entry, Keyed, Table};
use crate::id::Id;
use crate::pack::PackEntry;

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Index into [`Index::packs`].
    pub pack: u32,
    /// Blob type.
    pub blob_type: BlobType,
    /// Offset in the pack.
    pub offset: u32,
    /// Stored length.
    pub length: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

/// Which part of each blob id an index keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdMode {
    /// The first 128 bits of each id (32 bytes per blob); full ids of tree blobs only. For
    /// readers and backups: every blob read is checked against its full id when decrypted.
    Compact,
    /// Whole ids (48 bytes per blob), so [`Index::iter`] and [`Index::iter_all`] can list them:
    /// for `check` and `prune`, which compare and rewrite index entries.
    #[default]
    Full,
}

#[derive(Debug, Clone)]
enum Ids {
    Compact {
        table: Table<14>,
        /// Full ids of tree blobs, for the tree read-ahead (sorted at load; later adds are
        /// appended, repeats are dropped when listed).
        trees: Vec<Id>,
    },
    Full(Table<30>),
}

/// The in-memory index of a repository: blob id to location.
#[derive(Debug, Clone)]
pub struct Index {
    packs: Vec<Id>,
    pack_pos: HashMap<Id, u32>,
    ids: Ids,
}

impl Default for Index {
    /// An empty index keeping full ids.
    fn default() -> Self {
        Index::new(IdMode::Full)
    }
}

fn pack_map(packs: &[Id]) -> HashMap<Id, u32> {
    packs
        .iter()
        .enumerate()
        .map(|(i, p)| (*p, i as u32))
        .collect()
}

impl Index {
    /// An empty index keeping ids as `mode` says.
    pub fn new(mode: IdMode) -> Index {
        Index {
            packs: Vec::new(),
            pack_pos: HashMap::new(),
            ids: match mode {
                IdMode::Compact => Ids::Compact {
                    table: Table::default(),
                    trees: Vec::new(),
                },
                IdMode::Full => Ids::Full(Table::default()),
            },
        }
    }

    /// A compact index built at once from decoded entries (`crate::indexload`): `packs` in
    /// the order they were first seen, entries naming them by position. Sorted once.
    pub(crate) fn from_compact(
        packs: Vec<Id>,
        parts: Vec<Vec<Keyed<14>>>,
        mut trees: Vec<Id>,
    ) -> Index {
        trees.sort_unstable();
        trees.dedup();
        trees.shrink_to_fit();
        Index {
            pack_pos: pack_map(&packs),
            packs,
            ids: Ids::Compact {
                table: Table::from_parts(parts),
                trees,
            },
        }
    }

    /// [`Index::from_compact`] for a full index.
    pub(crate) fn from_full(packs: Vec<Id>, parts: Vec<Vec<Keyed<30>>>) -> Index {
        Index {
            pack_pos: pack_map(&packs),
            packs,
            ids: Ids::Full(Table::from_parts(parts)),
        }
    }

    /// Which part of the ids this index keeps.
    pub fn mode(&self) -> IdMode {
        match self.ids {
            Ids::Compact { .. } => IdMode::Compact,
            Ids::Full(_) => IdMode::Full,
        }
    }

    /// The pack number of `pack`, registering it.
    fn pack_number(&mut self, pack: Id) -> u32 {
        match self.pack_pos.get(&pack) {
            Some(&p) => p,
            None => {
                let p = self.packs.len() as u32;
                self.packs.push(pack);
                self.pack_pos.insert(pack, p);
                p
            }
        }
    }

    /// Add the entries of one pack. A blob already indexed keeps its first location; a copy
    /// in another pack is kept as an alternate (so dropping the first pack does not lose it).
    /// Lookups see the entries at once.
    pub fn add_pack(&mut self, pack: Id, entries: &[PackEntry]) {
        let p = self.pack_number(pack);
        match &mut self.ids {
            Ids::Compact { table, trees } => {
                for e in entries {
                    table.add(keyed(&e.id, p, e));
                    if e.blob_type == BlobType::Tree {
                        trees.push(e.id);
                    }
                }
            }
            Ids::Full(table) => {
                for e in entries {
                    table.add(keyed(&e.id, p, e));
                }
            }
        }
    }

    fn entries_of(&self, id: &Id) -> Vec<crate::blobtable::Loc> {
        match &self.ids {
            Ids::Compact { table, .. } => {
                let (b, k) = split::<14>(id);
                table.entries(b, &k).iter().map(|e| e.loc).collect()
            }
            Ids::Full(table) => {
                let (b, k) = split::<30>(id);
                table.entries(b, &k).iter().map(|e| e.loc).collect()
            }
        }
    }

    fn loc_of(&self, id: &Id) -> Option<crate::blobtable::Loc> {
        match &self.ids {
            Ids::Compact { table, .. } => {
                let (b, k) = split::<14>(id);
                table.get(b, &k).map(|e| e.loc)
            }
            Ids::Full(table) => {
                let (b, k) = split::<30>(id);
                table.get(b, &k).map(|e| e.loc)
            }
        }
    }

    /// Where a blob is. In a compact index this matches on the id's first 128 bits; whoever
    /// reads the blob checks its full id when decrypting it (`blob::open`).
    pub fn get(&self, id: &Id) -> Option<(Id, Location)> {
        self.loc_of(id)
            .map(|l| (self.packs[l.pack() as usize], l.location()))
    }

    /// Whether a blob is indexed.
    pub fn contains(&self, id: &Id) -> bool {
        self.loc_of(id).is_some()
    }

    /// Every location of a blob, the one [`Index::get`] returns first.
    pub fn locations(&self, id: &Id) -> Vec<(Id, Location)> {
        self.entries_of(id)
            .into_iter()
            .map(|l| (self.packs[l.pack() as usize], l.location()))
            .collect()
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        match &self.ids {
            Ids::Compact { table, .. } => table.distinct,
            Ids::Full(table) => table.distinct,
        }
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every pack that holds at least one indexed blob.
    pub fn packs(&self) -> &[Id] {
        &self.packs
    }

    /// Whether a pack is known.
    pub fn has_pack(&self, pack: &Id) -> bool {
        self.pack_pos.contains_key(pack)
    }

    fn full_table(&self, what: &str) -> &Table<30> {
        match &self.ids {
            Ids::Full(t) => t,
            Ids::Compact { .. } => panic!(
                "Index::{what} needs whole ids: load the index with IdMode::Full (a bug in holdfast)"
            ),
        }
    }

    fn item(&self, b: u16, e: &Entry<30>) -> (Id, Id, Location) {
        (
            Id(join(b, &e.key)),
            self.packs[e.loc.pack() as usize],
            e.loc.location(),
        )
    }

    /// Every blob and where [`Index::get`] finds it. Needs an [`IdMode::Full`] index (panics
    /// otherwise: that is a bug in the caller).
    pub fn iter(&self) -> impl Iterator<Item = (Id, Id, Location)> + '_ {
        self.full_table("iter")
            .all()
            .filter(|(primary, _, _)| *primary)
            .map(move |(_, b, e)| self.item(b, e))
    }

    /// Every location of every blob, duplicates included. Needs an [`IdMode::Full`] index.
    pub fn iter_all(&self) -> impl Iterator<Item = (Id, Id, Location)> + '_ {
        self.full_table("iter_all")
            .all()
            .map(move |(_, b, e)| self.item(b, e))
    }

    /// Every tree blob and where [`Index::get`] finds it (either mode).
    pub fn trees(&self) -> Vec<(Id, Id, Location)> {
        match &self.ids {
            Ids::Full(_) => self
                .iter()
                .filter(|(_, _, l)| l.blob_type == BlobType::Tree)
                .collect(),
            Ids::Compact { trees, .. } => {
                let mut ids = trees.clone();
                ids.sort_unstable();
                ids.dedup();
                ids.into_iter()
                    .filter_map(|id| {
                        let (p, l) = self.get(&id)?;
                        (l.blob_type == BlobType::Tree).then_some((id, p, l))
                    })
                    .collect()
            }
        }
    }

    /// A copy without the blobs of the given packs (used to avoid deduplicating against packs
    /// that garbage collection has condemned). Packs left without blobs are dropped too.
    pub fn without_packs(&self, drop: &HashSet<Id>) -> Index {
        if drop.is_empty() {
            return self.clone();
        }
        let mut used = vec![false; self.packs.len()];
        let mut mark = |p: u32| used[p as usize] = true;
        match &self.ids {
            Ids::Compact { table, .. } => table.all().for_each(|(_, _, e)| mark(e.loc.pack())),
            Ids::Full(table) => table.all().for_each(|(_, _, e)| mark(e.loc.pack())),
        }
        let mut renumber = vec![None; self.packs.len()];
        let mut packs = Vec::new();
        for (i, p) in self.packs.iter().enumerate() {
            if used[i] && !drop.contains(p) {
                renumber[i] = Some(packs.len() as u32);
                packs.push(*p);
            }
        }
        let ids = match &self.ids {
            Ids::Compact { table, trees } => {
                let table = table.filtered(|e| renumber[e.loc.pack() as usize]);
                let trees = trees
                    .iter()
                    .filter(|id| {
                        let (b, k) = split::<14>(id);
                        table.get(b, &k).is_some()
                    })
                    .copied()
                    .collect();
                Ids::Compact { table, trees }
            }
            Ids::Full(table) => Ids::Full(table.filtered(|e| renumber[e.loc.pack() as usize])),
        };
        Index {
            pack_pos: pack_map(&packs),
            packs,
            ids,
        }
    }

    /// Bytes of entry arrays allocated (for the scale benchmark).
    pub fn entry_bytes(&self) -> usize {
        match &self.ids {
            Ids::Compact { table, trees } => {
                table.capacity() * std::mem::size_of::<Entry<14>>()
                    + trees.capacity() * std::mem::size_of::<Id>()
            }
            Ids::Full(table) => table.capacity() * std::mem::size_of::<Entry<30>>(),
        }
    }
}

#[cfg(test)]
#[path = "blobindex_tests.rs"]
mod tests;
