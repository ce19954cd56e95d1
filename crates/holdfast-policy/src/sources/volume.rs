//! `kind = "volume"`: a block device or a disk image file backed up as one file's contents
//! (`NAME/NAME.img`), reading only its allocated extents, deduplicated by the engine's
//! chunking; restored to an image file (holes kept) or a device (size checked). With
//! `freeze = "/mountpoint"` the mounted file system is frozen while it is read
//! ([`super::volume_freeze`]).

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use holdfast_core::stream::{self, Content, StreamOptions, VolumeItem};
use holdfast_core::volume::{self, Target};

use super::volume_freeze::{self, FreezeError};
use super::{
    Backed, BackupJob, DrillJob, DrillOutcome, RawSource, RestoreJob, Source, SourceError,
};
use crate::hooks::run_hook;

/// Configuration of a volume source.
#[derive(Debug, Clone)]
pub struct VolumeSource {
    /// The block device or image file.
    pub path: PathBuf,
    /// The mount point of the file system on it to freeze while it is read.
    pub freeze: Option<PathBuf>,
    /// The longest the file system stays frozen.
    pub freeze_timeout: Duration,
    /// Read an LVM snapshot of the logical volume (`snapshot = "lvm"`), with this
    /// copy-on-write size (`None`: the default).
    pub lvm: Option<Option<String>>,
    /// Command that checks a restored image in a drill (`$HOLDFAST_DRILL_IMAGE`).
    pub verify: Option<String>,
}

