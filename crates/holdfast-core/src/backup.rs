//! Backup: walk the source paths, store changed file content and the directory trees, and write
//! a snapshot.
//!
//! The walker runs on the calling thread and hands each file that must be read to a pool of
//! workers (chunk, hash, compress, encrypt); a background thread stores full packs. A file whose
//! size, mtime, ctime and inode equal its entry in the parent snapshot is not read again, and a
//! directory whose entries all equal the parent's keeps the parent's tree id (nothing is
//! assembled for it; see "Unchanged directories keep their tree" in docs/DESIGN.md).
//! Each directory's tree is stored as soon as its subtree is walked and its files are stored
//! ([`crate::assemble`]), so memory is bounded by the tree's width, not by its size.

use std::collections::HashSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};
use crossbeam_channel::{bounded, unbounded, Sender};

use crate::assemble::{Assembler, DirDone, JobResult, Pending, DIR_QUEUE, JOB_QUEUE};
use crate::blob::{BlobType, Compressor};
use crate::error::{Error, Result};
pub use crate::exclude::read_exclude_file;
use crate::exclude::Excludes;
use crate::fileread::describe_io;
pub use crate::fileread::{content_ids, RE_READS};
use crate::fsmeta;
use crate::id::Id;
use crate::index::Index;
use crate::progress::Progress;
use crate::repo::{ChunkerParams, Repository};
use crate::session::{self, Session};
use crate::snapshot::{self, Snapshot, Summary};
use crate::tree::{FsName, Node, NodeKind, Tree};
use crate::writer::Dedup;

/// Which snapshot to compare with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ParentChoice {
    /// The newest snapshot of the same host and paths.
    #[default]
    Auto,
    /// Read every file.
    None,
    /// This snapshot.
    Id(Id),
}

/// What to back up and how.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Paths to back up.
    pub paths: Vec<PathBuf>,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// Exclude patterns: with a `/` they match the whole path, without one the file name.
    pub excludes: Vec<String>,
    /// Do not cross into other file systems.
    pub one_file_system: bool,
    /// Read and count everything, store nothing.
    pub dry_run: bool,
    /// Parent snapshot.
    pub parent: ParentChoice,
    /// Host name to record (default: this host).
    pub hostname: Option<String>,
    /// Snapshot time (default: now). Lets callers inject a clock.
    pub time: Option<DateTime<Utc>>,
    /// Worker threads (0 = one per core).
    pub threads: usize,
    /// The workload source this backup is for (recorded in the snapshot).
    pub source: Option<String>,
    /// Test seam: called with the writer's session after every blob is stored and before the
    /// snapshot is recorded (e.g. to simulate a process suspended while a prune runs).
    pub before_snapshot: Option<BeforeSnapshot>,
    /// Read some paths from somewhere else, as `(recorded path, read path)` pairs: the files
    /// under the read path are stored as if they were under the recorded path, which is what
    /// the snapshot's `paths` and tree show and what excludes and the parent snapshot are
    /// matched against. A file-system snapshot is read this way (a path source's `snapshot =
    /// "btrfs"`), so a restore puts its files back where they were. Messages about unreadable
    /// files name the read path. Empty: every path is read where it is.
    pub read_from: Vec<(PathBuf, PathBuf)>,
}

pub use crate::writer::BeforeSnapshot;

/// What a backup produced.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The snapshot id (none for a dry run).
    pub id: Option<Id>,
    /// The snapshot.
    pub snapshot: Snapshot,
}

pub(crate) struct Job {
    pub(crate) id: usize,
    pub(crate) path: PathBuf,
}

/// State shared by the walker and the workers.
pub(crate) struct Ctx<'a> {
    repo: &'a Repository,
    index: &'a Index,
    dedup: Dedup<'a>,
    pub(crate) chunker: ChunkerParams,
    pub(crate) seed: u64,
    pub(crate) level: i32,
    /// Files of at most this many bytes go inline into their tree node (0: never).
    pub(crate) inline_max: u64,
    pub(crate) progress: &'a dyn Progress,
    errors: Mutex<Vec<String>>,
    warnings: Mutex<Vec<String>>,
    /// Files stored although they changed during every read, one line each.
    inconsistent: Mutex<Vec<String>>,
    pub(crate) bytes_read: AtomicU64,
    /// The first repository error: it ends the backup (unlike an unreadable source file).
    fatal: Mutex<Option<Error>>,
    /// Where big files' chunks are stored in parallel (none with one thread).
    pub(crate) pool: Option<crate::bigfile::ChunkPool>,
}

