//! Restore: recreate a snapshot's files under a target directory.
//!
//! Directories, symlinks and special files are created while the trees are walked, depth
//! first; file contents are written by a pool of workers while the walk goes on, in rounds of
//! at most [`ROUND_BYTES`] of file records (small files in batches that share one ranged read
//! of their pack, see [`crate::fetch`]), one round queued or being written while the walk
//! gathers the next, so memory is bounded by the rounds and the open path, not by the
//! number of files. Rounds are large because each reads its packs on its own: a backup writes
//! files of several directories into one pack, and small rounds read the same pack ranges
//! again and again (the Linux sources, in rounds of 4,096 files, read 423 MB in 590 reads for
//! a 250 MB repository; in rounds of 16 MiB, 277 MB in 229 reads). Hard links are made once every content is written; directory metadata is applied
//! last, deepest first, so writing children does not disturb it. Blocks of zeros are skipped
//! with a seek, so sparse files come back sparse.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use std::sync::Arc;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use holdfast_storage::ObjectKind;
use serde::Serialize;

use crate::blob::BlobType;
use crate::budget::ByteBudget;
use crate::error::{Error, Result};
use crate::fetch::{self, Batch};
use crate::fsmeta;
use crate::id::Id;
use crate::index::Index;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::restore_big;
use crate::snapshot::SnapshotEntry;
use crate::tree::{Node, NodeKind};
use crate::trees::Trees;

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Where to restore; each backed-up path appears under it by its last name.
    pub target: PathBuf,
    /// Restore only these paths (relative to the snapshot root, e.g. `src/lib`, or the original
    /// absolute path). Empty: everything.
    pub include: Vec<String>,
    /// Allow a target that is not empty (existing files are replaced).
    pub overwrite: bool,
    /// Worker threads (0 = automatic).
    pub threads: usize,
}

/// What a restore did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreOutcome {
    /// Files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Other entries created.
    pub others: u64,
    /// Bytes of content written.
    pub bytes: u64,
    /// Unix sockets in the snapshot, which are not restored (each is also in `errors`).
    pub sockets: u64,
    /// What could not be restored, one line each: entries, and metadata (an extended
    /// attribute, a mode or a time) of entries that were restored.
    pub errors: Vec<String>,
}

/// One line per piece of metadata of `path` that could not be set.
pub(crate) fn metadata_errors(
    path: &Path,
    missed: Vec<String>,
) -> impl Iterator<Item = String> + '_ {
    missed
        .into_iter()
        .map(move |m| format!("{}: restored, but its {m}", path.display()))
}

/// A file to restore: where, and its node.
pub(crate) struct FileJob {
    pub(crate) path: PathBuf,
    pub(crate) node: Node,
}

