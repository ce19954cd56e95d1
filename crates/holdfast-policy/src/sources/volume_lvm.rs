//! A crash-consistent capture of an LVM logical volume (`snapshot = "lvm"` on a volume
//! source): `lvcreate --snapshot` (device-mapper suspends the volume, which freezes a file
//! system on it for a moment), the snapshot's device is read, `lvremove` removes it. The
//! snapshot's name is recorded in the state directory (`lvm/NAME`) before it is created, so a
//! run killed at any point leaves a record; the next backup of the source removes that
//! snapshot (only one named `holdfast-snap-NAME`, and only if it is a snapshot) and warns. A
//! snapshot whose copy-on-write space overflowed while it was read is invalid, and its capture
//! is refused.

use std::fs;
use std::path::{Path, PathBuf};

/// Why an LVM snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum LvmError {
    /// No state directory for the record.
    #[error("no state directory to record the LVM snapshot in: set HOLDFAST_STATE_DIR")]
    NoStateDir,
    /// An lvm2 command failed or could not be run.
    #[error("{cmd} failed: {why}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its standard error or why it did not run.
        why: String,
    },
    /// The path is not a logical volume.
    #[error("{} is not an LVM logical volume ({why}); snapshot = \"lvm\" needs one (e.g. /dev/VG/LV)", path.display())]
    NotALogicalVolume {
        /// The path.
        path: PathBuf,
        /// What lvs said.
        why: String,
    },
    /// The snapshot overflowed.
    #[error("the LVM snapshot {0} overflowed (its copy-on-write space filled while it was read): the capture is not consistent, so no recovery point was recorded; raise snapshot-size")]
    Overflowed(String),
    /// Local I/O on the record.
    #[error("writing {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn lvm(args: &[&str]) -> Result<String, LvmError> {
    super::systool::run(args, "install lvm2")
        .map(|out| out.trim().to_string())
        .map_err(|f| LvmError::Command {
            cmd: f.cmd,
            why: f.why,
        })
}

fn record_path(name: &str) -> Option<PathBuf> {
    holdfast_core::localstate::state_dir().map(|d| d.join("lvm").join(name))
}

/// The snapshot's name for a source (the names a stale record may remove start with it).
pub fn snapshot_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("holdfast-snap-{safe}")
}

/// `VG/LV` of a logical volume's device path.
pub fn vg_lv(path: &Path) -> Result<(String, String), LvmError> {
    let p = path.to_string_lossy();
    let out = lvm(&["lvs", "--noheadings", "-o", "vg_name,lv_name", &p]).map_err(|e| {
        LvmError::NotALogicalVolume {
            path: path.to_path_buf(),
            why: e.to_string(),
        }
    })?;
    let mut it = out.split_whitespace();
    match (it.next(), it.next()) {
        (Some(vg), Some(lv)) => Ok((vg.to_string(), lv.to_string())),
        _ => Err(LvmError::NotALogicalVolume {
            path: path.to_path_buf(),
            why: format!("lvs said {out:?}"),
        }),
    }
}

/// Whether `lvs -o lv_attr,origin` describes a snapshot: a classic one (`s`, `S`: invalid)
/// or a thin volume with an origin.
fn is_snapshot(out: &str) -> bool {
    let mut it = out.split_whitespace();
    let attr = it.next().unwrap_or("");
    attr.starts_with('s') || attr.starts_with('S') || attr.starts_with('V') && it.next().is_some()
}

