//! Writing blobs: packing them, uploading packs in the background, and indexing them.
//!
//! Order of writes (the crash-safety argument, see docs/DESIGN.md): a pack is stored whole under
//! its final name; every [`INDEX_EVERY`] packs the backend is flushed (the packs are durable) and
//! only then an index file naming them is written and flushed. A snapshot is written only after
//! [`BlobWriter::finish`] returned, so everything it references is indexed and durable.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Sender};
use holdfast_storage::{ObjectKind, PutMode};

use crate::blob::{BlobType, Compressor};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::Index;
use crate::index::IndexFile;
use crate::pack::{PackBuilder, PackEntry};
use crate::repo::Repository;

/// Packs per index file while a backup runs (a crash loses at most this many packs' index
/// entries, and the next backup adopts those packs from their headers).
pub const INDEX_EVERY: usize = 8;

/// What a writer stored.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Packs written (their entries are in the index files written, not kept here: memory
    /// holds a pack id per pack, not an entry per blob).
    pub packs: Vec<Id>,
    /// Index files written.
    pub index_files: Vec<Id>,
    /// Bytes of packs written.
    pub bytes: u64,
}

struct Sealed {
    bytes: Vec<u8>,
    id: Id,
    entries: Vec<PackEntry>,
}

/// Packs blobs and stores packs on a background thread. Shared by reference between workers.
pub struct BlobWriter {
    repo: Repository,
    current: Mutex<PackBuilder>,
    target: usize,
    tx: Mutex<Option<Sender<Sealed>>>,
    uploader: Mutex<Option<JoinHandle<Result<WriterStats>>>>,
    failed: Arc<Mutex<Option<String>>>,
}

