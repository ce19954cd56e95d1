//! A consistent capture of a path source on btrfs (`snapshot = "btrfs"`): after the `pre`
//! hook, a read-only snapshot is taken of the btrfs subvolume holding each path (`btrfs
//! subvolume snapshot -r SUBVOL SUBVOL/.holdfast-snapshot-NAME`, inside the same file system,
//! so it costs no copy), the files are read from the snapshot and recorded under their
//! original paths ([`holdfast_core::backup::BackupOptions::read_from`]), and the snapshot is
//! deleted (`btrfs subvolume delete`) whatever happened. The snapshots are recorded in the
//! state directory (`btrfs/NAME`) before they are taken; the next backup of the source removes
//! any snapshot a killed run left (found by that record, or at its fixed place) before it takes
//! a new one, and warns. Only a read-only btrfs subvolume of the expected name is ever deleted.
//!
//! A nested subvolume below a backed-up path is not part of its parent's snapshot (it shows as
//! an empty directory there), so such a source is refused unless the nested subvolume is
//! excluded.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use holdfast_core::exclude::Excludes;

/// The prefix of the name of every snapshot holdfast takes (also excluded from backups).
pub const PREFIX: &str = ".holdfast-snapshot-";

/// `statfs`'s magic number of btrfs.
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;

/// The inode number of a btrfs subvolume's root directory.
const SUBVOLUME_ROOT_INODE: u64 = 256;

/// Why a btrfs snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum BtrfsError {
    /// The path is not on btrfs.
    #[error("{} is not on a btrfs file system: snapshot = \"btrfs\" needs one (use snapshot = \"lvm\" for a file system on an LVM logical volume, or drop snapshot)", .0.display())]
    NotBtrfs(PathBuf),
    /// The subvolume holding the path was not found.
    #[error("{}: no btrfs subvolume root above it ({why}); give a path inside a mounted subvolume (not a bind mount of part of one)", path.display())]
    NoSubvolume {
        /// The path.
        path: PathBuf,
        /// What was found instead.
        why: String,
    },
    /// A nested subvolume would be backed up as an empty directory.
    #[error("{} is a btrfs subvolume of its own below {}: a snapshot of {} does not include it; back it up in a source of its own, or exclude it", nested.display(), path.display(), subvol.display())]
    Nested {
        /// The backed-up path.
        path: PathBuf,
        /// The nested subvolume.
        nested: PathBuf,
        /// The subvolume snapshotted.
        subvol: PathBuf,
    },
    /// A btrfs command failed or could not be run.
    #[error("{cmd} failed: {why}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its standard error or why it did not run.
        why: String,
    },
    /// Local I/O.
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
    /// The backup failed (the snapshot was deleted).
    #[error(transparent)]
    Engine(#[from] holdfast_core::Error),
}

fn btrfs(args: &[&std::ffi::OsStr]) -> Result<String, BtrfsError> {
    let mut all = vec![os("btrfs")];
    all.extend_from_slice(args);
    super::systool::run(&all, "install btrfs-progs").map_err(|f| BtrfsError::Command {
        cmd: f.cmd,
        why: f.why,
    })
}

fn os<P: AsRef<std::ffi::OsStr> + ?Sized>(p: &P) -> &std::ffi::OsStr {
    p.as_ref()
}

/// Whether `p` is on btrfs.
fn on_btrfs(p: &Path) -> Result<bool, BtrfsError> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| BtrfsError::NotBtrfs(p.into()))?;
    // SAFETY: statfs writes into the zeroed struct we pass; `c` is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(BtrfsError::Io {
            what: "finding the file system of",
            path: p.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64 == BTRFS_SUPER_MAGIC)
}

/// The snapshot's file name for a source.
pub fn snapshot_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{PREFIX}{safe}")
}

/// The root of the btrfs subvolume holding `p` (canonical), and `p` relative to it.
pub fn subvolume_of(p: &Path) -> Result<(PathBuf, PathBuf), BtrfsError> {
    let io = |source| BtrfsError::Io {
        what: "reading",
        path: p.into(),
        source,
    };
    let canon = fs::canonicalize(p).map_err(io)?;
    if !on_btrfs(&canon)? {
        return Err(BtrfsError::NotBtrfs(p.into()));
    }
    let dev = fs::metadata(&canon).map_err(io)?.dev();
    let mut root = canon.clone();
    while let Some(parent) = root.parent() {
        match fs::metadata(parent) {
            Ok(m) if m.dev() == dev => root = parent.to_path_buf(),
            _ => break,
        }
    }
    let ino = fs::metadata(&root).map_err(io)?.ino();
    if ino != SUBVOLUME_ROOT_INODE {
        return Err(BtrfsError::NoSubvolume {
            path: p.into(),
            why: format!(
                "{} is the top of its mount, but not a subvolume root",
                root.display()
            ),
        });
    }
    let rel = canon
        .strip_prefix(&root)
        .unwrap_or(Path::new(""))
        .to_path_buf();
    Ok((root, rel))
}

