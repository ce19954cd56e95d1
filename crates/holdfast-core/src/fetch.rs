//! Pack-grouped reads: many small blobs of one pack fetched with one ranged read.
//!
//! On object storage every read is a request with its own latency, so restoring many small
//! files blob by blob is bound by request count, not bandwidth. Blobs are grouped by pack and
//! sorted by offset; neighbours closer than a gap limit join one range, up to a span limit (so
//! several workers still share a big pack). The bytes of a gap are read and dropped: a restore
//! of a whole snapshot needs nearly every blob of its packs, so gaps are rare and small.

use holdfast_storage::ObjectKind;

use crate::blob::BlobType;
use crate::error::Result;
use crate::id::Id;
use crate::index::{Index, Location};
use crate::repo::Repository;

/// Read gaps up to this size rather than splitting the range.
pub const MAX_GAP: u64 = 256 * 1024;
/// Never read more than this in one range.
pub const MAX_SPAN: u64 = 8 * 1024 * 1024;
/// The span limit for tree blobs: smaller, so one level's trees spread over many readers.
pub const TREE_SPAN: u64 = 2 * 1024 * 1024;

/// One ranged read of a pack and the items it serves.
#[derive(Debug)]
pub struct Batch<T> {
    /// The pack.
    pub pack: Id,
    /// First byte read.
    pub start: u64,
    /// One past the last byte read.
    pub end: u64,
    /// Each item, with its blob and where the blob lies in the pack.
    pub items: Vec<(T, Id, Location)>,
}

impl<T> Batch<T> {
    /// The stored bytes of one item's blob within the batch's bytes (`buf` = `start..end`).
    pub fn slice<'b>(&self, buf: &'b [u8], loc: &Location) -> Option<&'b [u8]> {
        let from = (loc.offset as u64).checked_sub(self.start)? as usize;
        buf.get(from..from + loc.length as usize)
    }

    /// Fetch the batch's range of its pack (one ranged read) and open each item's data blob
    /// from it, in order. A blob the range does not give (the read failed or came back short)
    /// is read on its own, so an error is the blob's, never the range's.
    pub fn open_each<'a>(
        &'a self,
        repo: &'a Repository,
        index: &'a Index,
    ) -> impl Iterator<Item = (&'a (T, Id, Location), Result<Vec<u8>>)> + 'a {
        let buf = repo
            .storage()
            .get_range(
                ObjectKind::Pack,
                &self.pack.to_hex(),
                self.start,
                self.end - self.start,
            )
            .ok();
        self.items.iter().map(move |item| {
            let (_, id, loc) = item;
            let data = match buf.as_deref().and_then(|b| self.slice(b, loc)) {
                Some(stored) => repo.open_blob(BlobType::Data, id, &self.pack, stored, loc.raw_len),
                None => repo.read_blob(index, BlobType::Data, id),
            };
            (item, data)
        })
    }
}

/// Group items (each needing one blob) into batches. Items whose blob is not indexed come back
/// in the second list, for the caller to report.
pub fn batches<T>(
    items: Vec<(T, Id)>,
    index: &Index,
    max_gap: u64,
    max_span: u64,
) -> (Vec<Batch<T>>, Vec<T>) {
    let mut located = Vec::with_capacity(items.len());
    let mut missing = Vec::new();
    for (t, id) in items {
        match index.get(&id) {
            Some((pack, loc)) => located.push((pack, loc, t, id)),
            None => missing.push(t),
        }
    }
    located.sort_by_key(|(pack, loc, _, _)| (*pack, loc.offset));
    let mut out: Vec<Batch<T>> = Vec::new();
    for (pack, loc, t, id) in located {
        let (s, e) = (loc.offset as u64, loc.offset as u64 + loc.length as u64);
        match out.last_mut() {
            Some(b)
                if b.pack == pack && s <= b.end + max_gap && e.max(b.end) - b.start <= max_span =>
            {
                b.end = b.end.max(e);
                b.items.push((t, id, loc));
            }
            _ => out.push(Batch {
                pack,
                start: s,
                end: e,
                items: vec![(t, id, loc)],
            }),
        }
    }
    (out, missing)
}

