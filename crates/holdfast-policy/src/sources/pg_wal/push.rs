//! `wal-push`: PostgreSQL's `archive_command`. Stores the file asked for, together with the
//! other WAL files PostgreSQL has marked ready (`pg_wal/archive_status/*.ready`, oldest
//! first, bounded), as one log batch; records each as durable locally only once the batch is
//! durable, so the later calls for them return at once without opening the repository.
//!
//! Never acknowledges a file that is not durable in the repository: success is returned only
//! when the file's bytes (by BLAKE3) are in a batch that [`logs::append`] returned, now or
//! before. A failure is recorded in `failing.json` (and the WAL waiting in `queue.json`) for
//! `status`; PostgreSQL keeps the file and retries; nothing is ever dropped.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use holdfast_core::logs::{self, LogKind, NewPiece, Piece};
use holdfast_core::progress::Progress;
use holdfast_core::snapshot::Snapshot;
use holdfast_core::Repository;
use serde::Serialize;

use super::spool::{self, Durable, Queue};
use super::{classify, io, log_key, WalError, WalFileKind, WalSettings};

/// One push: the file PostgreSQL asked for (`%p`).
pub struct PushJob<'a> {
    /// The source's name.
    pub source: &'a str,
    /// `%p`: the file, in `pg_wal` (relative to the data directory, PostgreSQL's working
    /// directory, or absolute).
    pub path: &'a Path,
    /// The source's WAL state directory ([`WalSettings::state_dir`]).
    pub state: &'a Path,
    /// The source's settings.
    pub settings: &'a WalSettings,
    /// The repository's location as the workload names it (local records are tied to it).
    pub repository: &'a str,
    /// Now.
    pub now: DateTime<Utc>,
    /// Tags for the batch.
    pub tags: &'a [String],
    /// Progress.
    pub progress: &'a dyn Progress,
}

/// What a push did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pushed {
    /// The file asked for.
    pub name: String,
    /// It was durable in the repository before this call (recorded locally, or found in a
    /// batch): nothing was stored for it.
    pub already: bool,
    /// Whether the repository was opened (false: answered from the local record).
    pub opened_repository: bool,
    /// Files stored in the new batch (the one asked for and the ready ones picked up).
    pub stored: Vec<String>,
    /// The new batch (hex id), if one was written.
    pub batch: Option<String>,
    /// Bytes stored.
    pub bytes: u64,
    /// Snapshots read from the repository (the others were known from the local catalog).
    pub snapshots_read: usize,
    /// WAL files still waiting in `pg_wal` after this push.
    pub waiting_files: u64,
    /// Their bytes.
    pub waiting_bytes: u64,
}

/// A WAL file in `pg_wal`, hashed.
struct Local {
    name: String,
    path: PathBuf,
    size: u64,
    blake3: String,
    mtime: Option<DateTime<Utc>>,
}

fn hash_file(path: &Path) -> Result<(u64, String), WalError> {
    let mut f = fs::File::open(path).map_err(io(format!("reading {}", path.display())))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .map_err(io(format!("reading {}", path.display())))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, h.finalize().to_hex().to_string()))
}

fn local(path: &Path, name: &str) -> Result<Local, WalError> {
    let (size, blake3) = hash_file(path)?;
    let mtime = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .map(DateTime::<Utc>::from);
    Ok(Local {
        name: name.to_string(),
        path: path.to_path_buf(),
        size,
        blake3,
        mtime,
    })
}

/// Reads a file and fails at its end unless its bytes are the ones hashed before (a file
/// that changed in between is never stored under the old description).
struct Verified {
    f: fs::File,
    h: blake3::Hasher,
    n: u64,
    want: (u64, String),
    name: String,
}

impl Read for Verified {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.f.read(buf)?;
        self.h.update(&buf[..k]);
        self.n += k as u64;
        if k == 0 || self.n > self.want.0 {
            let got = self.h.finalize().to_hex().to_string();
            if self.n != self.want.0 || got != self.want.1 {
                return Err(std::io::Error::other(format!(
                    "{} changed while it was archived ({} bytes, BLAKE3 {got}; it had {} bytes, {})",
                    self.name, self.n, self.want.0, self.want.1
                )));
            }
        }
        Ok(k)
    }
}

/// The cluster's system identifier, from `global/pg_control` (its first 8 bytes).
fn system_identifier(data_dir: &Path) -> Option<u64> {
    let mut b = [0u8; 8];
    fs::File::open(data_dir.join("global/pg_control"))
        .and_then(|mut f| f.read_exact(&mut b))
        .ok()?;
    Some(u64::from_le_bytes(b))
}