/// The subvolumes directly below `subvol` (absolute paths), from `btrfs subvolume list -o`
/// (paths relative to the file system's top level) and `btrfs subvolume show` (the
/// subvolume's own path there, `/` for the top level).
fn nested_subvolumes(subvol: &Path) -> Result<Vec<PathBuf>, BtrfsError> {
    let show = btrfs(&[os("subvolume"), os("show"), subvol.as_os_str()])?;
    let own = show.lines().next().unwrap_or("/").trim().trim_matches('/');
    let list = btrfs(&[os("subvolume"), os("list"), os("-o"), subvol.as_os_str()])?;
    Ok(parse_list(&list)
        .into_iter()
        .filter_map(|rel| {
            let rest = if own.is_empty() {
                Some(rel.as_str())
            } else {
                rel.strip_prefix(own).and_then(|r| r.strip_prefix('/'))
            };
            rest.map(|r| subvol.join(r))
        })
        .collect())
}

/// The paths of `btrfs subvolume list` output (`ID 257 gen 9 top level 256 path sub/x`).
pub fn parse_list(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split_once(" path ").map(|(_, p)| p.trim().to_string()))
        .filter(|p| !p.is_empty())
        .collect()
}

/// Refuse a nested subvolume below a backed-up path (unless excluded): the snapshot would
/// hold an empty directory in its place.
fn check_nested(subvol: &Path, paths: &[&Path], excludes: &Excludes) -> Result<(), BtrfsError> {
    use std::os::unix::ffi::OsStrExt;
    for n in nested_subvolumes(subvol)? {
        let ours = n
            .file_name()
            .is_some_and(|f| f.to_string_lossy().starts_with(PREFIX));
        if ours {
            continue;
        }
        for p in paths {
            let canon = fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            if !n.starts_with(&canon) || n == canon {
                continue;
            }
            let excluded = n
                .ancestors()
                .take_while(|a| a.starts_with(&canon) && *a != canon)
                .any(|a| {
                    let shown = p.join(a.strip_prefix(&canon).unwrap_or(a));
                    excludes.excluded(
                        &shown,
                        a.file_name().map(|f| f.as_bytes()).unwrap_or_default(),
                    )
                });
            if !excluded {
                return Err(BtrfsError::Nested {
                    path: p.to_path_buf(),
                    nested: p.join(n.strip_prefix(&canon).unwrap_or(&n)),
                    subvol: subvol.into(),
                });
            }
        }
    }
    Ok(())
}

fn record_path(name: &str) -> Option<PathBuf> {
    holdfast_core::localstate::state_dir().map(|d| d.join("btrfs").join(name))
}

/// Whether `p` is a read-only btrfs snapshot holdfast took for `name` (never delete another).
fn is_ours(name: &str, p: &Path) -> Result<bool, String> {
    if p.file_name().map(|f| f.to_string_lossy().into_owned()) != Some(snapshot_name(name)) {
        return Ok(false);
    }
    let m = fs::symlink_metadata(p).map_err(|e| e.to_string())?;
    if !m.is_dir() || m.ino() != SUBVOLUME_ROOT_INODE || !on_btrfs(p).map_err(|e| e.to_string())? {
        return Ok(false);
    }
    let ro = btrfs(&[
        os("property"),
        os("get"),
        os("-ts"),
        p.as_os_str(),
        os("ro"),
    ])
    .map_err(|e| e.to_string())?;
    Ok(ro.trim() == "ro=true")
}

/// Delete `p` if it is a snapshot of `name` a killed run left; the warning, if there was one.
fn remove_one(name: &str, p: &Path) -> Option<String> {
    if fs::symlink_metadata(p).is_err() {
        return None;
    }
    let w = match is_ours(name, p) {
        Ok(false) => format!(
            "WARNING: {} is not a read-only btrfs snapshot holdfast took for {name}: left alone",
            p.display()
        ),
        Err(e) => format!("WARNING: {} could not be examined ({e}): left alone", p.display()),
        Ok(true) => match btrfs(&[os("subvolume"), os("delete"), p.as_os_str()]) {
            Ok(_) => format!(
                "WARNING: an earlier backup of {name} was interrupted; its btrfs snapshot {} was deleted now",
                p.display()
            ),
            Err(e) => format!(
                "WARNING: an earlier backup of {name} left the btrfs snapshot {}, and deleting it failed: {e}",
                p.display()
            ),
        },
    };
    eprintln!("{w}");
    Some(w)
}

