//! Discovery of block devices, LVM logical volumes and btrfs subvolumes (part of host
//! discovery, [`crate::discover`]).
//!
//! - Block devices: `lsblk -J -b -o NAME,PATH,TYPE,SIZE,FSTYPE,MOUNTPOINTS,MAJ:MIN` (disks,
//!   partitions, loop devices, device-mapper devices; not RAM disks, zram or empty devices),
//!   each with its `MAJOR:MINOR`, so a source naming another path of the same device covers it.
//! - Logical volumes: `lvs --reportformat json` when lvm2 is installed (missing or failing
//!   `lvs` finds nothing; it is not an error); a volume lsblk also lists keeps one entry, at
//!   its `/dev/VG/LV` path.
//! - btrfs subvolumes: `btrfs subvolume list MOUNT` for each mounted btrfs file system, each at
//!   the path it is reachable at through a mount (ones no mount reaches are left out).
//!
//! A device whose file systems are mounted (or that holds other devices), and a subvolume (part
//! of a mounted file system), is marked [`Found::contains_mounts`]: its data is judged place by
//! place, so left unprotected it is worth a look, not an alarm. Every command's output is read
//! up to [`MAX_OUTPUT`] bytes and for at most [`TIMEOUT`].

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::found::Found;

/// The most output read from one command (a larger one finds nothing from it).
pub const MAX_OUTPUT: u64 = 8 << 20;

/// The longest one command may run (it is killed then, and finds nothing).
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Run a command; its standard output, if it succeeded within the bounds.
fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut out = Vec::new();
    let stdout = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let r = stdout.take(MAX_OUTPUT + 1).read_to_end(&mut buf);
        r.map(|_| buf)
    });
    let t = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if t.elapsed() < TIMEOUT => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    if let Ok(Ok(b)) = reader.join() {
        out = b;
    }
    let ok = status.is_some_and(|s| s.success()) && (out.len() as u64) <= MAX_OUTPUT;
    ok.then(|| String::from_utf8_lossy(&out).into_owned())
}

/// One device of `lsblk -J` (with its children).
#[derive(Debug, Clone, Deserialize)]
pub struct BlockDevice {
    /// Kernel name (`sda1`).
    pub name: String,
    /// Device path (`/dev/sda1`; older lsblk lacks it).
    #[serde(default)]
    pub path: Option<String>,
    /// `disk`, `part`, `loop`, `lvm`, `crypt`, `raid1`, `rom`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Bytes (a number with `-b`, a string in some versions).
    #[serde(default)]
    pub size: Option<Value>,
    /// File system type, if lsblk knows it (it needs udev's database).
    #[serde(default)]
    pub fstype: Option<String>,
    /// Where it is mounted (`[null]` when it is not).
    #[serde(default)]
    pub mountpoints: Vec<Option<String>>,
    /// Older lsblk: one mount point.
    #[serde(default)]
    pub mountpoint: Option<String>,
    /// `MAJOR:MINOR`.
    #[serde(rename = "maj:min", default)]
    pub maj_min: Option<String>,
    /// Partitions, device-mapper devices on it.
    #[serde(default)]
    pub children: Vec<BlockDevice>,
}

impl BlockDevice {
    fn bytes(&self) -> Option<u64> {
        match self.size.as_ref()? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    fn mounts(&self) -> Vec<String> {
        self.mountpoints
            .iter()
            .flatten()
            .chain(&self.mountpoint)
            .filter(|m| !m.is_empty())
            .cloned()
            .collect()
    }
}

#[derive(Deserialize)]
struct Lsblk {
    blockdevices: Vec<BlockDevice>,
}

/// The devices of `lsblk -J` output, flattened (parents before their children).
pub fn parse_lsblk(json: &str) -> Result<Vec<BlockDevice>, String> {
    let l: Lsblk = serde_json::from_str(json).map_err(|e| format!("lsblk output: {e}"))?;
    fn walk(d: BlockDevice, out: &mut Vec<BlockDevice>) {
        let children = d.children.clone();
        out.push(d);
        for c in children {
            walk(c, out);
        }
    }
    let mut out = Vec::new();
    for d in l.blockdevices {
        walk(d, &mut out);
    }
    Ok(out)
}

/// One logical volume of `lvs --reportformat json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LogicalVolume {
    /// LV name.
    pub lv_name: String,
    /// VG name.
    pub vg_name: String,
    /// `/dev/VG/LV` (empty for hidden volumes).
    pub lv_path: String,
    /// Attributes (`-wi-ao----`; first `t` a thin pool, `s` a snapshot).
    pub lv_attr: String,
    /// Size (`--units b --nosuffix`: bytes).
    pub lv_size: String,
    /// Kernel major number (`-1` when inactive).
    pub lv_kernel_major: String,
    /// Kernel minor number.
    pub lv_kernel_minor: String,
}

