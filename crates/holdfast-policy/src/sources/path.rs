//! `kind = "path"`: files and directories, copied by the engine's file backup (with excludes),
//! restored as files, drilled by a restore that is validated against the snapshot. With
//! `snapshot = "btrfs"` the files are read from a read-only snapshot of their subvolume
//! ([`super::path_btrfs`]), recorded under their original paths.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use holdfast_core::backup::{self, BackupOptions};
use holdfast_core::restore::{self, RestoreOptions};

use super::{
    Backed, BackupJob, DrillJob, DrillOutcome, RawSource, RestoreJob, Source, SourceError,
};
use crate::found::Found;
use crate::hooks::run_hook;

/// Configuration of a path source.
#[derive(Debug, Clone)]
pub struct PathSource {
    /// What it reads (absolute).
    pub paths: Vec<PathBuf>,
    /// Exclude globs.
    pub exclude: Vec<String>,
    /// Command that checks a restored copy (`$HOLDFAST_DRILL_DIR` is the restore directory).
    pub verify: Option<String>,
    /// Read a file-system snapshot taken after the `pre` hook, not the live files.
    pub snapshot: Option<FsSnapshot>,
}

/// The file-system snapshot a path source reads (`snapshot = "..."`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsSnapshot {
    /// A read-only snapshot of the btrfs subvolume holding each path.
    Btrfs,
    /// An LVM snapshot of the logical volume holding the paths, mounted read-only, with this
    /// copy-on-write size (`None`: the default).
    Lvm(Option<String>),
}