/// Group one file's blobs, in file order, into ranged reads: a blob joins the previous read if
/// it lies in the same pack, within the gap limit of the read's bytes (before or after them)
/// and the read stays within the span limit (a backup writes a file's chunks close together,
/// though the big-file pipeline may pack neighbours out of order, so a whole file is usually a
/// few reads). Items are the blobs' positions in `ids`, in file order. `None` if a blob is not indexed: the caller then reads blob by
/// blob, which names the missing blob and where the file breaks.
pub fn runs(ids: &[Id], index: &Index, max_gap: u64, max_span: u64) -> Option<Vec<Batch<usize>>> {
    let mut out: Vec<Batch<usize>> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (pack, loc) = index.get(id)?;
        let (s, e) = (loc.offset as u64, loc.offset as u64 + loc.length as u64);
        match out.last_mut() {
            Some(b)
                if b.pack == pack
                    && s <= b.end + max_gap
                    && e + max_gap >= b.start
                    && e.max(b.end) - s.min(b.start) <= max_span =>
            {
                b.start = b.start.min(s);
                b.end = b.end.max(e);
                b.items.push((i, *id, loc));
            }
            _ => out.push(Batch {
                pack,
                start: s,
                end: e,
                items: vec![(i, *id, loc)],
            }),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobType;
    use crate::pack::PackEntry;

    fn entry(seed: u8, offset: u32, length: u32) -> PackEntry {
        PackEntry {
            id: Id::of_bytes(&[seed]),
            blob_type: BlobType::Data,
            offset,
            length,
            raw_len: length,
        }
    }

    /// Two packs holding the given entries.
    fn two_packs(first: &[PackEntry], second: &[PackEntry]) -> (Id, Id, Index) {
        let (p1, p2) = (Id::of_bytes(b"pack1"), Id::of_bytes(b"pack2"));
        let mut index = Index::default();
        index.add_pack(p1, first);
        index.add_pack(p2, second);
        (p1, p2, index)
    }

    #[test]
    fn file_runs_table() {
        let (p1, p2, index) = two_packs(
            &[
                entry(1, 0, 100),
                entry(2, 100, 100),
                entry(3, 200 + 300_000, 100), // beyond the gap limit
                entry(4, 300_400, 100),
                entry(5, 400_000, 8_300_000), // would exceed the span
            ],
            &[entry(6, 0, 10)],
        );
        let ids = |seeds: &[u8]| -> Vec<Id> { seeds.iter().map(|s| Id::of_bytes(&[*s])).collect() };
        let shape = |seeds: &[u8]| -> Vec<(Id, u64, u64, Vec<usize>)> {
            runs(&ids(seeds), &index, MAX_GAP, MAX_SPAN)
                .unwrap()
                .iter()
                .map(|b| {
                    (
                        b.pack,
                        b.start,
                        b.end,
                        b.items.iter().map(|i| i.0).collect(),
                    )
                })
                .collect()
        };
        // In order and adjacent: one read; gap too big, other pack, or span exceeded: new read.
        assert_eq!(
            shape(&[1, 2, 3, 4, 5, 6]),
            vec![
                (p1, 0, 200, vec![0, 1]),
                (p1, 300_200, 300_500, vec![2, 3]),
                (p1, 400_000, 8_700_000, vec![4]),
                (p2, 0, 10, vec![5]),
            ]
        );
        // A blob that lies just before the previous one (a repeated chunk, or neighbours the
        // big-file pipeline packed out of order) joins the read, which grows backwards;
        // positions stay in file order.
        assert_eq!(shape(&[2, 1, 1]), vec![(p1, 0, 200, vec![0, 1, 2])]);
        // One far before it, or one that would stretch the read past the span, does not.
        assert_eq!(
            shape(&[4, 1, 5, 4]),
            vec![
                (p1, 300_400, 300_500, vec![0]),
                (p1, 0, 100, vec![1]),
                (p1, 400_000, 8_700_000, vec![2]),
                (p1, 300_400, 300_500, vec![3]),
            ]
        );
        assert!(runs(&[Id::of_bytes(b"unindexed")], &index, MAX_GAP, MAX_SPAN).is_none());
        assert!(runs(&[], &index, MAX_GAP, MAX_SPAN).unwrap().is_empty());
    }

    #[test]
    fn grouping_table() {
        let (p1, p2, index) = two_packs(
            &[
                entry(1, 0, 100),
                entry(2, 100, 100),
                entry(3, 200 + 300_000, 100), // beyond the gap limit
                entry(4, 400_000, 5_000_000),
                entry(5, 5_500_000, 5_000_000), // near, but would exceed the span
            ],
            &[entry(6, 50, 10)],
        );
        let mut items: Vec<(u8, Id)> = (1..=6).map(|s| (s, Id::of_bytes(&[s]))).collect();
        items.push((9, Id::of_bytes(b"unindexed")));
        items.push((7, Id::of_bytes(&[1]))); // two items, one blob
        items.reverse();
        let (b, missing) = batches(items, &index, MAX_GAP, MAX_SPAN);
        assert_eq!(missing, vec![9]);
        let got: Vec<(Id, u64, u64, Vec<u8>)> = b
            .iter()
            .map(|b| {
                let mut t: Vec<u8> = b.items.iter().map(|(t, _, _)| *t).collect();
                t.sort();
                (b.pack, b.start, b.end, t)
            })
            .collect();
        let mut want = vec![
            (p1, 0, 200, vec![1, 2, 7]),
            (p1, 300_200, 5_400_000, vec![3, 4]),
            (p1, 5_500_000, 10_500_000, vec![5]),
            (p2, 50, 60, vec![6]),
        ];
        want.sort_by_key(|w| (w.0, w.1));
        let mut got = got;
        got.sort_by_key(|g| (g.0, g.1));
        assert_eq!(got, want);
        // Slices land on the right bytes.
        let first = b.iter().find(|b| b.start == 300_200).unwrap();
        let buf: Vec<u8> = (0..(first.end - first.start))
            .map(|i| (i % 251) as u8)
            .collect();
        let loc = first.items.iter().find(|(t, _, _)| *t == 4).unwrap().2;
        let s = first.slice(&buf, &loc).unwrap();
        assert_eq!(s.len(), 5_000_000);
        assert_eq!(s[0], ((400_000 - 300_200) % 251) as u8);
    }
}
