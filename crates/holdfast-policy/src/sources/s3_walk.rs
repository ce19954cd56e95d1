//! The backup walk of an `s3` source: one flat listing of the prefix, in key order, turned into
//! directories by [`Steps`]; each directory is compared with its tree in the previous recovery
//! point (loaded when the directory opens). Unchanged objects (same size and ETag, content
//! still stored) are kept without a request. Decisions are made in listing order, but reads
//! are queued: a FIFO of actions is replayed after one [`Bucket::fetch_all`] of its small
//! objects, so parallel reads span directories; large objects are streamed in ranges.

use std::collections::{HashMap, VecDeque};
use std::io::Cursor;

use chrono::{DateTime, Utc};
use holdfast_backend_opendal::bucket::{Bucket, Listed, ObjectMeta, RANGE};
use holdfast_backend_opendal::tagging::TagRead;
use holdfast_core::built::TreeWriter;
use holdfast_core::id::Id;
use holdfast_core::progress::Progress;
use holdfast_core::snapshot::Summary;
use holdfast_core::tree::{FileTime, Node, NodeKind};

use super::bucket::{store, Stored, DELETED_SHOWN};
use super::keys::{Step, Steps};
use crate::sources::SourceError;

/// Objects read at once (each a HEAD and a GET).
pub(crate) const PARALLEL: usize = 16;
/// Objects of one batch (bounds the requests in flight per round).
pub(crate) const BATCH_OBJECTS: usize = 256;
/// Bytes of one batch: its bodies are held in memory until stored.
pub(crate) const BATCH_BYTES: u64 = 64 << 20;
/// Actions queued before the batch is flushed even with few reads (bounds the memory of a run
/// that keeps most nodes).
const BATCH_ACTIONS: usize = 4096;

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
    let mode = if kind == NodeKind::Dir { 0o755 } else { 0o644 };
    holdfast_core::built::node(name, kind, mode, mtime)
}

fn time_of(t: Option<DateTime<Utc>>, default_ns: i64) -> FileTime {
    FileTime::from_nanos(
        t.and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or(default_ns),
    )
}

/// Whether two last-modified times are the same second, or one is unknown. A listing gives
/// milliseconds, a HEAD whole seconds; an object written again with the same bytes keeps its
/// ETag but not its last-modified, and may carry new metadata, so it is read again.
fn same_second(recorded: Option<DateTime<Utc>>, listed: Option<DateTime<Utc>>) -> bool {
    match (recorded, listed) {
        (Some(a), Some(b)) => a.timestamp() == b.timestamp(),
        _ => true,
    }
}

/// What to do, in listing order, when the queued reads are done.
enum Action {
    /// Open a directory named `name` in the top one.
    Open(String),
    /// Keep the previous point's node of an unchanged object.
    Keep(Node),
    /// Keep the previous point's node of an unchanged object, with the tags read for it now
    /// (the previous point did not read them).
    Retag(Node),
    /// Store the next object of the batch.
    Read(ToRead),
    /// Stream a large object.
    Large(ToRead),
    /// Close the top directory.
    Close,
}

/// An object of the listing to read: its name in the directory, its listing, and whether
/// the previous point had a file of that name (changed rather than new).
struct ToRead {
    name: String,
    listed: Listed,
    had: bool,
}

/// A directory open while deciding: its key prefix and what the previous point had in it
/// (entries not seen yet).
struct Before {
    prefix: String,
    nodes: HashMap<Vec<u8>, Node>,
}