/// Why a path source failed.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// A restore needs a target directory.
    #[error("give --target DIRECTORY")]
    NoTarget,
    /// The btrfs snapshot failed.
    #[error(transparent)]
    Btrfs(#[from] super::path_btrfs::BtrfsError),
    /// The LVM snapshot failed.
    #[error(transparent)]
    Lvm(#[from] super::path_lvm::PathLvmError),
}

impl From<PathError> for SourceError {
    fn from(e: PathError) -> Self {
        SourceError::new("path", e)
    }
}

/// Build from the workload file.
pub fn build(r: &RawSource, base: &Path) -> Result<Arc<dyn Source>, String> {
    r.no_mode()?;
    let n = r.name();
    let snapshot = match r.snapshot.as_deref() {
        None => None,
        Some("btrfs") => Some(FsSnapshot::Btrfs),
        Some("lvm") => Some(FsSnapshot::Lvm(r.snapshot_size.clone())),
        Some(o) => {
            return Err(format!(
                "source {n:?}: snapshot = {o:?} is not supported for a path source: \"btrfs\" (a btrfs subvolume) or \"lvm\" (a file system on an LVM logical volume)"
            ))
        }
    };
    if r.snapshot_size.is_some() && !matches!(snapshot, Some(FsSnapshot::Lvm(_))) {
        return Err(format!(
            "source {n:?}: snapshot-size needs snapshot = \"lvm\""
        ));
    }
    Ok(Arc::new(PathSource {
        paths: r.required_paths("Path", base)?,
        exclude: r.exclude.clone(),
        verify: r.verify.clone(),
        snapshot,
    }))
}

impl Source for PathSource {
    fn kind(&self) -> &'static str {
        "path"
    }

    fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    fn copies_files(&self) -> bool {
        true
    }

    fn backup(&self, job: &BackupJob) -> Result<Backed, SourceError> {
        let mut opts = BackupOptions {
            paths: self.paths.clone(),
            tags: job.tags.to_vec(),
            excludes: self.exclude.clone(),
            time: Some(job.time),
            source: Some(job.name.to_string()),
            ..Default::default()
        };
        let mut warnings = Vec::new();
        let out = match &self.snapshot {
            None => backup::backup(job.repo, &opts, job.progress).map_err(SourceError::from)?,
            Some(FsSnapshot::Btrfs) => {
                // Snapshots of other sources in the same subvolume are empty directories here.
                opts.excludes
                    .push(format!("{}*", super::path_btrfs::PREFIX));
                let (out, w) = super::path_btrfs::with_snapshots(
                    job.name,
                    &self.paths,
                    &self.exclude,
                    |map| {
                        opts.read_from = map;
                        backup::backup(job.repo, &opts, job.progress)
                    },
                )
                .map_err(PathError::from)?;
                warnings = w;
                out.map_err(SourceError::from)?
            }
            Some(FsSnapshot::Lvm(size)) => {
                let (out, w) =
                    super::path_lvm::with_snapshot(job.name, &self.paths, size.as_deref(), |map| {
                        opts.read_from = map;
                        backup::backup(job.repo, &opts, job.progress)
                    })
                    .map_err(PathError::from)?;
                warnings = w;
                out.map_err(SourceError::from)?
            }
        };
        let mut skipped = warnings;
        skipped.extend(out.snapshot.errors);
        skipped.extend(out.snapshot.changed_while_read);
        Ok(Backed {
            snapshot: out.id,
            skipped,
        })
    }

    fn restore(&self, job: &RestoreJob) -> Result<Vec<String>, SourceError> {
        let target = PathBuf::from(job.into.ok_or(PathError::NoTarget)?);
        let (index, _) = job.repo.load_index().map_err(SourceError::from)?;
        let opts = RestoreOptions {
            target: target.clone(),
            overwrite: job.replace,
            ..Default::default()
        };
        let out = restore::restore(
            job.repo,
            &index,
            job.snap,
            &opts,
            &holdfast_core::progress::NoProgress,
        )
        .map_err(SourceError::from)?;
        let mut done = vec![format!(
            "restored {} files into {}",
            out.files,
            target.display()
        )];
        done.extend(out.errors);
        Ok(done)
    }

    fn drill(&self, job: &DrillJob) -> Result<DrillOutcome, SourceError> {
        let repo = job.repo;
        let pick = job.snap;
        let (index, _) = repo.load_index().map_err(SourceError::from)?;
        let target = job.scratch.join("restore");
        let res = restore::restore(
            repo,
            &index,
            pick,
            &RestoreOptions {
                target: target.clone(),
                ..Default::default()
            },
            job.progress,
        )
        .map_err(SourceError::from)?;
        let mut messages: Vec<String> = res.errors.to_vec();
        let v = restore::validate(repo, &index, &pick.snapshot.tree, &target)
            .map_err(SourceError::from)?;
        messages.extend(v.errors.iter().cloned());
        let mut passed = res.errors.is_empty() && v.errors.is_empty();
        messages.push(format!(
            "validated {} files ({} bytes) against snapshot {}",
            v.files,
            v.bytes,
            pick.id.short()
        ));
        if let Some(cmd) = &self.verify {
            let (ok, out) = run_hook(cmd, job.timeout, &[("HOLDFAST_DRILL_DIR", &target)]);
            messages.push(format!(
                "verify: {}",
                if ok { "ok".to_string() } else { out }
            ));
            passed &= ok;
        }
        Ok(DrillOutcome {
            passed,
            messages,
            files: v.files,
            bytes: v.bytes,
        })
    }

    fn covers(&self, f: &Found) -> bool {
        // Servers and databases only through their own mechanism, devices only by a volume
        // source; a btrfs subvolume by a path at its mount path (or above it, without a
        // snapshot: a btrfs snapshot does not hold nested subvolumes); anything else under a
        // path.
        let loc = Path::new(&f.location);
        if f.kind == "btrfs-subvolume" {
            return self.paths.iter().any(|p| match &self.snapshot {
                Some(FsSnapshot::Btrfs) => p == loc || fs::canonicalize(p).is_ok_and(|c| c == loc),
                None | Some(FsSnapshot::Lvm(_)) => loc.starts_with(p),
            });
        }
        !f.is_server()
            && !matches!(
                f.kind.as_str(),
                "postgres" | "mysql" | "sqlite" | "filesystem" | "block-device" | "logical-volume"
            )
            && self.paths.iter().any(|p| loc.starts_with(p))
    }

    fn preflight(&self) -> Vec<String> {
        let mut out: Vec<String> = self.paths.iter().filter_map(|p| unusable(p)).collect();
        if !out.is_empty() {
            return out;
        }
        match &self.snapshot {
            None => {}
            Some(FsSnapshot::Btrfs) => out.extend(
                self.paths
                    .iter()
                    .filter_map(|p| super::path_btrfs::subvolume_of(p).err())
                    .map(|e| e.to_string()),
            ),
            Some(FsSnapshot::Lvm(_)) => out.extend(
                super::path_lvm::volume_of(&self.paths)
                    .err()
                    .map(|e| e.to_string()),
            ),
        }
        out
    }

    fn describe(&self) -> String {
        match &self.snapshot {
            None => format!("files under {}", show_paths(&self.paths)),
            Some(FsSnapshot::Lvm(_)) => format!(
                "files under {}, read from an LVM snapshot of their logical volume taken after the pre hook (removed afterwards)",
                show_paths(&self.paths)
            ),
            Some(FsSnapshot::Btrfs) => format!(
                "files under {}, read from a read-only btrfs snapshot taken after the pre hook (deleted afterwards)",
                show_paths(&self.paths)
            ),
        }
    }
}

/// Why a path cannot be backed up at all, if it cannot (missing, unreadable, a device, pipe
/// or socket). Each kind adds its own checks ([`crate::sources::Source::preflight`]).
pub fn unusable(p: &Path) -> Option<String> {
    let m = match fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!("{} does not exist", p.display()))
        }
        Err(e) => return Some(format!("{} cannot be read: {e}", p.display())),
    };
    let t = m.file_type();
    if t.is_block_device() || t.is_char_device() || t.is_fifo() || t.is_socket() {
        return Some(format!(
            "{} is a device, pipe or socket: a backup would hold the node, not its data",
            p.display()
        ));
    }
    None
}

/// Paths for people.
pub(super) fn show_paths(p: &[PathBuf]) -> String {
    p.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
