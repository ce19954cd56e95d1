//! One big file on every core: the backup of a large file as a pipeline.
//!
//! The worker that got the file reads it and finds the chunk boundaries (fast: a gear hash and
//! a copy); every chunk then goes to the backup's [`ChunkPool`], whose threads hash,
//! deduplicate, compress, encrypt and pack chunks of any file in parallel. The file's content
//! list is put back in file order from the chunks' sequence numbers. See docs/DESIGN.md
//! ("Backup pipeline") for the bounds and the reasons.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{unbounded, Receiver, Sender};

use crate::backup::{Ctx, Job};
use crate::blob::Compressor;
use crate::budget::{ByteBudget, Taken};
use crate::fileread::describe_io;
use crate::id::Id;

/// A file is read through the pipeline when it is at least this many average chunks long;
/// smaller files are chunked and stored by their worker alone (the backup already runs one
/// worker per core over many files).
pub(crate) const PIPELINE_MIN_CHUNKS: u64 = 16;

/// The pool's budget of chunk bytes handed over and not yet stored, for all files together.
pub(crate) const PIPELINE_BYTES: u64 = 64 << 20;

/// The reader's buffer, in largest chunks: boundaries are found in it, and what is left past
/// the last whole chunk is moved to its front before the next read.
const READ_BUFFER_CHUNKS: usize = 4;

/// One chunk of a big file, for a pool thread.
struct Task {
    seq: usize,
    data: Vec<u8>,
    /// Its bytes of the pool's budget: a reader waits before it hands over a chunk that would
    /// exceed it (unless nothing is in flight, so one chunk always goes).
    permit: Taken,
    done: Sender<(usize, std::result::Result<Id, String>)>,
    /// Set when the file's read failed: its remaining chunks are not stored.
    cancelled: Arc<AtomicBool>,
}

/// The threads that store the chunks of big files, shared by every worker of one backup (so
/// several big files at once never start more than this many threads between them).
pub(crate) struct ChunkPool {
    tx: Mutex<Option<Sender<Task>>>,
    rx: Receiver<Task>,
    budget: Arc<ByteBudget>,
    /// How many threads [`ChunkPool::run`] should be started on.
    pub(crate) threads: usize,
}

impl ChunkPool {
    /// A pool for `threads` threads, and a byte budget that lets each of them hold a largest
    /// chunk (`max_chunk`), at least [`PIPELINE_BYTES`].
    pub(crate) fn new(threads: usize, max_chunk: u32) -> ChunkPool {
        let (tx, rx) = unbounded();
        ChunkPool {
            tx: Mutex::new(Some(tx)),
            rx,
            budget: ByteBudget::new(PIPELINE_BYTES.max(threads as u64 * max_chunk as u64)),
            threads,
        }
    }

    /// A pool thread: store chunks until the pool is closed and drained.
    pub(crate) fn run(&self, ctx: &Ctx) {
        let mut c = Compressor::new(ctx.level());
        for t in self.rx.iter() {
            let r = if t.cancelled.load(Ordering::Relaxed) {
                Err("not stored: the file's read failed".to_string())
            } else if ctx.failed() {
                Err("not stored: the repository failed".to_string())
            } else {
                ctx.store_chunk(&mut c, &t.data)
            };
            drop(t.data);
            drop(t.permit);
            // The reader may have stopped (an error elsewhere in the file): nobody waits.
            let _ = t.done.send((t.seq, r));
        }
    }

    /// No more chunks: the pool threads end once the queue is drained.
    pub(crate) fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
    }

    fn submit(&self, t: Task) -> std::result::Result<(), String> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match tx {
            Some(tx) => tx.send(t).map_err(|_| "the chunk pool stopped".to_string()),
            None => Err("the chunk pool is closed".to_string()),
        }
    }
}

/// Closes a pool when dropped (at the end of the backup's walk, or when it unwinds).
pub(crate) struct CloseOnDrop<'a>(pub(crate) Option<&'a ChunkPool>);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            p.close();
        }
    }
}

/// Cuts a stream into content-defined chunks exactly as `fastcdc::v2020::StreamCDC` does (the
/// cut point only depends on the next `max` bytes, or what is left at the end), with one copy
/// per byte instead of a drain and refill of its `max`-sized buffer per chunk.
pub(crate) struct Chunker<R> {
    src: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    params: crate::repo::ChunkerParams,
    seed: u64,
}

