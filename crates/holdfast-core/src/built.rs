//! Snapshots of trees a source driver builds itself (a bucket's objects as files): the driver
//! stores file contents and directory trees through a [`TreeWriter`], reusing the content of
//! unchanged files of an earlier snapshot without reading them again, and names the root; the
//! snapshot is recorded like any other (session, durable packs and index first), so `check`,
//! `copy`, `prune` and file restores treat it as a file snapshot.

use std::io::Read;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::backup::writable_index;
use crate::blob::{BlobType, Compressor};
use crate::error::Result;
use crate::id::Id;
use crate::index::Index;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::session::Session;
use crate::snapshot::{Snapshot, Summary};
use crate::tree::{FileTime, FsName, Node, NodeKind, Tree};
use crate::writer::Dedup;

/// A node of a tree a driver builds: owned by root, one link, no inode or device, nothing
/// stored yet (the driver sets `size` and `content`, or `subtree`).
pub fn node(name: &str, kind: NodeKind, mode: u32, mtime: FileTime) -> Node {
    Node {
        name: FsName(name.as_bytes().to_vec()),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime,
        ctime: mtime,
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

/// What the snapshot says about itself.
#[derive(Debug, Clone, Default)]
pub struct BuiltOptions {
    /// What the snapshot's `paths` say (e.g. `s3://bucket/prefix`).
    pub label: String,
    /// Workload source.
    pub source: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Snapshot time (default now).
    pub time: Option<DateTime<Utc>>,
}

/// What a driver's build step returns: the root tree, its counts, and notes for people
/// (recorded as the snapshot's warnings).
pub struct BuiltTree {
    /// The root tree's id (from [`TreeWriter::store_tree`]).
    pub root: Id,
    /// Files new, changed, unmodified, bytes read; blob counts are filled in here.
    pub summary: Summary,
    /// Notes recorded with the snapshot.
    pub notes: Vec<String>,
}

/// Stores file contents and trees for one snapshot.
pub struct TreeWriter<'a> {
    repo: &'a Repository,
    dedup: &'a Dedup<'a>,
    index: &'a Index,
    c: Compressor,
}

impl TreeWriter<'_> {
    /// The index the snapshot is written against (to read an earlier snapshot's trees).
    pub fn index(&self) -> &Index {
        self.index
    }

    /// Chunk, deduplicate and store one file's content; its chunk ids and length.
    pub fn store_file(
        &mut self,
        name: &str,
        reader: impl Read,
        progress: &dyn Progress,
    ) -> Result<(Vec<Id>, u64)> {
        let p = self.repo.config().chunker;
        let cdc = fastcdc::v2020::StreamCDC::with_level_and_seed(
            reader,
            p.min,
            p.avg,
            p.max,
            fastcdc::v2020::Normalization::Level1,
            self.repo.key().chunker_seed(),
        );
        crate::stream::store_chunks(
            self.dedup,
            &mut self.c,
            self.repo.config().compression,
            name,
            cdc.map(|r| {
                r.map(crate::stream::Piece::Data)
                    .map_err(|e| crate::Error::Refused(format!("reading: {e}")))
            }),
            progress,
        )
    }

    /// The entries of an earlier tree by name (none without one): what a driver compares a
    /// directory with.
    pub fn previous(&self, tree: Option<Id>) -> Result<std::collections::HashMap<Vec<u8>, Node>> {
        Ok(match tree {
            Some(id) => crate::browse::load_tree(self.repo, self.index, &id)?
                .nodes
                .into_iter()
                .map(|n| (n.name.0.clone(), n))
                .collect(),
            None => std::collections::HashMap::new(),
        })
    }

    /// Whether every blob of an earlier file's content is still stored, so the content can be
    /// reused without reading the file again (a pruned blob is not).
    pub fn reusable(&self, content: &[Id]) -> bool {
        content.iter().all(|id| self.dedup.known(id))
    }

    /// Store a directory (nodes sorted by name here); its tree id.
    pub fn store_tree(&mut self, mut nodes: Vec<Node>) -> Result<Id> {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = nodes.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(crate::Error::Invalid(format!(
                "two entries named {:?} in one directory",
                w[0].name.display()
            )));
        }
        self.dedup
            .store(&mut self.c, BlobType::Tree, &Tree { nodes }.encode())
    }
}

/// The root tree of the newest complete snapshot this host made of `source` with `label` as
/// its `paths`: what an incremental driver continues from. Another host's points never count
/// (recovery points belong to a host and a source).
pub fn previous_root(repo: &Repository, source: &str, label: &str) -> Result<Option<Id>> {
    let host = crate::util::hostname();
    let (all, _) = crate::snapshot::load_all(repo)?;
    Ok(all
        .iter()
        .filter(|s| {
            s.snapshot.complete
                && s.snapshot.source.as_deref() == Some(source)
                && s.snapshot.hostname == host
                && s.snapshot.paths.first().map(String::as_str) == Some(label)
        })
        .max_by_key(|s| s.snapshot.time)
        .map(|s| s.snapshot.tree))
}

/// Record a snapshot of the tree `build` stores. Nothing is recorded when `build` fails.
pub fn backup_built(
    repo: &Repository,
    opts: &BuiltOptions,
    progress: &dyn Progress,
    build: impl FnOnce(&mut TreeWriter) -> Result<BuiltTree>,
) -> Result<(Id, Snapshot)> {
    let started = Instant::now();
    let time = opts.time.unwrap_or_else(Utc::now);
    let session = Session::start(repo, "backup")?;
    let index = writable_index(repo, true)?;
    let dedup = Dedup::new(repo, &index, false);
    let mut w = TreeWriter {
        repo,
        dedup: &dedup,
        index: &index,
        c: Compressor::new(repo.config().compression),
    };
    let built = build(&mut w)?;
    let stored = dedup.writer.finish()?;
    let needed = dedup.referenced_packs(&stored);
    let mut summary = built.summary;
    (summary.blobs_added, summary.bytes_added) = dedup.added();
    summary.seconds = started.elapsed().as_secs_f64();
    progress.finish();
    let snap = Snapshot {
        time,
        tree: built.root,
        paths: vec![opts.label.clone()],
        hostname: crate::util::hostname(),
        username: crate::util::username(),
        tags: opts.tags.clone(),
        source: opts.source.clone(),
        copied_from: None,
        parent: None,
        complete: true,
        errors: Vec::new(),
        warnings: built.notes,
        changed_while_read: Vec::new(),
        summary,
        program: format!("holdfast {}", env!("CARGO_PKG_VERSION")),
        log: None,
    };
    let id = crate::writer::record_snapshot(repo, &session, &needed, &snap)?;
    Ok((id, snap))
}