impl LogicalVolume {
    fn maj_min(&self) -> Option<String> {
        let (a, b) = (
            self.lv_kernel_major.trim().parse::<u32>().ok()?,
            self.lv_kernel_minor.trim().parse::<u32>().ok()?,
        );
        Some(format!("{a}:{b}"))
    }
}

/// The logical volumes of `lvs --reportformat json` output (lvm2's documented format:
/// `{"report": [{"lv": [{"lv_name": ..., ...}]}]}`).
pub fn parse_lvs(json: &str) -> Result<Vec<LogicalVolume>, String> {
    #[derive(Deserialize)]
    struct Report {
        #[serde(default)]
        lv: Vec<LogicalVolume>,
    }
    #[derive(Deserialize)]
    struct Lvs {
        report: Vec<Report>,
    }
    let l: Lvs = serde_json::from_str(json).map_err(|e| format!("lvs output: {e}"))?;
    Ok(l.report.into_iter().flat_map(|r| r.lv).collect())
}

/// Block devices and logical volumes as found items (`lvs` may be empty: no lvm2).
pub fn device_findings(devs: &[BlockDevice], lvs: &[LogicalVolume]) -> Vec<Found> {
    let by_dev: HashMap<String, &LogicalVolume> =
        lvs.iter().filter_map(|l| Some((l.maj_min()?, l))).collect();
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for d in devs {
        let zero = d.bytes() == Some(0);
        if zero || d.kind == "rom" || d.name.starts_with("zram") || d.name.starts_with("ram") {
            continue;
        }
        let lv = d.maj_min.as_ref().and_then(|m| by_dev.get(m));
        if lv.is_some_and(|l| skipped_lv(l)) {
            continue;
        }
        let path = d.path.clone().unwrap_or_else(|| format!("/dev/{}", d.name));
        let (kind, location) = match lv {
            Some(l) if !l.lv_path.is_empty() => ("logical-volume", l.lv_path.clone()),
            _ if d.kind == "lvm" => ("logical-volume", path.clone()),
            _ => ("block-device", path.clone()),
        };
        let mounts = d.mounts();
        let mut detail = format!("{} {}", d.kind, path);
        if let Some(l) = lv {
            detail += &format!(", LVM {}/{}", l.vg_name, l.lv_name);
        }
        if let Some(fs) = &d.fstype {
            detail += &format!(", {fs}");
        }
        if !mounts.is_empty() {
            detail += &format!(", mounted at {}", mounts.join(", "));
        }
        if !d.children.is_empty() {
            detail += &format!(", holds {}", names(&d.children));
        }
        seen.extend(d.maj_min.clone());
        out.push(Found {
            size: d.bytes(),
            device: d.maj_min.clone(),
            contains_mounts: !mounts.is_empty() || !d.children.is_empty(),
            ..Found::new(kind, location, detail)
        });
    }
    for l in lvs {
        if skipped_lv(l) || l.lv_path.is_empty() || l.maj_min().is_some_and(|m| seen.contains(&m)) {
            continue;
        }
        let active = l.maj_min().is_some();
        out.push(Found {
            size: l.lv_size.trim().parse().ok(),
            device: l.maj_min(),
            ..Found::new(
                "logical-volume",
                l.lv_path.clone(),
                format!(
                    "LVM {}/{}{}",
                    l.vg_name,
                    l.lv_name,
                    if active { "" } else { " (inactive)" }
                ),
            )
        });
    }
    out
}

