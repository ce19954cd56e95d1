//! Writing blobs: packing them, uploading packs in the background, and indexing them.
//!
//! Order of writes (the crash-safety argument, see docs/DESIGN.md): a pack is stored whole under
//! its final name; every [`INDEX_EVERY`] packs, or as soon as the packs stored since the last
//! index file hold [`INDEX_ENTRIES`] blobs, the backend is flushed (the packs are durable) and
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

/// Blobs of the packs stored since the last index file at which the next index file is
/// written, even before [`INDEX_EVERY`] packs: what a writer holds of its index entries (48
/// bytes a blob) is bounded by this, not by the pack size (a 16 MiB pack of 100-byte files
/// holds some 110,000 blobs, eight of them 42 MB of entries, and their index file as much again).
pub const INDEX_ENTRIES: usize = 1 << 16;

/// Most blobs in one pack: a pack is closed when it holds this many, however small they are
/// (bounds the entries and the header a pack being filled or uploaded holds: 48 + 41 bytes a
/// blob).
pub const PACK_BLOBS: usize = 1 << 16;

/// When a writer closes a pack and writes an index file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Packs per index file at most.
    pub(crate) index_every: usize,
    /// An index file is written when the packs since the last one hold this many blobs.
    pub(crate) index_entries: usize,
    /// Blobs per pack at most.
    pub(crate) pack_blobs: usize,
}

#[cfg(test)]
thread_local! {
    /// Limits the writers made on this thread use instead of the defaults (tests only: lets an
    /// engine-level test cross them with a few hundred files).
    pub(crate) static TEST_LIMITS: std::cell::Cell<Option<Limits>> = const { std::cell::Cell::new(None) };
}

impl Default for Limits {
    fn default() -> Self {
        #[cfg(test)]
        if let Some(l) = TEST_LIMITS.with(|l| l.get()) {
            return l;
        }
        Limits {
            index_every: INDEX_EVERY,
            index_entries: INDEX_ENTRIES,
            pack_blobs: PACK_BLOBS,
        }
    }
}

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
    /// The most index entries held at once, waiting for their index file.
    pub peak_pending_entries: usize,
}

/// Packs and their entries, as an index file lists them.
type PackList = Vec<(Id, Vec<PackEntry>)>;

struct Sealed {
    bytes: Vec<u8>,
    id: Id,
    entries: Vec<PackEntry>,
}

/// Packs blobs and stores packs on a background thread. Shared by reference between workers.
pub struct BlobWriter {
    repo: Repository,
    /// The pack being filled, one per blob type ([`BlobType`] as index): trees go to packs of
    /// their own, so a restore or a backup's parent walk reads every directory listing in a
    /// few large reads instead of one small read between data blobs for each.
    current: [Mutex<PackBuilder>; 2],
    target: usize,
    pack_blobs: usize,
    tx: Mutex<Option<Sender<Sealed>>>,
    uploader: Mutex<Option<JoinHandle<Result<WriterStats>>>>,
    failed: Arc<Mutex<Option<String>>>,
}

impl BlobWriter {
    /// A writer into `repo`. With `dry_run`, packs are built and counted but not stored.
    pub fn new(repo: &Repository, dry_run: bool) -> Self {
        Self::with_limits(repo, dry_run, Limits::default())
    }

