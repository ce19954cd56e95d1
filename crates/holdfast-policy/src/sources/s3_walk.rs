//! The backup walk of an `s3` source: one "directory" (key prefix) at a time, compared with
//! its tree in the previous recovery point. Unchanged objects (same size and ETag, content
//! still stored) are kept without a request; changed and new small objects are read in
//! batches of parallel requests ([`Bucket::fetch_all`]), large ones streamed in ranges.

use std::collections::HashMap;
use std::io::Cursor;

use chrono::{DateTime, Utc};
use holdfast_backend_opendal::bucket::{Bucket, Listed, ObjectMeta, RANGE};
use holdfast_core::built::TreeWriter;
use holdfast_core::id::Id;
use holdfast_core::progress::Progress;
use holdfast_core::snapshot::Summary;
use holdfast_core::tree::{FileTime, FsName, Node, NodeKind};
use holdfast_core::Repository;

use super::bucket::{store, BucketError, Stored, DELETED_SHOWN};
use crate::sources::SourceError;

/// Objects read at once (each a HEAD and a GET).
pub(crate) const PARALLEL: usize = 16;
/// Objects of one batch (bounds the requests in flight per round).
pub(crate) const BATCH_OBJECTS: usize = 256;
/// Bytes of one batch: its bodies are held in memory until stored.
pub(crate) const BATCH_BYTES: u64 = 64 << 20;

/// Counts of one backup walk.
#[derive(Default)]
pub(crate) struct Walk {
    /// Files new, changed, unmodified, bytes read.
    pub(crate) summary: Summary,
    /// Deleted keys (the first [`DELETED_SHOWN`]).
    pub(crate) deleted: Vec<String>,
    /// How many keys were deleted since the previous point.
    pub(crate) deleted_count: u64,
}

/// One backup walk over a bucket.
pub(crate) struct Backup<'a, 'w> {
    /// The bucket read.
    pub(crate) b: &'a Bucket,
    /// The repository written.
    pub(crate) repo: &'a Repository,
    /// Where contents and trees go.
    pub(crate) w: &'a mut TreeWriter<'w>,
    /// Progress.
    pub(crate) progress: &'a dyn Progress,
    /// Counts so far.
    pub(crate) walk: Walk,
    /// The job's time (directories' mtime, and objects without one).
    pub(crate) time_ns: i64,
}

