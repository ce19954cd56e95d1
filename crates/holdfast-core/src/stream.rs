//! Snapshots of streams: the output of a database's own backup tool (pg_dump, mysqldump, an
//! SQLite online backup, any command) chunked, deduplicated and stored as files of a snapshot,
//! without a temporary copy on disk. A stream whose producer fails makes no snapshot: nothing
//! may claim to be a complete recovery point when the dump was not.

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::backup::writable_index;
use crate::blob::{BlobType, Compressor};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::session::Session;
use crate::snapshot::{Snapshot, Summary};
use crate::tree::{FileTime, FsName, Node, NodeKind, Tree};
use crate::writer::Dedup;

/// One file of a stream snapshot.
pub struct StreamItem<'a> {
    /// File name inside the snapshot's directory.
    pub name: String,
    /// The data.
    pub reader: Box<dyn Read + 'a>,
    /// Called after the reader is exhausted: reports whether the producer succeeded (e.g. the
    /// dump process exited 0), with its error output otherwise.
    pub finish: Box<dyn FnOnce() -> std::result::Result<(), String> + 'a>,
}

/// Where and how a stream snapshot is recorded.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Directory name at the snapshot root (the source name).
    pub dir: String,
    /// What the snapshot's `paths` say (e.g. `postgres:orders`).
    pub label: String,
    /// Workload source.
    pub source: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Snapshot time (default now).
    pub time: Option<DateTime<Utc>>,
    /// For a batch of a continuous log: what it holds (see [`crate::logs`]).
    pub log: Option<crate::logs::LogBatch>,
}

/// A node for an entry that exists only in the snapshot (no file system behind it).
fn synthetic(
    name: String,
    kind: NodeKind,
    mode: u32,
    (uid, gid): (u32, u32),
    time_ns: i64,
) -> Node {
    Node {
        name: FsName(name.into_bytes()),
        kind,
        mode,
        uid,
        gid,
        mtime: FileTime::from_nanos(time_ns),
        ctime: FileTime::from_nanos(time_ns),
        inode: 0,
        dev: 0,
        links: 1,
        size: 0,
        content: Vec::new(),
        inline: None,
        subtree: None,
        target: None,
        rdev: None,
        xattrs: Vec::new(),
        changed_while_read: false,
    }
}

/// One piece of a stored file: a chunk to store, or one already stored (a volume's zero
/// chunks) with its length.
pub enum Piece {
    /// A chunk the chunker cut.
    Data(fastcdc::v2020::ChunkData),
    /// A stored chunk's id and length.
    Known(Id, u64),
}

