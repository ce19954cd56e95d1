//! `check`: verify the repository's structure, and with `read_data` every byte of its packs.
//! Also the recovery of packs that an interrupted writer stored but never indexed.

use std::collections::{HashMap, HashSet};

use holdfast_storage::ObjectKind;
use serde::Serialize;

use crate::blob::{self, BlobType};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{Index, IndexFile};
use crate::pack::{self, PackEntry};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::snapshot;
use crate::tree::{NodeKind, Tree};

/// How much pack data to read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    /// Structure only.
    None,
    /// Every pack.
    All,
    /// A random share of the packs, in percent.
    Subset(f64),
}

/// What check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Snapshots checked.
    pub snapshots: usize,
    /// Packs in the repository.
    pub packs: usize,
    /// Packs whose data was read.
    pub packs_read: usize,
    /// Distinct trees walked.
    pub trees: usize,
    /// Problems that mean lost or unreadable data.
    pub errors: Vec<String>,
    /// Harmless findings (packs left by interrupted backups, ...).
    pub warnings: Vec<String>,
    /// Damaged objects.
    pub damaged: Vec<String>,
    /// Files (and trees) that a damaged or missing blob affects: `snapshot-id:path`.
    pub affected: Vec<String>,
    /// History entries read.
    pub history_entries: usize,
    /// Snapshots that vanished outside forget (ids).
    pub vanished: Vec<String>,
}

