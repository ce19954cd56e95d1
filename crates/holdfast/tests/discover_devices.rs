//! `discover` of block devices through the real CLI on a real loop device: reported
//! unprotected, then covered once a volume source names that device, by another path to it
//! (a symlink, and a second device node of the same MAJOR:MINOR made with mknod), and not by a
//! volume source of another device. Needs root (losetup, mknod): it fails, rather than passes,
//! without it.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command as Std;

use assert_cmd::Command;
use serde_json::Value;

fn sh(cmd: &str) -> String {
    let o = Std::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A loop device on a new file, detached on drop.
struct Loop(String);

impl Loop {
    fn new(file: &Path) -> Loop {
        fs::File::create(file).unwrap().set_len(32 << 20).unwrap();
        Loop(sh(&format!("losetup -f --show '{}'", file.display())))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Std::new("losetup").arg("-d").arg(&self.0).status();
    }
}

fn discover(dir: &Path, sources: &str) -> Vec<Value> {
    let toml = format!(
        "[repository.local]\nurl = \"repo\"\npassword-env = \"TEST_REPO_PW\"\n\n[class.critical]\nrpo = \"15m\"\nrto = \"10m\"\n\n{sources}"
    );
    fs::write(dir.join("holdfast.toml"), toml).unwrap();
    let o = Command::cargo_bin("holdfast")
        .unwrap()
        .env("HOLDFAST_CONFIG", dir.join("holdfast.toml"))
        .env("HOLDFAST_STATE_DIR", dir.join("state"))
        .current_dir(dir)
        .args(["--json", "discover"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice::<Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn volume(name: &str, path: &Path) -> String {
    format!(
        "[[source]]\nname = \"{name}\"\nkind = \"volume\"\npath = \"{}\"\nclass = \"critical\"\nstrategy = \"backup\"\n\n",
        path.display()
    )
}

fn entry<'a>(list: &'a [Value], loc: &str) -> &'a Value {
    list.iter()
        .find(|f| f["location"] == loc)
        .unwrap_or_else(|| panic!("{loc} not found: {list:?}"))
}

#[test]
fn a_loop_device_is_unprotected_until_a_volume_source_names_it_by_any_path() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (losetup, mknod)"
    );
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let lo = Loop::new(&dir.join("disk.img"));
    let other = Loop::new(&dir.join("other.img"));
    let rdev = fs::metadata(&lo.0).unwrap().rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));

    let list = discover(dir, "");
    let f = entry(&list, &lo.0);
    assert_eq!(f["kind"], "block-device", "{f}");
    assert_eq!(f["device"], format!("{major}:{minor}"), "{f}");
    assert_eq!(f["size"], 32 << 20, "{f}");
    assert!(f["protected_by"].is_null(), "{f}");
    // Not by kind: a volume source of another loop device does not cover it.
    let list = discover(dir, &volume("other", Path::new(&other.0)));
    assert!(entry(&list, &lo.0)["protected_by"].is_null());
    assert_eq!(entry(&list, &other.0)["protected_by"], "other");

    // The same device by a symlink to it.
    let link = dir.join("disk-link");
    std::os::unix::fs::symlink(&lo.0, &link).unwrap();
    let list = discover(dir, &volume("disk", &link));
    assert_eq!(entry(&list, &lo.0)["protected_by"], "disk");

    // The same device by a second node of its MAJOR:MINOR (another canonical path).
    let node = dir.join("disk-node");
    sh(&format!("mknod '{}' b {major} {minor}", node.display()));
    assert_ne!(fs::canonicalize(&node).unwrap(), PathBuf::from(&lo.0));
    let list = discover(dir, &volume("disk", &node));
    let f = entry(&list, &lo.0);
    assert_eq!(f["protected_by"], "disk", "{f}");
    assert!(entry(&list, &other.0)["protected_by"].is_null());

    // The text report lists it too.
    let o = Command::cargo_bin("holdfast")
        .unwrap()
        .env("HOLDFAST_CONFIG", dir.join("holdfast.toml"))
        .current_dir(dir)
        .arg("discover")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains(&lo.0) && l.starts_with("disk")),
        "{text}"
    );
}