/// Remove a snapshot a killed run left (found by its record); returns the warnings (also
/// printed to standard error).
pub fn remove_stale(name: &str) -> Vec<String> {
    let Some(rec) = record_path(name) else {
        return Vec::new();
    };
    let Ok(text) = fs::read_to_string(&rec) else {
        return Vec::new();
    };
    let full = text.trim().to_string();
    let expected = snapshot_name(name);
    let mut w = if !full.ends_with(&format!("/{expected}")) {
        format!(
            "WARNING: the LVM record {} names {full:?}, not a snapshot of {name}: left alone",
            rec.display()
        )
    } else {
        match lvm(&["lvs", "--noheadings", "-o", "lv_attr,origin", &full]) {
            Err(_) => format!("WARNING: an earlier backup of {name} was interrupted; its LVM snapshot {full} is already gone"),
            // A classic snapshot's attributes start `s`/`S`; a thin snapshot is a thin volume
            // (`V`) with an origin.
            Ok(attr) if !is_snapshot(&attr) => format!(
                "WARNING: {full} is not a snapshot (attributes {attr}): left alone"
            ),
            Ok(_) => match lvm(&["lvremove", "-y", &full]) {
                Ok(_) => format!("WARNING: an earlier backup of {name} was interrupted; its LVM snapshot {full} was removed now"),
                Err(e) => format!("WARNING: an earlier backup of {name} left the LVM snapshot {full}, and removing it failed: {e}"),
            },
        }
    };
    if let Err(e) = fs::remove_file(&rec) {
        w.push_str(&format!("; its record could not be removed: {e}"));
    }
    eprintln!("{w}");
    vec![w]
}

/// Take a snapshot of the logical volume at `path`, run `read` on the snapshot's device, remove
/// the snapshot whatever happened. `size` is lvcreate's `-L` (e.g. `1G`), default `-l
/// 20%ORIGIN`.
pub fn with_snapshot<T>(
    name: &str,
    path: &Path,
    size: Option<&str>,
    read: impl for<'b> FnOnce(&Path, Box<dyn FnOnce() -> Result<(), String> + 'b>) -> T,
) -> Result<T, LvmError> {
    let (vg, lv) = vg_lv(path)?;
    let snap = snapshot_name(name);
    let full = format!("{vg}/{snap}");
    let rec = record_path(name).ok_or(LvmError::NoStateDir)?;
    let io = |source| LvmError::Io {
        path: rec.clone(),
        source,
    };
    fs::create_dir_all(rec.parent().unwrap_or(Path::new("."))).map_err(io)?;
    fs::write(&rec, format!("{full}\n")).map_err(io)?;
    let origin = format!("{vg}/{lv}");
    let mut args = vec![
        "lvcreate",
        "--snapshot",
        "--name",
        &snap,
        "--permission",
        "r",
    ];
    // Of a thin volume, a snapshot without a size is a thin snapshot in the same pool (itself a
    // thin volume, whose mappings are then read; activated, as lvcreate would skip it); with
    // snapshot-size it is a classic copy-on-write one, read whole.
    let thin = matches!(super::volume_thin::thin_lv(path), Ok(Some(_)));
    match size {
        Some(s) => args.extend(["-L", s]),
        None if thin => args.extend(["--setactivationskip", "n"]),
        None => args.extend(["-l", "20%ORIGIN"]),
    }
    args.push(&origin);
    if let Err(e) = lvm(&args) {
        let _ = fs::remove_file(&rec);
        return Err(e);
    }
    let dev = PathBuf::from(format!("/dev/{vg}/{snap}"));
    // Called by `read` once the snapshot is read, before anything is recorded.
    let check = || -> Result<(), String> {
        let attr =
            lvm(&["lvs", "--noheadings", "-o", "lv_attr", &full]).map_err(|e| e.to_string())?;
        // The fifth attribute character is the state: `I` an invalid (overflowed) snapshot.
        if attr.chars().nth(4) == Some('I') {
            return Err(LvmError::Overflowed(full.clone()).to_string());
        }
        Ok(())
    };
    let out = read(&dev, Box::new(check));
    lvm(&["lvremove", "-y", &full])?;
    let _ = fs::remove_file(&rec);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn classic_and_thin_snapshots_are_snapshots_and_nothing_else_is() {
        assert!(super::is_snapshot("swi-a-s--- data"));
        assert!(super::is_snapshot("Swi-I-s--- data"));
        assert!(super::is_snapshot("Vri-a-tz-k data"));
        assert!(!super::is_snapshot("Vwi-a-tz--"));
        assert!(!super::is_snapshot("-wi-a-----"));
        assert!(!super::is_snapshot(""));
    }
}
