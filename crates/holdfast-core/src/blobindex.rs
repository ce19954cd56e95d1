//! The in-memory index: blob id to location, in sorted arrays of fixed-size entries.
//!
//! Layout (see docs/DESIGN.md, "The in-memory index"): each entry is a key (the blob id's first
//! 16 bytes in [`IdMode::Compact`], the whole id in [`IdMode::Full`]) and a 16-byte location
//! (pack number, offset, stored length, plaintext length with the blob type in its top bit).
//! Entries live in one array sorted by key, with a table of where each run of leading key bits
//! starts, plus a small unsorted "recent" part (with a hash map) for entries added since the
//! last merge. A blob stored in several packs has one entry per pack; the first is where it is
//! read from, the others are its alternates. A compact index keeps the full ids of tree blobs
//! (few) for the tree read-ahead; it cannot list the full ids of data blobs, so the code that
//! rewrites index files (prune) loads a full one.

use std::collections::{HashMap, HashSet};

use crate::blob::BlobType;
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

const TREE_BIT: u32 = 1 << 31;
/// The recent part is merged when it exceeds this, or an eighth of the sorted part.
const MERGE_MIN: usize = if cfg!(test) { 8 } else { 4096 };

/// A location in 16 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) pack: u32,
    offset: u32,
    length: u32,
    /// Plaintext length, the top bit set for a tree blob (plaintext lengths are bounded far
    /// below 2^31 by `blob::check_lengths`).
    raw: u32,
}

impl Loc {
    fn new(pack: u32, e: &PackEntry) -> Loc {
        debug_assert!(e.raw_len < TREE_BIT);
        let t = if e.blob_type == BlobType::Tree {
            TREE_BIT
        } else {
            0
        };
        Loc {
            pack,
            offset: e.offset,
            length: e.length,
            raw: (e.raw_len & !TREE_BIT) | t,
        }
    }
    fn location(&self) -> Location {
        Location {
            pack: self.pack,
            blob_type: if self.raw & TREE_BIT != 0 {
                BlobType::Tree
            } else {
                BlobType::Data
            },
            offset: self.offset,
            length: self.length,
            raw_len: self.raw & !TREE_BIT,
        }
    }
}

/// One entry: a key of `N` id bytes and a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry<const N: usize> {
    pub(crate) key: [u8; N],
    pub(crate) loc: Loc,
}

impl<const N: usize> Entry<N> {
    pub(crate) fn new(id: &Id, pack: u32, e: &PackEntry) -> Self {
        let mut key = [0u8; N];
        key.copy_from_slice(&id.0[..N]);
        Entry {
            key,
            loc: Loc::new(pack, e),
        }
    }
}

/// Entries sorted by key (stable: of equal keys, the primary comes first), a bucket table, and
/// the unsorted recent part.
#[derive(Debug, Clone)]
pub(crate) struct Table<const N: usize> {
    sorted: Vec<Entry<N>>,
    /// `starts[b]` is where bucket `b` (the key's top `bits` bits) begins in `sorted`.
    starts: Vec<u32>,
    bits: u32,
    recent: Vec<Entry<N>>,
    /// Key to the position of its first entry in `recent`, and how many it has there.
    recent_pos: HashMap<[u8; N], (u32, u32)>,
    /// Distinct keys.
    distinct: usize,
}

impl<const N: usize> Default for Table<N> {
    fn default() -> Self {
        Table {
            sorted: Vec::new(),
            starts: vec![0, 0],
            bits: 0,
            recent: Vec::new(),
            recent_pos: HashMap::new(),
            distinct: 0,
        }
    }
}

fn bucket_of(key: &[u8], bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        (u16::from_be_bytes([key[0], key[1]]) >> (16 - bits)) as usize
    }
}

