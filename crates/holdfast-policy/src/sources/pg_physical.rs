//! Restoring a physical PostgreSQL base backup into a data directory PostgreSQL will start on.
//!
//! PostgreSQL refuses a data directory that is not owned by the user it runs as, or whose mode
//! is wider than 0750, and it must never find files of another cluster mixed into the one it
//! recovers. So the base backup is extracted into a fresh sibling directory, owned by the owner
//! of the backed-up files (as recorded in the archive; `postgres` when they came out as root),
//! set to mode 0700, and only then moved into place; a data directory a running server uses is
//! refused.

use std::ffi::{CStr, CString};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::tool::ToolError;

/// Why a physical restore failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum PhysicalError {
    /// The target holds files and `--replace` was not given.
    #[error("{} is not empty: pass --replace, or give an empty directory", .0.display())]
    NotEmpty(PathBuf),
    /// A server runs on the target.
    #[error("{} is the data directory of a running PostgreSQL server (pid {pid}): stop it first (pg_ctl -D {} stop)", .dir.display(), .dir.display())]
    Running {
        /// The data directory.
        dir: PathBuf,
        /// The postmaster.
        pid: u32,
    },
    /// What was extracted is not a data directory.
    #[error("the base backup holds no PG_VERSION ({0}): it is not a PostgreSQL data directory")]
    NotADataDirectory(#[source] std::io::Error),
    /// The files came out as root and no `postgres` user exists.
    #[error("the backed-up files came out owned by root and there is no user postgres: create the user that runs PostgreSQL, then restore again")]
    NoPostgresUser,
    /// Extracting the base backup failed.
    #[error(transparent)]
    Extract(#[from] ToolError),
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

fn io(what: String) -> impl FnOnce(std::io::Error) -> PhysicalError {
    move |source| PhysicalError::Io { what, source }
}

/// The process a `postmaster.pid` names, if it is running.
pub fn running_postmaster(data: &Path) -> Option<u32> {
    let text = fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

fn user_name(uid: u32) -> Option<String> {
    // SAFETY: getpwuid returns a pointer to static storage or null; read it at once.
    unsafe {
        let p = libc::getpwuid(uid);
        if p.is_null() {
            return None;
        }
        Some(CStr::from_ptr((*p).pw_name).to_string_lossy().into_owned())
    }
}

fn user_ids(name: &str) -> Option<(u32, u32)> {
    let c = CString::new(name).ok()?;
    // SAFETY: as above.
    unsafe {
        let p = libc::getpwnam(c.as_ptr());
        if p.is_null() {
            return None;
        }
        Some(((*p).pw_uid, (*p).pw_gid))
    }
}

fn chown_tree(p: &Path, uid: u32, gid: u32) -> Result<(), PhysicalError> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .map_err(io(format!("chown {}", p.display())))?;
    let m = fs::symlink_metadata(p).map_err(io(format!("{}", p.display())))?;
    if m.is_dir() {
        for e in fs::read_dir(p).map_err(io(format!("{}", p.display())))? {
            let e = e.map_err(io(format!("{}", p.display())))?;
            chown_tree(&e.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Who must own the restored cluster: the owner of its files as extracted, or, when they came
/// out as root while running as root, the `postgres` user.
fn owner(dir: &Path) -> Result<(u32, u32), PhysicalError> {
    let m = fs::metadata(dir.join("PG_VERSION")).map_err(PhysicalError::NotADataDirectory)?;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root && m.uid() == 0 {
        return user_ids("postgres").ok_or(PhysicalError::NoPostgresUser);
    }
    Ok((m.uid(), m.gid()))
}

/// Remove what a running server leaves in its data directory and a base backup copies: the
/// lock files of sockets in the data directory (`.s.PGSQL.PORT.lock`) and a `postmaster.pid`.
/// A restored server on the same port would take them for another server's (their process
/// may still exist, or be another process by now) and refuse to start.
fn remove_stale_locks(dir: &Path) -> Result<(), PhysicalError> {
    for e in fs::read_dir(dir).map_err(io(format!("{}", dir.display())))? {
        let e = e.map_err(io(format!("{}", dir.display())))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if (name.starts_with(".s.PGSQL.") && name.ends_with(".lock")) || name == "postmaster.pid" {
            fs::remove_file(e.path()).map_err(io(format!("removing {}", e.path().display())))?;
        }
    }
    Ok(())
}

/// Extract a base backup (`extract` unpacks it into the directory it is given) into `target`.
/// Returns what was done and how to start the server, for people.
pub fn restore(
    target: &Path,
    replace: bool,
    extract: impl FnOnce(&Path) -> Result<(), ToolError>,
) -> Result<Vec<String>, PhysicalError> {
    let non_empty = fs::read_dir(target)
        .map(|mut r| r.next().is_some())
        .unwrap_or(false);
    if non_empty && !replace {
        return Err(PhysicalError::NotEmpty(target.to_path_buf()));
    }
    if let Some(pid) = running_postmaster(target) {
        return Err(PhysicalError::Running {
            dir: target.to_path_buf(),
            pid,
        });
    }
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io(format!("{}", parent.display())))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let fresh = tempfile::Builder::new()
        .prefix(&format!(".{name}.holdfast-restore-"))
        .tempdir_in(parent)
        .map_err(io(format!("scratch directory in {}", parent.display())))?;
    extract(fresh.path())?;
    remove_stale_locks(fresh.path())?;
    let (uid, gid) = owner(fresh.path())?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        chown_tree(fresh.path(), uid, gid)?;
    }
    fs::set_permissions(fresh.path(), fs::Permissions::from_mode(0o700))
        .map_err(io(format!("chmod {}", fresh.path().display())))?;
    let fresh = fresh.keep();
    let mut done = Vec::new();
    if target.exists() {
        // Move the old directory aside first, so the two clusters never mix, then remove it.
        let old: PathBuf = parent.join(format!(".{name}.holdfast-replaced-{}", std::process::id()));
        fs::rename(target, &old).map_err(io(format!("moving {} aside", target.display())))?;
        fs::rename(&fresh, target).map_err(io(format!(
            "moving the restored cluster into {}",
            target.display()
        )))?;
        fs::remove_dir_all(&old).map_err(io(format!(
            "removing the replaced cluster {}",
            old.display()
        )))?;
        done.push(format!("replaced the old contents of {}", target.display()));
    } else {
        fs::rename(&fresh, target).map_err(io(format!(
            "moving the restored cluster into {}",
            target.display()
        )))?;
    }
    let user = user_name(uid).unwrap_or_else(|| uid.to_string());
    // SAFETY: geteuid has no preconditions.
    let start = if unsafe { libc::geteuid() } == uid {
        format!("pg_ctl -D {} start", target.display())
    } else {
        format!("sudo -u {user} pg_ctl -D {} start", target.display())
    };
    done.push(format!(
        "extracted the base backup into {} (owner {user}, mode 0700); start PostgreSQL on it to recover: {start}",
        target.display()
    ));
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restored_cluster_keeps_no_lock_of_the_server_it_was_copied_from() {
        let scratch = tempfile::tempdir().unwrap();
        let target = scratch.path().join("restored");
        restore(&target, false, |dir| {
            fs::write(dir.join("PG_VERSION"), "15\n").unwrap();
            fs::write(dir.join(".s.PGSQL.5432.lock"), "12345\n/srv/pg\n").unwrap();
            fs::write(dir.join("postmaster.pid"), "12345\n").unwrap();
            fs::write(dir.join(".s.PGSQL.5432.conf"), "not a lock").unwrap();
            fs::create_dir(dir.join("base")).unwrap();
            fs::write(dir.join("base/1"), "data").unwrap();
            Ok(())
        })
        .unwrap();
        assert!(!target.join(".s.PGSQL.5432.lock").exists());
        assert!(!target.join("postmaster.pid").exists());
        assert!(
            target.join(".s.PGSQL.5432.conf").exists(),
            "only lock files go"
        );
        assert_eq!(fs::read_to_string(target.join("base/1")).unwrap(), "data");
    }
}
