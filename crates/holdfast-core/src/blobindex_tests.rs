//! Tests of the in-memory index against a plain map model.

use super::*;
use proptest::prelude::*;

/// The model: each blob's locations in the order they were added, (pack, location) pairs.
#[derive(Default, Clone)]
struct Model {
    packs: Vec<Id>,
    blobs: HashMap<Id, Vec<(Id, PackEntry)>>,
    order: Vec<Id>,
}

impl Model {
    fn add_pack(&mut self, pack: Id, entries: &[PackEntry]) {
        if !self.packs.contains(&pack) {
            self.packs.push(pack);
        }
        for e in entries {
            let v = self.blobs.entry(e.id).or_default();
            if v.is_empty() {
                self.order.push(e.id);
            }
            if !v.iter().any(|(p, _)| *p == pack) {
                v.push((pack, *e));
            }
        }
    }
    fn without_packs(&self, drop: &HashSet<Id>) -> Model {
        if drop.is_empty() {
            return self.clone();
        }
        let mut out = Model::default();
        for (id, v) in &self.blobs {
            let v: Vec<_> = v
                .iter()
                .filter(|(p, _)| !drop.contains(p))
                .copied()
                .collect();
            if !v.is_empty() {
                out.blobs.insert(*id, v);
            }
        }
        let used: HashSet<Id> = out.blobs.values().flatten().map(|(p, _)| *p).collect();
        out.packs = self
            .packs
            .iter()
            .filter(|p| used.contains(p))
            .copied()
            .collect();
        out
    }
}

fn same(idx: &Index, m: &Model, pool: &[Id]) -> std::result::Result<(), TestCaseError> {
    prop_assert_eq!(idx.len(), m.blobs.len());
    prop_assert_eq!(idx.packs(), &m.packs[..]);
    for id in pool {
        let want = m.blobs.get(id);
        prop_assert_eq!(idx.contains(id), want.is_some());
        let got = idx.get(id);
        let all = idx.locations(id);
        match want {
            None => prop_assert!(got.is_none() && all.is_empty()),
            Some(v) => {
                let (p, e) = v[0];
                let (gp, gl) = got.unwrap();
                prop_assert_eq!(gp, p);
                prop_assert_eq!(
                    (gl.blob_type, gl.offset, gl.length, gl.raw_len),
                    (e.blob_type, e.offset, e.length, e.raw_len)
                );
                prop_assert_eq!(idx.packs()[gl.pack as usize], p);
                let want_all: Vec<(Id, u32)> = v.iter().map(|(p, e)| (*p, e.offset)).collect();
                let got_all: Vec<(Id, u32)> = all.iter().map(|(p, l)| (*p, l.offset)).collect();
                prop_assert_eq!(got_all, want_all);
            }
        }
    }
    let mut want_trees: Vec<Id> = m
        .blobs
        .iter()
        .filter(|(_, v)| v[0].1.blob_type == BlobType::Tree)
        .map(|(id, _)| *id)
        .collect();
    let mut got_trees: Vec<Id> = idx.trees().into_iter().map(|t| t.0).collect();
    want_trees.sort();
    got_trees.sort();
    prop_assert_eq!(got_trees, want_trees);
    if idx.mode() == IdMode::Full {
        let mut want: Vec<(Id, Id, u32)> = m
            .blobs
            .iter()
            .flat_map(|(id, v)| v.iter().map(move |(p, e)| (*id, *p, e.offset)))
            .collect();
        let mut got: Vec<(Id, Id, u32)> =
            idx.iter_all().map(|(i, p, l)| (i, p, l.offset)).collect();
        want.sort();
        got.sort();
        prop_assert_eq!(got, want);
        let mut want: Vec<(Id, Id)> = m.blobs.iter().map(|(id, v)| (*id, v[0].0)).collect();
        let mut got: Vec<(Id, Id)> = idx.iter().map(|(i, p, _)| (i, p)).collect();
        want.sort();
        got.sort();
        prop_assert_eq!(got, want);
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    Add(u8, Vec<(u8, bool, u32)>),
    Without(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6, proptest::collection::vec((0u8..40, any::<bool>(), 0u32..1_000_000), 0..30))
            .prop_map(|(p, e)| Op::Add(p, e)),
        1 => proptest::collection::vec(0u8..6, 0..3).prop_map(Op::Without),
    ]
}

fn blob(i: u8) -> Id {
    Id::of_bytes(&[b'b', i])
}

fn pack(i: u8) -> Id {
    Id::of_bytes(&[b'p', i])
}

