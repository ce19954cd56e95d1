//! A crash-consistent capture of a mounted ext4/XFS file system without LVM: `fsfreeze
//! --freeze` for as long as the device is read, then `--unfreeze`. The frozen mount is recorded
//! in the state directory (`frozen/NAME`) before it is frozen, and a watchdog process (a
//! separate process group, so it outlives holdfast killed with SIGKILL) thaws it after
//! `freeze-timeout`. The next backup of the source finds a leftover record, stops the old
//! watchdog, thaws the mount and warns loudly. A capture that outlived the timeout was thawed
//! while it was read, so it is refused (no recovery point recorded).

use std::cell::RefCell;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Why a freeze failed.
#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    /// No state directory for the record.
    #[error("no state directory to record the frozen mount in: set HOLDFAST_STATE_DIR")]
    NoStateDir,
    /// The mount point is not the device's file system.
    #[error("freeze = {}: {why}; give the mount point of the file system on {}", mnt.display(), dev.display())]
    NotItsMount {
        /// The device.
        dev: PathBuf,
        /// The mount point.
        mnt: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// fsfreeze failed or could not be run.
    #[error("fsfreeze {op} {}: {why}", mnt.display())]
    Fsfreeze {
        /// `--freeze` or `--unfreeze`.
        op: &'static str,
        /// The mount point.
        mnt: PathBuf,
        /// Why (its standard error, or why it did not run).
        why: String,
    },
    /// The watchdog thawed the file system while it was read.
    #[error("the file system at {} stayed frozen longer than freeze-timeout ({}s) and the watchdog thawed it while it was read: the capture is not consistent, so no recovery point was recorded; raise freeze-timeout", mnt.display(), secs)]
    TimedOut {
        /// The mount point.
        mnt: PathBuf,
        /// The timeout.
        secs: u64,
    },
    /// Local I/O on the record.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The name the watchdog runs under (its `$0`), checked before a stale one is stopped.
const WATCHDOG: &str = "holdfast-freeze-watchdog";

fn record_path(name: &str) -> Option<PathBuf> {
    holdfast_core::localstate::state_dir().map(|d| d.join("frozen").join(name))
}

/// Check that `mnt` is the mount point of the file system on the block device `dev`.
pub fn check_mount(dev: &Path, mnt: &Path) -> Result<(), FreezeError> {
    let err = |why: String| FreezeError::NotItsMount {
        dev: dev.to_path_buf(),
        mnt: mnt.to_path_buf(),
        why,
    };
    let d = fs::metadata(dev).map_err(|e| err(format!("{}: {e}", dev.display())))?;
    let m = fs::metadata(mnt).map_err(|e| err(e.to_string()))?;
    if !std::os::unix::fs::FileTypeExt::is_block_device(&d.file_type()) {
        return Err(err(format!(
            "{} is not a block device (attach an image with losetup)",
            dev.display()
        )));
    }
    if m.dev() != d.rdev() {
        return Err(err(format!(
            "it is not on {} (not mounted from it)",
            dev.display()
        )));
    }
    let parent = mnt.join("..");
    if fs::metadata(&parent).is_ok_and(|p| p.dev() == m.dev() && p.ino() != m.ino()) {
        return Err(err("it is not a mount point".into()));
    }
    Ok(())
}

fn fsfreeze(op: &'static str, mnt: &Path) -> Result<(), FreezeError> {
    let o = Command::new("fsfreeze")
        .arg(op)
        .arg(mnt)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| FreezeError::Fsfreeze {
            op,
            mnt: mnt.to_path_buf(),
            why: format!("cannot run fsfreeze (util-linux): {e}"),
        })?;
    if o.status.success() {
        return Ok(());
    }
    Err(FreezeError::Fsfreeze {
        op,
        mnt: mnt.to_path_buf(),
        why: format!(
            "{}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
    })
}

/// Thaw a file system a killed run left frozen (found by its record): stop its watchdog, run
/// `fsfreeze --unfreeze`, remove the record; returns the warnings (also printed to standard
/// error, loudly).
pub fn thaw_stale(name: &str) -> Vec<String> {
    let Some(rec) = record_path(name) else {
        return Vec::new();
    };
    let Ok(text) = fs::read_to_string(&rec) else {
        return Vec::new();
    };
    let mut lines = text.lines();
    let mnt = PathBuf::from(lines.next().unwrap_or_default());
    if let Some(pid) = lines.next().and_then(|p| p.trim().parse::<i32>().ok()) {
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(WATCHDOG) {
            // SAFETY: kill has no memory-safety preconditions; the pid is checked to be ours.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
    let mut w = match fsfreeze("--unfreeze", &mnt) {
        Ok(()) => format!(
            "WARNING: an earlier backup of {name} was interrupted while {} was frozen; it was thawed now",
            mnt.display()
        ),
        Err(e) => format!(
            "WARNING: an earlier backup of {name} was interrupted while {} was frozen; thawing it now said: {e} (it was probably thawed already by the watchdog)",
            mnt.display()
        ),
    };
    if let Err(e) = fs::remove_file(&rec) {
        w.push_str(&format!(
            "; its record {} could not be removed: {e}",
            rec.display()
        ));
    }
    eprintln!("{w}");
    vec![w]
}

fn write_record(rec: &Path, mnt: &Path, pid: Option<u32>) -> Result<(), FreezeError> {
    let io = |what| {
        move |source| FreezeError::Io {
            what,
            path: rec.to_path_buf(),
            source,
        }
    };
    if let Some(d) = rec.parent() {
        fs::create_dir_all(d).map_err(io("creating the directory of"))?;
    }
    let mut f = fs::File::create(rec).map_err(io("writing"))?;
    let pid = pid.map(|p| p.to_string()).unwrap_or_default();
    writeln!(f, "{}\n{pid}", mnt.display()).map_err(io("writing"))?;
    f.sync_all().map_err(io("writing"))
}

fn stop(mut c: Child) {
    // SAFETY: kill has no memory-safety preconditions; the group is the watchdog's own.
    unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
    let _ = c.wait();
}

/// Run `read` with the file system at `mnt` (on `dev`) frozen. `read` is given the thaw: it
/// calls it once the device is read and before it records anything, and the thaw reports an
/// error when the watchdog thawed the file system first (the capture is then not
/// consistent). The file system is thawed afterwards in any case; returns what `read`
/// returned and warnings.
pub fn frozen<T>(
    name: &str,
    dev: &Path,
    mnt: &Path,
    timeout: Duration,
    read: impl for<'b> FnOnce(Box<dyn FnOnce() -> Result<(), String> + 'b>) -> T,
) -> Result<(T, Vec<String>), FreezeError> {
    check_mount(dev, mnt)?;
    let rec = record_path(name).ok_or(FreezeError::NoStateDir)?;
    // Recorded before the freeze, so a kill at any later point is found by the next run.
    write_record(&rec, mnt, None)?;
    let dog = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "sleep {}; exec fsfreeze --unfreeze \"$1\"",
            timeout.as_secs().max(1)
        ))
        .arg(WATCHDOG)
        .arg(mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| FreezeError::Fsfreeze {
            op: "--freeze",
            mnt: mnt.to_path_buf(),
            why: format!("cannot start its watchdog: {e}"),
        })?;
    if let Err(e) = write_record(&rec, mnt, Some(dog.id())) {
        stop(dog);
        let _ = fs::remove_file(&rec);
        return Err(e);
    }
    if let Err(e) = fsfreeze("--freeze", mnt) {
        stop(dog);
        let _ = fs::remove_file(&rec);
        return Err(e);
    }
    let dog = RefCell::new(Some(dog));
    let thaw = || -> Result<(), FreezeError> {
        let Some(mut d) = dog.borrow_mut().take() else {
            return Ok(());
        };
        let expired = !matches!(d.try_wait(), Ok(None));
        stop(d);
        let thawed = fsfreeze("--unfreeze", mnt);
        if expired {
            let _ = fs::remove_file(&rec);
            return Err(FreezeError::TimedOut {
                mnt: mnt.to_path_buf(),
                secs: timeout.as_secs(),
            });
        }
        // A failed thaw keeps the record, so the next run tries again.
        thawed?;
        let _ = fs::remove_file(&rec);
        Ok(())
    };
    let out = read(Box::new(|| thaw().map_err(|e| e.to_string())));
    // Thawed here if `read` failed before it called the thaw.
    thaw()?;
    Ok((out, Vec::new()))
}