fn names(ds: &[BlockDevice]) -> String {
    ds.iter()
        .map(|d| d.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Thin pools (their thin volumes are listed) and holdfast's own short-lived snapshots.
fn skipped_lv(l: &LogicalVolume) -> bool {
    l.lv_attr.starts_with('t') || l.lv_name.starts_with("holdfast-snap-")
}

/// A mounted btrfs file system: its device, mount point and mounted subvolume (`/` for the
/// top level), from `/proc/self/mounts`.
#[derive(Debug, Clone, PartialEq)]
pub struct BtrfsMount {
    /// The device it is mounted from.
    pub source: String,
    /// The mount point.
    pub at: String,
    /// The subvolume mounted there, relative to the top level (`subvol=`), without slashes
    /// around it (empty: the top level).
    pub subvol: String,
}

/// The btrfs mounts of `/proc/self/mounts` text.
pub fn btrfs_mounts(text: &str) -> Vec<BtrfsMount> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 || f[2] != "btrfs" {
                return None;
            }
            let subvol = f[3]
                .split(',')
                .find_map(|o| o.strip_prefix("subvol="))
                .unwrap_or("/")
                .trim_matches('/')
                .to_string();
            Some(BtrfsMount {
                source: f[0].to_string(),
                at: f[1].replace("\\040", " "),
                subvol,
            })
        })
        .collect()
}

/// The subvolumes of `btrfs subvolume list` output for the file system on `source`, each at
/// the path a mount of it reaches it by (`mounts`: every btrfs mount).
pub fn subvolume_findings(source: &str, list: &str, mounts: &[BtrfsMount]) -> Vec<Found> {
    let mine: Vec<&BtrfsMount> = mounts.iter().filter(|m| m.source == source).collect();
    let mut out = Vec::new();
    for l in list.lines() {
        let Some((head, rel)) = l.split_once(" path ") else {
            continue;
        };
        let rel = rel.trim().trim_start_matches("<FS_TREE>/");
        let id = head.split_whitespace().nth(1).unwrap_or("?");
        let name = rel.rsplit('/').next().unwrap_or(rel);
        if rel.is_empty() || name.starts_with(crate::sources::path_btrfs::PREFIX) {
            continue;
        }
        let reach = mine.iter().find_map(|m| {
            let rest = if m.subvol.is_empty() {
                Some(rel)
            } else if rel == m.subvol {
                Some("")
            } else {
                rel.strip_prefix(&m.subvol)
                    .and_then(|r| r.strip_prefix('/'))
            }?;
            Some(if rest.is_empty() {
                m.at.clone()
            } else {
                format!("{}/{rest}", m.at.trim_end_matches('/'))
            })
        });
        if let Some(location) = reach {
            out.push(Found {
                contains_mounts: true,
                ..Found::new(
                    "btrfs-subvolume",
                    location,
                    format!("btrfs subvolume {rel} (id {id}) on {source}"),
                )
            });
        }
    }
    out
}

/// Host discovery of block devices, logical volumes and btrfs subvolumes.
pub fn devices(out: &mut Vec<Found>) {
    let lsblk = run(
        "lsblk",
        &[
            "-J",
            "-b",
            "-o",
            "NAME,PATH,TYPE,SIZE,FSTYPE,MOUNTPOINTS,MAJ:MIN",
        ],
    )
    .and_then(|j| parse_lsblk(&j).ok())
    .unwrap_or_default();
    let lvs = run(
        "lvs",
        &[
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "lv_name,vg_name,lv_path,lv_attr,lv_size,lv_kernel_major,lv_kernel_minor",
        ],
    )
    .and_then(|j| parse_lvs(&j).ok())
    .unwrap_or_default();
    out.extend(device_findings(&lsblk, &lvs));
    let mounts = btrfs_mounts(&std::fs::read_to_string("/proc/self/mounts").unwrap_or_default());
    let mut done: Vec<&str> = Vec::new();
    for m in &mounts {
        if done.contains(&m.source.as_str()) {
            continue;
        }
        done.push(&m.source);
        if let Some(list) = run("btrfs", &["subvolume", "list", &m.at]) {
            out.extend(subvolume_findings(&m.source, &list, &mounts));
        }
    }
}

#[cfg(test)]
#[path = "discover_devices_tests.rs"]
mod tests;