impl CheckReport {
    /// Whether the repository is sound.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Read a pack's header from storage with two ranged reads (see
/// [`Repository::read_pack_header`]).
pub fn read_pack_header(repo: &Repository, name: &str, size: u64) -> Result<Vec<PackEntry>> {
    repo.read_pack_header(name, size)
}

/// Read a whole pack and verify it as `check --read-data` does: its BLAKE3 equals its name, its
/// header decrypts and parses, and every blob it lists authenticates (decrypts, decompresses to
/// its length, and hashes to its id). Returns its entries. `size` is its listed size, bounded
/// before anything is read.
pub fn verify_pack(repo: &Repository, name: &str, size: u64) -> Result<Vec<PackEntry>> {
    let limit = max_pack_len(repo);
    if size > limit {
        return Err(Error::corrupt(
            format!("pack {name}"),
            format!("{size} bytes, more than a pack of this repository can hold ({limit})"),
        ));
    }
    let data = repo.storage().get(ObjectKind::Pack, name)?;
    if Id::from_hex(name) != Some(Id::of_bytes(&data)) {
        return Err(Error::corrupt(
            format!("pack {name}"),
            "content does not match its name (damaged on storage)",
        ));
    }
    let entries = pack::read_header(repo.key(), name, &data)?;
    for e in &entries {
        let stored = &data[e.offset as usize..e.offset as usize + e.length as usize];
        blob::open(repo.key(), e.blob_type, &e.id, stored, e.raw_len)?;
    }
    Ok(entries)
}

/// The largest pack a writer of this repository makes: the target size, plus one blob of the
/// largest chunk the chunker can cut, plus the largest header a reader accepts.
pub fn max_pack_len(repo: &Repository) -> u64 {
    repo.config().pack_size as u64 + blob::MAX_STORED_LEN as u64 + pack::MAX_HEADER as u64 + 4
}

/// What [`adopt_orphans`] did.
#[derive(Debug, Clone, Default)]
pub struct Adoption {
    /// Packs verified and indexed.
    pub adopted: usize,
    /// Packs that failed verification, with the reason: not adopted, left for prune.
    pub damaged: Vec<String>,
}

/// Drop from `index` the packs that are gone, and index packs that exist but that no index file
/// names (left by an interrupted writer), unless garbage collection condemned them. Every such pack is read whole and verified first
/// ([`verify_pack`]): a writer deduplicates against adopted blobs, so a damaged one would end up
/// in a snapshot that cannot be restored. A damaged orphan is reported (a warning naming it)
/// and left unindexed; prune condemns it like any unindexed pack.
pub fn adopt_orphans(
    repo: &Repository,
    index: &mut Index,
    condemned: &HashSet<Id>,
) -> Result<Adoption> {
    let mut found = Vec::new();
    let mut report = Adoption::default();
    let listing = repo.storage().list(ObjectKind::Pack)?;
    let listed: HashSet<Id> = listing
        .iter()
        .filter_map(|o| Id::from_hex(&o.name))
        .collect();
    // Entries of packs that are gone must not be deduplicated against (see
    // `Repository::load_index_and_gone`).
    let gone = crate::repo::gone_packs(index, &listed);
    if !gone.is_empty() {
        *index = index.without_packs(&gone);
    }
    for o in listing {
        let Some(id) = Id::from_hex(&o.name) else {
            continue;
        };
        if index.has_pack(&id) || condemned.contains(&id) {
            continue;
        }
        match verify_pack(repo, &o.name, o.size) {
            Ok(entries) => found.push((id, entries)),
            Err(Error::Storage(e)) if e.is_not_found() => continue, // pruned meanwhile
            Err(e @ Error::Corrupt { .. }) => {
                tracing::warn!(
                    "pack {} was left by an interrupted writer and is damaged, so it is not adopted (prune removes it): {e}",
                    o.name
                );
                report.damaged.push(format!("pack {}: {e}", o.name));
            }
            Err(e) => return Err(e),
        }
    }
    if found.is_empty() {
        return Ok(report);
    }
    for (id, entries) in &found {
        index.add_pack(*id, entries);
    }
    report.adopted = found.len();
    crate::writer::write_index(repo, found)?;
    tracing::info!(
        "adopted {} verified pack(s) left unindexed by an interrupted writer",
        report.adopted
    );
    Ok(report)
}

/// Check the repository.
pub fn check(
    repo: &Repository,
    read_data: ReadData,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    progress.phase("check structure");
    // Snapshots first, then the index, then the packs: each is written after the one before
    // it, so a backup finishing meanwhile cannot look like damage.
    let (snaps, bad) = snapshot::load_all(repo)?;
    let mut index = Index::default();
    let mut pack_entries: HashMap<Id, Vec<PackEntry>> = HashMap::new();
    for o in repo.storage().list(ObjectKind::Index)? {
        let read = crate::repo::check_object_len(ObjectKind::Index, &o.name, o.size)
            .and_then(|()| repo.read_index_file(&o.name));
        match read {
            Ok(IndexFile { packs: ps, .. }) => {
                for (p, entries) in ps {
                    index.add_pack(p, &entries);
                    pack_entries.entry(p).or_insert(entries);
                }
            }
            // Listed, then replaced by a prune (or a listing that lags the delete): its content
            // is in the file that replaced it. Were it lost instead, the blobs it named are
            // unindexed and reported below.
            Err(Error::Storage(e)) if e.is_not_found() => {}
            Err(e) => {
                r.damaged.push(format!("index {}", o.name));
                r.errors.push(e.to_string());
            }
        }
    }
    let packs: HashMap<Id, u64> = repo
        .storage()
        .list(ObjectKind::Pack)?
        .into_iter()
        .filter_map(|o| Id::from_hex(&o.name).map(|id| (id, o.size)))
        .collect();
    r.packs = packs.len();
    // Packs the index names that are gone: readers ignore their entries, so they are an error
    // only if a snapshot needs a blob that is nowhere else (decided after the walk below).
    let mut gone: HashSet<Id> = HashSet::new();
    for (p, entries) in &pack_entries {
        match packs.get(p) {
            None => {
                gone.insert(*p);
            }
            Some(&size) => {
                let end = entries
                    .iter()
                    .map(|e| e.offset as u64 + e.length as u64)
                    .max()
                    .unwrap_or(0);
                if end + 4 > size {
                    r.errors.push(format!(
                        "pack {p} is {size} bytes, shorter than its indexed blobs ({end})"
                    ));
                }
            }
        }
    }
    let condemned = crate::session::condemned_packs(repo)?;
    for p in packs.keys() {
        if !pack_entries.contains_key(p) && !condemned.contains(p) {
            r.warnings.push(format!(
                "pack {p} is not indexed (left by an interrupted backup: the next backup adopts it, prune removes it if unused)"
            ));
        }
    }

    gc_findings(repo, &mut r)?;
    for e in bad {
        r.errors.push(e.to_string());
    }
    r.snapshots = snaps.len();
    // Walk every tree once, as readers see the index (without the packs that are gone);
    // remember which blobs are missing or unreadable, and which gone packs held them.
    let present = index.without_packs(&gone);
    let mut needed_gone: HashSet<Id> = HashSet::new();
    let mut in_gone_pack = |id: &Id| match index.get(id) {
        Some((p, _)) if gone.contains(&p) => {
            needed_gone.insert(p);
            true
        }
        _ => false,
    };
    let mut seen: HashSet<Id> = HashSet::new();
    let mut lost: HashSet<Id> = HashSet::new();
    for s in &snaps {
        let mut stack = vec![s.snapshot.tree];
        while let Some(t) = stack.pop() {
            if !seen.insert(t) {
                continue;
            }
            let tree = match repo
                .read_blob(&present, BlobType::Tree, &t)
                .and_then(|d| Tree::decode(&t, &d))
            {
                Ok(tree) => tree,
                Err(e) => {
                    lost.insert(t);
                    in_gone_pack(&t);
                    r.errors.push(e.to_string());
                    continue;
                }
            };
            for n in &tree.nodes {
                if let Some(sub) = n.subtree {
                    stack.push(sub);
                }
                for c in &n.content {
                    if !present.contains(c) && lost.insert(*c) && !in_gone_pack(c) {
                        r.errors
                            .push(format!("data blob {c} is missing from the index"));
                    }
                }
            }
        }
    }
    r.trees = seen.len();
    let mut gone: Vec<Id> = gone.into_iter().collect();
    gone.sort();
    for p in gone {
        if needed_gone.contains(&p) {
            r.errors.push(format!(
                "pack {p} is named by the index but missing, and snapshots need blobs that are only there"
            ));
        } else {
            r.warnings.push(format!(
                "pack {p} is named by the index but missing; no snapshot needs its blobs, and readers and backups ignore its entries (a backup that a prune counted as dead indexed it after the prune deleted it, or an old index file was put back): `holdfast prune` removes the entries"
            ));
        }
    }

    let selected: Vec<(&Id, &Vec<PackEntry>)> = match read_data {
        ReadData::None => Vec::new(),
        ReadData::All => pack_entries.iter().collect(),
        ReadData::Subset(pct) => {
            let mut v: Vec<_> = pack_entries.iter().collect();
            v.sort_by_key(|(id, _)| **id);
            let n = ((v.len() as f64 * pct / 100.0).ceil() as usize).min(v.len());
            use rand::seq::SliceRandom;
            v.shuffle(&mut rand::thread_rng());
            v.truncate(n);
            v
        }
    };
    if !selected.is_empty() {
        progress.phase("check data");
        progress.add_total(
            selected.len() as u64,
            selected
                .iter()
                .map(|(p, _)| packs.get(*p).copied().unwrap_or(0))
                .sum(),
        );
    }
    for (p, entries) in selected {
        r.packs_read += 1;
        let name = p.to_hex();
        let data = match repo.storage().get(ObjectKind::Pack, &name) {
            Ok(d) => d,
            Err(e) if e.is_not_found() => continue, // reported above
            Err(e) => return Err(e.into()),
        };
        progress.inc(1, data.len() as u64);
        if Id::of_bytes(&data) != *p {
            r.damaged.push(format!("pack {name}"));
            r.errors.push(format!(
                "pack {name}: content does not match its name (damaged on storage)"
            ));
        }
        if let Err(e) = pack::read_header(repo.key(), &name, &data) {
            r.errors.push(e.to_string());
        }
        for e in entries {
            let range = e.offset as usize..(e.offset as usize + e.length as usize);
            let ok = data
                .get(range)
                .ok_or_else(|| Error::corrupt(format!("pack {name}"), "truncated"))
                .and_then(|s| blob::open(repo.key(), e.blob_type, &e.id, s, e.raw_len));
            if let Err(err) = ok {
                if lost.insert(e.id) {
                    r.errors.push(format!("{err} (in pack {name})"));
                }
            }
        }
    }
    if !lost.is_empty() {
        r.affected = affected_paths(repo, &present, &snaps, &lost);
    }
    trust(repo, &mut r)?;
    progress.finish();
    Ok(r)
}

/// What an attacker with write access to the store could have changed: snapshots that vanished
/// outside forget, a cut or rolled-back history, unreadable records, a lost retention lock, an
/// unauthenticated config.
fn trust(repo: &Repository, r: &mut CheckReport) -> Result<()> {
    let st = crate::records::lock_state(repo)?;
    r.history_entries = st.audit.entries;
    r.vanished = st.audit.vanished.iter().map(|v| v.id.to_hex()).collect();
    r.errors.extend(st.audit.errors());
    r.warnings.extend(st.audit.warnings());
    for d in &st.audit.damaged_names {
        r.damaged.push(format!("history {d}"));
    }
    for u in &st.unreadable {
        r.damaged
            .push(u.split(" is damaged").next().unwrap_or(u).to_string());
        r.errors.push(format!(
            "{u}: it may be a retention lock, so forget refuses until it is restored from a copy (or removed, if you know it is not a lock)"
        ));
    }
    if let Some(m) = st.lock_record_lost() {
        r.errors.push(m);
    }
    if !repo.config().is_authenticated_format() {
        r.warnings.push(format!(
            "the config is format version {} and not authenticated: anyone with write access to the store can change its settings unnoticed; run `holdfast migrate`",
            repo.config().version
        ));
    }
    Ok(())
}

/// Garbage-collection state that holds space or blocks prune: unreadable session records and
/// plans, and temporary files of interrupted writes. Each finding names the object and the fix.
fn gc_findings(repo: &Repository, r: &mut CheckReport) -> Result<()> {
    use crate::session;
    for s in session::sessions(repo, chrono::Utc::now())? {
        if s.record.is_none() {
            r.warnings.push(format!(
                "{}{}",
                s.describe(),
                if s.verdict.is_live() {
                    ": it holds back garbage collection"
                } else {
                    ": `holdfast prune` removes it"
                }
            ));
        }
    }
    for (name, why) in session::load_plans_lenient(repo)?.1 {
        r.warnings.push(format!(
            "gc plan gc/{name} cannot be read ({why}): it condemns nothing anyone can read; `holdfast prune` removes it"
        ));
    }
    let (n, bytes) = repo
        .storage()
        .stale_temporaries(session::STALE_AFTER, false)?;
    if n > 0 {
        r.warnings.push(format!(
            "tmp/ holds {n} file(s), {}, left by interrupted writes more than {} minutes ago: `holdfast prune` removes them",
            crate::util::human_bytes(bytes),
            session::STALE_AFTER.as_secs() / 60
        ));
    }
    Ok(())
}

/// Which files and directories of which snapshots reference any of `lost`.
pub fn affected_paths(
    repo: &Repository,
    index: &Index,
    snaps: &[snapshot::SnapshotEntry],
    lost: &HashSet<Id>,
) -> Vec<String> {
    let mut out = Vec::new();
    for s in snaps {
        let mut stack = vec![(s.snapshot.tree, String::new())];
        while let Some((t, path)) = stack.pop() {
            if lost.contains(&t) {
                out.push(format!("{}:{}/ (directory listing)", s.id.short(), path));
                continue;
            }
            let Ok(tree) = repo
                .read_blob(index, BlobType::Tree, &t)
                .and_then(|d| Tree::decode(&t, &d))
            else {
                continue;
            };
            for n in &tree.nodes {
                let p = format!("{path}/{}", n.name.display());
                if n.kind == NodeKind::Dir {
                    if let Some(sub) = n.subtree {
                        stack.push((sub, p));
                    }
                } else if n.content.iter().any(|c| lost.contains(c)) {
                    out.push(format!("{}:{p}", s.id.short()));
                }
            }
        }
    }
    out.sort();
    out
}