impl Ctx<'_> {
    fn known(&self, id: &Id) -> bool {
        self.dedup.known(id)
    }

    pub(crate) fn store(&self, c: &mut Compressor, t: BlobType, data: &[u8]) -> Result<Id> {
        self.dedup.store(c, t, data)
    }

    /// Store a file's chunk. A repository error is kept as the backup's fatal error (once, not
    /// once per file) and stops the remaining file jobs.
    /// Keep `e` as the backup's fatal error (the first one wins); workers and walkers stop.
    pub(crate) fn fail(&self, e: Error) {
        let mut f = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(e);
        }
    }

    pub(crate) fn store_chunk(
        &self,
        c: &mut Compressor,
        data: &[u8],
    ) -> std::result::Result<Id, String> {
        self.store(c, BlobType::Data, data).map_err(|e| {
            self.fail(e);
            "the repository failed".to_string()
        })
    }

    /// The zstd level of new blobs.
    pub(crate) fn level(&self) -> i32 {
        self.level
    }

    /// Whether the repository failed (the backup ends with that error).
    pub(crate) fn failed(&self) -> bool {
        self.fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    pub(crate) fn error(&self, msg: String) {
        self.progress.warn(&msg);
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
    }

    pub(crate) fn changed_while_read(&self, msg: String) {
        self.progress.warn(&msg);
        self.inconsistent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
    }

    fn warning(&self, msg: String) {
        self.progress.warn(&msg);
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
    }
}

struct Walker<'a, 'b> {
    ctx: &'b Ctx<'a>,
    excludes: &'b Excludes,
    /// `(read root, recorded root)`: paths under a read root are matched against excludes as
    /// under the recorded root ([`BackupOptions::read_from`]).
    renamed: &'b [(PathBuf, PathBuf)],
    one_fs: bool,
    jobs: Sender<Job>,
    next_job: &'b AtomicU64,
    /// Finished directories go to the assembler.
    dirs: Sender<DirDone>,
    next_dir: &'b AtomicU64,
    summary: Summary,
    /// Depth below a backed-up path; the top levels are walked by several threads.
    depth: usize,
    threads: usize,
}

/// Directories this shallow are walked by several threads (stat-bound walks scale with cores).
const PARALLEL_DEPTH: usize = 2;

fn merge(into: &mut Summary, s: &Summary) {
    into.files_new += s.files_new;
    into.files_changed += s.files_changed;
    into.files_unmodified += s.files_unmodified;
    into.dirs += s.dirs;
    into.others += s.others;
    into.total_bytes += s.total_bytes;
}

impl Walker<'_, '_> {
    fn parent_tree(&self, id: Option<Id>) -> Option<Tree> {
        let id = id?;
        match self.ctx.repo.read_blob(self.ctx.index, BlobType::Tree, &id) {
            Ok(data) => Tree::decode(&id, &data).ok(),
            Err(e) => {
                tracing::warn!("parent tree {id} unreadable, files below are read again: {e}");
                None
            }
        }
    }

