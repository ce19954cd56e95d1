//! The sorted table under [`crate::index::Index`]: fixed-size entries sharded into 2^16 buckets
//! by the id's first two bytes (which are therefore not stored), sorted by the next `K` bytes
//! within a bucket, plus an unsorted "recent" part for entries added since the last merge.
//! See docs/DESIGN.md, "The index in memory".

use std::collections::HashMap;

use crate::blob::BlobType;
use crate::id::Id;
use crate::index::Location;
use crate::pack::PackEntry;

const TREE_BIT: u32 = 1 << 31;
const BUCKETS: usize = 1 << 16;
/// The recent part is merged when it exceeds this, or an eighth of the sorted part.
const MERGE_MIN: usize = if cfg!(test) { 8 } else { 4096 };

/// A location in 16 bytes, alignment 1: pack number, offset, stored length, and the plaintext
/// length with the top bit set for a tree blob (plaintext lengths are bounded far below 2^31
/// by `blob::check_lengths`), each little endian.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Loc([u8; 16]);

impl Loc {
    fn word(&self, i: usize) -> u32 {
        u32::from_le_bytes(self.0[i * 4..i * 4 + 4].try_into().expect("4 bytes"))
    }
    fn new(pack: u32, e: &PackEntry) -> Loc {
        debug_assert!(e.raw_len < TREE_BIT);
        let t = if e.blob_type == BlobType::Tree {
            TREE_BIT
        } else {
            0
        };
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&pack.to_le_bytes());
        b[4..8].copy_from_slice(&e.offset.to_le_bytes());
        b[8..12].copy_from_slice(&e.length.to_le_bytes());
        b[12..].copy_from_slice(&((e.raw_len & !TREE_BIT) | t).to_le_bytes());
        Loc(b)
    }
    /// The pack number.
    pub(crate) fn pack(&self) -> u32 {
        self.word(0)
    }
    /// Change the pack number.
    pub(crate) fn set_pack(&mut self, p: u32) {
        self.0[..4].copy_from_slice(&p.to_le_bytes());
    }
    /// The location, unpacked.
    pub(crate) fn location(&self) -> Location {
        let raw = self.word(3);
        Location {
            pack: self.pack(),
            blob_type: if raw & TREE_BIT != 0 {
                BlobType::Tree
            } else {
                BlobType::Data
            },
            offset: self.word(1),
            length: self.word(2),
            raw_len: raw & !TREE_BIT,
        }
    }
}

/// One entry: id bytes 2..2+K (the bucket holds bytes 0..2) and a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry<const K: usize> {
    pub(crate) key: [u8; K],
    pub(crate) loc: Loc,
}

/// A bucket number and an entry: how entries travel outside the sorted part.
pub(crate) type Keyed<const K: usize> = (u16, Entry<K>);

/// The bucket and entry of blob `id` in pack number `pack`.
pub(crate) fn keyed<const K: usize>(id: &Id, pack: u32, e: &PackEntry) -> Keyed<K> {
    let (b, key) = split::<K>(id);
    (
        b,
        Entry {
            key,
            loc: Loc::new(pack, e),
        },
    )
}

/// An id's bucket and key.
pub(crate) fn split<const K: usize>(id: &Id) -> (u16, [u8; K]) {
    let mut key = [0u8; K];
    key.copy_from_slice(&id.0[2..2 + K]);
    (u16::from_be_bytes([id.0[0], id.0[1]]), key)
}

/// The id bytes a bucket and key stand for (the rest zero).
pub(crate) fn join<const K: usize>(b: u16, key: &[u8; K]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..2].copy_from_slice(&b.to_be_bytes());
    out[2..2 + K].copy_from_slice(key);
    out
}

/// Entries sorted by (bucket, key), of equal keys the primary first; the recent part.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table<const K: usize> {
    sorted: Vec<Entry<K>>,
    /// `starts[b]..starts[b + 1]` is bucket `b` in `sorted`; empty while `sorted` is.
    starts: Vec<u32>,
    recent: Vec<Keyed<K>>,
    /// Bucket and key to the position of its first entry in `recent`, and how many it has.
    recent_pos: HashMap<(u16, [u8; K]), (u32, u32)>,
    /// Distinct keys.
    pub(crate) distinct: usize,
}