/// Why a volume source failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] holdfast_core::Error),
    /// The volume could not be opened or read.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or device.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Neither a block device nor a regular file.
    #[error("{} is neither a block device nor a disk image file: a volume source reads one of those", .0.display())]
    NotAVolume(PathBuf),
    /// No target given.
    #[error("restoring a volume needs --target IMAGE_OR_DEVICE (an image file is created; a device is overwritten)")]
    NoTarget,
    /// The target device is too small.
    #[error("{} holds {have} bytes, the volume {need}: restore into a device at least as large (or into an image file)", path.display())]
    TooSmall {
        /// The target.
        path: PathBuf,
        /// Its size.
        have: u64,
        /// The volume's.
        need: u64,
    },
    /// The target holds data.
    #[error("{} {why}: pass --replace to overwrite it", path.display())]
    NotEmpty {
        /// The target.
        path: PathBuf,
        /// What is there.
        why: String,
    },
    /// The target device is mounted.
    #[error("{} is mounted at {mount}: unmount it before restoring a volume onto it", path.display())]
    Mounted {
        /// The target.
        path: PathBuf,
        /// Where.
        mount: String,
    },
    /// The snapshot holds no volume.
    #[error("the snapshot holds no volume image")]
    Empty,
    /// Freezing failed.
    #[error(transparent)]
    Freeze(#[from] FreezeError),
    /// The LVM snapshot failed.
    #[error(transparent)]
    Lvm(#[from] super::volume_lvm::LvmError),
}

impl From<VolumeError> for SourceError {
    fn from(e: VolumeError) -> Self {
        SourceError::new("volume", e)
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> VolumeError + 'a {
    move |source| VolumeError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Build from the workload file.
pub fn build(r: &RawSource, base: &Path) -> Result<Arc<dyn Source>, String> {
    let n = r.name();
    let paths = r.required_paths("volume", base)?;
    if paths.len() != 1 {
        return Err(format!(
            "source {n:?} of kind volume reads one device or image: give path = \"/dev/...\" once"
        ));
    }
    r.no_mode()?;
    let freeze = r
        .freeze
        .clone()
        .map(|p| if p.is_relative() { base.join(p) } else { p });
    let freeze_timeout = match r.freeze_timeout {
        Some(d) => d
            .to_std()
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("source {n:?}: freeze-timeout must be positive"))?,
        None => Duration::from_secs(600),
    };
    let lvm = match r.snapshot.as_deref() {
        None => None,
        Some("lvm") if freeze.is_some() => {
            return Err(format!("source {n:?}: snapshot = \"lvm\" already freezes the file system for the moment the snapshot is taken; drop freeze"))
        }
        Some("lvm") => Some(r.snapshot_size.clone()),
        Some(o) => {
            return Err(format!(
                "source {n:?}: snapshot = {o:?} is not supported for a volume: \"lvm\" (a logical volume)"
            ))
        }
    };
    if lvm.is_none() && r.snapshot_size.is_some() {
        return Err(format!(
            "source {n:?}: snapshot-size needs snapshot = \"lvm\""
        ));
    }
    Ok(Arc::new(VolumeSource {
        path: paths[0].clone(),
        freeze,
        freeze_timeout,
        lvm,
        verify: r.verify.clone(),
    }))
}

/// The snapshot's file name for a source's volume.
fn file_name(name: &str) -> String {
    format!("{name}.img")
}

/// Which parts of a volume are read.
#[derive(Debug, Clone)]
pub enum Allocation {
    /// Ask the volume: a thin logical volume's pool mappings ([`super::volume_thin`]), else
    /// `SEEK_DATA`/`SEEK_HOLE` (all of it where the device does not say).
    Detect,
    /// These byte ranges `[start, end)` (in order, inside the volume) are its data; the rest
    /// reads as zeros and is recorded as holes without being read.
    Known(Vec<(u64, u64)>),
}

/// Back up a device or image as `DIR/FILE` of a new snapshot (also `holdfast backup
/// --device-contents`); returns the snapshot and warnings (e.g. a thin volume read whole
/// because its mappings could not be read).
/// `finish` runs once the volume is read, before the snapshot is recorded (see
/// [`VolumeItem::finish`]).
pub fn backup_volume<'a>(
    repo: &holdfast_core::Repository,
    path: &Path,
    opts: &StreamOptions,
    file: &str,
    progress: &dyn holdfast_core::progress::Progress,
    alloc: Allocation,
    finish: Box<dyn FnOnce() -> Result<(), String> + 'a>,
) -> Result<(holdfast_core::Id, Vec<String>), VolumeError> {
    let f = File::open(path).map_err(io("opening", path))?;
    let m = f.metadata().map_err(io("reading", path))?;
    if !(m.file_type().is_block_device() || m.is_file()) {
        return Err(VolumeError::NotAVolume(path.to_path_buf()));
    }
    if m.file_type().is_block_device() {
        // Pages of the device cached by an earlier read may be stale (a file system writes
        // file data past the device's cache): drop them, so what is read is what is on disk.
        use std::os::unix::io::AsRawFd;
        // SAFETY: posix_fadvise on a valid descriptor has no memory-safety preconditions.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    let size = volume::size(&f).map_err(io("finding the size of", path))?;
    let (allocated, warnings) = match alloc {
        Allocation::Known(r) => (Some(r), Vec::new()),
        Allocation::Detect if m.file_type().is_block_device() => {
            super::volume_thin::allocated(path, size)
        }
        Allocation::Detect => (None, Vec::new()),
    };
    let item = Content::Volume(VolumeItem {
        name: file.to_string(),
        file: &f,
        size,
        allocated,
        finish,
    });
    let (id, _) = stream::backup_contents(repo, opts, vec![item], progress)?;
    Ok((id, warnings))
}

/// `MAJOR:MINOR` of a device number (glibc's `gnu_dev_major`/`gnu_dev_minor` encoding).
pub fn maj_min(rdev: u64) -> String {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    format!("{major}:{minor}")
}

/// Where `dev` (a block device) is mounted, if it is.
fn mounted_at(dev: &Path) -> Option<String> {
    let rdev = fs::metadata(dev).ok()?.rdev();
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let (src, at) = (it.next()?, it.next()?);
        let m = fs::metadata(src).ok()?;
        (m.file_type().is_block_device() && m.rdev() == rdev).then(|| at.to_string())
    })
}