    /// Walk one entry whose metadata we have.
    fn entry(
        &mut self,
        path: &Path,
        name: FsName,
        m: &fs::Metadata,
        parent: Option<&Node>,
        root_dev: u64,
    ) -> Pending {
        let mut node = fsmeta::node_from_metadata(name, m);
        // Extended attributes and link targets change the ctime: an entry whose ctime, inode
        // and type are those of the parent snapshot's keeps them without asking again.
        let same = parent.filter(|p| {
            p.kind == node.kind
                && p.ctime == node.ctime
                && p.inode == node.inode
                && p.dev == node.dev
        });
        match same {
            Some(p) => node.xattrs = p.xattrs.clone(),
            None => match fsmeta::read_xattrs(path) {
                Ok(x) => node.xattrs = x,
                Err(e) => self.ctx.warning(format!(
                    "{}: extended attributes not read: {e}",
                    path.display()
                )),
            },
        }
        if let (NodeKind::Symlink, Some(p)) = (node.kind, same) {
            self.summary.others += 1;
            node.target = p.target.clone();
            return Pending::Ready(node);
        }
        match node.kind {
            NodeKind::File => {
                if let Some(p) = parent.filter(|p| {
                    p.kind == NodeKind::File
                        && p.size == node.size
                        && p.mtime == node.mtime
                        && p.ctime == node.ctime
                        && p.inode == node.inode
                        && p.content.iter().all(|c| self.ctx.known(c))
                }) {
                    node.content = p.content.clone();
                    node.inline = p.inline.clone();
                    self.summary.files_unmodified += 1;
                    self.summary.total_bytes += node.size;
                    self.ctx.progress.add_total(1, node.size);
                    self.ctx.progress.inc(1, node.size);
                    return Pending::Ready(node);
                }
                if parent.is_some_and(|p| p.kind == NodeKind::File) {
                    self.summary.files_changed += 1;
                } else {
                    self.summary.files_new += 1;
                }
                self.ctx.progress.add_total(1, node.size);
                let job = self.next_job.fetch_add(1, Ordering::Relaxed) as usize;
                let _ = self.jobs.send(Job {
                    id: job,
                    path: path.to_path_buf(),
                });
                Pending::File { node, job }
            }
            NodeKind::Dir => {
                self.summary.dirs += 1;
                let entries = if self.one_fs && m.dev() != root_dev {
                    Vec::new()
                } else {
                    // The parent snapshot's tree of this directory, held while it is walked.
                    let psub = parent
                        .filter(|p| p.kind == NodeKind::Dir)
                        .and_then(|p| p.subtree);
                    let ptree = self.parent_tree(psub);
                    let entries = self.dir(path, ptree.as_ref(), root_dev);
                    if let (Some(id), Some(t)) = (psub, &ptree) {
                        if same_entries(&entries, t) && self.ctx.known(&id) {
                            // Every entry equals the parent's: this directory's tree is the
                            // parent's, byte for byte what storing it again would give.
                            node.subtree = Some(id);
                            return Pending::Ready(node);
                        }
                    }
                    entries
                };
                let dir = self.next_dir.fetch_add(1, Ordering::Relaxed) as usize;
                // Every entry below is walked: the assembler can store this directory once its
                // files are stored. A send fails only when the assembler stopped on an error.
                let _ = self.dirs.send(DirDone { dir, entries });
                Pending::Dir { node, dir }
            }
            NodeKind::Symlink => {
                self.summary.others += 1;
                match fs::read_link(path) {
                    Ok(t) => node.target = Some(FsName::from_os(t.as_os_str())),
                    Err(e) => {
                        self.ctx
                            .error(describe_io(path, "link target cannot be read", e));
                        node.target = Some(FsName::default());
                    }
                }
                Pending::Ready(node)
            }
            _ => {
                self.summary.others += 1;
                Pending::Ready(node)
            }
        }
    }

    fn dir(&mut self, path: &Path, ptree: Option<&Tree>, root_dev: u64) -> Vec<Pending> {
        if self.ctx.failed() {
            return Vec::new(); // the backup is failing: walk no further
        }
        let rd = match fs::read_dir(path) {
            Ok(rd) => rd,
            Err(e) => {
                self.ctx
                    .error(describe_io(path, "directory cannot be listed", e));
                return Vec::new();
            }
        };
        let mut entries: Vec<fs::DirEntry> = Vec::new();
        for e in rd {
            match e {
                Ok(e) => entries.push(e),
                Err(e) => self
                    .ctx
                    .error(describe_io(path, "directory listing failed part way", e)),
            }
        }
        entries.sort_by_cached_key(|e| e.file_name());
        if self.depth < PARALLEL_DEPTH && self.threads > 1 && entries.len() > 1 {
            return self.children_parallel(path, &entries, ptree, root_dev);
        }
        let mut out = Vec::with_capacity(entries.len());
        for entry in &entries {
            if let Some(p) = self.child(path, entry, ptree, root_dev) {
                out.push(p);
            }
        }
        out
    }

    /// One directory entry: excluded, examined, walked.
    fn child(
        &mut self,
        path: &Path,
        entry: &fs::DirEntry,
        ptree: Option<&Tree>,
        root_dev: u64,
    ) -> Option<Pending> {
        let name = entry.file_name();
        let child = path.join(&name);
        let shown = recorded_path(self.renamed, &child);
        if self.excludes.excluded(&shown, name.as_bytes()) {
            return None;
        }
        // lstat relative to the open directory (no path walk per entry).
        let m = match entry.metadata() {
            Ok(m) => m,
            Err(e) => {
                self.ctx.error(describe_io(&child, "cannot be examined", e));
                return None;
            }
        };
        let pnode = ptree.and_then(|t| t.get(name.as_bytes()));
        Some(self.entry(&child, FsName::from_os(&name), &m, pnode, root_dev))
    }