impl<const N: usize> Table<N> {
    /// A table of entries in any order: sorted by (key, pack), duplicate (key, pack) pairs
    /// dropped. Of a blob's copies, the one in the lowest-numbered pack is the primary.
    pub(crate) fn from_unsorted(mut v: Vec<Entry<N>>) -> Self {
        v.sort_unstable_by(|a, b| a.key.cmp(&b.key).then(a.loc.pack.cmp(&b.loc.pack)));
        v.dedup_by(|a, b| a.key == b.key && a.loc.pack == b.loc.pack);
        v.shrink_to_fit();
        Self::from_sorted(v)
    }

    fn from_sorted(sorted: Vec<Entry<N>>) -> Self {
        let distinct = sorted
            .iter()
            .enumerate()
            .filter(|(i, e)| *i == 0 || sorted[i - 1].key != e.key)
            .count();
        let mut t = Table {
            sorted,
            distinct,
            ..Table::default()
        };
        t.rebuild_starts();
        t
    }

    fn rebuild_starts(&mut self) {
        let n = self.sorted.len();
        self.bits = (n.max(1).ilog2().saturating_sub(3)).min(16);
        let nb = 1usize << self.bits;
        let mut starts = vec![0u32; nb + 1];
        for e in &self.sorted {
            starts[bucket_of(&e.key, self.bits) + 1] += 1;
        }
        for b in 0..nb {
            starts[b + 1] += starts[b];
        }
        self.starts = starts;
    }

    /// The entries of `key` in the sorted part.
    fn sorted_run(&self, key: &[u8; N]) -> &[Entry<N>] {
        let b = bucket_of(key, self.bits);
        let s = &self.sorted[self.starts[b] as usize..self.starts[b + 1] as usize];
        let from = s.partition_point(|e| e.key < *key);
        let len = s[from..].iter().take_while(|e| e.key == *key).count();
        &s[from..from + len]
    }

    /// Every entry of `key`, the primary first.
    fn entries<'a>(&'a self, key: &'a [u8; N]) -> impl Iterator<Item = &'a Entry<N>> + 'a {
        let recent: &[Entry<N>] = match self.recent_pos.get(key) {
            Some(&(first, _)) => &self.recent[first as usize..],
            None => &[],
        };
        let count = self.recent_pos.get(key).map_or(0, |c| c.1 as usize);
        self.sorted_run(key).iter().chain(
            recent
                .iter()
                .filter(move |e| e.key == *key)
                .take(count),
        )
    }

    pub(crate) fn get(&self, key: &[u8; N]) -> Option<&Entry<N>> {
        self.sorted_run(key).first().or_else(|| {
            self.recent_pos
                .get(key)
                .map(|&(i, _)| &self.recent[i as usize])
        })
    }

    /// Add an entry unless its key already has one in the same pack.
    pub(crate) fn add(&mut self, e: Entry<N>) {
        let run = self.sorted_run(&e.key);
        let known = !run.is_empty();
        if run.iter().any(|x| x.loc.pack == e.loc.pack) {
            return;
        }
        let pos = self.recent.len() as u32;
        match self.recent_pos.get(&e.key).copied() {
            Some((first, count)) => {
                let same_pack = self.recent[first as usize..]
                    .iter()
                    .filter(|x| x.key == e.key)
                    .take(count as usize)
                    .any(|x| x.loc.pack == e.loc.pack);
                if same_pack {
                    return;
                }
                self.recent_pos.insert(e.key, (first, count + 1));
            }
            None => {
                self.recent_pos.insert(e.key, (pos, 1));
                if !known {
                    self.distinct += 1;
                }
            }
        }
        self.recent.push(e);
        if self.recent.len() > MERGE_MIN.max(self.sorted.len() / 8) {
            self.merge();
        }
    }

    /// Merge the recent part into the sorted part, in place from the back; of equal keys the
    /// sorted entries (older) stay first and recent ones keep their order.
    fn merge(&mut self) {
        if self.recent.is_empty() {
            return;
        }
        let mut r = std::mem::take(&mut self.recent);
        self.recent_pos = HashMap::new();
        r.sort_by(|a, b| a.key.cmp(&b.key));
        let a = self.sorted.len();
        self.sorted.reserve_exact(r.len());
        self.sorted.extend_from_slice(&r);
        let (mut i, mut j, mut k) = (a, r.len(), a + r.len());
        while j > 0 {
            k -= 1;
            if i > 0 && self.sorted[i - 1].key > r[j - 1].key {
                self.sorted[k] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[k] = r[j - 1];
                j -= 1;
            }
        }
        self.rebuild_starts();
    }

    /// Every entry, each blob's primary first among its own; `primary` tells which are.
    pub(crate) fn all(&self) -> impl Iterator<Item = (bool, &Entry<N>)> + '_ {
        let sorted = self
            .sorted
            .iter()
            .enumerate()
            .map(|(i, e)| (i == 0 || self.sorted[i - 1].key != e.key, e));
        let recent = self.recent.iter().enumerate().map(|(i, e)| {
            let first = self.recent_pos.get(&e.key).map(|p| p.0 as usize) == Some(i);
            (first && self.sorted_run(&e.key).is_empty(), e)
        });
        sorted.chain(recent)
    }

    /// A table of the entries `keep` accepts, their pack numbers mapped by `renumber`.
    fn filtered(&self, keep: impl Fn(&Entry<N>) -> Option<u32>) -> Self {
        let map = |e: &Entry<N>| keep(e).map(|p| Entry { loc: Loc { pack: p, ..e.loc }, ..*e });
        let mut t = Self::from_sorted(self.sorted.iter().filter_map(map).collect());
        for e in self.recent.iter().filter_map(map) {
            t.add(e);
        }
        t
    }

    pub(crate) fn heap_entries(&self) -> usize {
        self.sorted.capacity() + self.recent.capacity()
    }
}