impl BlobWriter {
    /// A writer into `repo`. With `dry_run`, packs are built and counted but not stored.
    pub fn new(repo: &Repository, dry_run: bool) -> Self {
        let target = repo.config().pack_size.max(1 << 20) as usize;
        let uploaders = repo.storage().write_concurrency().clamp(1, 16);
        let (tx, rx) = bounded::<Sealed>(uploaders - 1);
        let r = repo.clone();
        let failed = Arc::new(Mutex::new(None));
        let failed2 = failed.clone();
        let uploader = std::thread::Builder::new()
            .name("holdfast-upload".into())
            .spawn(move || {
                // Several uploads in flight: object stores are latency-bound per request.
                let stats = Mutex::new(WriterStats::default());
                let pending: Mutex<Vec<(Id, Vec<PackEntry>)>> = Mutex::new(Vec::new());
                let upload = |s: Sealed| -> Result<()> {
                    if !dry_run {
                        r.storage().put(
                            ObjectKind::Pack,
                            &s.id.to_hex(),
                            &s.bytes,
                            PutMode::Overwrite,
                        )?;
                    }
                    let full = {
                        let mut st = stats.lock().unwrap_or_else(|p| p.into_inner());
                        st.bytes += s.bytes.len() as u64;
                        st.packs.push(s.id);
                        let mut p = pending.lock().unwrap_or_else(|p| p.into_inner());
                        p.push((s.id, s.entries));
                        (p.len() >= INDEX_EVERY).then(|| std::mem::take(&mut *p))
                    };
                    if let (Some(batch), false) = (full, dry_run) {
                        let id = write_index(&r, batch)?;
                        stats
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .index_files
                            .push(id);
                    }
                    Ok(())
                };
                let res: Result<()> = std::thread::scope(|sc| {
                    let hs: Vec<_> = (0..uploaders)
                        .map(|_| {
                            let rx = rx.clone();
                            let (upload, failed2) = (&upload, &failed2);
                            sc.spawn(move || -> Result<()> {
                                for s in rx.iter() {
                                    if let Err(e) = upload(s) {
                                        *failed2.lock().unwrap_or_else(|p| p.into_inner()) =
                                            Some(e.to_string());
                                        // Drain so senders never block on a dead receiver.
                                        for _ in rx.iter() {}
                                        return Err(e);
                                    }
                                }
                                Ok(())
                            })
                        })
                        .collect();
                    let mut first = Ok(());
                    for h in hs {
                        let r = h.join().unwrap_or_else(|_| {
                            Err(Error::Refused("a pack uploader panicked".into()))
                        });
                        if first.is_ok() {
                            first = r;
                        }
                    }
                    first
                });
                res?;
                let rest = std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner()));
                let mut stats = stats.into_inner().unwrap_or_else(|p| p.into_inner());
                if !rest.is_empty() && !dry_run {
                    stats.index_files.push(write_index(&r, rest)?);
                }
                Ok(stats)
            })
            .expect("spawning a thread");
        BlobWriter {
            repo: repo.clone(),
            current: Mutex::new(PackBuilder::with_capacity(target + 4096)),
            target,
            tx: Mutex::new(Some(tx)),
            uploader: Mutex::new(Some(uploader)),
            failed,
        }
    }

    /// Add a stored (sealed) blob.
    pub fn add(&self, t: BlobType, id: Id, stored: &[u8], raw_len: u32) -> Result<()> {
        if let Some(msg) = self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Err(Error::Refused(format!("storing packs failed: {msg}")));
        }
        let full = {
            let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            // Close the pack before it would outgrow its buffer (no reallocation to twice the
            // size), or once it reached the target.
            let full = if !cur.is_empty() && cur.len() + stored.len() > self.target {
                Some(std::mem::replace(
                    &mut *cur,
                    PackBuilder::with_capacity(self.target + 4096),
                ))
            } else {
                None
            };
            cur.add(t, id, stored, raw_len);
            full
        };
        if let Some(b) = full {
            self.send(b)?;
        }
        Ok(())
    }

    fn send(&self, b: PackBuilder) -> Result<()> {
        let (bytes, id, entries) = b.finish(self.repo.key());
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match tx {
            Some(tx) => tx
                .send(Sealed { bytes, id, entries })
                .map_err(|_| Error::Refused("the pack uploader stopped".into())),
            None => Err(Error::Refused("the blob writer is finished".into())),
        }
    }

    /// Store the last partial pack, wait for every upload and index write; returns what was stored.
    pub fn finish(&self) -> Result<WriterStats> {
        let last = std::mem::take(&mut *self.current.lock().unwrap_or_else(|p| p.into_inner()));
        if !last.is_empty() {
            self.send(last)?;
        }
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let h = self
            .uploader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match h {
            Some(h) => h
                .join()
                .map_err(|_| Error::Refused("the pack uploader panicked".into()))?,
            None => Ok(WriterStats::default()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(h) = self
            .uploader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = h.join();
        }
    }
}

/// Make packs durable, then write and flush an index file naming them.
pub fn write_index(repo: &Repository, packs: Vec<(Id, Vec<PackEntry>)>) -> Result<Id> {
    repo.storage().flush()?;
    let id = repo.write_index_file(&IndexFile {
        packs,
        superseded: Vec::new(),
    })?;
    repo.storage().flush()?;
    Ok(id)
}

/// The ids a writer stored, in 32 bytes each: a sorted vector and a hash set of the newest,
/// merged into the vector when it reaches an eighth of it (a hash set of millions of ids costs
/// twice the bytes, and its growth doubles them again for a moment).
#[derive(Default)]
struct NewIds {
    sorted: Vec<Id>,
    recent: HashSet<Id>,
}

impl NewIds {
    /// Smallest number of recent ids merged at once.
    const MERGE_AT: usize = 1 << 14;

    fn contains(&self, id: &Id) -> bool {
        self.recent.contains(id) || self.sorted.binary_search(id).is_ok()
    }

    /// Add `id`; false if it was there.
    fn insert(&mut self, id: Id) -> bool {
        if self.sorted.binary_search(&id).is_ok() || !self.recent.insert(id) {
            return false;
        }
        if self.recent.len() >= Self::MERGE_AT.max(self.sorted.len() / 8) {
            self.sorted.reserve_exact(self.recent.len());
            self.sorted.extend(self.recent.drain());
            // Two sorted runs: the standard sort merges them in linear time.
            self.sorted.sort();
            self.recent = HashSet::new();
        }
        true
    }
}