    /// The entries of a shallow directory, taken in turn by several walkers; results keep
    /// their (sorted) order.
    fn children_parallel(
        &mut self,
        path: &Path,
        entries: &[fs::DirEntry],
        ptree: Option<&Tree>,
        root_dev: u64,
    ) -> Vec<Pending> {
        let slots: Vec<Mutex<Option<Pending>>> = entries.iter().map(|_| Mutex::new(None)).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let (ctx, excludes, renamed, one_fs, next_job, next_dir, depth, threads) = (
            self.ctx,
            self.excludes,
            self.renamed,
            self.one_fs,
            self.next_job,
            self.next_dir,
            self.depth,
            self.threads,
        );
        let summaries: Vec<Summary> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    let (jobs, dirs, slots, next) =
                        (self.jobs.clone(), self.dirs.clone(), &slots, &next);
                    sc.spawn(move || {
                        let mut w = Walker {
                            ctx,
                            excludes,
                            renamed,
                            one_fs,
                            jobs,
                            next_job,
                            dirs,
                            next_dir,
                            summary: Summary::default(),
                            depth: depth + 1,
                            threads,
                        };
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(entry) = entries.get(i) else { break };
                            let p = w.child(path, entry, ptree, root_dev);
                            *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = p;
                        }
                        w.summary
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        for s in &summaries {
            merge(&mut self.summary, s);
        }
        slots
            .into_iter()
            .filter_map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
            .collect()
    }
}

/// Whether a directory's walked entries are exactly the nodes of its tree in the parent
/// snapshot: every entry finished (no file to read, no subdirectory to store) and equal, field
/// for field, to the parent's node of the same position. Then the directory's tree would encode
/// to the parent's tree and its id is reused without encoding, hashing and storing it again.
/// Anything that differs (a file read again, an entry added, removed, excluded or unreadable,
/// changed metadata or extended attributes, a subdirectory whose tree changed) fails this test.
fn same_entries(entries: &[Pending], parent: &Tree) -> bool {
    entries.len() == parent.nodes.len()
        && entries.iter().zip(&parent.nodes).all(|(e, p)| match e {
            Pending::Ready(n) => n == p,
            Pending::File { .. } | Pending::Dir { .. } => false,
        })
}

/// Where `path` (read under a root of `renamed`, `(read root, recorded root)` pairs) is
/// recorded.
fn recorded_path<'p>(renamed: &[(PathBuf, PathBuf)], path: &'p Path) -> std::borrow::Cow<'p, Path> {
    for (read, rec) in renamed {
        if let Ok(rest) = path.strip_prefix(read) {
            return std::borrow::Cow::Owned(rec.join(rest));
        }
    }
    std::borrow::Cow::Borrowed(path)
}

/// Run `walk` (given the file job and directory channels, it walks and returns the root
/// entries) while file workers store contents and the assembler stores each directory's tree as
/// it is finished ([`crate::assemble`]); then store the root tree and return its id.
fn walk_and_store<F>(ctx: &Ctx, threads: usize, walk: F) -> Result<Id>
where
    F: FnOnce(Sender<Job>, Sender<DirDone>) -> Vec<Pending>,
{
    let (job_tx, job_rx) = bounded::<Job>(JOB_QUEUE);
    let (done_tx, done_rx) = unbounded::<JobResult>();
    let (dir_tx, dir_rx) = bounded::<DirDone>(DIR_QUEUE);
    let mut asm = Assembler::new(done_rx);
    let roots = std::thread::scope(|s| {
        // Closes the big-file chunk pool when the file workers have ended, also by a panic (the
        // scope then joins its threads).
        let _close = crate::bigfile::CloseOnDrop(ctx.pool.as_ref());
        if let Some(pool) = &ctx.pool {
            for _ in 0..pool.threads {
                s.spawn(move || pool.run(ctx));
            }
        }
        let mut workers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (rx, tx) = (job_rx.clone(), done_tx.clone());
            workers.push(s.spawn(move || {
                let mut c = Compressor::new(ctx.level);
                for job in rx.iter() {
                    let r = if ctx.failed() {
                        Err("not read: the repository failed".into())
                    } else {
                        ctx.read_file(&mut c, &job)
                    };
                    ctx.progress.inc(1, 0);
                    let _ = tx.send((job.id, r));
                }
            }));
        }
        drop(done_tx);
        let asm = &mut asm;
        let assembler = s.spawn(move || {
            if let Err(e) = asm.run(ctx, dir_rx) {
                ctx.fail(e); // stops the workers and the walk
            }
        });
        let roots = walk(job_tx, dir_tx);
        // The walk has dropped the job channel: the workers end when it drains, then the pool.
        for h in workers {
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
        if let Err(e) = assembler.join() {
            std::panic::resume_unwind(e);
        }
        roots
    });
    if let Some(e) = ctx.fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    let nodes = asm.nodes(ctx, roots)?;
    #[cfg(test)]
    tests::PEAKS.with(|p| p.set((asm.peak_trees, asm.peak_early)));
    let mut c = Compressor::new(ctx.level);
    ctx.store(&mut c, BlobType::Tree, &Tree { nodes }.encode())
}