impl<const K: usize> Table<K> {
    /// A table of entries in any order (each part in order, parts in order): placed into
    /// their buckets (one counting pass, one scatter), each bucket sorted by (key, pack) on
    /// every core, and a key's second entry in the same pack dropped. Of a blob's copies the
    /// one in the lowest-numbered pack is the primary.
    pub(crate) fn from_parts(parts: Vec<Vec<Keyed<K>>>) -> Self {
        let mut counts = vec![0u32; BUCKETS + 1];
        for p in &parts {
            for (b, _) in p {
                counts[*b as usize + 1] += 1;
            }
        }
        for b in 0..BUCKETS {
            counts[b + 1] += counts[b];
        }
        let n = counts[BUCKETS] as usize;
        if n == 0 {
            return Table::default();
        }
        let zero = Entry {
            key: [0u8; K],
            loc: Loc::default(),
        };
        let mut sorted = vec![zero; n];
        let mut cursor = counts.clone();
        for p in parts {
            for (b, e) in p {
                let c = &mut cursor[b as usize];
                sorted[*c as usize] = e;
                *c += 1;
            }
        }
        // Sort each bucket; split the work at bucket boundaries.
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
        let per = BUCKETS.div_ceil(threads);
        let mut kept = vec![0u32; BUCKETS];
        std::thread::scope(|s| {
            let mut rest: &mut [Entry<K>] = &mut sorted;
            let mut kept_rest: &mut [u32] = &mut kept;
            for t in 0..threads {
                let (b0, b1) = (t * per, ((t + 1) * per).min(BUCKETS));
                if b0 >= b1 {
                    break;
                }
                let len = (counts[b1] - counts[b0]) as usize;
                let (mine, r) = std::mem::take(&mut rest).split_at_mut(len);
                rest = r;
                let (my_kept, kr) = std::mem::take(&mut kept_rest).split_at_mut(b1 - b0);
                kept_rest = kr;
                let counts = &counts;
                s.spawn(move || {
                    for b in b0..b1 {
                        let from = (counts[b] - counts[b0]) as usize;
                        let to = (counts[b + 1] - counts[b0]) as usize;
                        let slice = &mut mine[from..to];
                        slice.sort_unstable_by(|x, y| {
                            x.key.cmp(&y.key).then(x.loc.pack().cmp(&y.loc.pack()))
                        });
                        // Drop repeats of (key, pack) within the bucket, keeping order.
                        let mut w = 0;
                        for i in 0..slice.len() {
                            let e = slice[i];
                            if w == 0
                                || slice[w - 1].key != e.key
                                || slice[w - 1].loc.pack() != e.loc.pack()
                            {
                                slice[w] = e;
                                w += 1;
                            }
                        }
                        my_kept[b - b0] = w as u32;
                    }
                });
            }
        });
        // Close the gaps left by dropped repeats (none, usually).
        let mut starts = vec![0u32; BUCKETS + 1];
        let mut w = 0usize;
        for b in 0..BUCKETS {
            starts[b] = w as u32;
            let from = counts[b] as usize;
            let k = kept[b] as usize;
            if from != w {
                sorted.copy_within(from..from + k, w);
            }
            w += k;
        }
        starts[BUCKETS] = w as u32;
        sorted.truncate(w);
        sorted.shrink_to_fit();
        let mut t = Table {
            sorted,
            starts,
            ..Table::default()
        };
        t.distinct = t.count_distinct();
        t
    }

    fn count_distinct(&self) -> usize {
        let mut n = 0;
        for b in 0..self.buckets() {
            let s = self.bucket(b);
            n += (0..s.len())
                .filter(|&i| i == 0 || s[i - 1].key != s[i].key)
                .count();
        }
        n
    }

    fn buckets(&self) -> usize {
        if self.starts.is_empty() {
            0
        } else {
            BUCKETS
        }
    }

    fn bucket(&self, b: usize) -> &[Entry<K>] {
        match self.starts.get(b..b + 2) {
            Some(r) => &self.sorted[r[0] as usize..r[1] as usize],
            None => &[],
        }
    }

    /// The entries of a key in the sorted part.
    fn sorted_run(&self, b: u16, key: &[u8; K]) -> &[Entry<K>] {
        let s = self.bucket(b as usize);
        let from = s.partition_point(|e| e.key < *key);
        let len = s[from..].iter().take_while(|e| e.key == *key).count();
        &s[from..from + len]
    }

    /// Every entry of a key, the primary first.
    pub(crate) fn entries(&self, b: u16, key: &[u8; K]) -> Vec<Entry<K>> {
        let mut out = self.sorted_run(b, key).to_vec();
        if let Some(&(first, count)) = self.recent_pos.get(&(b, *key)) {
            out.extend(
                self.recent[first as usize..]
                    .iter()
                    .filter(|(rb, e)| *rb == b && e.key == *key)
                    .take(count as usize)
                    .map(|(_, e)| *e),
            );
        }
        out
    }