/// Deduplicating blob storage for one writer: skips blobs the index (or this writer) already has.
pub struct Dedup<'a> {
    repo: &'a Repository,
    index: &'a Index,
    new_ids: Mutex<NewIds>,
    /// Packs of the index that blobs were deduplicated against (what the snapshot will need
    /// besides the packs this writer stores).
    hit_packs: Mutex<HashSet<Id>>,
    /// The pack writer.
    pub writer: BlobWriter,
    blobs_added: AtomicU64,
    bytes_added: AtomicU64,
}

impl<'a> Dedup<'a> {
    /// Store into `repo`, deduplicating against `index`.
    pub fn new(repo: &'a Repository, index: &'a Index, dry_run: bool) -> Self {
        Dedup {
            repo,
            index,
            new_ids: Mutex::new(NewIds::default()),
            hit_packs: Mutex::new(HashSet::new()),
            writer: BlobWriter::new(repo, dry_run),
            blobs_added: AtomicU64::new(0),
            bytes_added: AtomicU64::new(0),
        }
    }

    /// Whether the blob is already stored (or being stored by this writer).
    pub fn known(&self, id: &Id) -> bool {
        self.hit(id)
            || self
                .new_ids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(id)
    }

    /// Whether the index has the blob; if so, remember its pack.
    fn hit(&self, id: &Id) -> bool {
        match self.index.get(id) {
            Some((pack, _)) => {
                self.hit_packs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(pack);
                true
            }
            None => false,
        }
    }

    /// Every pack a snapshot of this writer's blobs may reference: the index packs it
    /// deduplicated against and the packs it stored (`stats`, from [`BlobWriter::finish`]).
    pub fn referenced_packs(&self, stats: &WriterStats) -> HashSet<Id> {
        let mut out = self
            .hit_packs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        out.extend(stats.packs.iter().copied());
        out
    }

    /// Store a blob unless it is known; returns its id.
    pub fn store(&self, c: &mut Compressor, t: BlobType, data: &[u8]) -> Result<Id> {
        if data.len() > crate::blob::max_raw_len(t) as usize {
            // Readers refuse larger blobs: storing one would make a snapshot nobody can read.
            return Err(Error::Refused(format!(
                "a {} of {} bytes exceeds the repository format's limit of {} bytes{}",
                if t == BlobType::Tree {
                    "directory listing"
                } else {
                    "chunk"
                },
                data.len(),
                crate::blob::max_raw_len(t),
                if t == BlobType::Tree {
                    ": split the directory or exclude part of it"
                } else {
                    ""
                }
            )));
        }
        let id = self.repo.key().blob_id(data);
        if self.hit(&id)
            || !self
                .new_ids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id)
        {
            return Ok(id);
        }
        let sealed = c.seal(self.repo.key(), t, &id, data);
        self.blobs_added.fetch_add(1, Ordering::Relaxed);
        self.bytes_added
            .fetch_add(sealed.len() as u64, Ordering::Relaxed);
        self.writer.add(t, id, &sealed, data.len() as u32)?;
        Ok(id)
    }

    /// Blobs and stored bytes added so far.
    pub fn added(&self) -> (u64, u64) {
        (
            self.blobs_added.load(Ordering::Relaxed),
            self.bytes_added.load(Ordering::Relaxed),
        )
    }
}

/// Before a writer records a snapshot that references `packs`: make sure garbage collection
/// has not deleted any of them while this writer was not looking.
///
/// The session's heartbeat is stored now (so no plan executes from here on while the writer
/// lives), then every pack is checked to exist (one listing): a missing one fails with
/// [`Error::SessionExpired`] and nothing is recorded. The check is unconditional: what could
/// tell the writer that a prune counted it as dead can be gone by now (a prune deletes the
/// plan it executed, the heartbeat re-creates a record that was removed or rolled back, a plan
/// put back carries its old date), but a deleted pack stays deleted.
pub fn confirm_before_snapshot(
    repo: &Repository,
    session: &crate::session::Session,
    packs: &HashSet<Id>,
) -> Result<()> {
    let lapsed = session.refresh()?;
    tracing::info!(
        "checking that the {} pack(s) this snapshot needs still exist (session lapsed: {lapsed})",
        packs.len()
    );
    packs_exist(repo, packs, lapsed)
}