/// Translate include arguments into paths relative to the snapshot root.
fn normalize_includes(snap: &SnapshotEntry, include: &[String]) -> Vec<Vec<Vec<u8>>> {
    include
        .iter()
        .map(|inc| {
            let mut rel = inc.as_str();
            for p in &snap.snapshot.paths {
                if let Some(rest) = inc.strip_prefix(p.as_str()) {
                    if rest.is_empty() || rest.starts_with('/') {
                        let base = Path::new(p)
                            .file_name()
                            .map(|b| b.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        return std::iter::once(base.into_bytes())
                            .chain(
                                rest.split('/')
                                    .filter(|c| !c.is_empty())
                                    .map(|c| c.as_bytes().to_vec()),
                            )
                            .collect();
                    }
                }
            }
            rel = rel.trim_start_matches('/');
            rel.split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .map(|c| c.as_bytes().to_vec())
                .collect()
        })
        .collect()
}

/// Whether `path` is selected: under an include, or an ancestor of one (`Some(false)` = descend
/// but only to reach an include).
fn selected(path: &[Vec<u8>], includes: &[Vec<Vec<u8>>]) -> Option<bool> {
    if includes.is_empty() {
        return Some(true);
    }
    let mut partial = false;
    for inc in includes {
        if path.len() >= inc.len() && path[..inc.len()] == inc[..] {
            return Some(true);
        }
        if inc.len() > path.len() && inc[..path.len()] == path[..] {
            partial = true;
        }
    }
    partial.then_some(false)
}

/// The memory of the file records gathered before they are handed to the workers (one round of
/// batching), as estimated by [`job_bytes`]: about 45,000 files of the Linux sources.
pub const ROUND_BYTES: usize = 16 << 20;

/// Rounds handed to the workers of which some work is not yet taken up, at most (the walk
/// gathers one more). A round is released when its last item is taken, not when it is
/// written: the next round is then queued while the slowest items of this one are written,
/// so no worker waits for them (on S3 that wait was 0.8 s of a 6 s restore of the Linux
/// sources).
const ROUNDS_IN_FLIGHT: usize = 1;

/// The memory a file record holds: its path, node and what the node owns.
fn job_bytes(j: &FileJob) -> usize {
    let n = &j.node;
    std::mem::size_of::<FileJob>()
        + j.path.as_os_str().len()
        + n.name.0.len()
        + n.content.len() * std::mem::size_of::<Id>()
        + n.inline.as_ref().map_or(0, |d| d.len())
        + n.target.as_ref().map_or(0, |t| t.0.len())
        + n.xattrs
            .iter()
            .map(|x| std::mem::size_of_val(x) + x.name.0.len() + x.value.len())
            .sum::<usize>()
}

/// The round budget: [`ROUND_BYTES`], smaller in tests that check the bound.
fn round_budget() -> usize {
    #[cfg(test)]
    if let Some(b) = tests::ROUND_BUDGET.with(|b| b.get()) {
        return b;
    }
    ROUND_BYTES
}

/// A round handed to the workers: when the last of its work is taken, its token is given back.
struct Round(Receiver<()>);

impl Drop for Round {
    fn drop(&mut self) {
        let _ = self.0.try_recv();
    }
}

struct Walk<'a> {
    trees: &'a Trees<'a>,
    index: &'a Index,
    progress: &'a dyn Progress,
    includes: Vec<Vec<Vec<u8>>>,
    /// Files of the current round.
    files: Vec<FileJob>,
    /// Their memory, by [`job_bytes`].
    round_bytes: usize,
    /// When a round is handed over.
    budget: usize,
    /// Where rounds go: the workers.
    work: Sender<(Work, Arc<Round>)>,
    /// One token per round not yet taken up: at most [`ROUNDS_IN_FLIGHT`] rounds are.
    rounds: (Sender<()>, Receiver<()>),
    links: Vec<(PathBuf, (u64, u64))>,
    first_link: HashMap<(u64, u64), PathBuf>,
    dirs: Vec<(PathBuf, Node)>,
    out: RestoreOutcome,
    /// The most file-record bytes held in a round (for the test of the bound).
    peak_round: usize,
}