    /// A writer that closes packs and writes index files at `limits`.
    pub(crate) fn with_limits(repo: &Repository, dry_run: bool, limits: Limits) -> Self {
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
                // The packs stored since the last index file, and how many blobs they hold.
                let pending: Mutex<(PackList, usize)> = Mutex::new((Vec::new(), 0));
                let upload = |s: Sealed| -> Result<()> {
                    let len = s.bytes.len() as u64;
                    if !dry_run {
                        r.storage().put_owned(
                            ObjectKind::Pack,
                            &s.id.to_hex(),
                            s.bytes,
                            PutMode::Overwrite,
                        )?;
                    }
                    let full = {
                        let mut st = stats.lock().unwrap_or_else(|p| p.into_inner());
                        st.bytes += len;
                        st.packs.push(s.id);
                        let mut p = pending.lock().unwrap_or_else(|p| p.into_inner());
                        p.1 += s.entries.len();
                        p.0.push((s.id, s.entries));
                        st.peak_pending_entries = st.peak_pending_entries.max(p.1);
                        (p.0.len() >= limits.index_every || p.1 >= limits.index_entries)
                            .then(|| std::mem::take(&mut *p).0)
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
                let rest =
                    std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner())).0;
                let mut stats = stats.into_inner().unwrap_or_else(|p| p.into_inner());
                if !rest.is_empty() && !dry_run {
                    stats.index_files.push(write_index(&r, rest)?);
                }
                Ok(stats)
            })
            .expect("spawning a thread");
        BlobWriter {
            repo: repo.clone(),
            current: [(); 2].map(|_| Mutex::new(PackBuilder::with_capacity(target + 4096))),
            target,
            pack_blobs: limits.pack_blobs.max(1),
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
            let mut cur = self.current[t as usize]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Close the pack before it would outgrow its buffer (no reallocation to twice the
            // size), or once it reached the target or holds the most blobs a pack may.
            let full = if !cur.is_empty()
                && (cur.len() + stored.len() > self.target || cur.count() >= self.pack_blobs)
            {
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
        for current in &self.current {
            let last = std::mem::take(&mut *current.lock().unwrap_or_else(|p| p.into_inner()));
            if !last.is_empty() {
                self.send(last)?;
            }
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

/// The ids a writer stored, in 32 bytes each (plus at most an eighth more, hashed): split by
/// their first byte into [`NewIds::PARTS`] parts, each a sorted vector and a hash set of its
/// newest ids, merged into the vector when the set reaches an eighth of it. A hash set of
/// millions of ids costs twice the bytes, and its growth doubles them again for a moment; one
/// sorted vector of them all needs a second copy of itself when it grows and a buffer of half
/// its size when it is merged. A part is 1/256 of the ids, so what a merge needs besides is
/// 1/256 of that, and each part has its own lock (the workers rarely wait for each other).
struct NewIds {
    parts: Vec<Mutex<Part>>,
}

#[derive(Default)]
struct Part {
    sorted: Vec<Id>,
    recent: HashSet<Id>,
}

impl Default for NewIds {
    fn default() -> Self {
        NewIds {
            parts: (0..Self::PARTS)
                .map(|_| Mutex::new(Part::default()))
                .collect(),
        }
    }
}

impl NewIds {
    /// Parts, by an id's first byte (ids are keyed hashes: evenly spread).
    const PARTS: usize = 256;
    /// Smallest number of recent ids of a part merged at once.
    const MERGE_AT: usize = 64;

    fn part(&self, id: &Id) -> std::sync::MutexGuard<'_, Part> {
        self.parts[id.0[0] as usize % Self::PARTS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn contains(&self, id: &Id) -> bool {
        let p = self.part(id);
        p.recent.contains(id) || p.sorted.binary_search(id).is_ok()
    }

    /// Add `id`; false if it was there.
    fn insert(&self, id: Id) -> bool {
        let mut p = self.part(&id);
        if p.sorted.binary_search(&id).is_ok() || !p.recent.insert(id) {
            return false;
        }
        if p.recent.len() >= Self::MERGE_AT.max(p.sorted.len() / 8) {
            let p = &mut *p;
            p.sorted.reserve_exact(p.recent.len());
            p.sorted.extend(p.recent.drain());
            // Two sorted runs: the standard sort merges them in linear time.
            p.sorted.sort();
            p.recent = HashSet::new();
        }
        true
    }

    /// Ids held (for the tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        (0..Self::PARTS)
            .map(|i| {
                let p = self.parts[i].lock().unwrap();
                p.sorted.len() + p.recent.len()
            })
            .sum()
    }
}

/// Deduplicating blob storage for one writer: skips blobs the index (or this writer) already has.
pub struct Dedup<'a> {
    repo: &'a Repository,
    index: &'a Index,
    new_ids: NewIds,
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
        Self::with_limits(repo, index, dry_run, Limits::default())
    }

    /// A deduplicating writer whose packs and index files are closed at `limits`.
    pub(crate) fn with_limits(
        repo: &'a Repository,
        index: &'a Index,
        dry_run: bool,
        limits: Limits,
    ) -> Self {
        Dedup {
            repo,
            index,
            new_ids: NewIds::default(),
            hit_packs: Mutex::new(HashSet::new()),
            writer: BlobWriter::with_limits(repo, dry_run, limits),
            blobs_added: AtomicU64::new(0),
            bytes_added: AtomicU64::new(0),
        }
    }

    /// Whether the blob is already stored (or being stored by this writer).
    pub fn known(&self, id: &Id) -> bool {
        self.hit(id) || self.new_ids.contains(id)
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
        if self.hit(&id) || !self.new_ids.insert(id) {
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
    use super::{Dedup, Limits, NewIds, TEST_LIMITS};
    use crate::blob::{BlobType, Compressor};
    use crate::id::Id;
    use crate::index::{Index, IndexFile};
    use crate::keys::KdfParams;
    use crate::progress::NoProgress;
    use crate::repo::{InitOptions, Repository};
    use holdfast_storage::ObjectKind;
    use std::sync::Arc;

    /// A repository that stores every file as data blobs (none inline): these tests count
    /// blobs, packs and index files.
    fn repo() -> Repository {
        let init = InitOptions {
            kdf: KdfParams::insecure_for_tests(),
            inline_max: 0,
            ..Default::default()
        };
        Repository::init(
            Arc::new(holdfast_storage::MemoryStorage::new()),
            b"pw",
            &init,
        )
        .unwrap()
    }

    const SMALL: Limits = Limits {
        index_every: 8,
        index_entries: 100,
        pack_blobs: 30,
    };

    /// A writer of many small blobs closes a pack at `pack_blobs` blobs and writes an index
    /// file as soon as the packs since the last one hold `index_entries` blobs (not only every
    /// `index_every` packs): the entries it holds are bounded by those, and every blob is still
    /// indexed, in its pack, readable.
    #[test]
    fn pending_index_entries_are_flushed_by_count() {
        let repo = repo();
        let empty = Index::default();
        let dedup = Dedup::with_limits(&repo, &empty, false, SMALL);
        let mut c = Compressor::new(3);
        let n = 1000;
        let blobs: Vec<(Id, Vec<u8>)> = (0..n)
            .map(|i| {
                let d = format!("blob {i}").into_bytes();
                (dedup.store(&mut c, BlobType::Data, &d).unwrap(), d)
            })
            .collect();
        let stats = dedup.writer.finish().unwrap();
        assert!(
            stats.peak_pending_entries <= SMALL.index_entries + SMALL.pack_blobs,
            "held {} entries at once",
            stats.peak_pending_entries
        );
        assert!(
            stats.packs.len() >= n / SMALL.pack_blobs,
            "{}",
            stats.packs.len()
        );
        assert!(
            stats.index_files.len() >= n / (SMALL.index_entries + SMALL.pack_blobs),
            "{} index files",
            stats.index_files.len()
        );
        let listed = repo.storage().list(ObjectKind::Index).unwrap();
        assert_eq!(listed.len(), stats.index_files.len());
        let mut indexed = 0;
        for o in &listed {
            let IndexFile { packs, .. } = repo.read_index_file(&o.name).unwrap();
            for (_, entries) in packs {
                assert!(entries.len() <= SMALL.pack_blobs, "{}", entries.len());
                indexed += entries.len();
            }
        }
        assert_eq!(indexed, n);
        let (index, _) = repo.load_index().unwrap();
        for (id, d) in &blobs {
            assert_eq!(&repo.read_blob(&index, BlobType::Data, id).unwrap(), d);
        }
    }

    /// A backup whose writer closes packs and index files often (small limits) restores every
    /// file and checks clean, and its snapshot is written after every index file it needs.
    #[test]
    fn backup_with_small_packs_and_index_files_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for d in 0..6 {
            std::fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
            for f in 0..70 {
                std::fs::write(src.join(format!("d{d}/f{f}")), format!("file {d} {f}")).unwrap();
            }
        }
        let repo = repo();
        TEST_LIMITS.with(|l| l.set(Some(SMALL)));
        let opts = crate::backup::BackupOptions {
            paths: vec![src.clone()],
            threads: 2,
            ..Default::default()
        };
        let out = crate::backup::backup(&repo, &opts, &NoProgress);
        TEST_LIMITS.with(|l| l.set(None));
        let out = out.unwrap();
        assert_eq!(out.snapshot.summary.files_new, 420);
        let index_files = repo.storage().list(ObjectKind::Index).unwrap();
        assert!(
            index_files.len() >= 420 / 130,
            "{} index files",
            index_files.len()
        );
        // Directory listings are packed apart from file content, so a walk reads them in a
        // few large reads: no pack holds both.
        let (mut tree_packs, mut data_packs) = (0, 0);
        for o in &index_files {
            for (pack, entries) in repo.read_index_file(&o.name).unwrap().packs {
                let trees = entries
                    .iter()
                    .filter(|e| e.blob_type == BlobType::Tree)
                    .count();
                assert!(
                    trees == 0 || trees == entries.len(),
                    "pack {pack} holds {trees} trees among {} blobs",
                    entries.len()
                );
                if trees > 0 {
                    tree_packs += 1;
                } else {
                    data_packs += 1;
                }
            }
        }
        assert!(tree_packs >= 1 && data_packs >= 420 / SMALL.pack_blobs);
        let report = crate::check::check(&repo, crate::check::ReadData::All, &NoProgress).unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let (index, _) = repo.load_index().unwrap();
        let (all, _) = crate::snapshot::load_all(&repo).unwrap();
        let target = dir.path().join("restored");
        let r = crate::restore::restore(
            &repo,
            &index,
            all.last().unwrap(),
            &crate::restore::RestoreOptions {
                target: target.clone(),
                ..Default::default()
            },
            &NoProgress,
        )
        .unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.files, 420);
        for d in 0..6 {
            for f in 0..70 {
                assert_eq!(
                    std::fs::read_to_string(target.join(format!("src/d{d}/f{f}"))).unwrap(),
                    format!("file {d} {f}")
                );
            }
        }
    }

    /// The compact set of stored ids answers like a hash set across its merges.
    #[test]
    fn new_ids_answer_across_merges() {
        let s = NewIds::default();
        let id = |i: u32| {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
            b[4..8].copy_from_slice(&i.to_le_bytes());
            Id(b)
        };
        let n = 40 * NewIds::PARTS as u32 * NewIds::MERGE_AT as u32 + 17;
        for i in 0..n {
            assert!(s.insert(id(i)), "{i} is new");
        }
        let merged: usize = s
            .parts
            .iter()
            .map(|p| {
                let p = p.lock().unwrap();
                assert!(p.sorted.windows(2).all(|w| w[0] < w[1]), "sorted, unique");
                assert!(p.recent.len() <= NewIds::MERGE_AT.max(p.sorted.len() / 8));
                p.sorted.len()
            })
            .sum();
        assert!(merged >= n as usize * 3 / 4, "merged into the vectors");
        for i in 0..n {
            assert!(s.contains(&id(i)), "{i} is known");
            assert!(!s.insert(id(i)), "{i} is not new again");
        }
        assert!(!s.contains(&id(n)));
        assert_eq!(s.len(), n as usize);
    }
}
