//! Helpers for the CLI integration tests: run the real binary, build and compare real trees.
#![allow(dead_code)]

pub mod azurite;
pub mod chromium;
pub mod garage;
pub mod pgarch;
pub mod rgw;
pub mod run;
pub mod s3proxy;
pub mod scratch;
pub mod service;
pub mod sshd;
pub mod tamperfx;
pub mod workload;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub const PASSWORD: &str = "correct horse battery staple";

/// Start a store with `script up DIR` (the script stops it when this process exits, through
/// `owner_var`), and read the `KEY=VALUE` lines it writes to `DIR/env`. `hint` says how to get
/// the store or opt out, for the failure message.
pub fn start_store(
    script: &Path,
    dir: &Path,
    owner_var: &str,
    hint: &str,
) -> HashMap<String, String> {
    let _ = fs::remove_dir_all(dir);
    let o = std::process::Command::new("bash")
        .arg(script)
        .arg("up")
        .arg(dir)
        .env(owner_var, std::process::id().to_string())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "starting {} failed ({hint}): {}{}",
        script.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    fs::read_to_string(dir.join("env"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// A test repository and scratch space.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    /// `holdfast --repo REPO ARGS` with the test password and cheap key derivation.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("holdfast").expect("binary");
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOLDFAST_PASSWORD", PASSWORD)
            .env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .arg("--repo")
            .arg(self.repo())
            .args(args);
        c
    }
    pub fn init(&self) {
        self.cmd(&["init"]).assert().success();
    }
    /// Run with --json and parse stdout; asserts the exit code.
    pub fn json(&self, args: &[&str], code: i32) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.cmd(&a).output().expect("run");
        assert_eq!(
            out.status.code(),
            Some(code),
            "holdfast {args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "json from {args:?}: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Everything about one entry that a restore must reproduce.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i128,
    pub size: u64,
    pub content: Option<Vec<u8>>,
    pub target: Option<PathBuf>,
    pub rdev: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Index of the first entry (in path order) sharing this inode, for hard links.
    pub link_group: Option<String>,
}

/// Snapshot a tree's metadata and content, keyed by relative path (bytes).
pub fn describe(root: &Path) -> HashMap<Vec<u8>, Entry> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = HashMap::new();
    let mut first_path: HashMap<(u64, u64), String> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut all = Vec::new();
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            all.push((p, m));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, m) in all {
        let rel = p
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "chardev"
        } else if ft.is_block_device() {
            "blockdev"
        } else {
            "file"
        };
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = xattr::list(&p)
            .map(|l| {
                l.map(|n| {
                    let v = xattr::get(&p, &n).unwrap().unwrap_or_default();
                    (n.as_bytes().to_vec(), v)
                })
                .collect()
            })
            .unwrap_or_default();
        xattrs.sort();
        let link_group = (kind == "file" && m.nlink() > 1).then(|| {
            first_path
                .entry((m.dev(), m.ino()))
                .or_insert_with(|| String::from_utf8_lossy(&rel).into_owned())
                .clone()
        });
        out.insert(
            rel,
            Entry {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime_ns: if kind == "symlink" || kind == "dir" || kind == "file" || kind == "fifo"
                {
                    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
                } else {
                    0
                },
                size: if kind == "file" { m.size() } else { 0 },
                content: (kind == "file").then(|| fs::read(&p).unwrap()),
                target: (kind == "symlink").then(|| fs::read_link(&p).unwrap()),
                rdev: m.rdev(),
                xattrs,
                link_group,
            },
        );
    }
    out
}

/// Assert two trees are equal in content and metadata, naming the first difference.
/// The repository checks clean with every byte read, and its newest snapshot restores (into
/// `scratch/out`) to exactly `src`. `hf` runs holdfast on the repository with the given args.
pub fn check_and_restore_latest(hf: &dyn Fn(&[&str]) -> Command, scratch: &Path, src: &Path) {
    hf(&["check", "--read-data"]).assert().success();
    let out = scratch.join("out");
    let _ = fs::remove_dir_all(&out);
    hf(&["restore", "latest", out.to_str().unwrap()])
        .assert()
        .success();
    assert_same_tree(src, &out.join(src.file_name().unwrap()));
}

pub fn assert_same_tree(a: &Path, b: &Path) {
    let da = describe(a);
    let db = describe(b);
    let mut keys: Vec<_> = da.keys().chain(db.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let name = String::from_utf8_lossy(k);
        match (da.get(k), db.get(k)) {
            (Some(x), Some(y)) => assert_eq!(x, y, "entry {name} differs"),
            (Some(_), None) => panic!("{name} missing from {}", b.display()),
            (None, Some(_)) => panic!("{name} unexpected in {}", b.display()),
            (None, None) => unreachable!(),
        }
    }
}