impl Walk<'_> {
    /// Record what metadata of a restored entry could not be set.
    fn metadata(&mut self, path: &Path, missed: Vec<String>) {
        self.out.errors.extend(metadata_errors(path, missed));
    }

    /// Hand the round's files to the workers (blocks while they are busy with earlier ones).
    fn flush(&mut self) {
        if self.files.is_empty() {
            return;
        }
        self.peak_round = self.peak_round.max(self.round_bytes);
        self.round_bytes = 0;
        let files = std::mem::take(&mut self.files);
        let total: u64 = files.iter().map(|f| f.node.size).sum();
        self.progress.add_total(files.len() as u64, total);
        // Wait while enough rounds are queued and not yet taken up.
        let waited = std::time::Instant::now();
        let _ = self.rounds.0.send(());
        tracing::debug!(
            files = files.len(),
            bytes = total,
            waited_ms = waited.elapsed().as_millis() as u64,
            "restore round handed to the workers"
        );
        let round = Arc::new(Round(self.rounds.1.clone()));
        for item in plan_work(files, self.index) {
            let _ = self.work.send((item, round.clone()));
        }
    }

    fn tree(&mut self, id: &Id, dir: &Path, rel: &mut Vec<Vec<u8>>) {
        let tree = match self.trees.take(id) {
            Ok(t) => t,
            Err(e) => {
                self.out
                    .errors
                    .push(format!("{}: directory contents lost: {e}", dir.display()));
                return;
            }
        };
        for node in tree.nodes.iter().cloned() {
            rel.push(node.name.0.clone());
            if let Some(full) = selected(rel, &self.includes) {
                let path = dir.join(node.name.to_os());
                if full || node.kind == NodeKind::Dir {
                    self.node(node, path, rel, full);
                }
            }
            rel.pop();
        }
    }

    fn node(&mut self, node: Node, path: PathBuf, rel: &mut Vec<Vec<u8>>, full: bool) {
        let fail = |out: &mut RestoreOutcome, e: io::Error| {
            out.errors.push(format!("{}: {e}", path.display()))
        };
        match node.kind {
            NodeKind::Dir => {
                if let Err(e) = fs::create_dir(&path) {
                    if e.kind() != io::ErrorKind::AlreadyExists {
                        fail(&mut self.out, e);
                        return;
                    }
                    // Something is there (only with --overwrite). Never follow a symlink out of
                    // the target: replace anything that is not a real directory.
                    let is_dir = fs::symlink_metadata(&path)
                        .map(|m| m.is_dir())
                        .unwrap_or(false);
                    if !is_dir {
                        if let Err(e) = fs::remove_file(&path).and_then(|_| fs::create_dir(&path)) {
                            fail(&mut self.out, e);
                            return;
                        }
                    }
                }
                self.out.dirs += 1;
                if let Some(sub) = node.subtree {
                    self.tree(&sub, &path, rel);
                }
                if full {
                    self.dirs.push((path, node));
                }
            }
            NodeKind::File => {
                let key = (node.dev, node.inode);
                if node.links > 1 {
                    if self.first_link.contains_key(&key) {
                        self.links.push((path, key));
                        return;
                    }
                    self.first_link.insert(key, path.clone());
                }
                let job = FileJob { path, node };
                let bytes = job_bytes(&job);
                if self.round_bytes + bytes > self.budget {
                    self.flush();
                }
                self.round_bytes += bytes;
                self.files.push(job);
            }
            NodeKind::Symlink => {
                let _ = fs::remove_file(&path);
                let target = node.target.clone().unwrap_or_default().to_os();
                match std::os::unix::fs::symlink(&target, &path) {
                    Ok(()) => {
                        self.out.others += 1;
                        self.metadata(&path, fsmeta::apply(&path, &node));
                    }
                    Err(e) => fail(&mut self.out, e),
                }
            }
            NodeKind::Socket => {
                // A socket belongs to the process that listens on it: it cannot be recreated
                // as one, and a plain file in its place would lie. Say so.
                self.out.sockets += 1;
                self.out.errors.push(format!(
                    "{}: not restored: it is a Unix socket, which only the program that listens on it can create",
                    path.display()
                ));
            }
            _ => {
                let _ = fs::remove_file(&path);
                match fsmeta::make_special(&path, &node) {
                    Ok(()) => {
                        self.out.others += 1;
                        self.metadata(&path, fsmeta::apply(&path, &node));
                    }
                    Err(e) => fail(&mut self.out, e),
                }
            }
        }
    }
}

/// A file being written: non-zero runs go to their offsets and all-zero blocks are skipped,
/// so holes stay holes.
struct Sink<'a> {
    f: fs::File,
    job: &'a FileJob,
    pos: u64,
    written_end: u64,
}