/// Restore the volume of `snap` into `target`: a new or (with `replace`) replaced image file,
/// written beside it and renamed into place, or an unmounted device at least as large.
pub fn restore_volume(job: &RestoreJob, target: &Path) -> Result<(Vec<String>, u64), VolumeError> {
    let (repo, snap) = (job.repo, job.snap);
    let (index, _) = repo.load_index()?;
    let files = stream::list_files(repo, &index, &snap.snapshot.tree)?;
    let (d, f) = files.first().ok_or(VolumeError::Empty)?;
    let path = format!("{d}/{f}");
    let node = holdfast_core::browse::find_node(repo, &index, &snap.snapshot.tree, &path)?
        .ok_or(VolumeError::Empty)?;
    let need = node.size;
    let meta = fs::metadata(target).ok();
    if let Some(m) = meta.filter(|m| m.file_type().is_block_device()) {
        let _ = m;
        if let Some(mount) = mounted_at(target) {
            return Err(VolumeError::Mounted {
                path: target.to_path_buf(),
                mount,
            });
        }
        let mut dev = OpenOptions::new()
            .write(true)
            .open(target)
            .map_err(io("opening", target))?;
        let have = volume::size(&dev).map_err(io("finding the size of", target))?;
        if have < need {
            return Err(VolumeError::TooSmall {
                path: target.to_path_buf(),
                have,
                need,
            });
        }
        if !job.replace {
            return Err(VolumeError::NotEmpty {
                path: target.to_path_buf(),
                why: "is a device (its contents are never known to be unused)".into(),
            });
        }
        let (n, _) = volume::restore(
            repo,
            &index,
            &snap.snapshot.tree,
            &path,
            Target::Device(&mut dev),
        )?;
        let mut done = vec![format!(
            "wrote {n} bytes of {f} onto the device {}",
            target.display()
        )];
        if have > need {
            done.push(format!(
                "the device is {} bytes larger than the volume; those bytes were left as they were",
                have - need
            ));
        }
        return Ok((done, n));
    }
    if let Ok(m) = fs::symlink_metadata(target) {
        if !m.is_file() {
            return Err(VolumeError::NotAVolume(target.to_path_buf()));
        }
        if m.len() > 0 && !job.replace {
            return Err(VolumeError::NotEmpty {
                path: target.to_path_buf(),
                why: format!("exists and holds {} bytes", m.len()),
            });
        }
    }
    let tmp = {
        let mut s = target.as_os_str().to_owned();
        s.push(".holdfast-restoring");
        PathBuf::from(s)
    };
    let mut out = File::create(&tmp).map_err(io("creating", &tmp))?;
    let r = volume::restore(
        repo,
        &index,
        &snap.snapshot.tree,
        &path,
        Target::Image(&mut out),
    );
    let (n, written) = match r {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
    };
    fs::rename(&tmp, target).map_err(io("renaming the restored image to", target))?;
    Ok((
        vec![format!(
            "restored {f} into the image {} ({n} bytes, {written} written, the rest left as holes)",
            target.display()
        )],
        n,
    ))
}

