//! The local state of a source's WAL archive: which files are durable in the repository
//! (`<name>.ok`), the ongoing outage (`failing.json`), the WAL waiting in `pg_wal`
//! (`queue.json`), and the lock that serializes pushes. Every record is written to a
//! temporary file, synced, renamed into place and its directory synced: a crash leaves the
//! old record or the new one, never a torn one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::{io, WalError};

/// A file recorded as durable in the repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Durable {
    /// Its bytes.
    pub size: u64,
    /// Its BLAKE3 (hex).
    pub blake3: String,
    /// The batch holding it (hex id).
    pub batch: String,
    /// The repository's location as the workload names it: a record made for another
    /// repository is not trusted (the repository is asked instead).
    #[serde(default)]
    pub repository: String,
}

/// An outage: every push since `since` failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failing {
    /// The first failed push of the outage.
    pub since: DateTime<Utc>,
    /// The last failure.
    pub last_error: String,
    /// Failed pushes since then.
    pub failures: u64,
}

/// The WAL waiting in `pg_wal` to be archived (`.ready` and not yet stored), as measured by
/// the last push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queue {
    /// When.
    pub at: DateTime<Utc>,
    /// Files.
    pub waiting_files: u64,
    /// Bytes.
    pub waiting_bytes: u64,
}

/// Create the state directory (mode 0700: it says what was archived).
pub fn ensure_dir(dir: &Path) -> Result<(), WalError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(format!(
            "creating the WAL state directory {}",
            dir.display()
        )))
}

/// An exclusive lock on the state directory, held while it lives (pushes of one source run
/// one at a time, whoever started them).
pub struct Lock(#[allow(dead_code)] fs::File);

/// Wait for the lock of `dir`.
pub fn lock(dir: &Path) -> Result<Lock, WalError> {
    let p = dir.join("lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(io(format!("opening {}", p.display())))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(WalError::Io {
            what: format!("locking {}", p.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(Lock(f))
}

/// Sync a directory (a rename or an unlink in it is durable after).
pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing {}", dir.display())))
}

/// Write `bytes` to `path` atomically and durably (temporary file, fsync, rename, fsync of
/// the directory), mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WalError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut t = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io(format!("a temporary file in {}", dir.display())))?;
    t.write_all(bytes)
        .and_then(|_| t.as_file().sync_all())
        .map_err(io(format!("writing {}", path.display())))?;
    let _ = t
        .as_file()
        .set_permissions(fs::Permissions::from_mode(0o600));
    t.persist(path).map_err(|e| WalError::Io {
        what: format!("renaming into {}", path.display()),
        source: e.error,
    })?;
    sync_dir(dir)
}

fn read_json<T: DeserializeOwned>(p: &Path) -> Result<Option<T>, WalError> {
    match fs::read(p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| WalError::Io {
                what: format!("reading {}", p.display()),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(format!("reading {}", p.display()))(e)),
    }
}

fn write_json<T: Serialize>(p: &Path, v: &T) -> Result<(), WalError> {
    let b = serde_json::to_vec_pretty(v).map_err(|e| WalError::Io {
        what: format!("encoding {}", p.display()),
        source: std::io::Error::other(e),
    })?;
    write_atomic(p, &b)
}

/// Where the record of `name` lives (`name` was checked by [`super::classify`]).
pub fn ok_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.ok"))
}

/// The record of `name`, if it was recorded as durable (an unreadable record counts as none:
/// the repository is asked instead).
pub fn read_ok(dir: &Path, name: &str) -> Option<Durable> {
    read_json(&ok_path(dir, name)).ok().flatten()
}

/// Record `name` as durable in the repository (call only after the batch is durable).
pub fn write_ok(dir: &Path, name: &str, ok: &Durable) -> Result<(), WalError> {
    write_json(&ok_path(dir, name), ok)
}

/// Remove the records of files that are no longer in `pg_wal` (PostgreSQL removed or
/// recycled them after they were archived, so it will not ask for them again).
pub fn prune_ok(dir: &Path, pg_wal: &Path) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if let Some(name) = n.strip_suffix(".ok") {
            if super::classify(name).is_some() && !pg_wal.join(name).exists() {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// The ongoing outage, if any.
pub fn read_failing(dir: &Path) -> Result<Option<Failing>, WalError> {
    read_json(&dir.join("failing.json"))
}

/// Record a failed push at `now` (the outage starts now unless one is recorded already).
pub fn record_failure(dir: &Path, now: DateTime<Utc>, error: &str) -> Result<Failing, WalError> {
    let prev = read_failing(dir).ok().flatten();
    let f = Failing {
        since: prev.as_ref().map_or(now, |p| p.since),
        last_error: error.to_string(),
        failures: prev.map_or(0, |p| p.failures) + 1,
    };
    write_json(&dir.join("failing.json"), &f)?;
    Ok(f)
}

/// The outage is over (a push succeeded).
pub fn clear_failure(dir: &Path) -> Result<(), WalError> {
    let p = dir.join("failing.json");
    match fs::remove_file(&p) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("removing {}", p.display()))(e)),
    }
}

/// The WAL waiting at the last push.
pub fn read_queue(dir: &Path) -> Result<Option<Queue>, WalError> {
    read_json(&dir.join("queue.json"))
}

/// Record the WAL waiting now.
pub fn write_queue(dir: &Path, q: &Queue) -> Result<(), WalError> {
    write_json(&dir.join("queue.json"), q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_keeps_its_start_and_counts_failures_until_cleared() {
        let d = tempfile::tempdir().unwrap();
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(read_failing(d.path()).unwrap(), None);
        record_failure(d.path(), t("2026-12-01T10:00:00Z"), "a").unwrap();
        let f = record_failure(d.path(), t("2026-12-01T10:01:00Z"), "b").unwrap();
        assert_eq!(f.since, t("2026-12-01T10:00:00Z"));
        assert_eq!((f.failures, f.last_error.as_str()), (2, "b"));
        clear_failure(d.path()).unwrap();
        clear_failure(d.path()).unwrap();
        assert_eq!(read_failing(d.path()).unwrap(), None);
        let f = record_failure(d.path(), t("2026-12-01T11:00:00Z"), "c").unwrap();
        assert_eq!((f.since, f.failures), (t("2026-12-01T11:00:00Z"), 1));
    }

    #[test]
    fn ok_records_are_pruned_when_pg_wal_no_longer_holds_the_file() {
        let d = tempfile::tempdir().unwrap();
        let wal = tempfile::tempdir().unwrap();
        let ok = Durable {
            size: 1,
            blake3: "x".into(),
            batch: "b".into(),
            repository: "r".into(),
        };
        for n in ["000000010000000000000001", "000000010000000000000002"] {
            write_ok(d.path(), n, &ok).unwrap();
        }
        fs::write(wal.path().join("000000010000000000000002"), "x").unwrap();
        prune_ok(d.path(), wal.path());
        assert_eq!(read_ok(d.path(), "000000010000000000000001"), None);
        assert_eq!(read_ok(d.path(), "000000010000000000000002"), Some(ok));
    }
}
