//! Thin logical volumes: a thin LV is a block device, so `SEEK_DATA` says "all data", but its
//! pool knows which blocks are mapped. `lvs` says the volume is thin (`segtype` `thin`), its
//! thin device id and its pool; the pool's metadata snapshot is reserved (`dmsetup message
//! VG-POOL-tpool 0 reserve_metadata_snap`), `thin_dump --metadata-snap --dev-id ID -f xml
//! /dev/mapper/VG-POOL_tmeta` lists the device's mappings ([`super::thin_xml`]), and the
//! snapshot is released whatever happened. Only the mapped blocks are read; the rest are
//! recorded as holes (an unmapped block of a thin device reads as zeros). Anything that fails
//! falls back to reading the whole device, with a loud warning: data is never skipped on a
//! guess. A reservation a killed run left (recorded in the state directory before it is made)
//! is released by the next run on that pool.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::thin_xml::{self, ThinXmlError};

/// Allocated byte ranges `[start, end)`, in order.
pub type Ranges = Vec<(u64, u64)>;

/// A thin logical volume, as `lvs` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinLv {
    /// Its volume group.
    pub vg: String,
    /// Its name.
    pub lv: String,
    /// Its thin pool's name.
    pub pool: String,
    /// Its device id in the pool's metadata.
    pub thin_id: u64,
}

/// Why a thin volume's mappings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ThinError {
    /// A command failed or could not be run.
    #[error("{cmd} failed: {why}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its standard error or why it did not run.
        why: String,
    },
    /// thin_dump's output was refused.
    #[error("{cmd}: {source}")]
    Output {
        /// The command line.
        cmd: String,
        /// What is wrong with it.
        #[source]
        source: ThinXmlError,
    },
    /// lvs said it is thin but not which device of which pool.
    #[error("lvs says {0} is a thin volume but not its pool and thin id: {1}")]
    Lvs(String, String),
}

fn run(args: &[&str]) -> Result<String, ThinError> {
    super::systool::run(args, "").map_err(|f| ThinError::Command {
        cmd: f.cmd,
        why: f.why,
    })
}

/// `lvs --reportformat json -o lv_name,vg_name,segtype,pool_lv,thin_id,lv_size` of one
/// volume: `Ok(None)` when it is not thin.
pub fn parse_lvs(json: &str) -> Result<Option<ThinLv>, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("lvs printed no JSON report: {e}"))?;
    let lv = v
        .pointer("/report/0/lv/0")
        .ok_or_else(|| "lvs reported no volume".to_string())?;
    let field = |k: &str| {
        lv.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .trim()
            .trim_matches(|c| c == '[' || c == ']')
            .to_string()
    };
    if field("segtype") != "thin" {
        return Ok(None);
    }
    let thin_id = field("thin_id")
        .parse::<u64>()
        .map_err(|_| format!("thin_id {:?} is not a number", field("thin_id")))?;
    let (vg, lv, pool) = (field("vg_name"), field("lv_name"), field("pool_lv"));
    if vg.is_empty() || lv.is_empty() || pool.is_empty() {
        return Err(format!("no vg_name, lv_name or pool_lv in {json}"));
    }
    Ok(Some(ThinLv {
        vg,
        lv,
        pool,
        thin_id,
    }))
}

/// The thin volume at `path`: `Ok(None)` when it is not an LVM thin volume (or `lvs` is not
/// there, or does not know it).
pub fn thin_lv(path: &Path) -> Result<Option<ThinLv>, ThinError> {
    let p = path.to_string_lossy();
    let args = [
        "lvs",
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        "lv_name,vg_name,segtype,pool_lv,thin_id,lv_size",
        &p,
    ];
    let Ok(out) = run(&args) else {
        return Ok(None);
    };
    parse_lvs(&out).map_err(|why| ThinError::Lvs(path.display().to_string(), why))
}

/// device-mapper's name of `VG/LV` (hyphens doubled, joined by one).
pub fn dm_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

/// Run `thin_dump` with `args` and read device `dev_id`'s mappings (of a `size`-byte device)
/// from its output as it streams; its standard error is kept (bounded) for the error.
pub fn dump(args: &[&str], dev_id: u64, size: u64) -> Result<Ranges, ThinError> {
    let cmd = format!("thin_dump {}", args.join(" "));
    let fail = |why: String| ThinError::Command {
        cmd: cmd.clone(),
        why,
    };
    let mut child = Command::new("thin_dump")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            fail(format!(
                "cannot run it (install thin-provisioning-tools): {e}"
            ))
        })?;
    let mut err = child.stderr.take();
    let errs = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.take(64 * 1024).read_to_end(&mut s);
            let _ = std::io::copy(e, &mut std::io::sink());
        }
        String::from_utf8_lossy(&s).trim().to_string()
    });
    let parsed = match child.stdout.take() {
        Some(out) => thin_xml::parse(out, dev_id, size),
        None => Err(ThinXmlError::Malformed {
            at: 0,
            why: "no output".into(),
        }),
    };
    if parsed.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| fail(e.to_string()))?;
    let stderr = errs.join().unwrap_or_default();
    match (status.success(), parsed) {
        (true, p) => p.map_err(|source| ThinError::Output { cmd, source }),
        (false, Ok(_)) => Err(fail(format!("{status}: {stderr}"))),
        (false, Err(e)) if !stderr.is_empty() => {
            Err(fail(format!("{status}: {stderr} (and its output: {e})")))
        }
        (false, Err(source)) => Err(ThinError::Output { cmd, source }),
    }
}

