//! Reading one source file for a backup: chunking it, and reading it again when it changes
//! under the reader (see [`RE_READS`]).

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;

use crate::backup::{Ctx, Job};
use crate::blob::Compressor;
use crate::id::Id;
use crate::repo::Repository;
use crate::tree::FileTime;

/// What identifies a version of a file's content: if these are the same before and after a
/// read, nothing wrote to the file in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) size: u64,
    pub(crate) mtime: FileTime,
    pub(crate) ctime: FileTime,
}

impl Stamp {
    fn of(f: &File) -> io::Result<Stamp> {
        let m = f.metadata()?;
        Ok(Stamp {
            size: m.size(),
            mtime: FileTime::new(m.mtime(), m.mtime_nsec()),
            ctime: FileTime::new(m.ctime(), m.ctime_nsec()),
        })
    }
}

/// How many times a file that changed while it was read is read again before it is stored as
/// read and marked `changed_while_read`.
pub const RE_READS: usize = 1;

/// A file read and stored.
pub(crate) struct FileDone {
    /// Its content blobs.
    pub(crate) content: Vec<Id>,
    /// Or its whole content, to go inline into its tree node.
    pub(crate) inline: Option<Vec<u8>>,
    /// Bytes read.
    pub(crate) size: u64,
    /// The file's size and times when its content was read (they replace the walker's).
    pub(crate) stamp: Stamp,
    /// It changed during every read: the content may mix bytes from before and after.
    pub(crate) changed_while_read: bool,
}

