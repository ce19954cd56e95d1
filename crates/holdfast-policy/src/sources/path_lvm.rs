//! A consistent capture of a path source on an LVM logical volume (`snapshot = "lvm"`): the
//! logical volume holding the path's file system (found through `/proc/self/mountinfo`) gets
//! an LVM snapshot ([`super::volume_lvm::with_snapshot`]: recorded, read-only, removed
//! afterwards, a stale one removed by the next run), the snapshot is mounted read-only at
//! `STATE/lvm-mount/NAME`, the files are read there and recorded under their original paths
//! ([`holdfast_core::backup::BackupOptions::read_from`]), and the snapshot is unmounted and
//! removed whatever happened. A mount a killed run left there is unmounted by the next run
//! before the stale snapshot is removed. One path source reads one logical volume.
//!
//! Needs device-mapper, which the CI kernel lacks: what is tested there is that a path that is
//! not on a logical volume is refused, naming the fix.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::volume_lvm::{self, LvmError};

/// Why an LVM snapshot of a path source failed.
#[derive(Debug, thiserror::Error)]
pub enum PathLvmError {
    /// The path's file system is not on a logical volume.
    #[error("{} is on {fs} from {source_dev}, not on an LVM logical volume: snapshot = \"lvm\" needs a file system on one (or drop snapshot)", path.display())]
    NotOnLv {
        /// The path.
        path: PathBuf,
        /// Its file system type.
        fs: String,
        /// Where it is mounted from.
        source_dev: String,
    },
    /// The paths are on different file systems.
    #[error("{} and {} are on different file systems: a path source with snapshot = \"lvm\" reads one logical volume; split it into one source per volume", a.display(), b.display())]
    TwoVolumes {
        /// One path.
        a: PathBuf,
        /// Another.
        b: PathBuf,
    },
    /// The mount of the path was not found.
    #[error("{}: its mount was not found in /proc/self/mountinfo ({why})", path.display())]
    NoMount {
        /// The path.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The LVM snapshot failed.
    #[error(transparent)]
    Lvm(#[from] LvmError),
    /// Mounting or unmounting the snapshot failed.
    #[error("{cmd} failed: {why}")]
    Mount {
        /// The command line.
        cmd: String,
        /// Why.
        why: String,
    },
    /// No state directory for the mount point.
    #[error("no state directory to mount the LVM snapshot in: set HOLDFAST_STATE_DIR")]
    NoStateDir,
    /// The backup failed.
    #[error(transparent)]
    Engine(#[from] holdfast_core::Error),
}

/// A mount of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq)]
pub struct MountInfo {
    /// `MAJOR:MINOR` of its file system.
    pub dev: String,
    /// The directory of the file system mounted (`/` unless a bind mount of part of it).
    pub root: String,
    /// Where.
    pub at: PathBuf,
    /// File system type.
    pub fstype: String,
    /// What it is mounted from.
    pub source: String,
}

/// The mounts of `/proc/self/mountinfo` text.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    let un = |s: &str| s.replace("\\040", " ");
    text.lines()
        .filter_map(|l| {
            let (head, tail) = l.split_once(" - ")?;
            let h: Vec<&str> = head.split_whitespace().collect();
            let t: Vec<&str> = tail.split_whitespace().collect();
            if h.len() < 5 || t.len() < 2 {
                return None;
            }
            Some(MountInfo {
                dev: h[2].to_string(),
                root: un(h[3]),
                at: PathBuf::from(un(h[4])),
                fstype: t[0].to_string(),
                source: un(t[1]),
            })
        })
        .collect()
}

/// The mount holding `p` (the deepest of its file system's mounts above it), and `p` inside
/// the file system (relative to its root).
pub fn mount_of(p: &Path, mounts: &[MountInfo]) -> Result<(MountInfo, PathBuf), PathLvmError> {
    let no = |why: String| PathLvmError::NoMount {
        path: p.into(),
        why,
    };
    let canon = fs::canonicalize(p).map_err(|e| no(e.to_string()))?;
    let d = fs::metadata(&canon).map_err(|e| no(e.to_string()))?.dev();
    let dev = super::volume::maj_min(d);
    let m = mounts
        .iter()
        .filter(|m| m.dev == dev && canon.starts_with(&m.at))
        .max_by_key(|m| m.at.as_os_str().len())
        .ok_or_else(|| no(format!("no mount of device {dev} above it")))?;
    let rest = canon.strip_prefix(&m.at).unwrap_or(Path::new(""));
    let inside = Path::new(m.root.trim_start_matches('/')).join(rest);
    Ok((m.clone(), inside))
}

/// The logical volume holding all of `paths`, and each path inside its file system.
pub fn volume_of(paths: &[PathBuf]) -> Result<(MountInfo, Vec<PathBuf>), PathLvmError> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(|e| PathLvmError::NoMount {
        path: paths.first().cloned().unwrap_or_default(),
        why: e.to_string(),
    })?;
    let mounts = parse_mountinfo(&text);
    let mut first: Option<(MountInfo, PathBuf)> = None;
    let mut inside = Vec::new();
    for p in paths {
        let (m, rel) = mount_of(p, &mounts)?;
        if let Some((f, fp)) = &first {
            if f.dev != m.dev {
                return Err(PathLvmError::TwoVolumes {
                    a: fp.clone(),
                    b: p.clone(),
                });
            }
        } else {
            first = Some((m.clone(), p.clone()));
        }
        inside.push(rel);
    }
    let (m, p) = first.ok_or_else(|| PathLvmError::NoMount {
        path: PathBuf::new(),
        why: "no paths".into(),
    })?;
    let is_block = fs::metadata(&m.source)
        .is_ok_and(|x| std::os::unix::fs::FileTypeExt::is_block_device(&x.file_type()));
    if !is_block || volume_lvm::vg_lv(Path::new(&m.source)).is_err() {
        return Err(PathLvmError::NotOnLv {
            path: p,
            fs: m.fstype.clone(),
            source_dev: m.source.clone(),
        });
    }
    Ok((m, inside))
}

fn run(args: &[&std::ffi::OsStr]) -> Result<(), PathLvmError> {
    super::systool::run(args, "")
        .map(drop)
        .map_err(|f| PathLvmError::Mount {
            cmd: f.cmd,
            why: f.why,
        })
}

fn mount_dir(name: &str) -> Option<PathBuf> {
    holdfast_core::localstate::state_dir().map(|d| d.join("lvm-mount").join(name))
}

/// Whether `dir` is a mount point (its device differs from its parent's).
fn is_mount(dir: &Path) -> bool {
    match (fs::metadata(dir), fs::metadata(dir.join(".."))) {
        (Ok(a), Ok(b)) => a.dev() != b.dev(),
        _ => false,
    }
}

/// Unmount a snapshot a killed run left mounted, then remove its snapshot; the warnings.
pub fn remove_stale(name: &str) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(dir) = mount_dir(name).filter(|d| is_mount(d)) {
        let msg = match run(&["umount".as_ref(), dir.as_os_str()]) {
            Ok(()) => format!(
                "WARNING: an earlier backup of {name} was interrupted; its snapshot mount {} was unmounted now",
                dir.display()
            ),
            Err(e) => format!("WARNING: an earlier backup of {name} left {} mounted, and unmounting it failed: {e}", dir.display()),
        };
        eprintln!("{msg}");
        w.push(msg);
    }
    w.extend(volume_lvm::remove_stale(name));
    w
}