/// Load the index, adopt packs that a crashed writer stored but never indexed, and drop the
/// packs that garbage collection condemned (so nothing new references them).
pub fn writable_index(repo: &Repository, adopt: bool) -> Result<Index> {
    let condemned = session::condemned_packs(repo)?;
    if !adopt {
        return Ok(repo.load_index()?.0.without_packs(&condemned));
    }
    let (mut index, _, _) = repo.load_index_files()?;
    // Adopted packs are verified whole first; damaged ones are warned about and left for prune.
    crate::check::adopt_orphans(repo, &mut index, &condemned)?;
    Ok(index.without_packs(&condemned))
}

/// A path given to back up must be something whose data a snapshot holds: a block or character
/// device, fifo or socket named on its own would be stored as a bare node with none of its
/// content (inside a directory tree such nodes are stored as what they are, like `tar`).
fn refuse_unsupported_root(p: &Path, m: &fs::Metadata) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    let what = if t.is_block_device() {
        "a block device (a volume)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_fifo() {
        "a named pipe"
    } else if t.is_socket() {
        "a socket"
    } else {
        return Ok(());
    };
    let fix = if t.is_block_device() {
        "pass --device-contents to back up its contents (as one image file, allocated extents only), declare a kind = \"volume\" source, or back up the file system mounted from it"
    } else {
        "back up the file system mounted from it, or its data with a command source (e.g. a snapshot tool's output on standard output)"
    };
    Err(Error::Invalid(format!(
        "{} is {what}: a backup of it would hold the device node, not its data; {fix}",
        p.display()
    )))
}