/// A node with the defaults of a bucket's files and directories.
pub(crate) fn node(name: &str, kind: NodeKind, mtime: FileTime) -> Node {
    Node {
        name: FsName(name.as_bytes().to_vec()),
        kind,
        mode: if kind == NodeKind::Dir { 0o755 } else { 0o644 },
        uid: 0,
        gid: 0,
        mtime,
        ctime: mtime,
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

fn time_of(t: Option<DateTime<Utc>>, default_ns: i64) -> FileTime {
    FileTime::from_nanos(
        t.and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or(default_ns),
    )
}

/// An object of the listing to read: its name in the directory, its listing, and whether
/// the previous point had a file of that name (changed rather than new).
struct ToRead {
    name: String,
    listed: Listed,
    had: bool,
}

impl Backup<'_, '_> {
    /// Store the directory `dir` (a key prefix), comparing it with its tree in the previous
    /// recovery point; its tree id.
    pub(crate) fn dir(&mut self, dir: &str, prev: Option<Id>) -> Result<Id, SourceError> {
        let mut before: HashMap<Vec<u8>, Node> = match prev {
            Some(id) => holdfast_core::browse::load_tree(self.repo, self.w.index(), &id)?
                .nodes
                .into_iter()
                .map(|n| (n.name.0.clone(), n))
                .collect(),
            None => HashMap::new(),
        };
        let mut nodes = Vec::new();
        let mut batch: Vec<ToRead> = Vec::new();
        let mut batch_bytes = 0u64;
        for e in self.b.list_dir(dir).map_err(store)? {
            let name = e.key[dir.len()..].trim_end_matches('/').to_string();
            if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                return Err(BucketError::BadKey(e.key.clone()).into());
            }
            let old = before.remove(name.as_bytes());
            if e.dir {
                let sub_prev = old
                    .filter(|o| o.kind == NodeKind::Dir)
                    .and_then(|o| o.subtree);
                let sub = self.dir(&e.key, sub_prev)?;
                let mut n = node(&name, NodeKind::Dir, FileTime::from_nanos(self.time_ns));
                n.subtree = Some(sub);
                self.walk.summary.dirs += 1;
                nodes.push(n);
                continue;
            }
            let had = old.as_ref().is_some_and(|o| o.kind == NodeKind::File);
            let same = old.filter(|o| {
                o.kind == NodeKind::File
                    && o.size == e.size
                    && Stored::of(o).is_some_and(|s| s.etag.is_some() && s.etag == e.etag)
                    && self.w.reusable(&o.content)
            });
            if let Some(o) = same {
                self.walk.summary.files_unmodified += 1;
                self.walk.summary.total_bytes += o.size;
                nodes.push(o);
                continue;
            }
            if e.size > RANGE {
                // Large: streamed in conditional ranges, one at a time.
                let Some(meta) = self.b.head(&e.key).map_err(store)? else {
                    continue; // deleted between the listing and now: not part of this point
                };
                let (content, size) =
                    self.w
                        .store_file(&e.key, self.b.reader(&e.key, &meta), self.progress)?;
                nodes.push(self.file_node(&name, &e, had, &meta, content, size));
                continue;
            }
            batch_bytes += e.size;
            batch.push(ToRead {
                name,
                listed: e,
                had,
            });
            if batch.len() >= BATCH_OBJECTS || batch_bytes >= BATCH_BYTES {
                self.read_batch(std::mem::take(&mut batch), &mut nodes)?;
                batch_bytes = 0;
            }
        }
        self.read_batch(batch, &mut nodes)?;
        let mut gone: Vec<&Node> = before.values().collect();
        gone.sort_by(|a, b| a.name.cmp(&b.name));
        for g in gone {
            self.walk.deleted_count += 1;
            if self.walk.deleted.len() < DELETED_SHOWN {
                let suffix = if g.kind == NodeKind::Dir {
                    "/ (and all under it)"
                } else {
                    ""
                };
                self.walk
                    .deleted
                    .push(format!("{dir}{}{suffix}", g.name.display()));
            }
        }
        self.w.store_tree(nodes).map_err(SourceError::from)
    }

    /// Read a batch of small objects in parallel, then store them in listing order.
    fn read_batch(&mut self, batch: Vec<ToRead>, nodes: &mut Vec<Node>) -> Result<(), SourceError> {
        if batch.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = batch.iter().map(|t| t.listed.key.clone()).collect();
        let fetched = self.b.fetch_all(&keys, PARALLEL);
        for (t, got) in batch.into_iter().zip(fetched) {
            let Some((meta, body)) = got.map_err(store)? else {
                continue; // deleted between the listing and now: not part of this point
            };
            let (content, size) =
                self.w
                    .store_file(&t.listed.key, Cursor::new(body), self.progress)?;
            nodes.push(self.file_node(&t.name, &t.listed, t.had, &meta, content, size));
        }
        Ok(())
    }

    /// The file node of an object just stored, and its counts.
    fn file_node(
        &mut self,
        name: &str,
        listed: &Listed,
        had: bool,
        meta: &ObjectMeta,
        content: Vec<Id>,
        size: u64,
    ) -> Node {
        if had {
            self.walk.summary.files_changed += 1;
        } else {
            self.walk.summary.files_new += 1;
        }
        self.walk.summary.bytes_read += size;
        self.walk.summary.total_bytes += size;
        let stored = Stored {
            etag: meta.etag.clone(),
            last_modified: meta.last_modified,
            version: meta.version.clone(),
            content_type: meta.content_type.clone(),
            user: meta.user.clone(),
        };
        let mtime = time_of(listed.last_modified, self.time_ns);
        let mut n = node(
            name,
            NodeKind::File,
            time_of(meta.last_modified, self.time_ns).max(mtime),
        );
        n.size = size;
        n.content = content;
        n.xattrs = vec![stored.xattr()];
        n
    }
}