impl<'a> Sink<'a> {
    fn create(job: &'a FileJob) -> std::result::Result<Sink<'a>, String> {
        Ok(Sink {
            f: restore_big::create(&job.path)?,
            job,
            pos: 0,
            written_end: 0,
        })
    }

    fn write(&mut self, data: &[u8]) -> std::result::Result<(), String> {
        if let Some(end) = restore_big::write_sparse(&self.f, &self.job.path, self.pos, data)? {
            self.written_end = end;
        }
        self.pos += data.len() as u64;
        Ok(())
    }

    /// Set the length (a trailing hole), check it, apply metadata; returns bytes written and
    /// what metadata could not be set.
    fn finish(self) -> std::result::Result<Written, String> {
        let p = &self.job.path;
        if self.written_end < self.pos {
            self.f
                .set_len(self.pos)
                .map_err(|e| format!("{}: {e}", p.display()))?;
        }
        if self.pos != self.job.node.size {
            return Err(format!(
                "{}: restored {} bytes where the snapshot says {}",
                p.display(),
                self.pos,
                self.job.node.size
            ));
        }
        let missed = fsmeta::apply_file(&self.f, &self.job.node);
        Ok(Written {
            bytes: self.pos,
            missed: metadata_errors(p, missed).collect(),
        })
    }
}

/// A file written: its length, and what of its metadata could not be set.
pub(crate) struct Written {
    pub(crate) bytes: u64,
    pub(crate) missed: Vec<String>,
}

/// Write one file's content, with one ranged read per run of its blobs that lie together in a
/// pack ([`fetch::runs`]); returns bytes written. A run whose read fails, and a file with a blob
/// the index lacks, are read blob by blob, so an error names the byte where the file breaks.
fn write_file(
    repo: &Repository,
    index: &Index,
    job: &FileJob,
    progress: &dyn Progress,
) -> std::result::Result<Written, String> {
    let mut sink = Sink::create(job)?;
    if let Some(data) = &job.node.inline {
        sink.write(data)?;
        progress.inc(0, data.len() as u64);
        return sink.finish();
    }
    let lost =
        |pos: u64, e: Error| format!("{}: content lost from byte {pos}: {e}", job.path.display());
    let content = &job.node.content;
    let Some(runs) = fetch::runs(content, index, fetch::MAX_GAP, fetch::MAX_SPAN) else {
        for id in content {
            let data = repo
                .read_blob(index, BlobType::Data, id)
                .map_err(|e| lost(sink.pos, e))?;
            sink.write(&data)?;
            progress.inc(0, data.len() as u64);
        }
        return sink.finish();
    };
    for run in &runs {
        for (_, data) in run.open_each(repo, index) {
            let data = data.map_err(|e| lost(sink.pos, e))?;
            sink.write(&data)?;
            progress.inc(0, data.len() as u64);
        }
    }
    sink.finish()
}

/// Work for a restore worker: one file read blob by blob, or a batch of one-blob files served
/// by one ranged read of their pack.
enum Work {
    File(FileJob),
    Batch(Batch<FileJob>),
    /// A run of a big file's blobs, written by whichever worker takes it.
    Part(restore_big::Part),
    /// Files whose content is in their tree node: nothing to read, so many go as one item
    /// (one hand-over between threads, not one per file).
    Inline(Vec<FileJob>),
}

/// Inline files per work item: enough that handing them over costs nothing per file, few enough
/// that the workers share them.
const INLINE_PER_ITEM: usize = 256;

impl Work {
    /// The most bytes of packs this item holds at once: its ranged read (a file read on its
    /// own reads one run of up to [`fetch::MAX_SPAN`] at a time).
    fn read_bytes(&self) -> u64 {
        match self {
            Work::File(j) if j.node.inline.is_some() => 0,
            Work::Inline(_) => 0,
            Work::File(j) => j.node.size.min(fetch::MAX_SPAN),
            Work::Batch(b) => b.end - b.start,
            Work::Part(p) => p.span(),
        }
    }
}

/// Bytes of pack reads the restore workers hold at once, at most: with 32 workers on an object
/// store, each holding a ranged read of up to 8 MiB while it writes the files, the buffers
/// alone were 256 MiB (a restore of the Linux sources from Garage peaked at 400 MB).
pub const READ_BUDGET: u64 = 64 << 20;

/// Write the files of a batch; each result is one file's. If the ranged read fails, each file
/// is read on its own, so an error names exactly the files it touches.
fn write_batch(
    repo: &Repository,
    index: &Index,
    b: &Batch<FileJob>,
    progress: &dyn Progress,
) -> Vec<std::result::Result<Written, String>> {
    let Ok(buf) =
        repo.storage()
            .get_range(ObjectKind::Pack, &b.pack.to_hex(), b.start, b.end - b.start)
    else {
        return b
            .items
            .iter()
            .map(|(job, _, _)| write_file(repo, index, job, progress))
            .collect();
    };
    b.items
        .iter()
        .map(|(job, id, loc)| {
            let data = match b.slice(&buf, loc) {
                Some(stored) => repo.open_blob(BlobType::Data, id, &b.pack, stored, loc.raw_len),
                None => repo.read_blob(index, BlobType::Data, id),
            }
            .map_err(|e| format!("{}: content lost from byte 0: {e}", job.path.display()))?;
            let mut sink = Sink::create(job)?;
            sink.write(&data)?;
            progress.inc(0, data.len() as u64);
            sink.finish()
        })
        .collect()
}

/// Order the work: big multi-blob files first (they keep workers busy to the end), each split
/// into its runs so that all workers share one big file, then the batches of small files, pack
/// by pack.
fn plan_work(files: Vec<FileJob>, index: &Index) -> Vec<Work> {
    let mut singles = Vec::new();
    let mut multi = Vec::new();
    let mut inline = Vec::new();
    for j in files {
        match j.node.content.as_slice() {
            _ if j.node.inline.is_some() => inline.push(j),
            [id] => {
                let id = *id;
                singles.push((j, id))
            }
            _ => multi.push(j),
        }
    }
    multi.sort_by_key(|j| std::cmp::Reverse(j.node.size));
    let mut work = Vec::new();
    for j in multi {
        match restore_big::split(j, index) {
            Ok(parts) => work.extend(parts.into_iter().map(Work::Part)),
            Err(j) => work.push(Work::File(*j)),
        }
    }
    let (batches, unindexed) = fetch::batches(singles, index, fetch::MAX_GAP, fetch::MAX_SPAN);
    work.extend(batches.into_iter().map(Work::Batch));
    work.extend(unindexed.into_iter().map(Work::File));
    while !inline.is_empty() {
        let rest = inline.split_off(inline.len().saturating_sub(INLINE_PER_ITEM));
        work.push(Work::Inline(rest));
    }
    work
}

/// Which includes a walk of the snapshot would find: only the trees along each include's path
/// are read (and kept for the walk), so a missing include is refused before anything is
/// written.
fn find_includes(trees: &Trees, root: &Id, includes: &[Vec<Vec<u8>>]) -> Vec<bool> {
    let mut matched = vec![false; includes.len()];
    if includes.is_empty() {
        return matched;
    }
    let mut stack = vec![(*root, Vec::<Vec<u8>>::new())];
    while let Some((id, rel)) = stack.pop() {
        let Ok(tree) = trees.get(&id) else {
            continue; // the walk reports the directory as lost
        };
        for node in &tree.nodes {
            let mut p = rel.clone();
            p.push(node.name.0.clone());
            for (i, inc) in includes.iter().enumerate() {
                if p.len() >= inc.len() && p[..inc.len()] == inc[..] {
                    matched[i] = true;
                }
            }
            if let (Some(false), NodeKind::Dir, Some(sub)) =
                (selected(&p, includes), node.kind, node.subtree)
            {
                stack.push((sub, p));
            }
        }
    }
    matched
}

/// Restore a snapshot.
pub fn restore(
    repo: &Repository,
    index: &Index,
    snap: &SnapshotEntry,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreOutcome> {
    let t = &opts.target;
    match fs::read_dir(t) {
        Ok(mut rd) => {
            if rd.next().is_some() && !opts.overwrite {
                return Err(Error::Refused(format!(
                    "restore target {} is not empty: choose an empty or new directory, or pass --replace (formerly --overwrite) to replace what is there",
                    t.display()
                )));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(t).map_err(|e| Error::io("creating restore target", t, e))?
        }
        Err(e) => return Err(Error::io("opening restore target", t, e)),
    }
    let includes = normalize_includes(snap, &opts.include);
    progress.phase("restore");
    let trees = Trees::prefetch(repo, index, &[snap.snapshot.tree], &|p| {
        selected(p, &includes).is_some()
    });
    tracing::debug!(
        trees = trees.prefetched(),
        bytes = trees.held_bytes(),
        "restore: trees read ahead"
    );
    let matched = find_includes(&trees, &snap.snapshot.tree, &includes);
    if let Some(i) = matched.iter().position(|m| !m) {
        return Err(Error::PathNotInSnapshot {
            path: opts.include[i].clone(),
            snapshot: snap.id.short(),
        });
    }
    let threads = if opts.threads == 0 {
        repo.storage().read_concurrency().max(1)
    } else {
        opts.threads
    };
    let errors = Mutex::new(Vec::new());
    let reads = ByteBudget::new(READ_BUDGET);
    // One round queued while the walk gathers the next, whatever the number of workers (a
    // round is thousands of work items): the walk waits for the workers.
    let (tx, rx) = unbounded::<(Work, Arc<Round>)>();
    let mut w = Walk {
        trees: &trees,
        index,
        progress,
        includes,
        files: Vec::new(),
        round_bytes: 0,
        budget: round_budget(),
        work: tx,
        rounds: bounded(ROUNDS_IN_FLIGHT),
        links: Vec::new(),
        first_link: HashMap::new(),
        dirs: Vec::new(),
        out: RestoreOutcome::default(),
        peak_round: 0,
    };
    let (files, bytes) = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let (rx, errors, reads) = (rx.clone(), &errors, &reads);
                s.spawn(move || {
                    let (mut n, mut b) = (0u64, 0u64);
                    for (item, round) in rx.iter() {
                        // Taken: once a round's last item is, the walk may queue the next.
                        drop(round);
                        let _held = reads.take(item.read_bytes());
                        let results = match &item {
                            Work::File(job) => vec![write_file(repo, index, job, progress)],
                            Work::Batch(batch) => write_batch(repo, index, batch, progress),
                            Work::Part(part) => {
                                part.write(repo, index, progress).into_iter().collect()
                            }
                            Work::Inline(jobs) => jobs
                                .iter()
                                .map(|job| write_file(repo, index, job, progress))
                                .collect(),
                        };
                        for r in results {
                            match r {
                                Ok(w) => {
                                    n += 1;
                                    b += w.bytes;
                                    if !w.missed.is_empty() {
                                        for m in &w.missed {
                                            progress.warn(m);
                                        }
                                        errors
                                            .lock()
                                            .unwrap_or_else(|p| p.into_inner())
                                            .extend(w.missed);
                                    }
                                }
                                Err(e) => {
                                    progress.warn(&e);
                                    errors.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                                }
                            }
                            progress.inc(1, 0);
                        }
                    }
                    (n, b)
                })
            })
            .collect();
        drop(rx);
        w.tree(&snap.snapshot.tree, t, &mut Vec::new());
        w.flush();
        tracing::debug!("restore: walk done, waiting for the workers");
        // Close the queue: the workers end when it drains.
        let (done_tx, _) = unbounded();
        drop(std::mem::replace(&mut w.work, done_tx));
        hs.into_iter()
            .map(|h| h.join().unwrap_or((0, 0)))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    #[cfg(test)]
    tests::PEAK_ROUND.with(|p| p.set(w.peak_round));
    w.out.files = files;
    w.out.bytes = bytes;
    w.out
        .errors
        .extend(errors.into_inner().unwrap_or_else(|p| p.into_inner()));
    for (path, key) in &w.links {
        let first = &w.first_link[key];
        let _ = fs::remove_file(path);
        match fs::hard_link(first, path) {
            Ok(()) => w.out.files += 1,
            Err(e) => w.out.errors.push(format!(
                "{}: hard link to {} failed: {e}",
                path.display(),
                first.display()
            )),
        }
    }
    for (path, node) in w.dirs.iter().rev() {
        let missed = fsmeta::apply(path, node);
        w.out.errors.extend(metadata_errors(path, missed));
    }
    progress.finish();
    Ok(w.out)
}

#[cfg(test)]
#[path = "restore_tests.rs"]
mod tests;

/// What a validation of a restored tree found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Validation {
    /// Files whose content matched.
    pub files: u64,
    /// Bytes checked.
    pub bytes: u64,
    /// Mismatches, one line each.
    pub errors: Vec<String>,
}