impl Backup<'_, '_> {
    /// Back up every object under `root` (a key prefix), comparing with `prev`, the previous
    /// recovery point's tree of it; the new tree's id.
    pub(crate) fn run(&mut self, root: &str, prev: Option<Id>) -> Result<Id, SourceError> {
        let mut steps = Steps::new(root);
        let mut before = vec![Before {
            prefix: root.to_string(),
            nodes: self.load(prev)?,
        }];
        let mut queue = Queue::default();
        queue.actions.push_back(Action::Open(String::new()));
        let mut building: Vec<(String, Vec<Node>)> = Vec::new();
        let mut out = Vec::new();
        let mut listing = self.b.list_all(root).map_err(store)?;
        loop {
            let listed = match listing.next() {
                Some(l) => Some(l.map_err(store)?),
                None => None,
            };
            out.clear();
            let ended = listed.is_none();
            match &listed {
                Some(l) => steps.key(&l.key, &mut out)?,
                None => steps.finish(&mut out),
            }
            let mut listed = listed;
            for step in out.drain(..) {
                match step {
                    Step::Open { name, prefix } => {
                        let top = before.last_mut().expect("the root is open");
                        let sub_prev = top
                            .nodes
                            .remove(name.as_bytes())
                            .filter(|o| o.kind == NodeKind::Dir)
                            .and_then(|o| o.subtree);
                        before.push(Before {
                            prefix,
                            nodes: self.load(sub_prev)?,
                        });
                        queue.actions.push_back(Action::Open(name));
                    }
                    Step::File { name } => {
                        let e = listed.take().expect("one file per key");
                        let top = before.last_mut().expect("the root is open");
                        let old = top.nodes.remove(name.as_bytes());
                        self.decide(&mut queue, name, e, old);
                    }
                    Step::Close => {
                        let gone = before.pop().expect("as many closes as opens");
                        self.deleted(gone);
                        queue.actions.push_back(Action::Close);
                    }
                }
            }
            if ended {
                let id = self.flush(&mut queue, &mut building)?;
                return Ok(id.expect("the root's close stores its tree"));
            }
            if queue.full() {
                self.flush(&mut queue, &mut building)?;
            }
        }
    }

    /// The previous point's tree `prev` by name (empty without one).
    fn load(&self, prev: Option<Id>) -> Result<HashMap<Vec<u8>, Node>, SourceError> {
        Ok(self.w.previous(prev)?)
    }

    /// Keep the previous node of an unchanged object, or queue its read.
    fn decide(&mut self, queue: &mut Queue, name: String, e: Listed, old: Option<Node>) {
        let had = old.as_ref().is_some_and(|o| o.kind == NodeKind::File);
        let same = old.filter(|o| {
            o.kind == NodeKind::File
                && o.size == e.size
                && Stored::of(o).is_some_and(|s| {
                    s.etag.is_some()
                        && s.etag == e.etag
                        && same_second(s.last_modified, e.last_modified)
                })
                && self.w.reusable(&o.content)
        });
        if let Some(mut o) = same {
            self.walk.summary.files_unmodified += 1;
            self.walk.summary.total_bytes += o.size;
            let mut stored = Stored::of(&o).unwrap_or_default();
            match (self.b.reads_tags(), stored.tags.is_some()) {
                (true, false) => {
                    queue.tag_keys.push(e.key);
                    queue.actions.push_back(Action::Retag(o));
                    return;
                }
                (false, true) => {
                    // Tags no longer kept: the point does not claim tags it did not read.
                    stored.tags = None;
                    o.xattrs = vec![stored.xattr()];
                }
                _ => {}
            }
            queue.actions.push_back(Action::Keep(o));
            return;
        }
        let t = ToRead {
            name,
            listed: e,
            had,
        };
        if t.listed.size > RANGE {
            queue.actions.push_back(Action::Large(t));
        } else {
            queue.bytes += t.listed.size;
            queue.keys.push(t.listed.key.clone());
            queue.actions.push_back(Action::Read(t));
        }
    }

    /// Count (and name the first few of) the previous point's entries of a closed directory
    /// that the listing did not have.
    fn deleted(&mut self, gone: Before) {
        let mut names: Vec<&Node> = gone.nodes.values().collect();
        names.sort_by(|a, b| a.name.cmp(&b.name));
        for g in names {
            self.walk.deleted_count += 1;
            if self.walk.deleted.len() < DELETED_SHOWN {
                let suffix = if g.kind == NodeKind::Dir {
                    "/ (and all under it)"
                } else {
                    ""
                };
                self.walk
                    .deleted
                    .push(format!("{}{}{suffix}", gone.prefix, g.name.display()));
            }
        }
    }

