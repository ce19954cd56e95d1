//! Reading snapshots: walking trees (`ls`), comparing them (`diff`) and sizing them (`stats`).

use std::collections::HashSet;

use serde::Serialize;

use crate::blob::BlobType;
use crate::error::Result;
use crate::id::Id;
use crate::index::Index;
use crate::repo::Repository;
use crate::tree::{Node, NodeKind, Tree};
use crate::trees::Trees;

/// Load and parse a tree blob.
pub fn load_tree(repo: &Repository, index: &Index, id: &Id) -> Result<Tree> {
    Tree::decode(id, &repo.read_blob(index, BlobType::Tree, id)?)
}

/// Visit every node below `tree` depth-first, in name order, with its path (components joined
/// by `/`, starting with `prefix`). Load `trees` with [`Trees::prefetch`] first when the walk
/// covers much of the tree.
pub fn walk(trees: &Trees, tree: &Id, prefix: &str, f: &mut dyn FnMut(&str, &Node)) -> Result<()> {
    let t = trees.get(tree)?;
    for n in &t.nodes {
        let p = format!("{prefix}/{}", n.name.display());
        f(&p, n);
        if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
            walk(trees, &sub, &p, f)?;
        }
    }
    Ok(())
}

/// Find the node at a path (`/`-separated, relative to the snapshot root).
pub fn find_node(repo: &Repository, index: &Index, root: &Id, path: &str) -> Result<Option<Node>> {
    let mut tree = *root;
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for (i, c) in comps.iter().enumerate() {
        let t = load_tree(repo, index, &tree)?;
        let Some(n) = t.get(c.as_bytes()) else {
            return Ok(None);
        };
        if i + 1 == comps.len() {
            return Ok(Some(n.clone()));
        }
        match n.subtree {
            Some(s) => tree = s,
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// One difference between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `+` added, `-` removed, `M` content changed, `U` metadata changed, `T` type changed.
    pub change: char,
    /// Path.
    pub path: String,
}

/// Compare two trees.
pub fn diff(
    trees: &Trees,
    a: Option<&Id>,
    b: Option<&Id>,
    prefix: &str,
    out: &mut Vec<Change>,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let ta = match a {
        Some(a) => trees.get(a)?,
        None => Default::default(),
    };
    let tb = match b {
        Some(b) => trees.get(b)?,
        None => Default::default(),
    };
    let (mut i, mut j) = (0, 0);
    while i < ta.nodes.len() || j < tb.nodes.len() {
        let na = ta.nodes.get(i);
        let nb = tb.nodes.get(j);
        let ord = match (na, nb) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                let n = na.expect("some");
                removed_or_added(trees, n, prefix, '-', out)?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let n = nb.expect("some");
                removed_or_added(trees, n, prefix, '+', out)?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (na.expect("some"), nb.expect("some"));
                let p = format!("{prefix}/{}", x.name.display());
                if x.kind != y.kind {
                    out.push(Change {
                        change: 'T',
                        path: p.clone(),
                    });
                } else if x.content != y.content
                    || x.inline != y.inline
                    || x.target != y.target
                    || x.size != y.size
                {
                    out.push(Change {
                        change: 'M',
                        path: p.clone(),
                    });
                } else if x.mode != y.mode
                    || x.uid != y.uid
                    || x.gid != y.gid
                    || x.mtime != y.mtime
                    || x.xattrs != y.xattrs
                {
                    out.push(Change {
                        change: 'U',
                        path: p.clone(),
                    });
                }
                if x.kind == NodeKind::Dir || y.kind == NodeKind::Dir {
                    let sa = (x.kind == NodeKind::Dir).then_some(x.subtree).flatten();
                    let sb = (y.kind == NodeKind::Dir).then_some(y.subtree).flatten();
                    diff(trees, sa.as_ref(), sb.as_ref(), &p, out)?;
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

fn removed_or_added(
    trees: &Trees,
    n: &Node,
    prefix: &str,
    c: char,
    out: &mut Vec<Change>,
) -> Result<()> {
    let p = format!("{prefix}/{}", n.name.display());
    out.push(Change {
        change: c,
        path: p.clone(),
    });
    if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
        walk(trees, &sub, &p, &mut |path, _| {
            out.push(Change {
                change: c,
                path: path.to_string(),
            })
        })?;
    }
    Ok(())
}

/// Sizes of a set of snapshots.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SnapshotStats {
    /// Snapshots counted.
    pub snapshots: usize,
    /// Files (counted per snapshot).
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Bytes a full restore of each would write, summed.
    pub restore_size: u64,
    /// Distinct data blobs referenced.
    pub unique_blobs: u64,
    /// Plaintext bytes of those blobs (after deduplication, before compression).
    pub unique_raw_bytes: u64,
    /// Stored bytes of those blobs (compressed and encrypted).
    pub unique_stored_bytes: u64,
}

/// Count files, sizes and distinct blobs of the given root trees.
pub fn snapshot_stats(trees: &Trees, index: &Index, roots: &[Id]) -> Result<SnapshotStats> {
    let mut s = SnapshotStats {
        snapshots: roots.len(),
        ..Default::default()
    };
    let mut blobs = HashSet::new();
    for r in roots {
        walk(trees, r, "", &mut |_, n| match n.kind {
            NodeKind::Dir => s.dirs += 1,
            NodeKind::File => {
                s.files += 1;
                s.restore_size += n.size;
                for c in &n.content {
                    if blobs.insert(*c) {
                        if let Some((_, l)) = index.get(c) {
                            s.unique_raw_bytes += l.raw_len as u64;
                            s.unique_stored_bytes += l.length as u64;
                        }
                    }
                }
            }
            _ => {}
        })?;
    }
    s.unique_blobs = blobs.len() as u64;
    Ok(s)
}