/// Run a backup.
pub fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let time = opts.time.unwrap_or_else(Utc::now);
    if opts.paths.is_empty() {
        return Err(Error::Invalid(
            "nothing to back up: give at least one path".into(),
        ));
    }
    let mut roots = Vec::new();
    let mut seen_names = HashSet::new();
    let mut renamed = Vec::new();
    for (rec, read) in &opts.read_from {
        let rec = crate::util::absolute(rec)?;
        if !opts
            .paths
            .iter()
            .any(|p| crate::util::absolute(p).ok().as_ref() == Some(&rec))
        {
            return Err(Error::Invalid(format!(
                "read_from names {}, which is not one of the paths backed up: give it as a path too",
                rec.display()
            )));
        }
        renamed.push((crate::util::absolute(read)?, rec));
    }
    for p in &opts.paths {
        let abs = crate::util::absolute(p)?;
        let read = renamed
            .iter()
            .find(|(_, rec)| *rec == abs)
            .map(|(read, _)| read.clone())
            .unwrap_or_else(|| abs.clone());
        let m = fs::symlink_metadata(&read).map_err(|e| Error::io("reading", &read, e))?;
        refuse_unsupported_root(&read, &m)?;
        let name = abs
            .file_name()
            .map(FsName::from_os)
            .unwrap_or_else(|| FsName(b"root".to_vec()));
        if !seen_names.insert(name.clone()) {
            return Err(Error::Invalid(format!(
                "two paths end in the same name {:?}: back them up in separate snapshots or give their common parent",
                name.display()
            )));
        }
        roots.push((abs, name, m, read));
    }
    roots.sort_by(|a, b| a.1.cmp(&b.1));
    let hostname = opts.hostname.clone().unwrap_or_else(crate::util::hostname);
    let paths: Vec<String> = roots.iter().map(|r| r.0.display().to_string()).collect();

    // Register before reading the index: garbage collection waits for sessions older than its plan.
    let _session = if opts.dry_run {
        None
    } else {
        Some(Session::start(repo, "backup")?)
    };
    let index = writable_index(repo, !opts.dry_run)?;

    let (all, _) = snapshot::load_all(repo)?;
    let parent = match &opts.parent {
        ParentChoice::None => None,
        ParentChoice::Id(id) => Some(snapshot::find(&all, &id.to_hex())?.clone()),
        ParentChoice::Auto => {
            let mut sorted = paths.clone();
            sorted.sort();
            all.iter()
                .rev()
                .find(|s| {
                    s.snapshot.hostname == hostname && {
                        let mut p = s.snapshot.paths.clone();
                        p.sort();
                        p == sorted
                    }
                })
                .cloned()
        }
    };

    let threads = if opts.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        opts.threads
    };
    let ctx = Ctx {
        repo,
        index: &index,
        dedup: Dedup::new(repo, &index, opts.dry_run),
        chunker: repo.config().chunker,
        seed: repo.key().chunker_seed(),
        level: repo.config().compression,
        inline_max: crate::inline::inline_max(repo),
        progress,
        errors: Mutex::new(Vec::new()),
        warnings: Mutex::new(Vec::new()),
        inconsistent: Mutex::new(Vec::new()),
        bytes_read: AtomicU64::new(0),
        fatal: Mutex::new(None),
        // As many pool threads as workers: see "Backup pipeline" in docs/DESIGN.md.
        pool: (threads > 1)
            .then(|| crate::bigfile::ChunkPool::new(threads, repo.config().chunker.max)),
    };
    progress.phase("backup");
    let excludes = Excludes::new(&opts.excludes)?;
    let next_job = AtomicU64::new(0);
    let next_dir = AtomicU64::new(0);
    let mut summary = Summary::default();
    let root = walk_and_store(&ctx, threads, |job_tx, dir_tx| {
        let mut w = Walker {
            ctx: &ctx,
            excludes: &excludes,
            renamed: &renamed,
            one_fs: opts.one_file_system,
            jobs: job_tx,
            next_job: &next_job,
            dirs: dir_tx,
            next_dir: &next_dir,
            summary: Summary::default(),
            depth: 0,
            threads,
        };
        let ptree = parent
            .as_ref()
            .and_then(|p| w.parent_tree(Some(p.snapshot.tree)));
        let mut pending = Vec::new();
        for (_, name, m, read) in &roots {
            let pnode = ptree.as_ref().and_then(|t| t.get(&name.0));
            pending.push(w.entry(read, name.clone(), m, pnode, m.dev()));
        }
        summary = std::mem::take(&mut w.summary);
        pending // dropping the walker closes the job and directory channels
    })?;
    #[cfg(test)]
    tests::ASSEMBLED.with(|a| a.set(next_dir.load(Ordering::Relaxed) as usize));
    let stored = ctx.dedup.writer.finish()?;
    let needed = ctx.dedup.referenced_packs(&stored);
    #[cfg(test)]
    tests::NEEDED.with(|n| *n.borrow_mut() = needed.clone());

    let errors = std::mem::take(&mut *ctx.errors.lock().unwrap_or_else(|p| p.into_inner()));
    let warnings = std::mem::take(&mut *ctx.warnings.lock().unwrap_or_else(|p| p.into_inner()));
    let changed_while_read =
        std::mem::take(&mut *ctx.inconsistent.lock().unwrap_or_else(|p| p.into_inner()));
    summary.files_changed_while_read = changed_while_read.len() as u64;
    summary.bytes_read = ctx.bytes_read.load(Ordering::Relaxed);
    (summary.blobs_added, summary.bytes_added) = ctx.dedup.added();
    summary.total_bytes += summary.bytes_read;
    summary.seconds = started.elapsed().as_secs_f64();
    let snap = Snapshot {
        time,
        tree: root,
        paths,
        hostname,
        username: crate::util::username(),
        tags: opts.tags.clone(),
        source: opts.source.clone(),
        copied_from: None,
        parent: parent.map(|p| p.id),
        complete: errors.is_empty() && changed_while_read.is_empty(),
        errors,
        warnings,
        changed_while_read,
        summary,
        program: format!("holdfast {}", env!("CARGO_PKG_VERSION")),
        log: None,
    };
    progress.finish();
    let id = match &_session {
        None => None,
        Some(session) => {
            if let Some(hook) = &opts.before_snapshot {
                (hook.0)(session);
            }
            Some(crate::writer::record_snapshot(
                repo, session, &needed, &snap,
            )?)
        }
    };
    Ok(BackupOutcome { id, snapshot: snap })
}

#[cfg(test)]
#[path = "backup_tests.rs"]
mod tests;
