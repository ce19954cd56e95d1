//! Turning a backup's walk into stored trees while the walk goes on, so memory is bounded by
//! the width of the tree (the directories open along the walk), not by its size.
//!
//! The walker sends each directory to the assembler as soon as every entry below it has been
//! walked (depth first: a directory is sent after all its subdirectories), with its entries as
//! [`Pending`]: finished nodes, files whose content a worker is still storing (by job number),
//! and subdirectories (by directory number, already sent). The assembler takes directories in
//! the order they were sent, waits for the file results it needs, stores the directory's tree
//! and keeps only its id until the parent directory comes. So what is held at once is the
//! walker's open path (each open directory's entries), the directories queued in a bounded
//! channel, the file jobs in flight (a bounded channel), their results, and one tree id per
//! finished directory whose parent is not finished yet.

use std::collections::HashMap;

use crossbeam_channel::Receiver;

use crate::backup::Ctx;
use crate::blob::{BlobType, Compressor};
use crate::error::{Error, Result};
use crate::fileread::FileDone;
use crate::id::Id;
use crate::tree::{Node, Tree};

/// Directories queued between the walker and the assembler.
pub(crate) const DIR_QUEUE: usize = 64;

/// File jobs queued between the walker and the workers.
pub(crate) const JOB_QUEUE: usize = 1024;

/// An entry of a directory being walked.
pub(crate) enum Pending {
    /// Nothing left to store.
    Ready(Node),
    /// A file whose content job `job` stores.
    File { node: Node, job: usize },
    /// A subdirectory, sent to the assembler as directory `dir`.
    Dir { node: Node, dir: usize },
}

/// A directory whose walk is finished: its number and its entries (in name order).
pub(crate) struct DirDone {
    pub(crate) dir: usize,
    pub(crate) entries: Vec<Pending>,
}

/// A file job's result.
pub(crate) type JobResult = (usize, std::result::Result<FileDone, String>);

/// Stores directory trees as their walks finish (see the module documentation).
pub(crate) struct Assembler {
    results: Receiver<JobResult>,
    /// File results received before their directory came.
    done: HashMap<usize, std::result::Result<FileDone, String>>,
    /// Tree ids of finished directories whose parent has not come yet.
    trees: HashMap<usize, Id>,
    /// The most tree ids held at once (for the tests of the bound).
    pub(crate) peak_trees: usize,
    /// The most file results held at once before their directory came.
    pub(crate) peak_early: usize,
}

impl Assembler {
    /// An assembler that takes file results from `results`.
    pub(crate) fn new(results: Receiver<JobResult>) -> Assembler {
        Assembler {
            results,
            done: HashMap::new(),
            trees: HashMap::new(),
            peak_trees: 0,
            peak_early: 0,
        }
    }

    /// Store every directory `dirs` delivers, in order, until the walker closes it. A
    /// repository error ends the assembly (the walker's later sends then fail and are dropped).
    pub(crate) fn run(&mut self, ctx: &Ctx, dirs: Receiver<DirDone>) -> Result<()> {
        let mut c = Compressor::new(ctx.level);
        for d in dirs.iter() {
            let nodes = self.nodes(ctx, d.entries)?;
            let id = ctx.store(&mut c, BlobType::Tree, &Tree { nodes }.encode())?;
            self.trees.insert(d.dir, id);
            self.peak_trees = self.peak_trees.max(self.trees.len());
        }
        Ok(())
    }

    /// The finished nodes of a directory's entries: file results filled in (a file that could
    /// not be read is reported and left out), subdirectories given their tree ids.
    pub(crate) fn nodes(&mut self, ctx: &Ctx, entries: Vec<Pending>) -> Result<Vec<Node>> {
        let mut nodes = Vec::with_capacity(entries.len());
        for p in entries {
            match p {
                Pending::Ready(n) => nodes.push(n),
                Pending::Dir { mut node, dir } => {
                    let id = self.trees.remove(&dir).ok_or_else(|| {
                        Error::Refused("a directory was assembled before its subdirectory".into())
                    })?;
                    node.subtree = Some(id);
                    nodes.push(node);
                }
                Pending::File { mut node, job } => match self.result(job)? {
                    Ok(f) => {
                        node.content = f.content;
                        node.inline = f.inline;
                        node.size = f.size;
                        // The times of the content stored, so the next backup compares with them.
                        (node.mtime, node.ctime) = (f.stamp.mtime, f.stamp.ctime);
                        node.changed_while_read = f.changed_while_read;
                        nodes.push(node);
                    }
                    // The repository failed: that error is the backup's, reported once;
                    // the files it stopped are not listed one by one.
                    Err(_) if ctx.failed() => {
                        return Err(Error::Refused("the repository failed".into()))
                    }
                    Err(msg) => ctx.error(msg),
                },
            }
        }
        Ok(nodes)
    }

    /// Job `job`'s result, waiting for it.
    fn result(&mut self, job: usize) -> Result<std::result::Result<FileDone, String>> {
        loop {
            if let Some(r) = self.done.remove(&job) {
                return Ok(r);
            }
            match self.results.recv() {
                Ok((id, r)) => {
                    self.done.insert(id, r);
                    self.peak_early = self.peak_early.max(self.done.len());
                }
                Err(_) => return Err(Error::Refused("a file job produced no result".into())),
            }
        }
    }
}