/// Chunks a stream yields, stored in order: the stream is read and cut on this thread while
/// up to four others hash, compress and encrypt the chunks (the costly part), so a dump or a
/// WAL segment is stored at the speed of several cores. Returns the chunks' ids in stream
/// order and the stream's length.
pub(crate) fn store_chunks(
    dedup: &Dedup,
    c: &mut Compressor,
    level: i32,
    name: &str,
    chunks: impl Iterator<Item = Result<Piece>>,
    progress: &dyn Progress,
) -> Result<(Vec<Id>, u64)> {
    let read_error = |e: Error| match e {
        Error::Refused(m) => Error::Refused(format!("{name}: {m}")),
        e => e,
    };
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4);
    let mut size = 0u64;
    if workers < 2 {
        let mut ids = Vec::new();
        for chunk in chunks {
            match chunk.map_err(read_error)? {
                Piece::Data(chunk) => {
                    size += chunk.length as u64;
                    progress.inc(0, chunk.length as u64);
                    ids.push(dedup.store(c, BlobType::Data, &chunk.data)?);
                }
                Piece::Known(id, n) => {
                    size += n;
                    ids.push(id);
                }
            }
        }
        return Ok((ids, size));
    }
    std::thread::scope(|scope| {
        let (tx, rx) = crossbeam_channel::bounded::<(usize, Vec<u8>)>(workers * 2);
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<(usize, Result<Id>)>();
        for _ in 0..workers {
            let (rx, done_tx) = (rx.clone(), done_tx.clone());
            scope.spawn(move || {
                let mut c = Compressor::new(level);
                for (i, data) in rx {
                    if done_tx
                        .send((i, dedup.store(&mut c, BlobType::Data, &data)))
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        drop((rx, done_tx));
        let mut n = 0usize;
        let mut failed = None;
        let mut known = Vec::new();
        for chunk in chunks {
            match chunk {
                Ok(Piece::Known(id, len)) => {
                    size += len;
                    known.push((n, id));
                    n += 1;
                }
                Ok(Piece::Data(chunk)) => {
                    size += chunk.length as u64;
                    progress.inc(0, chunk.length as u64);
                    if tx.send((n, chunk.data)).is_err() {
                        break;
                    }
                    n += 1;
                }
                Err(e) => {
                    failed = Some(read_error(e));
                    break;
                }
            }
        }
        // No more chunks: the workers finish what they hold and end.
        drop(tx);
        let mut ids: Vec<Option<Id>> = vec![None; n];
        for (i, id) in known {
            ids[i] = Some(id);
        }
        for (i, r) in done_rx {
            match r {
                Ok(id) => ids[i] = Some(id),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        ids.into_iter()
            .map(|id| id.ok_or_else(|| Error::Invalid("a chunk was not stored".into())))
            .collect::<Result<Vec<Id>>>()
            .map(|ids| (ids, size))
    })
}

/// One volume (a block device or disk image) stored as a file of a snapshot: only its
/// allocated extents are read (see [`crate::volume`]).
pub struct VolumeItem<'a> {
    /// File name inside the snapshot's directory.
    pub name: String,
    /// The open device or image.
    pub file: &'a std::fs::File,
    /// Its size in bytes ([`crate::volume::size`]).
    pub size: u64,
    /// Its allocated byte ranges `[start, end)` when something other than the file knows them
    /// (a thin logical volume's pool mappings; [`crate::volume::extents_of`]): only these are
    /// read. `None`: ask the file ([`crate::volume::extents`], `SEEK_DATA`/`SEEK_HOLE`).
    pub allocated: Option<Vec<(u64, u64)>>,
    /// Called once every extent is read, before the snapshot is recorded: reports whether the
    /// capture is consistent (e.g. the file system stayed frozen; thaw it here), with why not.
    pub finish: Box<dyn FnOnce() -> std::result::Result<(), String> + 'a>,
}

/// What a stream snapshot's file is made from.
pub enum Content<'a> {
    /// A producer's byte stream.
    Stream(StreamItem<'a>),
    /// A volume.
    Volume(VolumeItem<'a>),
}

/// Store the items as files `DIR/NAME` of a new snapshot.
pub fn backup_streams(
    repo: &Repository,
    opts: &StreamOptions,
    items: Vec<StreamItem<'_>>,
    progress: &dyn Progress,
) -> Result<(Id, Snapshot)> {
    backup_contents(
        repo,
        opts,
        items.into_iter().map(Content::Stream).collect(),
        progress,
    )
}

/// Store streams and volumes as files `DIR/NAME` of a new snapshot. A volume's
/// `summary.bytes_read` counts only its allocated extents.
pub fn backup_contents(
    repo: &Repository,
    opts: &StreamOptions,
    items: Vec<Content<'_>>,
    progress: &dyn Progress,
) -> Result<(Id, Snapshot)> {
    let started = Instant::now();
    let time = opts.time.unwrap_or_else(Utc::now);
    let session = Session::start(repo, "backup")?;
    let index = writable_index(repo, true)?;
    let dedup = Dedup::new(repo, &index, false);
    let p = repo.config().chunker;
    let mut c = Compressor::new(repo.config().compression);
    let mut nodes = Vec::new();
    let mut summary = Summary::default();
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let now_ns = time.timestamp_nanos_opt().unwrap_or(0);
    progress.phase("backup stream");
    for item in items {
        let (name, content, size, read) = match item {
            Content::Stream(item) => {
                let cdc = fastcdc::v2020::StreamCDC::with_level_and_seed(
                    item.reader,
                    p.min,
                    p.avg,
                    p.max,
                    fastcdc::v2020::Normalization::Level1,
                    repo.key().chunker_seed(),
                );
                let (content, size) = store_chunks(
                    &dedup,
                    &mut c,
                    repo.config().compression,
                    &item.name,
                    cdc.map(|r| {
                        r.map(Piece::Data)
                            .map_err(|e| Error::Refused(format!("reading: {e}")))
                    }),
                    progress,
                )?;
                (item.finish)().map_err(|e| {
                    Error::Refused(format!(
                        "{}: the producer failed, no recovery point was recorded: {e}",
                        item.name
                    ))
                })?;
                (item.name, content, size, size)
            }
            Content::Volume(v) => {
                let ext = match &v.allocated {
                    Some(a) => crate::volume::extents_of(a, v.size, p.min as u64),
                    None => crate::volume::extents(v.file, v.size, p.min as u64),
                }
                .map_err(|e| {
                    Error::io("finding the allocated extents of", Path::new(&v.name), e)
                })?;
                let read: u64 = ext.iter().filter(|e| e.data).map(|e| e.len).sum();
                let pieces = crate::volume::pieces(
                    &dedup,
                    repo.config().compression,
                    v.file,
                    ext,
                    (p.min, p.avg, p.max),
                    repo.key().chunker_seed(),
                );
                let (content, size) = store_chunks(
                    &dedup,
                    &mut c,
                    repo.config().compression,
                    &v.name,
                    pieces,
                    progress,
                )?;
                (v.finish)().map_err(|e| {
                    Error::Refused(format!("{}: no recovery point was recorded: {e}", v.name))
                })?;
                if size != v.size {
                    return Err(Error::Refused(format!(
                        "{}: {size} bytes were stored of a volume of {} bytes (it changed size while read); no recovery point was recorded",
                        v.name, v.size
                    )));
                }
                (v.name, content, size, read)
            }
        };
        summary.files_new += 1;
        summary.bytes_read += read;
        summary.total_bytes += size;
        let mut n = synthetic(name, NodeKind::File, 0o600, (uid, gid), now_ns);
        n.size = size;
        n.content = content;
        nodes.push(n);
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    for w in nodes.windows(2) {
        if w[0].name == w[1].name {
            return Err(Error::Invalid(format!(
                "two streams named {:?}",
                w[0].name.display()
            )));
        }
    }
    let sub = dedup.store(&mut c, BlobType::Tree, &Tree { nodes }.encode())?;
    let mut dir = synthetic(opts.dir.clone(), NodeKind::Dir, 0o700, (uid, gid), now_ns);
    dir.subtree = Some(sub);
    let root = dedup.store(&mut c, BlobType::Tree, &Tree { nodes: vec![dir] }.encode())?;
    let stored = dedup.writer.finish()?;
    let needed = dedup.referenced_packs(&stored);
    (summary.blobs_added, summary.bytes_added) = dedup.added();
    summary.dirs = 1;
    summary.seconds = started.elapsed().as_secs_f64();
    progress.finish();
    let snap = Snapshot {
        time,
        tree: root,
        paths: vec![opts.label.clone()],
        hostname: crate::util::hostname(),
        username: crate::util::username(),
        tags: opts.tags.clone(),
        source: opts.source.clone(),
        copied_from: None,
        parent: None,
        complete: true,
        errors: Vec::new(),
        warnings: Vec::new(),
        changed_while_read: Vec::new(),
        summary,
        program: format!("holdfast {}", env!("CARGO_PKG_VERSION")),
        log: opts.log.clone(),
    };
    let id = crate::writer::record_snapshot(repo, &session, &needed, &snap)?;
    Ok((id, snap))
}

/// Write the content of the file at `path` (inside a snapshot) to `out`, authenticating every
/// blob. Used to feed a dump back to the database's own restore tool.
pub fn read_file(
    repo: &Repository,
    index: &crate::index::Index,
    root: &Id,
    path: &str,
    out: &mut dyn std::io::Write,
) -> Result<u64> {
    let node = crate::browse::find_node(repo, index, root, path)?
        .ok_or_else(|| Error::Invalid(format!("{path} is not in the snapshot")))?;
    if node.kind != NodeKind::File {
        return Err(Error::Invalid(format!("{path} is not a file")));
    }
    if let Some(data) = &node.inline {
        out.write_all(data)
            .map_err(|e| Error::io("writing", path, e))?;
        return Ok(data.len() as u64);
    }
    let ids = &node.content;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4);
    let mut n = 0;
    let mut write = |data: &[u8]| -> Result<()> {
        out.write_all(data)
            .map_err(|e| Error::io("writing", path, e))?;
        n += data.len() as u64;
        Ok(())
    };
    if workers < 2 || ids.len() < 2 {
        for id in ids {
            write(&repo.read_blob(index, BlobType::Data, id)?)?;
        }
        return Ok(n);
    }
    // Blobs are read, authenticated and decompressed by several threads a bounded window
    // ahead, and written in order.
    std::thread::scope(|scope| -> Result<()> {
        let (jobs, job_rx) = crossbeam_channel::unbounded::<(usize, Id)>();
        let (done_tx, done) = crossbeam_channel::unbounded::<(usize, Result<Vec<u8>>)>();
        for _ in 0..workers {
            let (job_rx, done_tx) = (job_rx.clone(), done_tx.clone());
            scope.spawn(move || {
                for (i, id) in job_rx {
                    if done_tx
                        .send((i, repo.read_blob(index, BlobType::Data, &id)))
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        drop((job_rx, done_tx));
        let window = workers * 4;
        let mut sent = 0;
        while sent < ids.len().min(window) {
            let _ = jobs.send((sent, ids[sent]));
            sent += 1;
        }
        let mut pending = std::collections::BTreeMap::new();
        let mut next = 0;
        while next < ids.len() {
            let (i, r) = done
                .recv()
                .map_err(|_| Error::Invalid("a reader thread ended early".into()))?;
            pending.insert(i, r);
            while let Some(r) = pending.remove(&next) {
                write(&r?)?;
                next += 1;
                if sent < ids.len() {
                    let _ = jobs.send((sent, ids[sent]));
                    sent += 1;
                }
            }
        }
        Ok(())
    })?;
    Ok(n)
}

/// Names of the files in a stream snapshot's directory.
pub fn list_files(
    repo: &Repository,
    index: &crate::index::Index,
    root: &Id,
) -> Result<Vec<(String, String)>> {
    let top = crate::browse::load_tree(repo, index, root)?;
    let mut out = Vec::new();
    for d in &top.nodes {
        if let Some(sub) = d.subtree {
            for n in crate::browse::load_tree(repo, index, &sub)?.nodes {
                out.push((d.name.display(), n.name.display()));
            }
        }
    }
    Ok(out)
}
