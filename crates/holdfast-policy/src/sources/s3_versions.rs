//! Object versions of an `s3` source with `versions = true`: beside the objects directory
//! `NAME`, a snapshot holds `NAME.versions/KEY/VERSIONID`, one file per version the store
//! lists (the current one included: its content deduplicates with the object's file), each
//! with the object metadata attribute. Versions never change, so a version of the previous
//! recovery point (same id, size and ETag, content still stored) is reused without a request.

use std::collections::{BTreeMap, HashMap};

use holdfast_backend_opendal::bucket::{Bucket, ObjectMeta};
use holdfast_backend_opendal::bucket_versions::ListedVersion;
use holdfast_backend_opendal::tagging::TagRead;
use holdfast_core::built::TreeWriter;
use holdfast_core::id::Id;
use holdfast_core::progress::Progress;
use holdfast_core::tree::{FileTime, Node, NodeKind};

use super::bucket::{store, BucketError, Stored};
use super::walk::node;
use crate::sources::SourceError;

/// The name of the versions directory beside the objects directory `name`.
pub(crate) fn versions_dir(name: &str) -> String {
    format!("{name}.versions")
}

/// What a versions walk did.
#[derive(Debug, Default)]
pub(crate) struct VersionCounts {
    /// Versions in the recovery point.
    pub(crate) versions: u64,
    /// Versions read from the store (new since the previous point).
    pub(crate) read: u64,
    /// Their bytes.
    pub(crate) bytes_read: u64,
}

/// A key's path components leading to its versions.
#[derive(Default)]
struct Trie {
    dirs: BTreeMap<String, Trie>,
    versions: Vec<ListedVersion>,
}

fn part_ok(p: &str) -> bool {
    !(p.is_empty() || p == "." || p == ".." || p.contains('/'))
}

/// Store the versions tree of every version under `prefix`; `prev` is the previous point's
/// versions directory.
pub(crate) fn store_versions(
    b: &Bucket,
    w: &mut TreeWriter,
    progress: &dyn Progress,
    prefix: &str,
    prev: Option<Id>,
    time_ns: i64,
) -> Result<(Id, VersionCounts), SourceError> {
    let mut root = Trie::default();
    for v in b.list_versions(prefix).map_err(store)? {
        let Some(rel) = v.key.strip_prefix(prefix) else {
            continue;
        };
        let parts: Vec<&str> = rel.split('/').collect();
        if !parts.iter().all(|p| part_ok(p)) || !part_ok(&v.version) {
            return Err(BucketError::BadKey(format!("{} version {}", v.key, v.version)).into());
        }
        let mut t = &mut root;
        for p in &parts {
            t = t.dirs.entry(p.to_string()).or_default();
        }
        t.versions.push(v);
    }
    let mut counts = VersionCounts::default();
    let mut s = Store {
        b,
        w,
        progress,
        counts: &mut counts,
        time_ns,
    };
    let id = s.dir(&root, prev, prefix)?;
    Ok((id, counts))
}

struct Store<'a, 'w> {
    b: &'a Bucket,
    w: &'a mut TreeWriter<'w>,
    progress: &'a dyn Progress,
    counts: &'a mut VersionCounts,
    time_ns: i64,
}

impl Store<'_, '_> {
    /// The tags of one version, when the source keeps tags (none where the store has no
    /// tagging, or the version is gone since it was listed).
    fn version_tags(
        &self,
        key: &str,
        version: &str,
    ) -> Result<Option<BTreeMap<String, String>>, SourceError> {
        if !self.b.reads_tags() {
            return Ok(None);
        }
        match self.b.tags(key, Some(version)).map_err(store)? {
            TagRead::Tags(t) => Ok(Some(t)),
            TagRead::Gone | TagRead::Unsupported => Ok(None),
        }
    }

    fn load(&self, id: Option<Id>) -> Result<HashMap<Vec<u8>, Node>, SourceError> {
        Ok(self.w.previous(id)?)
    }

    /// A directory of the trie (key prefix `at`): its children, each a directory.
    fn dir(&mut self, t: &Trie, prev: Option<Id>, at: &str) -> Result<Id, SourceError> {
        let mut before = self.load(prev)?;
        let mut nodes = Vec::new();
        for (name, child) in &t.dirs {
            let key = format!("{at}{name}");
            let sub_prev = before
                .remove(name.as_bytes())
                .filter(|n| n.kind == NodeKind::Dir)
                .and_then(|n| n.subtree);
            let sub = if child.versions.is_empty() {
                self.dir(child, sub_prev, &format!("{key}/"))?
            } else if child.dirs.is_empty() {
                self.key(&key, &child.versions, sub_prev)?
            } else {
                // `a` and `a/b` both exist: a path cannot be a file's and a directory's.
                return Err(BucketError::BadKey(key).into());
            };
            let mut n = node(name, NodeKind::Dir, FileTime::from_nanos(self.time_ns));
            n.subtree = Some(sub);
            nodes.push(n);
        }
        self.w.store_tree(nodes).map_err(SourceError::from)
    }

    /// One key's versions: a file per version id.
    fn key(
        &mut self,
        key: &str,
        versions: &[ListedVersion],
        prev: Option<Id>,
    ) -> Result<Id, SourceError> {
        let before = self.load(prev)?;
        let mut nodes = Vec::new();
        for v in versions {
            self.counts.versions += 1;
            let old = before.get(v.version.as_bytes()).filter(|o| {
                o.kind == NodeKind::File
                    && o.size == v.size
                    && Stored::of(o).is_some_and(|s| s.etag == v.etag)
                    && self.w.reusable(&o.content)
            });
            if let Some(o) = old {
                nodes.push(o.clone());
                continue;
            }
            let meta = ObjectMeta {
                size: v.size,
                etag: v.etag.clone(),
                version: Some(v.version.clone()),
                ..Default::default()
            };
            let (content, size) =
                self.w
                    .store_file(key, self.b.reader(key, &meta), self.progress)?;
            self.counts.read += 1;
            self.counts.bytes_read += size;
            let stored = Stored {
                etag: v.etag.clone(),
                last_modified: v.last_modified,
                version: Some(v.version.clone()),
                tags: self.version_tags(key, &v.version)?,
                ..Default::default()
            };
            let mtime = FileTime::from_nanos(
                v.last_modified
                    .and_then(|t| t.timestamp_nanos_opt())
                    .unwrap_or(self.time_ns),
            );
            let mut n = node(&v.version, NodeKind::File, mtime);
            n.size = size;
            n.content = content;
            n.xattrs = vec![stored.xattr()];
            nodes.push(n);
        }
        self.w.store_tree(nodes).map_err(SourceError::from)
    }
}