fn piece(l: &Local, now: DateTime<Utc>, sysid: Option<u64>) -> Piece {
    let kind = classify(&l.name);
    let mut meta = BTreeMap::new();
    if kind == Some(WalFileKind::Segment) {
        meta.insert("segment_size".to_string(), l.size.to_string());
    }
    if let Some(id) = sysid {
        meta.insert("system_identifier".to_string(), id.to_string());
    }
    Piece {
        name: l.name.clone(),
        size: l.size,
        blake3: l.blake3.clone(),
        first_time: None,
        // Every change committed at or before the segment's last write is in it or an
        // earlier one; never later than now.
        last_time: (kind == Some(WalFileKind::Segment))
            .then(|| l.mtime.map_or(now, |m| m.min(now))),
        meta,
    }
}

/// The names PostgreSQL has marked ready to archive, in log order.
fn ready(pg_wal: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(pg_wal.join("archive_status"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    let name = n.strip_suffix(".ready")?.to_string();
                    classify(&name).map(|_| name)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|n| log_key(n));
    v
}

/// The WAL waiting: ready files not recorded as durable.
fn measure(pg_wal: &Path, state: &Path, now: DateTime<Utc>) -> Queue {
    let mut q = Queue {
        at: now,
        waiting_files: 0,
        waiting_bytes: 0,
    };
    for n in ready(pg_wal) {
        if spool::read_ok(state, &n).is_none() {
            q.waiting_files += 1;
            q.waiting_bytes += fs::metadata(pg_wal.join(&n)).map_or(0, |m| m.len());
        }
    }
    q
}

/// Push `job.path`. `open` opens the source's repository; `owns` says whether a log batch
/// snapshot belongs to the source as seen from this host.
pub fn push(
    job: &PushJob,
    open: &dyn Fn() -> Result<Repository, String>,
    owns: &dyn Fn(&Snapshot) -> bool,
) -> Result<Pushed, WalError> {
    let name = job
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if classify(&name).is_none() {
        return Err(WalError::NotWal(job.path.display().to_string()));
    }
    let pg_wal = job
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    spool::ensure_dir(job.state)?;
    let _lock = spool::lock(job.state)?;
    let me = match local(job.path, &name) {
        Ok(me) => me,
        Err(e) => {
            let _ = spool::record_failure(job.state, job.now, &e.to_string());
            return Err(e);
        }
    };
    if let Some(ok) = spool::read_ok(job.state, &name) {
        if ok.size == me.size && ok.blake3 == me.blake3 && ok.repository == job.repository {
            return Ok(Pushed {
                name,
                already: true,
                ..Default::default()
            });
        }
        // Another file under a recorded name: the repository decides (and refuses it).
    }
    match store(job, &pg_wal, me, open, owns) {
        Ok(mut p) => {
            spool::clear_failure(job.state)?;
            let q = measure(&pg_wal, job.state, job.now);
            spool::write_queue(job.state, &q)?;
            spool::prune_ok(job.state, &pg_wal);
            (p.waiting_files, p.waiting_bytes) = (q.waiting_files, q.waiting_bytes);
            Ok(p)
        }
        Err(e) => {
            // Best effort: the push fails either way, and PostgreSQL retries it.
            let _ = spool::record_failure(job.state, job.now, &e.to_string());
            let _ = spool::write_queue(job.state, &measure(&pg_wal, job.state, job.now));
            Err(e)
        }
    }
}

fn store(
    job: &PushJob,
    pg_wal: &Path,
    me: Local,
    open: &dyn Fn() -> Result<Repository, String>,
    owns: &dyn Fn(&Snapshot) -> bool,
) -> Result<Pushed, WalError> {
    let s = job.settings;
    let mut out = Pushed {
        name: me.name.clone(),
        opened_repository: true,
        ..Default::default()
    };
    // The ready files to take along: oldest first, not recorded yet, within the bounds.
    let mut take = vec![me];
    let mut bytes = take[0].size;
    for n in ready(pg_wal) {
        if take.len() >= s.batch_files.max(1) {
            break;
        }
        if n == take[0].name
            || spool::read_ok(job.state, &n).is_some_and(|o| o.repository == job.repository)
        {
            continue;
        }
        let Ok(l) = local(&pg_wal.join(&n), &n) else {
            continue; // gone (archived and removed meanwhile): its own push will tell
        };
        if bytes + l.size > s.batch_bytes {
            break;
        }
        bytes += l.size;
        take.push(l);
    }
    let repo = open().map_err(WalError::Repository)?;
    let repo_err = |e: holdfast_core::Error| WalError::Repository(e.to_string());
    let (archived, read) = super::catalog::archived(&repo, job.state, job.source, owns)?;
    out.snapshots_read = read;
    let mut new = Vec::new();
    for (i, l) in take.into_iter().enumerate() {
        match archived.get(&l.name) {
            Some((b3, batch)) if *b3 == l.blake3 => {
                spool::write_ok(
                    job.state,
                    &l.name,
                    &Durable {
                        size: l.size,
                        blake3: l.blake3.clone(),
                        batch: batch.clone(),
                        repository: job.repository.to_string(),
                    },
                )?;
                if i == 0 {
                    out.already = true;
                }
            }
            Some((b3, batch)) if i == 0 => {
                return Err(WalError::Conflict {
                    name: l.name,
                    archived: b3.to_string(),
                    here: l.blake3,
                    batch: batch.clone(),
                });
            }
            Some(_) => {} // refused when PostgreSQL pushes it
            None => new.push(l),
        }
    }
    if new.is_empty() {
        return Ok(out);
    }
    new.sort_by_key(|l| log_key(&l.name));
    let sysid = system_identifier(pg_wal.parent().unwrap_or(Path::new("..")));
    let mut pieces = Vec::new();
    for l in &new {
        let f = fs::File::open(&l.path).map_err(io(format!("reading {}", l.path.display())))?;
        pieces.push(NewPiece {
            piece: piece(l, job.now, sysid),
            reader: Box::new(Verified {
                f,
                h: blake3::Hasher::new(),
                n: 0,
                want: (l.size, l.blake3.clone()),
                name: l.name.clone(),
            }),
        });
    }
    let (id, _) = logs::append(
        &repo,
        job.source,
        LogKind::PgWal,
        job.tags,
        pieces,
        job.progress,
    )
    .map_err(repo_err)?;
    // Durable now: record every stored file, so that PostgreSQL's calls for them return at
    // once.
    for l in &new {
        spool::write_ok(
            job.state,
            &l.name,
            &Durable {
                size: l.size,
                blake3: l.blake3.clone(),
                batch: id.to_hex(),
                repository: job.repository.to_string(),
            },
        )?;
    }
    out.batch = Some(id.to_hex());
    out.bytes = new.iter().map(|l| l.size).sum();
    out.stored = new.into_iter().map(|l| l.name).collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use holdfast_core::keys::KdfParams;
    use holdfast_core::progress::NoProgress;
    use holdfast_core::repo::InitOptions;
    use holdfast_storage::{Faulty, MemoryStorage, ObjectKind, Storage};

    use super::*;

    fn seg(i: u32) -> String {
        format!("0000000100000000{i:08X}")
    }

    /// A fake `pg_wal` with segments 1..=n, those from `ready` on marked ready.
    fn pg_wal(n: u32, ready: u32) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("pg_wal/archive_status")).unwrap();
        for i in 1..=n {
            fs::write(
                d.path().join("pg_wal").join(seg(i)),
                format!("segment {i}").repeat(999),
            )
            .unwrap();
            if i >= ready {
                fs::write(
                    d.path()
                        .join("pg_wal/archive_status")
                        .join(format!("{}.ready", seg(i))),
                    "",
                )
                .unwrap();
            }
        }
        d
    }

    fn repo(storage: Arc<dyn Storage>) -> impl Fn() -> Result<Repository, String> {
        let opts = InitOptions {
            kdf: KdfParams::insecure_for_tests(),
            ..Default::default()
        };
        Repository::init(storage.clone(), b"pw", &opts).unwrap();
        move || Repository::open(storage.clone(), b"pw").map_err(|e| e.to_string())
    }

    fn run(
        d: &Path,
        i: u32,
        s: &WalSettings,
        open: &dyn Fn() -> Result<Repository, String>,
    ) -> Result<Pushed, WalError> {
        run_in(d, i, s, open, "repo")
    }

    fn run_in(
        d: &Path,
        i: u32,
        s: &WalSettings,
        open: &dyn Fn() -> Result<Repository, String>,
        repository: &str,
    ) -> Result<Pushed, WalError> {
        let path = d.join("pg_wal").join(seg(i));
        let state = d.join("state");
        let job = PushJob {
            source: "db",
            path: &path,
            state: &state,
            settings: s,
            repository,
            now: Utc::now(),
            tags: &[],
            progress: &NoProgress,
        };
        push(&job, open, &|_| true)
    }

    #[test]
    fn ready_files_join_the_batch_oldest_first_within_the_bounds() {
        let d = pg_wal(6, 2);
        let open = repo(Arc::new(MemoryStorage::new()));
        let s = WalSettings {
            batch_files: 3,
            ..Default::default()
        };
        let p = run(d.path(), 2, &s, &open).unwrap();
        assert_eq!(p.stored, [seg(2), seg(3), seg(4)]);
        assert_eq!((p.waiting_files, p.already), (2, false));
        // The next calls for the picked-up files return without the repository.
        let p = run(d.path(), 3, &s, &open).unwrap();
        assert!(p.already && !p.opened_repository, "{p:?}");
        let p = run(d.path(), 5, &s, &open).unwrap();
        assert_eq!(p.stored, [seg(5), seg(6)]);
        assert_eq!(p.waiting_files, 0);
        // A byte bound keeps the batch smaller, but the file asked for is always stored.
        let d = pg_wal(4, 1);
        let s = WalSettings {
            batch_bytes: 1,
            ..Default::default()
        };
        let p = run(d.path(), 1, &s, &repo(Arc::new(MemoryStorage::new()))).unwrap();
        assert_eq!(p.stored, [seg(1)]);
    }

    #[test]
    fn a_batch_whose_acknowledgement_was_lost_is_not_acknowledged_and_found_on_retry() {
        let d = pg_wal(3, 1);
        let mem: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let open = repo(mem.clone());
        let faulty: Arc<dyn Storage> =
            Arc::new(Faulty::new(mem.clone()).lose_nth_put_ack_of(ObjectKind::Snapshot, 1));
        let open_faulty =
            move || Repository::open(faulty.clone(), b"pw").map_err(|e| e.to_string());
        let s = WalSettings::default();
        let e = run(d.path(), 1, &s, &open_faulty).unwrap_err();
        assert!(matches!(e, WalError::Repository(_)), "{e}");
        for i in 1..=3 {
            assert_eq!(spool::read_ok(&d.path().join("state"), &seg(i)), None);
        }
        let f = spool::read_failing(&d.path().join("state"))
            .unwrap()
            .unwrap();
        assert_eq!(f.failures, 1);
        // The batch was stored after all: the retry finds every file and stores nothing.
        let p = run(d.path(), 1, &s, &open).unwrap();
        assert!(
            p.already && p.opened_repository && p.stored.is_empty(),
            "{p:?}"
        );
        assert!(spool::read_ok(&d.path().join("state"), &seg(3)).is_some());
        assert_eq!(spool::read_failing(&d.path().join("state")).unwrap(), None);
        let repo = open().unwrap();
        let (all, _) = holdfast_core::snapshot::load_all(&repo).unwrap();
        assert_eq!(logs::batches(&all, "db", LogKind::PgWal).len(), 1);
    }

    #[test]
    fn a_push_reads_only_the_snapshots_it_has_not_read_before() {
        let d = pg_wal(5, 9); // nothing marked ready: one file per batch
        let open = repo(Arc::new(MemoryStorage::new()));
        let s = WalSettings::default();
        let reads: Vec<usize> = (1..=4)
            .map(|i| run(d.path(), i, &s, &open).unwrap().snapshots_read)
            .collect();
        assert_eq!(reads, [0, 1, 1, 1]);
        // Without the catalog, every batch is read again; the answer is the same.
        fs::remove_file(d.path().join("state/catalog.json")).unwrap();
        fs::remove_file(d.path().join("state").join(format!("{}.ok", seg(2)))).unwrap();
        let p = run(d.path(), 2, &s, &open).unwrap();
        assert!(p.already && p.stored.is_empty(), "{p:?}");
        assert_eq!(p.snapshots_read, 4);
        // Neither the records nor the catalog of another repository are trusted.
        let other = repo(Arc::new(MemoryStorage::new()));
        let p = run_in(d.path(), 2, &s, &other, "elsewhere").unwrap();
        assert!(!p.already && p.stored == [seg(2)], "{p:?}");
        assert_eq!(
            p.snapshots_read, 0,
            "another repository: the catalog starts again"
        );
    }

    #[test]
    fn bytes_that_changed_since_they_were_hashed_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, b"abc").unwrap();
        let mut v = Verified {
            f: fs::File::open(&p).unwrap(),
            h: blake3::Hasher::new(),
            n: 0,
            want: (3, blake3::hash(b"abd").to_hex().to_string()),
            name: "f".into(),
        };
        let mut out = Vec::new();
        let e = v.read_to_end(&mut out).unwrap_err();
        assert!(
            e.to_string().contains("changed while it was archived"),
            "{e}"
        );
        let mut v = Verified {
            f: fs::File::open(&p).unwrap(),
            h: blake3::Hasher::new(),
            n: 0,
            want: (3, blake3::hash(b"abc").to_hex().to_string()),
            name: "f".into(),
        };
        assert_eq!(v.read_to_end(&mut out).unwrap(), 3);
    }
}