/// After recording snapshot `id`: check the packs again (a prune that was already deleting when
/// the heartbeat was stored); if one is gone, remove the snapshot and fail, so no snapshot that
/// cannot be restored stays recorded.
pub fn confirm_after_snapshot(repo: &Repository, id: &Id, packs: &HashSet<Id>) -> Result<()> {
    if let Err(e) = packs_exist(repo, packs, false) {
        // Withdrawn like a forget (recorded before the delete), so the history does not take
        // it for a recovery point that vanished.
        crate::history::append(
            repo,
            vec![crate::history::Event::SnapshotsForgotten { ids: vec![*id] }],
        )?;
        repo.storage().delete(ObjectKind::Snapshot, &id.to_hex())?;
        repo.storage().flush()?;
        return Err(e);
    }
    Ok(())
}

fn packs_exist(repo: &Repository, packs: &HashSet<Id>, lapsed: bool) -> Result<()> {
    if packs.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = packs.iter().map(|p| p.to_hex()).collect();
    let have = repo.storage().exists_many(ObjectKind::Pack, &names)?;
    let missing: Vec<&String> = names
        .iter()
        .zip(have)
        .filter(|(_, h)| !h)
        .map(|(n, _)| n)
        .collect();
    if let Some(first) = missing.first() {
        return Err(Error::SessionExpired {
            detail: if lapsed {
                format!(
                    "its heartbeat stopped for about the {}-minute staleness window (a suspended or stalled process), or its record was removed or rolled back, so a prune counted it as dead",
                    crate::session::STALE_AFTER.as_secs() / 60
                )
            } else {
                "a prune deleted packs it uses: it counted this writer as dead (its session record was removed or rolled back meanwhile) or executed a plan put back from earlier".into()
            },
            missing: missing.len(),
            example: (*first).clone(),
        });
    }
    Ok(())
}

/// A callback run just before a backup records its snapshot (a test seam, see
/// `BackupOptions::before_snapshot`).
#[derive(Clone)]
pub struct BeforeSnapshot(pub std::sync::Arc<dyn Fn(&crate::session::Session) + Send + Sync>);

impl std::fmt::Debug for BeforeSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeSnapshot(..)")
    }
}

/// Record a writer's snapshot that references `packs`. Garbage collection may have counted the
/// writer dead (suspended past the staleness window, or its record tampered with) and deleted
/// what it references, so this confirms first ([`confirm_before_snapshot`]) and again after.
pub fn record_snapshot(
    repo: &Repository,
    session: &crate::session::Session,
    packs: &HashSet<Id>,
    snap: &crate::snapshot::Snapshot,
) -> Result<Id> {
    confirm_before_snapshot(repo, session, packs)?;
    let id = crate::snapshot::save(repo, snap)?;
    confirm_after_snapshot(repo, &id, packs)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::NewIds;
    use crate::id::Id;

    /// The compact set of stored ids answers like a hash set across its merges.
    #[test]
    fn new_ids_answer_across_merges() {
        let mut s = NewIds::default();
        let id = |i: u32| {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
            b[4..8].copy_from_slice(&i.to_le_bytes());
            Id(b)
        };
        let n = 3 * NewIds::MERGE_AT as u32 + 17;
        for i in 0..n {
            assert!(s.insert(id(i)), "{i} is new");
        }
        assert!(
            s.sorted.len() >= 2 * NewIds::MERGE_AT,
            "merged into the vector"
        );
        assert!(s.sorted.windows(2).all(|w| w[0] < w[1]), "sorted, unique");
        for i in 0..n {
            assert!(s.contains(&id(i)), "{i} is known");
            assert!(!s.insert(id(i)), "{i} is not new again");
        }
        assert!(!s.contains(&id(n)));
        assert_eq!(s.sorted.len() + s.recent.len(), n as usize);
    }
}