impl Ctx<'_> {
    /// Read, chunk and store one file. If it changed while it was read (its size or times
    /// differ before and after, or the bytes read are not its size), it is read again, up to
    /// [`RE_READS`] times; if it still changes, the last read is stored and marked.
    pub(crate) fn read_file(
        &self,
        c: &mut Compressor,
        job: &Job,
    ) -> std::result::Result<FileDone, String> {
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&job.path)
            .map_err(|e| describe_io(&job.path, "cannot be opened", e))?;
        let stamp =
            |f: &File| Stamp::of(f).map_err(|e| describe_io(&job.path, "cannot be examined", e));
        let mut attempt = 0;
        loop {
            let before = stamp(&f)?;
            if attempt > 0 {
                use std::io::Seek;
                (&f).seek(io::SeekFrom::Start(0))
                    .map_err(|e| describe_io(&job.path, "cannot be read", e))?;
            }
            let (content, inline, size) = match self.read_inline(job, &f, before.size)? {
                Some(data) => {
                    let n = data.len() as u64;
                    (Vec::new(), Some(data), n)
                }
                None => {
                    let (content, size) = self.read_once(c, job, &f, before.size)?;
                    (content, None, size)
                }
            };
            self.bytes_read.fetch_add(size, Ordering::Relaxed);
            let after = stamp(&f)?;
            let steady = before == after && size == after.size;
            if steady || attempt == RE_READS {
                if !steady {
                    self.changed_while_read(format!(
                        "{}: changed while it was read, {} times in a row; stored as last read ({size} bytes), which may mix old and new content",
                        job.path.display(),
                        attempt + 1
                    ));
                }
                return Ok(FileDone {
                    content,
                    inline,
                    size,
                    stamp: after,
                    changed_while_read: !steady,
                });
            }
            tracing::info!(
                "{}: changed while it was read; reading it again",
                job.path.display()
            );
            attempt += 1;
        }
    }

    /// One read of a file from its start, for its tree node, if the repository inlines files of
    /// its `size` and it still has at most that many bytes; otherwise the file is left at its
    /// start. An empty file is not inlined (it has no content to hold).
    fn read_inline(
        &self,
        job: &Job,
        f: &File,
        size: u64,
    ) -> std::result::Result<Option<Vec<u8>>, String> {
        if size == 0 || size > self.inline_max {
            return Ok(None);
        }
        let mut buf = Vec::with_capacity(size as usize);
        f.take(self.inline_max + 1)
            .read_to_end(&mut buf)
            .map_err(|e| describe_io(&job.path, "cannot be read", e))?;
        if !buf.is_empty() && buf.len() as u64 <= self.inline_max {
            self.progress.inc(0, buf.len() as u64);
            return Ok(Some(buf));
        }
        // It changed size while we looked: read it the usual way, from its start.
        use std::io::Seek;
        let mut r = f;
        r.seek(io::SeekFrom::Start(0))
            .map_err(|e| describe_io(&job.path, "cannot be read", e))?;
        Ok(None)
    }

    /// One read of a file from its start: small files as one blob, larger ones chunked.
    fn read_once(
        &self,
        c: &mut Compressor,
        job: &Job,
        f: &File,
        size: u64,
    ) -> std::result::Result<(Vec<Id>, u64), String> {
        if let Some(pool) = &self.pool {
            if size >= crate::bigfile::PIPELINE_MIN_CHUNKS * self.chunker.avg as u64 {
                return self.read_pipelined(pool, job, f);
            }
        }
        if size >= self.chunker.min as u64 {
            return self.read_large(c, job, f);
        }
        let mut buf = Vec::with_capacity(size as usize);
        f.take(self.chunker.min as u64)
            .read_to_end(&mut buf)
            .map_err(|e| describe_io(&job.path, "cannot be read", e))?;
        if buf.len() as u64 >= self.chunker.min as u64 {
            // It grew while we looked: chunk it properly from the start.
            use std::io::Seek;
            let mut r = f;
            r.seek(io::SeekFrom::Start(0))
                .map_err(|e| describe_io(&job.path, "cannot be read", e))?;
            return self.read_large(c, job, f);
        }
        let mut content = Vec::new();
        if !buf.is_empty() {
            self.progress.inc(0, buf.len() as u64);
            content.push(self.store_chunk(c, &buf)?);
        }
        Ok((content, buf.len() as u64))
    }

    fn read_large(
        &self,
        c: &mut Compressor,
        job: &Job,
        f: &File,
    ) -> std::result::Result<(Vec<Id>, u64), String> {
        let cdc = fastcdc::v2020::StreamCDC::with_level_and_seed(
            f,
            self.chunker.min,
            self.chunker.avg,
            self.chunker.max,
            fastcdc::v2020::Normalization::Level1,
            self.seed,
        );
        let mut content = Vec::new();
        let mut size = 0u64;
        for chunk in cdc {
            let chunk = chunk.map_err(|e| match e {
                fastcdc::v2020::Error::IoError(e) => describe_io(&job.path, "cannot be read", e),
                e => format!("{}: cannot be read: {e}", job.path.display()),
            })?;
            size += chunk.length as u64;
            self.progress.inc(0, chunk.length as u64);
            content.push(self.store_chunk(c, &chunk.data)?);
        }
        Ok((content, size))
    }
}

/// The blob ids a file's content has in this repository (chunked exactly as backup chunks it).
/// Used by restore drills to validate restored files against their snapshot.
pub fn content_ids(repo: &Repository, path: &Path) -> io::Result<Vec<Id>> {
    let p = repo.config().chunker;
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    if len < p.min as u64 {
        let mut buf = Vec::with_capacity(len as usize);
        (&f).read_to_end(&mut buf)?;
        return Ok(if buf.is_empty() {
            Vec::new()
        } else {
            vec![repo.key().blob_id(&buf)]
        });
    }
    let cdc = fastcdc::v2020::StreamCDC::with_level_and_seed(
        f,
        p.min,
        p.avg,
        p.max,
        fastcdc::v2020::Normalization::Level1,
        repo.key().chunker_seed(),
    );
    let mut out = Vec::new();
    for c in cdc {
        let c = c.map_err(|e| io::Error::other(e.to_string()))?;
        out.push(repo.key().blob_id(&c.data));
    }
    Ok(out)
}

pub(crate) fn describe_io(path: &Path, what: &str, e: io::Error) -> String {
    let why = match e.kind() {
        io::ErrorKind::NotFound => "it vanished during the backup".to_string(),
        io::ErrorKind::PermissionDenied => {
            "permission denied (run as a user who can read it, or exclude it)".to_string()
        }
        _ => e.to_string(),
    };
    format!("{}: {what}: {why}", path.display())
}