#[derive(Debug, Clone)]
enum Ids {
    Compact {
        table: Table<16>,
        /// Full ids of tree blobs, for the tree read-ahead.
        trees: HashSet<Id>,
    },
    Full(Table<32>),
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

fn prefix(id: &Id) -> [u8; 16] {
    id.0[..16].try_into().expect("16 bytes")
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
                    trees: HashSet::new(),
                },
                IdMode::Full => Ids::Full(Table::default()),
            },
        }
    }

    /// An index built at once from decoded entries (`crate::indexload`): `packs` in the order
    /// they were first seen, entries naming them by position. Sorted once.
    pub(crate) fn from_parts(
        packs: Vec<Id>,
        compact: Option<(Vec<Entry<16>>, HashSet<Id>)>,
        full: Option<Vec<Entry<32>>>,
    ) -> Index {
        let pack_pos = packs.iter().enumerate().map(|(i, p)| (*p, i as u32)).collect();
        let ids = match (compact, full) {
            (Some((v, trees)), _) => Ids::Compact {
                table: Table::from_unsorted(v),
                trees,
            },
            (None, Some(v)) => Ids::Full(Table::from_unsorted(v)),
            (None, None) => Ids::Full(Table::default()),
        };
        Index {
            packs,
            pack_pos,
            ids,
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
    pub fn add_pack(&mut self, pack: Id, entries: &[PackEntry]) {
        let p = self.pack_number(pack);
        match &mut self.ids {
            Ids::Compact { table, trees } => {
                for e in entries {
                    table.add(Entry::new(&e.id, p, e));
                    if e.blob_type == BlobType::Tree {
                        trees.insert(e.id);
                    }
                }
            }
            Ids::Full(table) => {
                for e in entries {
                    table.add(Entry::new(&e.id, p, e));
                }
            }
        }
    }

    fn loc_of(&self, id: &Id) -> Option<Loc> {
        match &self.ids {
            Ids::Compact { table, .. } => table.get(&prefix(id)).map(|e| e.loc),
            Ids::Full(table) => table.get(&id.0).map(|e| e.loc),
        }
    }

    /// Where a blob is. In a compact index this matches on the id's first 128 bits; whoever
    /// reads the blob checks its full id when decrypting it (`blob::open`).
    pub fn get(&self, id: &Id) -> Option<(Id, Location)> {
        self.loc_of(id)
            .map(|l| (self.packs[l.pack as usize], l.location()))
    }

    /// Whether a blob is indexed.
    pub fn contains(&self, id: &Id) -> bool {
        self.loc_of(id).is_some()
    }

    /// Every location of a blob, the one [`Index::get`] returns first.
    pub fn locations(&self, id: &Id) -> Vec<(Id, Location)> {
        let locs: Vec<Loc> = match &self.ids {
            Ids::Compact { table, .. } => table.entries(&prefix(id)).map(|e| e.loc).collect(),
            Ids::Full(table) => table.entries(&id.0).map(|e| e.loc).collect(),
        };
        locs.into_iter()
            .map(|l| (self.packs[l.pack as usize], l.location()))
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

    fn full_table(&self, what: &str) -> &Table<32> {
        match &self.ids {
            Ids::Full(t) => t,
            Ids::Compact { .. } => panic!(
                "Index::{what} needs whole ids: load the index with IdMode::Full (a bug in holdfast)"
            ),
        }
    }

    fn item(&self, e: &Entry<32>) -> (Id, Id, Location) {
        (Id(e.key), self.packs[e.loc.pack as usize], e.loc.location())
    }

    /// Every blob and where [`Index::get`] finds it. Needs an [`IdMode::Full`] index (panics
    /// otherwise: that is a bug in the caller).
    pub fn iter(&self) -> impl Iterator<Item = (Id, Id, Location)> + '_ {
        self.full_table("iter")
            .all()
            .filter(|(primary, _)| *primary)
            .map(move |(_, e)| self.item(e))
    }

    /// Every location of every blob, duplicates included. Needs an [`IdMode::Full`] index.
    pub fn iter_all(&self) -> impl Iterator<Item = (Id, Id, Location)> + '_ {
        self.full_table("iter_all")
            .all()
            .map(move |(_, e)| self.item(e))
    }

    /// Every tree blob and where [`Index::get`] finds it (either mode).
    pub fn trees(&self) -> Vec<(Id, Id, Location)> {
        match &self.ids {
            Ids::Full(_) => self
                .iter()
                .filter(|(_, _, l)| l.blob_type == BlobType::Tree)
                .collect(),
            Ids::Compact { trees, .. } => trees
                .iter()
                .filter_map(|id| {
                    let (p, l) = self.get(id)?;
                    (l.blob_type == BlobType::Tree).then_some((*id, p, l))
                })
                .collect(),
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
            Ids::Compact { table, .. } => table.all().for_each(|(_, e)| mark(e.loc.pack)),
            Ids::Full(table) => table.all().for_each(|(_, e)| mark(e.loc.pack)),
        }
        let mut renumber = vec![None; self.packs.len()];
        let mut packs = Vec::new();
        for (i, p) in self.packs.iter().enumerate() {
            if used[i] && !drop.contains(p) {
                renumber[i] = Some(packs.len() as u32);
                packs.push(*p);
            }
        }
        let pack_pos = packs.iter().enumerate().map(|(i, p)| (*p, i as u32)).collect();
        let mut out = Index {
            packs,
            pack_pos,
            ids: Ids::Full(Table::default()),
        };
        out.ids = match &self.ids {
            Ids::Compact { table, trees } => {
                let table = table.filtered(|e| renumber[e.loc.pack as usize]);
                let trees = trees
                    .iter()
                    .filter(|id| table.get(&prefix(id)).is_some())
                    .copied()
                    .collect();
                Ids::Compact { table, trees }
            }
            Ids::Full(table) => Ids::Full(table.filtered(|e| renumber[e.loc.pack as usize])),
        };
        out
    }

    /// Bytes of entry arrays allocated (for the scale benchmark): entries times entry size.
    pub fn entry_bytes(&self) -> usize {
        match &self.ids {
            Ids::Compact { table, .. } => table.heap_entries() * std::mem::size_of::<Entry<16>>(),
            Ids::Full(table) => table.heap_entries() * std::mem::size_of::<Entry<32>>(),
        }
    }
}

#[cfg(test)]
#[path = "blobindex_tests.rs"]
mod tests;