/// Check a restored tree against its snapshot: every entry exists with the right type, and
/// every file's content, re-chunked, has exactly the snapshot's blob ids.
pub fn validate(repo: &Repository, index: &Index, tree: &Id, dir: &Path) -> Result<Validation> {
    let mut v = Validation::default();
    let mut stack = vec![(*tree, dir.to_path_buf())];
    while let Some((t, d)) = stack.pop() {
        let tree = crate::browse::load_tree(repo, index, &t)?;
        for n in tree.nodes {
            let p = d.join(n.name.to_os());
            if n.kind == NodeKind::Socket {
                // Never restored (restore reports each one): a socket holds no data, and the
                // program that listens on it makes it again.
                continue;
            }
            let m = match fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(e) => {
                    v.errors
                        .push(format!("{}: missing after restore: {e}", p.display()));
                    continue;
                }
            };
            match n.kind {
                NodeKind::Dir => {
                    if !m.is_dir() {
                        v.errors.push(format!("{}: not a directory", p.display()));
                    } else if let Some(s) = n.subtree {
                        stack.push((s, p));
                    }
                }
                NodeKind::File => match crate::inline::file_matches(repo, &p, &n) {
                    Ok(true) if m.len() == n.size => {
                        v.files += 1;
                        v.bytes += n.size;
                    }
                    Ok(_) => v.errors.push(format!(
                        "{}: content differs from the snapshot",
                        p.display()
                    )),
                    Err(e) => v
                        .errors
                        .push(format!("{}: cannot be read: {e}", p.display())),
                },
                NodeKind::Symlink => {
                    let ok = fs::read_link(&p)
                        .ok()
                        .map(|t| crate::tree::FsName::from_os(t.as_os_str()))
                        == n.target;
                    if !ok {
                        v.errors
                            .push(format!("{}: link target differs", p.display()));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(v)
}
