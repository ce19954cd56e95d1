//! `wal-fetch`: PostgreSQL's `restore_command`. Finds the newest batch of the source holding
//! the file asked for (`%f`), writes it (authenticated, size and BLAKE3 checked) into a
//! temporary file beside `%p`, syncs it and renames it to `%p`. Since pieces come in
//! batches, it also fetches the next pieces of the log (the rest of the batch, then the next
//! ones) into a spool directory, each with the BLAKE3 the repository gave it, so the next
//! calls need no repository round trip; a spooled piece is checked against that BLAKE3
//! again before it is handed over.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use holdfast_core::logs::{self, LogKind};
use holdfast_core::snapshot::{self, Snapshot, SnapshotEntry};
use holdfast_core::Repository;
use serde::Serialize;

use super::spool::{self, Durable};
use super::{classify, io, log_key, WalError, WalSettings};

/// One fetch.
pub struct FetchJob<'a> {
    /// The source's name.
    pub source: &'a str,
    /// `%f`: the file PostgreSQL wants.
    pub name: &'a str,
    /// `%p`: where to put it.
    pub dest: &'a Path,
    /// The source's WAL state directory ([`WalSettings::state_dir`]); the spool is its
    /// `fetch/`.
    pub state: &'a Path,
    /// The source's settings.
    pub settings: &'a WalSettings,
    /// The repository's location as the workload names it (spooled pieces are tied to it).
    pub repository: &'a str,
}

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "result")]
pub enum Fetched {
    /// Written to `%p`.
    Delivered {
        /// Taken from the spool (no repository round trip).
        from_spool: bool,
        /// The batch it came from (hex id).
        batch: String,
        /// Pieces fetched ahead into the spool.
        prefetched: usize,
    },
    /// No batch of the source holds it (normal at the end of recovery, and for the history
    /// files of timelines that do not exist).
    NotArchived,
}

fn spool_dir(state: &Path) -> PathBuf {
    state.join("fetch")
}

/// Copy `from` into a temporary file beside `dest`, sync it, rename it to `dest`.
fn deliver(
    dest: &Path,
    write: impl FnOnce(&mut fs::File) -> Result<(), WalError>,
) -> Result<(), WalError> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut t = tempfile::Builder::new()
        .prefix(".holdfast-wal-")
        .tempfile_in(dir)
        .map_err(io(format!("a temporary file in {}", dir.display())))?;
    write(t.as_file_mut())?;
    t.as_file_mut()
        .flush()
        .and_then(|_| t.as_file().sync_all())
        .map_err(io(format!("writing {}", dest.display())))?;
    t.persist(dest).map_err(|e| WalError::Io {
        what: format!("renaming into {}", dest.display()),
        source: e.error,
    })?;
    spool::sync_dir(dir)
}

/// The spooled copy of `name`, if it is there and its bytes are the ones recorded.
fn from_spool(dir: &Path, name: &str, repository: &str) -> Option<(Vec<u8>, Durable)> {
    let rec = spool::read_ok(dir, name).filter(|r| r.repository == repository)?;
    let bytes = fs::read(dir.join(name)).ok()?;
    (bytes.len() as u64 == rec.size && blake3::hash(&bytes).to_hex().as_str() == rec.blake3)
        .then_some((bytes, rec))
}

/// Fetch `job.name` into `job.dest`. `open` opens the source's repository; `owns` says
/// whether a log batch snapshot belongs to the source as seen from this host.
pub fn fetch(
    job: &FetchJob,
    open: &dyn Fn() -> Result<Repository, String>,
    owns: &dyn Fn(&Snapshot) -> bool,
) -> Result<Fetched, WalError> {
    if classify(job.name).is_none() {
        return Err(WalError::NotWal(job.name.to_string()));
    }
    let dir = spool_dir(job.state);
    spool::ensure_dir(&dir)?;
    if let Some((bytes, rec)) = from_spool(&dir, job.name, job.repository) {
        deliver(job.dest, |f| {
            f.write_all(&bytes)
                .map_err(io(format!("writing {}", job.dest.display())))
        })?;
        let _ = fs::remove_file(dir.join(job.name));
        let _ = fs::remove_file(spool::ok_path(&dir, job.name));
        return Ok(Fetched::Delivered {
            from_spool: true,
            batch: rec.batch,
            prefetched: 0,
        });
    }
    let repo = open().map_err(WalError::Repository)?;
    let repo_err = |e: holdfast_core::Error| WalError::Repository(e.to_string());
    let (all, _) = snapshot::load_all(&repo).map_err(repo_err)?;
    // The newest batch holding each name (batches are oldest first).
    let mut newest: HashMap<&str, &SnapshotEntry> = HashMap::new();
    for (e, b) in logs::batches(&all, job.source, LogKind::PgWal) {
        if owns(&e.snapshot) {
            for p in &b.pieces {
                if classify(&p.name).is_some() {
                    newest.insert(&p.name, e);
                }
            }
        }
    }
    let Some(batch) = newest.get(job.name).copied() else {
        return Ok(Fetched::NotArchived);
    };
    let (index, _) = repo.load_index().map_err(repo_err)?;
    deliver(job.dest, |f| {
        logs::read_piece(&repo, &index, batch, job.name, f)
            .map(|_| ())
            .map_err(repo_err)
    })?;
    // Fetch ahead: the next pieces of the same timeline, in log order.
    let key = log_key(job.name);
    let mut next: Vec<&str> = newest
        .keys()
        .copied()
        .filter(|n| {
            let k = log_key(n);
            k.0 == key.0 && k > key
        })
        .collect();
    next.sort_by_key(|n| log_key(n));
    let mut prefetched = 0;
    let mut bytes = 0u64;
    for n in next.into_iter().take(job.settings.prefetch_files) {
        let e = newest[n];
        let Some(p) = e
            .snapshot
            .log
            .as_ref()
            .and_then(|l| l.pieces.iter().find(|p| p.name == n))
        else {
            continue;
        };
        if bytes + p.size > job.settings.prefetch_bytes {
            break;
        }
        bytes += p.size;
        if from_spool(&dir, n, job.repository).is_some() {
            continue;
        }
        // A piece that cannot be fetched ahead is fetched (and its failure reported) when
        // PostgreSQL asks for it.
        let ok = deliver(&dir.join(n), |f| {
            logs::read_piece(&repo, &index, e, n, f)
                .map(|_| ())
                .map_err(repo_err)
        });
        if ok.is_ok() {
            let rec = Durable {
                size: p.size,
                blake3: p.blake3.clone(),
                batch: e.id.to_hex(),
                repository: job.repository.to_string(),
            };
            if spool::write_ok(&dir, n, &rec).is_ok() {
                prefetched += 1;
            }
        }
    }
    // Pieces before this one are no longer asked for.
    if let Ok(rd) = fs::read_dir(&dir) {
        for d in rd.flatten() {
            let f = d.file_name().to_string_lossy().into_owned();
            let n = f.strip_suffix(".ok").unwrap_or(&f);
            if classify(n).is_some() && log_key(n) < key && log_key(n).0 == key.0 {
                let _ = fs::remove_file(d.path());
            }
        }
    }
    Ok(Fetched::Delivered {
        from_spool: false,
        batch: batch.id.to_hex(),
        prefetched,
    })
}