fn record_dir() -> Option<PathBuf> {
    holdfast_core::localstate::state_dir().map(|d| d.join("thin"))
}

/// Held while a pool's metadata snapshot is reserved: one holdfast run per pool at a time
/// (a pool has one metadata snapshot). Released when dropped or when the process dies.
struct PoolLock(#[allow(dead_code)] File);

fn lock(dir: &Path, tpool: &str) -> std::io::Result<PoolLock> {
    fs::create_dir_all(dir)?;
    let f = File::create(dir.join(format!("{tpool}.lock")))?;
    // SAFETY: flock on a valid descriptor has no memory-safety preconditions.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(PoolLock(f))
}

/// The allocated byte ranges of the thin volume `thin` (a `size`-byte device), from its pool's
/// metadata snapshot; warnings (a stale reservation released) are returned alongside.
pub fn mapped(thin: &ThinLv, size: u64) -> Result<(Ranges, Vec<String>), ThinError> {
    let tpool = format!("{}-tpool", dm_name(&thin.vg, &thin.pool));
    let tmeta = format!("/dev/mapper/{}_tmeta", dm_name(&thin.vg, &thin.pool));
    let mut warnings = Vec::new();
    let dir = record_dir();
    let _lock = match dir.as_deref().map(|d| lock(d, &tpool)) {
        Some(Ok(l)) => Some(l),
        Some(Err(e)) => {
            return Err(ThinError::Command {
                cmd: format!("locking the pool {tpool}"),
                why: e.to_string(),
            })
        }
        None => None,
    };
    let rec = dir.map(|d| d.join(&tpool));
    let message = |what: &str| run(&["dmsetup", "message", &tpool, "0", what]);
    if let Some(r) = rec.as_ref().filter(|r| r.exists()) {
        // We hold the pool's lock, so the run that recorded it is gone.
        let w = match message("release_metadata_snap") {
            Ok(_) => format!("WARNING: an earlier backup left the metadata snapshot of the thin pool {tpool} reserved; it was released now"),
            Err(e) => format!("WARNING: an earlier backup left the metadata snapshot of the thin pool {tpool} reserved, and releasing it failed (it may be gone already): {e}"),
        };
        eprintln!("{w}");
        warnings.push(w);
        let _ = fs::remove_file(r);
    }
    if let Some(r) = &rec {
        fs::write(r, format!("{tpool}\n")).map_err(|e| ThinError::Command {
            cmd: format!("recording the reservation in {}", r.display()),
            why: e.to_string(),
        })?;
    }
    if let Err(e) = message("reserve_metadata_snap") {
        if let Some(r) = &rec {
            let _ = fs::remove_file(r);
        }
        return Err(e);
    }
    let id = thin.thin_id.to_string();
    let out = dump(
        &["--metadata-snap", "--dev-id", &id, "-f", "xml", &tmeta],
        thin.thin_id,
        size,
    );
    // Always released, whatever thin_dump did; the record goes only once it is.
    match message("release_metadata_snap") {
        Ok(_) => {
            if let Some(r) = &rec {
                let _ = fs::remove_file(r);
            }
        }
        Err(e) => {
            let w = format!("WARNING: releasing the metadata snapshot of the thin pool {tpool} failed (the next backup on this pool retries): {e}");
            eprintln!("{w}");
            warnings.push(w);
        }
    }
    Ok((out?, warnings))
}

/// The allocated ranges of the block device at `path` if it is a thin logical volume:
/// `(None, [])` when it is not thin; `(None, warnings)` when it is but its mappings could not
/// be read (then all of it is read, and the warning says so, loudly); `(Some(ranges), ...)`.
pub fn allocated(path: &Path, size: u64) -> (Option<Ranges>, Vec<String>) {
    let r = thin_lv(path).and_then(|t| match t {
        None => Ok(None),
        Some(t) => mapped(&t, size).map(Some),
    });
    match r {
        Ok(None) => (None, Vec::new()),
        Ok(Some((ranges, w))) => (Some(ranges), w),
        Err(e) => {
            let w = format!(
                "WARNING: {} is a thin volume, but its pool's mappings could not be read, so ALL of it is read (slower, nothing skipped): {e}",
                path.display()
            );
            eprintln!("{w}");
            (None, vec![w])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvs_reports_say_thin_or_not() {
        let thin = r#"{"report":[{"lv":[{"lv_name":"data","vg_name":"vg-1","segtype":"thin","pool_lv":"pool","thin_id":"3","lv_size":"104857600"}]}]}"#;
        assert_eq!(
            parse_lvs(thin).unwrap(),
            Some(ThinLv {
                vg: "vg-1".into(),
                lv: "data".into(),
                pool: "pool".into(),
                thin_id: 3
            })
        );
        let linear = r#"{"report":[{"lv":[{"lv_name":"data","vg_name":"vg","segtype":"linear","pool_lv":"","thin_id":"","lv_size":"1048576"}]}]}"#;
        assert_eq!(parse_lvs(linear).unwrap(), None);
        assert!(parse_lvs(&thin.replace("\"3\"", "\"\"")).is_err());
        assert!(parse_lvs(&thin.replace("\"pool\"", "\"\"")).is_err());
        assert!(parse_lvs("not json").is_err());
        assert!(parse_lvs(r#"{"report":[{"lv":[]}]}"#).is_err());
        assert_eq!(dm_name("vg-1", "my-pool"), "vg--1-my--pool");
    }
}
