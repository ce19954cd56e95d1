//! Loading every index file into one [`Index`]: files are read, authenticated and decoded on
//! all cores at once, straight into index entries, and the entries are sorted once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use holdfast_storage::ObjectKind;

use crate::blob::BlobType;
use crate::blobindex::{IdMode, Index};
use crate::blobtable::{keyed, Keyed};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{IndexFile, Visit};
use crate::repo::{check_object_len, Repository};

/// One index file's entries, with pack numbers local to the file.
#[derive(Default)]
struct Part {
    packs: Vec<Id>,
    compact: Vec<Keyed<14>>,
    full: Vec<Keyed<30>>,
    trees: Vec<Id>,
}

enum Outcome {
    Read(Part),
    /// Damaged: skipped, its packs are indexed from their headers.
    Damaged(String),
    /// Listed, then replaced by a concurrent prune: its content is in the new file.
    Gone,
    Failed(Error),
}

fn decode(repo: &Repository, name: &str, size: u64, mode: IdMode) -> Outcome {
    let read = check_object_len(ObjectKind::Index, name, size).and_then(|()| {
        let raw = repo.storage().get(ObjectKind::Index, name)?;
        check_object_len(ObjectKind::Index, name, raw.len() as u64)?;
        if Id::from_hex(name) != Some(Id::of_bytes(&raw)) {
            return Err(Error::corrupt(
                format!("index {name}"),
                "content does not match its name",
            ));
        }
        let plain = repo
            .key()
            .decrypt(crate::index::AAD, &raw)
            .map_err(|e| Error::corrupt(format!("index {name}"), e.to_string()))?;
        drop(raw);
        let mut part = Part::default();
        IndexFile::visit(name, &plain, |v| match v {
            Visit::Pack(p, n) => {
                part.packs.push(*p);
                match mode {
                    IdMode::Compact => part.compact.reserve(n),
                    IdMode::Full => part.full.reserve(n),
                }
            }
            Visit::Entry(e) => {
                let p = part.packs.len() as u32 - 1;
                match mode {
                    IdMode::Compact => {
                        part.compact.push(keyed(&e.id, p, e));
                        if e.blob_type == BlobType::Tree {
                            part.trees.push(e.id);
                        }
                    }
                    IdMode::Full => part.full.push(keyed(&e.id, p, e)),
                }
            }
        })?;
        Ok(part)
    });
    match read {
        Ok(p) => Outcome::Read(p),
        Err(e @ Error::Corrupt { .. }) => Outcome::Damaged(e.to_string()),
        Err(Error::Storage(e)) if e.is_not_found() => Outcome::Gone,
        Err(e) => Outcome::Failed(e),
    }
}

/// Read every index file (see [`Repository::load_index_files`]): the index, the ids of the
/// files read (damaged ones included), and what was wrong with each damaged one.
pub(crate) fn load(repo: &Repository, mode: IdMode) -> Result<(Index, Vec<Id>, Vec<String>)> {
    let listed = repo.storage().list(ObjectKind::Index)?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(listed.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<Outcome>>> = Mutex::new((0..listed.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(o) = listed.get(i) else { break };
                let out = decode(repo, &o.name, o.size, mode);
                slots.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(out);
            });
        }
    });
    let outcomes = slots.into_inner().unwrap_or_else(|e| e.into_inner());

    // Number packs in listing order, as reading the files one by one would.
    let mut packs = Vec::new();
    let mut pack_pos: HashMap<Id, u32> = HashMap::new();
    let mut files = Vec::new();
    let mut damaged = Vec::new();
    let mut parts = Vec::new();
    for (o, out) in listed.iter().zip(outcomes) {
        match out.expect("every file decoded") {
            Outcome::Read(part) => {
                let map: Vec<u32> = part
                    .packs
                    .iter()
                    .map(|p| {
                        *pack_pos.entry(*p).or_insert_with(|| {
                            packs.push(*p);
                            packs.len() as u32 - 1
                        })
                    })
                    .collect();
                parts.push((map, part));
            }
            Outcome::Damaged(e) => {
                tracing::warn!("{e}; its packs are indexed from their headers instead");
                damaged.push(e);
            }
            Outcome::Gone => continue,
            Outcome::Failed(e) => return Err(e),
        }
        if let Some(id) = Id::from_hex(&o.name) {
            files.push(id);
        }
    }
    // Pack numbers of the whole index, in place.
    let renumber = |(map, mut part): (Vec<u32>, Part)| {
        for (_, e) in part.compact.iter_mut() {
            e.loc.set_pack(map[e.loc.pack() as usize]);
        }
        for (_, e) in part.full.iter_mut() {
            e.loc.set_pack(map[e.loc.pack() as usize]);
        }
        part
    };
    let index = match mode {
        IdMode::Compact => {
            let mut trees = Vec::new();
            let parts = parts
                .into_iter()
                .map(|p| {
                    let mut p = renumber(p);
                    trees.append(&mut p.trees);
                    p.compact
                })
                .collect();
            Index::from_compact(packs, parts, trees)
        }
        IdMode::Full => {
            Index::from_full(packs, parts.into_iter().map(|p| renumber(p).full).collect())
        }
    };
    Ok((index, files, damaged))
}