impl<R: Read> Chunker<R> {
    /// A chunker over `src` with the repository's parameters and gear seed.
    pub(crate) fn new(src: R, params: crate::repo::ChunkerParams, seed: u64) -> Self {
        Chunker {
            src,
            buf: vec![0; params.max as usize * READ_BUFFER_CHUNKS],
            pos: 0,
            len: 0,
            eof: false,
            params,
            seed,
        }
    }

    /// The next chunk, `None` at the end.
    pub(crate) fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let max = self.params.max as usize;
        if self.len - self.pos < max && !self.eof {
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
            while self.len < self.buf.len() {
                match self.src.read(&mut self.buf[self.len..]) {
                    Ok(0) => {
                        self.eof = true;
                        break;
                    }
                    Ok(n) => self.len += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let avail = self.len - self.pos;
        if avail == 0 {
            return Ok(None);
        }
        let window = &self.buf[self.pos..self.pos + avail.min(max)];
        let cdc = fastcdc::v2020::FastCDC::with_level_and_seed(
            window,
            self.params.min,
            self.params.avg,
            self.params.max,
            fastcdc::v2020::Normalization::Level1,
            self.seed,
        );
        let (_, end) = cdc.cut(0, window.len());
        let chunk = window[..end].to_vec();
        self.pos += end;
        Ok(Some(chunk))
    }
}

/// A file's chunk results as they come back, in any order.
#[derive(Default)]
struct Gather {
    content: Vec<Option<Id>>,
    received: usize,
    first_err: Option<String>,
}

impl Gather {
    fn take(&mut self, (seq, r): (usize, std::result::Result<Id, String>)) {
        self.received += 1;
        match r {
            Ok(id) => self.content[seq] = Some(id),
            Err(e) => {
                self.first_err.get_or_insert(e);
            }
        }
    }
}

impl Ctx<'_> {
    /// Read `f` from where it is, cut it and hand the chunks to the pool; wait for all of them
    /// and return the content in file order and the bytes read. The first read or store error
    /// stops the read (chunks of the file still queued are not stored) and is returned.
    pub(crate) fn read_pipelined(
        &self,
        pool: &ChunkPool,
        job: &Job,
        f: impl Read,
    ) -> std::result::Result<(Vec<Id>, u64), String> {
        #[cfg(test)]
        let f = tests::seam::wrap(&job.path, f);
        let mut chunker = Chunker::new(f, self.chunker, self.seed);
        let (done_tx, done_rx) = unbounded();
        let cancelled = Arc::new(AtomicBool::new(false));
        let mut g = Gather::default();
        let mut size = 0u64;
        loop {
            for m in done_rx.try_iter() {
                g.take(m);
            }
            if g.first_err.is_some() {
                break;
            }
            if self.failed() {
                g.first_err = Some("not read: the repository failed".into());
                break;
            }
            let data = match chunker.next_chunk() {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) => {
                    g.first_err = Some(describe_io(&job.path, "cannot be read", e));
                    break;
                }
            };
            size += data.len() as u64;
            self.progress.inc(0, data.len() as u64);
            let permit = pool.budget.take(data.len() as u64);
            g.content.push(None);
            let task = Task {
                seq: g.content.len() - 1,
                data,
                permit,
                done: done_tx.clone(),
                cancelled: cancelled.clone(),
            };
            if let Err(e) = pool.submit(task) {
                g.first_err = Some(format!("{}: {e}", job.path.display()));
                break;
            }
        }
        drop(done_tx);
        if g.first_err.is_some() {
            cancelled.store(true, Ordering::Relaxed);
        } else {
            while g.received < g.content.len() {
                match done_rx.recv() {
                    Ok(m) => g.take(m),
                    Err(_) => {
                        g.first_err = Some(format!(
                            "{}: a chunk was lost: a pool thread stopped",
                            job.path.display()
                        ));
                        break;
                    }
                }
            }
        }
        if let Some(e) = g.first_err {
            return Err(e);
        }
        let content = g
            .content
            .into_iter()
            .collect::<Option<Vec<Id>>>()
            .ok_or_else(|| format!("{}: a chunk was never stored", job.path.display()))?;
        Ok((content, size))
    }
}

#[cfg(test)]
#[path = "bigfile_tests.rs"]
mod tests;