impl Source for VolumeSource {
    fn kind(&self) -> &'static str {
        "volume"
    }

    fn paths(&self) -> &[PathBuf] {
        std::slice::from_ref(&self.path)
    }

    fn backup(&self, job: &BackupJob) -> Result<Backed, SourceError> {
        let name = job.name;
        let mut skipped = volume_freeze::thaw_stale(name);
        skipped.extend(super::volume_lvm::remove_stale(name));
        let opts = StreamOptions {
            dir: name.to_string(),
            label: format!("volume:{name}"),
            source: Some(name.to_string()),
            tags: job.tags.to_vec(),
            time: Some(job.time),
            log: None,
        };
        let file = file_name(name);
        use Allocation::Detect;
        let id = match (&self.freeze, &self.lvm) {
            (None, Some(size)) => {
                super::volume_lvm::with_snapshot(name, &self.path, size.as_deref(), |dev, check| {
                    backup_volume(job.repo, dev, &opts, &file, job.progress, Detect, check)
                })
                .map_err(VolumeError::from)??
            }
            (None, None) => backup_volume(
                job.repo,
                &self.path,
                &opts,
                &file,
                job.progress,
                Detect,
                Box::new(|| Ok(())),
            )?,
            (Some(mnt), _) => {
                let (id, w) =
                    volume_freeze::frozen(name, &self.path, mnt, self.freeze_timeout, |thaw| {
                        backup_volume(
                            job.repo,
                            &self.path,
                            &opts,
                            &file,
                            job.progress,
                            Detect,
                            thaw,
                        )
                    })
                    .map_err(VolumeError::from)?;
                skipped.extend(w);
                id?
            }
        };
        let (id, w) = id;
        skipped.extend(w);
        Ok(Backed {
            snapshot: Some(id),
            skipped,
        })
    }

    /// `into` is the image file (created) or device (overwritten with `--replace`).
    fn restore(&self, job: &RestoreJob) -> Result<Vec<String>, SourceError> {
        let target = job.into.ok_or(VolumeError::NoTarget)?;
        Ok(restore_volume(job, Path::new(target))?.0)
    }

    fn drill(&self, job: &DrillJob) -> Result<DrillOutcome, SourceError> {
        let image = job.scratch.join("volume.img");
        let mut messages = Vec::new();
        let conn = super::Conn::default();
        let rj = RestoreJob {
            repo: job.repo,
            snap: job.snap,
            into: None,
            replace: false,
            conn: &conn,
        };
        let (mut ok, mut bytes) = (true, 0);
        match restore_volume(&rj, &image) {
            Ok((m, n)) => {
                messages.extend(m);
                bytes = n;
            }
            Err(e) => {
                messages.push(e.to_string());
                ok = false;
            }
        }
        if ok {
            if let Some(v) = &self.verify {
                let (vok, out) = run_hook(v, job.timeout, &[("HOLDFAST_DRILL_IMAGE", &image)]);
                messages.push(format!("verify: {}", if vok { "ok".into() } else { out }));
                ok = vok;
            }
        }
        Ok(DrillOutcome {
            passed: ok,
            messages,
            files: 1,
            bytes,
        })
    }

    /// The same device: the same canonical path, or a block device of the same
    /// `MAJOR:MINOR` (`/dev/mapper/vg-lv`, `/dev/dm-0` and `/dev/vg/lv` are one device).
    fn covers(&self, f: &crate::found::Found) -> bool {
        if !matches!(f.kind.as_str(), "block-device" | "logical-volume") {
            return false;
        }
        let loc = Path::new(&f.location);
        let canon = |p: &Path| fs::canonicalize(p).ok();
        if self.path == loc || canon(&self.path).is_some_and(|c| Some(c) == canon(loc)) {
            return true;
        }
        let Ok(m) = fs::metadata(&self.path) else {
            return false;
        };
        if !m.file_type().is_block_device() {
            return false;
        }
        f.device.as_deref() == Some(maj_min(m.rdev()).as_str())
            || fs::metadata(loc)
                .is_ok_and(|o| o.file_type().is_block_device() && o.rdev() == m.rdev())
    }

    fn preflight(&self) -> Vec<String> {
        match fs::metadata(&self.path) {
            Err(e) => vec![format!("{}: {e}", self.path.display())],
            Ok(m) if !(m.file_type().is_block_device() || m.is_file()) => vec![format!(
                "{} is neither a block device nor a disk image file",
                self.path.display()
            )],
            Ok(_) if self.lvm.is_some() => super::volume_lvm::vg_lv(&self.path)
                .err()
                .map(|e| e.to_string())
                .into_iter()
                .collect(),
            Ok(_) => self
                .freeze
                .as_ref()
                .and_then(|mnt| volume_freeze::check_mount(&self.path, mnt).err())
                .map(|e| e.to_string())
                .into_iter()
                .collect(),
        }
    }

    fn describe(&self) -> String {
        if self.lvm.is_some() {
            return format!(
                "the contents of an LVM snapshot of {} (allocated extents), removed afterwards",
                self.path.display()
            );
        }
        match &self.freeze {
            Some(m) => format!(
                "the contents of {} (allocated extents), with {} frozen while read",
                self.path.display(),
                m.display()
            ),
            None => format!(
                "the contents of {} (allocated extents)",
                self.path.display()
            ),
        }
    }
}