    /// Read the queued small objects in parallel, then replay the actions in order: files
    /// into the directories being built, each closed directory stored. The root's tree id
    /// once the root is closed.
    fn flush(
        &mut self,
        queue: &mut Queue,
        building: &mut Vec<(String, Vec<Node>)>,
    ) -> Result<Option<Id>, SourceError> {
        let keys = std::mem::take(&mut queue.keys);
        let tag_keys = std::mem::take(&mut queue.tag_keys);
        queue.bytes = 0;
        let mut tags = if tag_keys.is_empty() {
            Vec::new()
        } else {
            self.b.tags_all(&tag_keys, PARALLEL)
        }
        .into_iter();
        let mut fetched = if keys.is_empty() {
            Vec::new()
        } else {
            self.b.fetch_all(&keys, PARALLEL)
        }
        .into_iter();
        while let Some(a) = queue.actions.pop_front() {
            match a {
                Action::Open(name) => building.push((name, Vec::new())),
                Action::Keep(n) => building.last_mut().expect("open").1.push(n),
                Action::Retag(mut n) => {
                    let got = tags.next().expect("a result per key");
                    if let TagRead::Tags(t) = got.map_err(store)? {
                        let mut stored = Stored::of(&n).unwrap_or_default();
                        stored.tags = Some(t);
                        n.xattrs = vec![stored.xattr()];
                    }
                    // Gone since the listing, or no tagging: kept as listed, tags unread.
                    building.last_mut().expect("open").1.push(n);
                }
                Action::Read(t) => {
                    let got = fetched.next().expect("a result per key");
                    let Some((meta, body)) = got.map_err(store)? else {
                        continue; // deleted between the listing and now: not part of this point
                    };
                    let (content, size) =
                        self.w
                            .store_file(&t.listed.key, Cursor::new(body), self.progress)?;
                    let n = self.file_node(&t, &meta, content, size);
                    building.last_mut().expect("open").1.push(n);
                }
                Action::Large(t) => {
                    // Streamed in conditional ranges, one at a time.
                    let Some(meta) = self.b.head(&t.listed.key).map_err(store)? else {
                        continue; // deleted between the listing and now
                    };
                    let (content, size) = self.w.store_file(
                        &t.listed.key,
                        self.b.reader(&t.listed.key, &meta),
                        self.progress,
                    )?;
                    let n = self.file_node(&t, &meta, content, size);
                    building.last_mut().expect("open").1.push(n);
                }
                Action::Close => {
                    let (name, nodes) = building.pop().expect("as many closes as opens");
                    let id = self.w.store_tree(nodes)?;
                    let Some(parent) = building.last_mut() else {
                        return Ok(Some(id));
                    };
                    let mut n = node(&name, NodeKind::Dir, FileTime::from_nanos(self.time_ns));
                    n.subtree = Some(id);
                    self.walk.summary.dirs += 1;
                    parent.1.push(n);
                }
            }
        }
        Ok(None)
    }

    /// The file node of an object just stored, and its counts.
    fn file_node(&mut self, t: &ToRead, meta: &ObjectMeta, content: Vec<Id>, size: u64) -> Node {
        if t.had {
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
            tags: meta.tags.clone(),
        };
        let mtime = time_of(t.listed.last_modified, self.time_ns);
        let mut n = node(
            &t.name,
            NodeKind::File,
            time_of(meta.last_modified, self.time_ns).max(mtime),
        );
        n.size = size;
        n.content = content;
        n.xattrs = vec![stored.xattr()];
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_modified_is_compared_to_the_second() {
        let t = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
        for (recorded, listed, same) in [
            (
                t("2026-12-01T10:00:00Z"),
                t("2026-12-01T10:00:00.734Z"),
                true,
            ),
            (
                t("2026-12-01T10:00:00Z"),
                t("2026-12-01T10:00:01.000Z"),
                false,
            ),
            (
                t("2026-12-01T10:00:05Z"),
                t("2026-12-01T10:00:04.999Z"),
                false,
            ),
            (None, t("2026-12-01T10:00:00Z"), true),
            (t("2026-12-01T10:00:00Z"), None, true),
        ] {
            assert_eq!(
                same_second(recorded, listed),
                same,
                "{recorded:?} {listed:?}"
            );
        }
    }
}

/// Actions decided but not replayed yet, and the small objects they read.
#[derive(Default)]
struct Queue {
    actions: VecDeque<Action>,
    keys: Vec<String>,
    /// Keys of kept objects whose tags are read in the batch.
    tag_keys: Vec<String>,
    bytes: u64,
}

impl Queue {
    /// Time to read the batch: enough objects, bytes or actions queued.
    fn full(&self) -> bool {
        self.keys.len() + self.tag_keys.len() >= BATCH_OBJECTS
            || self.bytes >= BATCH_BYTES
            || self.actions.len() >= BATCH_ACTIONS
    }
}