/// Take an LVM snapshot of the volume holding `paths`, mount it read-only, run `read` with
/// the `(path, where to read it)` pairs, unmount and remove it whatever happened.
pub fn with_snapshot<T>(
    name: &str,
    paths: &[PathBuf],
    size: Option<&str>,
    read: impl FnOnce(Vec<(PathBuf, PathBuf)>) -> T,
) -> Result<(T, Vec<String>), PathLvmError> {
    let warnings = remove_stale(name);
    let (m, inside) = volume_of(paths)?;
    let dir = mount_dir(name).ok_or(PathLvmError::NoStateDir)?;
    fs::create_dir_all(&dir).map_err(|e| PathLvmError::Mount {
        cmd: format!("mkdir {}", dir.display()),
        why: e.to_string(),
    })?;
    // A snapshot of a mounted file system looks uncleanly unmounted: never replay its journal.
    let opts = match m.fstype.as_str() {
        "xfs" => "ro,nouuid,norecovery",
        "ext3" | "ext4" => "ro,noload",
        _ => "ro",
    };
    let out = volume_lvm::with_snapshot(name, Path::new(&m.source), size, |dev, check| {
        run(&[
            "mount".as_ref(),
            "-t".as_ref(),
            m.fstype.as_ref(),
            "-o".as_ref(),
            opts.as_ref(),
            dev.as_os_str(),
            dir.as_os_str(),
        ])?;
        let map = paths
            .iter()
            .zip(&inside)
            .map(|(p, rel)| (p.clone(), dir.join(rel)))
            .collect();
        let out = read(map);
        let unmounted = run(&["umount".as_ref(), dir.as_os_str()]);
        check().map_err(|why| PathLvmError::Mount {
            cmd: "lvs (the snapshot's state)".into(),
            why,
        })?;
        unmounted?;
        Ok::<T, PathLvmError>(out)
    })??;
    Ok((out, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_is_parsed_and_the_deepest_mount_of_the_device_is_found() {
        // From the CI machine, plus an LV and a bind mount of part of it.
        let text = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                    25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684092k\n\
                    40 27 252:1 / /srv/data rw,relatime - xfs /dev/mapper/vg0-data rw\n\
                    41 27 252:1 /app /var/app\\040x rw,relatime - xfs /dev/mapper/vg0-data rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 4);
        assert_eq!(m[3].at, PathBuf::from("/var/app x"));
        assert_eq!(m[3].root, "/app");
        assert_eq!(m[2].source, "/dev/mapper/vg0-data");
        assert_eq!(m[2].fstype, "xfs");
    }

    #[test]
    fn a_path_not_on_a_logical_volume_is_refused_naming_the_fix() {
        let d = tempfile::tempdir_in("/dev/shm").unwrap();
        let e = volume_of(&[d.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not on an LVM logical volume") && e.contains("tmpfs"),
            "{e}"
        );
    }
}