    /// The primary entry of a key.
    pub(crate) fn get(&self, b: u16, key: &[u8; K]) -> Option<&Entry<K>> {
        self.sorted_run(b, key).first().or_else(|| {
            self.recent_pos
                .get(&(b, *key))
                .map(|&(i, _)| &self.recent[i as usize].1)
        })
    }

    /// Add an entry unless its key already has one in the same pack.
    pub(crate) fn add(&mut self, (b, e): Keyed<K>) {
        let run = self.sorted_run(b, &e.key);
        let known = !run.is_empty();
        if run.iter().any(|x| x.loc.pack() == e.loc.pack()) {
            return;
        }
        let pos = self.recent.len() as u32;
        match self.recent_pos.get(&(b, e.key)).copied() {
            Some((first, count)) => {
                let same_pack = self.recent[first as usize..]
                    .iter()
                    .filter(|(rb, x)| *rb == b && x.key == e.key)
                    .take(count as usize)
                    .any(|(_, x)| x.loc.pack() == e.loc.pack());
                if same_pack {
                    return;
                }
                self.recent_pos.insert((b, e.key), (first, count + 1));
            }
            None => {
                self.recent_pos.insert((b, e.key), (pos, 1));
                if !known {
                    self.distinct += 1;
                }
            }
        }
        self.recent.push((b, e));
        if self.recent.len() > MERGE_MIN.max(self.sorted.len() / 8) {
            self.merge();
        }
    }

    /// Merge the recent part into the sorted part in place, from the back, bucket by bucket;
    /// of equal keys the sorted (older) entries stay first and recent ones keep their order.
    fn merge(&mut self) {
        if self.recent.is_empty() {
            return;
        }
        let mut r = std::mem::take(&mut self.recent);
        self.recent_pos = HashMap::new();
        r.sort_by_key(|x| (x.0, x.1.key));
        if self.starts.is_empty() {
            self.starts = vec![0; BUCKETS + 1];
        }
        let m = self.sorted.len() + r.len();
        self.sorted.reserve_exact(r.len());
        self.sorted.resize(m, r[0].1);
        let (mut k, mut j) = (m, r.len());
        let mut starts = vec![0u32; BUCKETS + 1];
        starts[BUCKETS] = m as u32;
        for b in (0..BUCKETS).rev() {
            let s = self.starts[b] as usize;
            let mut i = self.starts[b + 1] as usize;
            loop {
                let rec = j > 0 && r[j - 1].0 as usize == b;
                let take_old = i > s && (!rec || self.sorted[i - 1].key > r[j - 1].1.key);
                if !take_old && !rec {
                    break;
                }
                k -= 1;
                if take_old {
                    self.sorted[k] = self.sorted[i - 1];
                    i -= 1;
                } else {
                    self.sorted[k] = r[j - 1].1;
                    j -= 1;
                }
            }
            starts[b] = k as u32;
        }
        debug_assert_eq!((k, j), (0, 0));
        self.starts = starts;
    }

    /// Every entry as (is primary, bucket, entry): the sorted part, then the recent part.
    pub(crate) fn all(&self) -> impl Iterator<Item = (bool, u16, &Entry<K>)> + '_ {
        let sorted = (0..self.buckets()).flat_map(move |b| {
            let s = self.bucket(b);
            s.iter()
                .enumerate()
                .map(move |(i, e)| (i == 0 || s[i - 1].key != e.key, b as u16, e))
        });
        let recent = self.recent.iter().enumerate().map(|(i, (b, e))| {
            let first = self.recent_pos.get(&(*b, e.key)).map(|p| p.0 as usize) == Some(i);
            (first && self.sorted_run(*b, &e.key).is_empty(), *b, e)
        });
        sorted.chain(recent)
    }

    /// A table of the entries `keep` gives a (new) pack number.
    pub(crate) fn filtered(&self, keep: impl Fn(&Entry<K>) -> Option<u32>) -> Self {
        let map = |e: &Entry<K>| {
            keep(e).map(|p| {
                let mut e = *e;
                e.loc.set_pack(p);
                e
            })
        };
        let mut t = Table::default();
        if !self.starts.is_empty() {
            t.starts = vec![0u32; BUCKETS + 1];
            for b in 0..BUCKETS {
                t.starts[b] = t.sorted.len() as u32;
                t.sorted.extend(self.bucket(b).iter().filter_map(map));
            }
            t.starts[BUCKETS] = t.sorted.len() as u32;
            t.sorted.shrink_to_fit();
            t.distinct = t.count_distinct();
        }
        for (b, e) in &self.recent {
            if let Some(e) = map(e) {
                t.add((*b, e));
            }
        }
        t
    }

    /// Entries allocated, sorted and recent.
    pub(crate) fn capacity(&self) -> usize {
        self.sorted.capacity() + self.recent.capacity()
    }
}
