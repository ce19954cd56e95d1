//! Snapshots of streams: the output of a database's own backup tool (pg_dump, mysqldump, an
//! SQLite online backup, any command) chunked, deduplicated and stored as files of a snapshot,
//! without a temporary copy on disk. A stream whose producer fails makes no snapshot: nothing
//! may claim to be a complete recovery point when the dump was not.

use std::io::Read;
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
        subtree: None,
        target: None,
        rdev: None,
        xattrs: Vec::new(),
        changed_while_read: false,
    }
}

/// Store the items as files `DIR/NAME` of a new snapshot.
pub fn backup_streams(
    repo: &Repository,
    opts: &StreamOptions,
    items: Vec<StreamItem<'_>>,
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
        let cdc = fastcdc::v2020::StreamCDC::with_level_and_seed(
            item.reader,
            p.min,
            p.avg,
            p.max,
            fastcdc::v2020::Normalization::Level1,
            repo.key().chunker_seed(),
        );
        let mut content = Vec::new();
        let mut size = 0u64;
        for chunk in cdc {
            let chunk = chunk.map_err(|e| Error::Refused(format!("reading {}: {e}", item.name)))?;
            size += chunk.length as u64;
            progress.inc(0, chunk.length as u64);
            content.push(dedup.store(&mut c, BlobType::Data, &chunk.data)?);
        }
        (item.finish)().map_err(|e| {
            Error::Refused(format!(
                "{}: the producer failed, no recovery point was recorded: {e}",
                item.name
            ))
        })?;
        summary.files_new += 1;
        summary.bytes_read += size;
        summary.total_bytes += size;
        let mut n = synthetic(item.name, NodeKind::File, 0o600, (uid, gid), now_ns);
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
    let mut n = 0;
    for id in &node.content {
        let data = repo.read_blob(index, BlobType::Data, id)?;
        out.write_all(&data)
            .map_err(|e| Error::io("writing", path, e))?;
        n += data.len() as u64;
    }
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