proptest! {
    // Each case merges and filters many times over the 2^16 buckets: fewer cases, in debug.
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random adds (with duplicates within and across packs, enough to merge the recent part
    /// many times) and removals of packs: the index answers as the model.
    #[test]
    fn behaves_like_a_map(ops in proptest::collection::vec(op(), 1..40), compact in any::<bool>()) {
        let pool: Vec<Id> = (0..41).map(blob).collect();
        let mut idx = Index::new(if compact { IdMode::Compact } else { IdMode::Full });
        let mut m = Model::default();
        for op in ops {
            match op {
                Op::Add(p, es) => {
                    let entries: Vec<PackEntry> = es
                        .iter()
                        .map(|&(b, tree, offset)| PackEntry {
                            blob_type: if tree { BlobType::Tree } else { BlobType::Data },
                            id: blob(b),
                            offset,
                            length: 50 + b as u32,
                            raw_len: 20 + offset % 1000,
                        })
                        .collect();
                    // A blob's type is part of its id: keep one type per blob.
                    let entries: Vec<PackEntry> = entries
                        .into_iter()
                        .map(|mut e| {
                            e.blob_type = if e.id.0[0] % 3 == 0 { BlobType::Tree } else { BlobType::Data };
                            e
                        })
                        .collect();
                    idx.add_pack(pack(p), &entries);
                    m.add_pack(pack(p), &entries);
                }
                Op::Without(ps) => {
                    let drop: HashSet<Id> = ps.into_iter().map(pack).collect();
                    idx = idx.without_packs(&drop);
                    m = m.without_packs(&drop);
                }
            }
            same(&idx, &m, &pool)?;
        }
    }

    /// Built at once from unsorted entries (as a load does): the same blobs, every copy kept
    /// once, and `get` gives one of the blob's copies; then added to, merged and filtered.
    #[test]
    fn built_at_once_holds_every_copy(
        es in proptest::collection::vec((0u8..30, 0u8..5, 0u32..1000), 0..200),
        more in proptest::collection::vec((0u8..40, 0u8..6), 0..60),
    ) {
        let packs: Vec<Id> = (0..5).map(pack).collect();
        let pe = |b: u8, off: u32| PackEntry { blob_type: BlobType::Data, id: blob(b), offset: off, length: 50, raw_len: 20 };
        // Split into parts at arbitrary points, as per-file decoding does.
        let full: Vec<Vec<Keyed<30>>> = es.chunks(7).map(|c| c.iter().map(|&(b, p, off)| keyed(&blob(b), p as u32, &pe(b, off))).collect()).collect();
        let compact: Vec<Vec<Keyed<14>>> = es.chunks(5).map(|c| c.iter().map(|&(b, p, off)| keyed(&blob(b), p as u32, &pe(b, off))).collect()).collect();
        let mut idx = Index::from_full(packs.clone(), full);
        let mut cidx = Index::from_compact(packs, compact, vec![]);
        let mut want: Vec<(Id, u32)> = es.iter().map(|&(b, p, _)| (blob(b), p as u32)).collect();
        want.sort();
        want.dedup();
        let mut got: Vec<(Id, u32)> = idx.iter_all().map(|(i, _, l)| (i, l.pack)).collect();
        got.sort();
        prop_assert_eq!(&got, &want);
        let distinct: HashSet<Id> = want.iter().map(|w| w.0).collect();
        prop_assert_eq!(idx.len(), distinct.len());
        prop_assert_eq!(cidx.len(), distinct.len());
        for (b, _) in &want {
            let (p, l) = idx.get(b).unwrap();
            prop_assert!(want.contains(&(*b, l.pack)));
            prop_assert_eq!(p, idx.packs()[l.pack as usize]);
            prop_assert_eq!(cidx.get(b), idx.get(b));
        }
        // Adds after the load (merged in place) and a filter agree between the modes and
        // keep every copy.
        for &(b, p) in &more {
            idx.add_pack(pack(p), &[pe(b, 7)]);
            cidx.add_pack(pack(p), &[pe(b, 7)]);
        }
        let drop: HashSet<Id> = [pack(1)].into_iter().collect();
        for ix in [idx.clone(), idx.without_packs(&drop)] {
            let c = if ix.packs().contains(&pack(1)) { cidx.clone() } else { cidx.without_packs(&drop) };
            prop_assert_eq!(c.len(), ix.len());
            prop_assert_eq!(c.packs(), ix.packs());
            for b in (0..40).map(blob) {
                prop_assert_eq!(c.get(&b), ix.get(&b));
                prop_assert_eq!(c.locations(&b), ix.locations(&b));
            }
            let copies: usize = (0..40).map(|b| ix.locations(&blob(b)).len()).sum();
            prop_assert_eq!(ix.iter_all().count(), copies);
        }
    }
}

#[test]
fn entries_are_30_bytes_in_a_compact_index() {
    assert_eq!(std::mem::size_of::<Entry<14>>(), 30);
    assert_eq!(std::mem::size_of::<Entry<30>>(), 46);
}

#[test]
fn a_compact_index_matches_on_the_first_128_bits_and_keeps_tree_ids() {
    let mut idx = Index::new(IdMode::Compact);
    let mut a = Id::of_bytes(b"a");
    let e = |id, t| PackEntry {
        blob_type: t,
        id,
        offset: 0,
        length: 50,
        raw_len: 9,
    };
    idx.add_pack(pack(1), &[e(a, BlobType::Tree)]);
    assert_eq!(idx.trees(), vec![(a, pack(1), idx.get(&a).unwrap().1)]);
    // Another id with the same first 16 bytes finds the same entry: the reader's full-id check
    // (blob::open) is what refuses it.
    a.0[31] ^= 1;
    assert!(idx.contains(&a));
    a.0[15] ^= 1;
    assert!(!idx.contains(&a));
}

#[test]
#[should_panic(expected = "IdMode::Full")]
fn listing_whole_ids_of_a_compact_index_is_refused() {
    let idx = Index::new(IdMode::Compact);
    let _ = idx.iter_all().count();
}
