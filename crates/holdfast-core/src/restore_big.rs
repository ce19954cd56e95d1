//! Restoring one big file on every core: its blobs, in runs that lie together in a pack
//! ([`fetch::runs`]), become parts that the restore workers fetch, decrypt, decompress and
//! write at their offsets in parallel. The part that finishes last sets the length (a trailing
//! hole), checks it and applies the metadata. All-zero blocks are skipped, so holes stay holes.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::fetch::{self, Batch};
use crate::fsmeta;
use crate::index::Index;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::restore::{metadata_errors, FileJob, Written};

/// Zeros are looked for, and skipped, in blocks of this size.
const BLOCK: usize = 4096;

/// Write `data` at `at`, skipping all-zero blocks (the file was created empty, so what is
/// skipped reads as zeros and takes no space). Returns the end of the last byte written, or
/// `None` if all of it was zeros.
pub(crate) fn write_sparse(
    f: &fs::File,
    path: &Path,
    at: u64,
    data: &[u8],
) -> std::result::Result<Option<u64>, String> {
    let fail = |e: io::Error| format!("{}: write failed: {e}", path.display());
    let mut run_start: Option<usize> = None;
    let mut written_end = None;
    let mut i = 0;
    while i < data.len() {
        let end = (i + BLOCK).min(data.len());
        let zero = data[i..end].iter().all(|&b| b == 0);
        match (zero, run_start) {
            (false, None) => run_start = Some(i),
            (true, Some(s)) => {
                f.write_all_at(&data[s..i], at + s as u64).map_err(fail)?;
                written_end = Some(at + i as u64);
                run_start = None;
            }
            _ => {}
        }
        i = end;
    }
    if let Some(s) = run_start {
        f.write_all_at(&data[s..], at + s as u64).map_err(fail)?;
        written_end = Some(at + data.len() as u64);
    }
    Ok(written_end)
}

/// Create (or truncate) a file to restore into.
pub(crate) fn create(path: &Path) -> std::result::Result<fs::File, String> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: cannot be created: {e}", path.display()))
}

/// A file restored in parts, shared by the parts.
pub(crate) struct Split {
    job: FileJob,
    /// Created by the first part that runs.
    file: OnceLock<std::result::Result<fs::File, String>>,
    /// Parts not finished yet.
    left: AtomicUsize,
    /// The first byte lost, and why (the lowest offset of any part that failed).
    lost: Mutex<Option<(u64, String)>>,
}

/// One part of a split file: a ranged read of its blobs and where the first one goes.
pub(crate) struct Part {
    pub(crate) file: Arc<Split>,
    run: Batch<usize>,
    offsets: Vec<u64>,
}

/// A file of several runs becomes one part per run; the job back if it should be written whole
/// by one worker (one run, a blob the index lacks, or lengths in the index that do not add up
/// to the file's size, which the one-worker path reports).
pub(crate) fn split(job: FileJob, index: &Index) -> Result<Vec<Part>, Box<FileJob>> {
    let Some(runs) = fetch::runs(&job.node.content, index, fetch::MAX_GAP, fetch::MAX_SPAN) else {
        return Err(Box::new(job));
    };
    if runs.len() < 2 {
        return Err(Box::new(job));
    }
    let mut at = Vec::with_capacity(job.node.content.len());
    let mut pos = 0u64;
    for id in &job.node.content {
        at.push(pos);
        match index.get(id) {
            Some((_, loc)) => pos += loc.raw_len as u64,
            None => return Err(Box::new(job)),
        }
    }
    if pos != job.node.size {
        return Err(Box::new(job));
    }
    let file = Arc::new(Split {
        job,
        file: OnceLock::new(),
        left: AtomicUsize::new(runs.len()),
        lost: Mutex::new(None),
    });
    Ok(runs
        .into_iter()
        .map(|run| Part {
            file: file.clone(),
            offsets: run.items.iter().map(|(i, _, _)| at[*i]).collect(),
            run,
        })
        .collect())
}

impl Part {
    /// The bytes its ranged read fetches.
    pub(crate) fn span(&self) -> u64 {
        self.run.end - self.run.start
    }

    /// Fetch and write this part. Returns the file's result if this was its last part.
    pub(crate) fn write(
        &self,
        repo: &Repository,
        index: &Index,
        progress: &dyn Progress,
    ) -> Option<std::result::Result<Written, String>> {
        let s = &self.file;
        if let Err((at, e)) = self.write_blobs(repo, index, progress) {
            let mut lost = s.lost.lock().unwrap_or_else(|p| p.into_inner());
            if lost.as_ref().is_none_or(|(first, _)| at < *first) {
                *lost = Some((at, e));
            }
        }
        if s.left.fetch_sub(1, Ordering::AcqRel) != 1 {
            return None;
        }
        Some(self.finish())
    }

    fn write_blobs(
        &self,
        repo: &Repository,
        index: &Index,
        progress: &dyn Progress,
    ) -> std::result::Result<(), (u64, String)> {
        let s = &self.file;
        let path = &s.job.path;
        let first = self.offsets.first().copied().unwrap_or(0);
        let f = s
            .file
            .get_or_init(|| create(path))
            .as_ref()
            .map_err(|e| (0, e.clone()))?;
        if s.lost.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            // The file is lost already: do not spend reads on it.
            return Err((first, "not written: another part failed".into()));
        }
        for ((_, data), at) in self.run.open_each(repo, index).zip(&self.offsets) {
            let data = data.map_err(|e| {
                (
                    *at,
                    format!("{}: content lost from byte {at}: {e}", path.display()),
                )
            })?;
            write_sparse(f, path, *at, &data).map_err(|e| (*at, e))?;
            progress.inc(0, data.len() as u64);
        }
        Ok(())
    }

    /// After the last part: the length, the metadata, or the first error.
    fn finish(&self) -> std::result::Result<Written, String> {
        let s = &self.file;
        let (job, p) = (&s.job, &s.job.path);
        if let Some((_, e)) = s.lost.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        let f = match s.file.get() {
            Some(Ok(f)) => f,
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(format!("{}: no part of it was written", p.display())),
        };
        // A trailing hole: the length is set whether or not the last block was written.
        f.set_len(job.node.size)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        let missed = fsmeta::apply_file(f, &job.node);
        Ok(Written {
            bytes: job.node.size,
            missed: metadata_errors(p, missed).collect(),
        })
    }
}