/// Delete the snapshots a killed run of `name` left (named by its record); the warnings (also
/// printed to standard error).
pub fn remove_stale(name: &str) -> Vec<String> {
    let Some(rec) = record_path(name) else {
        return Vec::new();
    };
    let Ok(text) = fs::read_to_string(&rec) else {
        return Vec::new();
    };
    let mut w: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty())
        .filter_map(|l| remove_one(name, Path::new(l)))
        .collect();
    if let Err(e) = fs::remove_file(&rec) {
        w.push(format!(
            "WARNING: the record {} could not be removed: {e}",
            rec.display()
        ));
    }
    w
}

/// Take a read-only snapshot of the subvolume holding each of `paths`, run `read` with the
/// `(path, where to read it)` pairs, delete the snapshots whatever happened. Returns what
/// `read` returned and the warnings (a stale snapshot removed, a deletion that failed).
pub fn with_snapshots<T>(
    name: &str,
    paths: &[PathBuf],
    excludes: &[String],
    read: impl FnOnce(Vec<(PathBuf, PathBuf)>) -> T,
) -> Result<(T, Vec<String>), BtrfsError> {
    let mut warnings = remove_stale(name);
    let ex = Excludes::new(excludes)?;
    // (subvolume, snapshot), and each path's (subvolume index, relative path).
    let mut subvols: Vec<PathBuf> = Vec::new();
    let mut at = Vec::new();
    for p in paths {
        let (sv, rel) = subvolume_of(p)?;
        let i = match subvols.iter().position(|s| *s == sv) {
            Some(i) => i,
            None => {
                subvols.push(sv);
                subvols.len() - 1
            }
        };
        at.push((i, rel));
    }
    let snaps: Vec<PathBuf> = subvols
        .iter()
        .map(|s| s.join(snapshot_name(name)))
        .collect();
    for (i, sv) in subvols.iter().enumerate() {
        let mine: Vec<&Path> = paths
            .iter()
            .zip(&at)
            .filter(|(_, (j, _))| *j == i)
            .map(|(p, _)| p.as_path())
            .collect();
        check_nested(sv, &mine, &ex)?;
        // One left at its place without a record (the state directory was lost).
        warnings.extend(remove_one(name, &snaps[i]));
    }
    let rec = record_path(name);
    if let Some(rec) = &rec {
        let io = |source| BtrfsError::Io {
            what: "writing",
            path: rec.clone(),
            source,
        };
        fs::create_dir_all(rec.parent().unwrap_or(Path::new("."))).map_err(io)?;
        let text: String = snaps.iter().map(|s| format!("{}\n", s.display())).collect();
        fs::write(rec, text).map_err(io)?;
    }
    let mut taken = Vec::new();
    let mut failed = None;
    for (sv, snap) in subvols.iter().zip(&snaps) {
        match btrfs(&[
            os("subvolume"),
            os("snapshot"),
            os("-r"),
            sv.as_os_str(),
            snap.as_os_str(),
        ]) {
            Ok(_) => taken.push(snap.clone()),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let out = match failed {
        Some(e) => Err(e),
        None => {
            let map = paths
                .iter()
                .zip(&at)
                .map(|(p, (i, rel))| (p.clone(), snaps[*i].join(rel)))
                .collect();
            Ok(read(map))
        }
    };
    let mut kept = false;
    for snap in &taken {
        if let Err(e) = btrfs(&[os("subvolume"), os("delete"), snap.as_os_str()]) {
            kept = true;
            let w = format!(
                "WARNING: the btrfs snapshot {} could not be deleted ({e}); the next backup of {name} tries again",
                snap.display()
            );
            eprintln!("{w}");
            warnings.push(w);
        }
    }
    if let (Some(rec), false) = (&rec, kept) {
        let _ = fs::remove_file(rec);
    }
    Ok((out?, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_output_is_parsed_into_paths() {
        // Captured from btrfs-progs 6.x on this machine (`btrfs subvolume list -o m/sub`).
        let out = "ID 257 gen 7 top level 256 path sub/nested\nID 258 gen 7 top level 256 path sub/.snap\n";
        assert_eq!(parse_list(out), vec!["sub/nested", "sub/.snap"]);
        // A path with spaces, and noise.
        let out = "ID 300 gen 12 top level 5 path my data/x y\n\nwhatever\n";
        assert_eq!(parse_list(out), vec!["my data/x y"]);
    }

    #[test]
    fn snapshot_names_are_marked_and_safe() {
        assert_eq!(snapshot_name("app-1"), ".holdfast-snapshot-app-1");
        assert_eq!(snapshot_name("a/b c"), ".holdfast-snapshot-a_b_c");
    }

    #[test]
    fn a_path_not_on_btrfs_is_refused_naming_the_fix() {
        let d = tempfile::tempdir_in("/dev/shm").unwrap();
        let e = subvolume_of(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("is not on a btrfs file system") && e.contains("drop snapshot"),
            "{e}"
        );
    }
}
