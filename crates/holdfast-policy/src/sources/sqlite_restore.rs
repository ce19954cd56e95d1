//! Restoring an SQLite database over a file that may exist, with its sidecar files.
//!
//! An SQLite database is more than its main file: `-wal` holds committed transactions not yet
//! checkpointed, `-shm` indexes them for open connections, and `-journal` holds a rollback in
//! progress. Replacing only the main file leaves the old database's sidecars beside the new one:
//! connections that are still open see a torn mix of both ("database disk image is malformed"),
//! and after a crash SQLite replays the old WAL into the restored file, so it holds the state
//! *after* the backup. A restore therefore
//!
//! 1. refuses while any process has the database or a sidecar open (found through `/proc`);
//! 2. writes the recovery point to a scratch file beside the target and checks it with
//!    `PRAGMA integrity_check`;
//! 3. checkpoints the old database (so it is whole in its main file until the very last step),
//!    removes every sidecar, and renames the scratch file over the target (atomic);
//! 4. checks the result again.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why an SQLite restore failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The target exists and `--replace` was not given.
    #[error("{} exists: pass --replace to overwrite it", .0.display())]
    Exists(PathBuf),
    /// A `-wal`, `-shm` or `-journal` is left beside the target.
    #[error("{} is left beside {}: SQLite would replay it into the restored database; pass --replace to remove it", .sidecar.display(), .path.display())]
    Sidecar {
        /// The sidecar.
        sidecar: PathBuf,
        /// The target.
        path: PathBuf,
    },
    /// Another process has the database open.
    #[error("{} is open by process {}: restoring under a live connection would give it a mix of two databases; stop the application (or close its connections), then restore again", .path.display(), .by.join(", "))]
    Open {
        /// The target.
        path: PathBuf,
        /// `pid (name)` of each.
        by: Vec<String>,
    },
    /// `PRAGMA integrity_check` did not say ok.
    #[error("integrity check of {}: {result}", .path.display())]
    Damaged {
        /// The database.
        path: PathBuf,
        /// What it said.
        result: String,
    },
    /// The restored copy failed its check before it replaced anything.
    #[error("the restored copy is damaged: {0}")]
    CopyDamaged(#[source] Box<RestoreError>),
    /// Reading the recovery point failed.
    #[error(transparent)]
    Read(#[from] holdfast_core::Error),
    /// SQLite failed.
    #[error("{what}: {source}")]
    Sqlite {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// Local I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> RestoreError {
    move |source| RestoreError::Io { what, source }
}

fn sq(what: String) -> impl FnOnce(rusqlite::Error) -> RestoreError {
    move |source| RestoreError::Sqlite { what, source }
}

/// The sidecar files SQLite keeps beside a database.
pub fn sidecars(db: &Path) -> Vec<PathBuf> {
    ["-wal", "-shm", "-journal"]
        .iter()
        .map(|s| {
            let mut p = db.as_os_str().to_owned();
            p.push(s);
            PathBuf::from(p)
        })
        .collect()
}

/// Processes other than this one that have one of `files` open: `(pid, command name)`.
/// Reads `/proc/*/fd`; processes whose descriptors cannot be read (another user's, when not
/// root) are not seen.
pub fn openers(files: &[PathBuf]) -> Vec<(u32, String)> {
    let ids: Vec<(u64, u64)> = files
        .iter()
        .filter_map(|f| fs::metadata(f).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let me = std::process::id();
    let mut pids = std::collections::BTreeSet::new();
    crate::procnet::for_each_fd(|pid, fd| {
        if pid != me && fs::metadata(fd).is_ok_and(|m| ids.contains(&(m.dev(), m.ino()))) {
            pids.insert(pid);
        }
    });
    pids.into_iter()
        .map(|pid| {
            let name = fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            (pid, name)
        })
        .collect()
}

/// `PRAGMA integrity_check` through a read-write connection: when it closes, SQLite removes the
/// `-wal` and `-shm` it made (a read-only connection would leave them behind).
fn integrity(p: &Path) -> Result<(), RestoreError> {
    let c = rusqlite::Connection::open(p).map_err(sq(format!("opening {}", p.display())))?;
    let r: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(sq(format!("integrity check of {}", p.display())))?;
    if r == "ok" {
        Ok(())
    } else {
        Err(RestoreError::Damaged {
            path: p.to_path_buf(),
            result: r,
        })
    }
}

fn refuse_if_open(target: &Path, files: &[PathBuf]) -> Result<(), RestoreError> {
    let users = openers(files);
    if users.is_empty() {
        return Ok(());
    }
    let who: Vec<String> = users
        .iter()
        .map(|(pid, n)| format!("{pid} ({n})"))
        .collect();
    Err(RestoreError::Open {
        path: target.to_path_buf(),
        by: who,
    })
}

/// Restore a database into `target`: `write` fills the scratch file with the recovery point's
/// bytes. Refuses an existing database (or leftover sidecars) unless `replace`, and any
/// database another process has open. Returns what was done, for people.
pub fn restore(
    target: &Path,
    replace: bool,
    write: impl FnOnce(&mut File) -> Result<(), holdfast_core::Error>,
) -> Result<String, RestoreError> {
    let side = sidecars(target);
    let present: Vec<&PathBuf> = side.iter().filter(|p| p.exists()).collect();
    let exists = fs::metadata(target).map(|m| m.len() > 0).unwrap_or(false);
    if exists && !replace {
        return Err(RestoreError::Exists(target.to_path_buf()));
    }
    if !present.is_empty() && !replace {
        return Err(RestoreError::Sidecar {
            sidecar: present[0].clone(),
            path: target.to_path_buf(),
        });
    }
    let mut all = vec![target.to_path_buf()];
    all.extend(side.iter().cloned());
    refuse_if_open(target, &all)?;
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(format!("{}", dir.display())))?;
    let tmp = tempfile::Builder::new()
        .prefix(".holdfast-restore-")
        .tempfile_in(dir)
        .map_err(io(format!("scratch file in {}", dir.display())))?;
    let mut f = tmp
        .reopen()
        .map_err(io(format!("{}", tmp.path().display())))?;
    write(&mut f)?;
    f.sync_all()
        .map_err(io(format!("syncing {}", tmp.path().display())))?;
    drop(f);
    integrity(tmp.path()).map_err(|e| RestoreError::CopyDamaged(Box::new(e)))?;
    if exists {
        // Fold the old WAL into its main file, so the old database stays whole until the rename
        // (a failure here only means the old database is damaged, and it is being replaced).
        if let Ok(c) = rusqlite::Connection::open(target) {
            let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
    }
    refuse_if_open(target, &all)?;
    for p in &side {
        match fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("removing {}", p.display()))(e)),
        }
    }
    let removed: Vec<String> = present.iter().map(|p| p.display().to_string()).collect();
    tmp.persist(target)
        .map_err(|e| io(format!("renaming into {}", target.display()))(e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("{}", dir.display())))?;
    integrity(target)?;
    Ok(if removed.is_empty() {
        format!("restored {} (integrity_check: ok)", target.display())
    } else {
        format!(
            "restored {} (integrity_check: ok); removed the old database's {}",
            target.display(),
            removed.join(", ")
        )
    })
}
