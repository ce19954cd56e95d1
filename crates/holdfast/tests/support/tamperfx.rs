//! The tampering fixture: a repository with two snapshots of a small tree and its own state
//! directory, and the attacker's moves (save, roll back, replay, flip). Shared by
//! `tests/tamper.rs` and `tests/tamper_gc.rs`.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tempfile::TempDir;

use super::bytes;

pub const PASSWORD: &str = "tamper: correct horse battery staple";

/// What one run of the binary did.
pub struct Out {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Out {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.all()))
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A repository with two snapshots of a small tree, and its own state directory.
pub struct Fx {
    /// Scratch space: `src`, `repo`, `state` and saved copies.
    pub dir: TempDir,
}

impl Fx {
    pub fn new() -> Fx {
        let fx = Fx {
            dir: TempDir::new().unwrap(),
        };
        fs::create_dir_all(fx.src()).unwrap();
        fs::write(fx.src().join("keep"), bytes(1, 300_000)).unwrap();
        fs::write(fx.src().join("first"), bytes(2, 200_000)).unwrap();
        fx.ok(&["init", "--pack-size-mib", "1"]);
        fx.ok(&["backup", fx.src().to_str().unwrap()]);
        fs::remove_file(fx.src().join("first")).unwrap();
        fs::write(fx.src().join("second"), bytes(3, 200_000)).unwrap();
        fx.ok(&["backup", fx.src().to_str().unwrap()]);
        fx
    }
    pub fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }
    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    pub fn at(&self, p: &str) -> PathBuf {
        self.repo().join(p)
    }
    pub fn run_in(&self, repo: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOLDFAST_PASSWORD", PASSWORD)
            .env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .env("HOLDFAST_STATE_DIR", self.dir.path().join("state"))
            .envs(env.iter().copied())
            .arg("--repo")
            .arg(repo)
            .args(args);
        let o = c.output().expect("running holdfast");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    pub fn run(&self, args: &[&str]) -> Out {
        self.run_in(&self.repo(), args, &[])
    }
    pub fn ok(&self, args: &[&str]) -> Out {
        let o = self.run(args);
        assert_eq!(o.code, 0, "holdfast {args:?}: {o}");
        o
    }
    /// `args` fails with exit `code` and says `needle`.
    pub fn fails(&self, args: &[&str], code: i32, needle: &str) -> Out {
        let o = self.run(args);
        assert_eq!(o.code, code, "holdfast {args:?} should exit {code}: {o}");
        assert!(
            o.all().contains(needle),
            "holdfast {args:?} should say {needle:?}: {o}"
        );
        o
    }
    /// `check --read-data` fails and names `needle` among its errors.
    pub fn check_error(&self, needle: &str) -> Value {
        let o = self.run(&["--json", "check", "--read-data"]);
        assert_eq!(o.code, 1, "check should find {needle:?}: {o}");
        let j = o.json();
        let errors = j["errors"].to_string();
        assert!(
            errors.contains(needle),
            "check errors should name {needle:?}: {o}"
        );
        j
    }
    /// `check --read-data` passes (nothing is lost) but warns `needle`.
    pub fn check_warning(&self, needle: &str) {
        let o = self.run(&["--json", "check", "--read-data"]);
        assert_eq!(o.code, 0, "check: {o}");
        let w = o.json()["warnings"].to_string();
        assert!(
            w.contains(needle),
            "check warnings should name {needle:?}: {o}"
        );
    }
    pub fn names(&self, kind: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![self.at(kind)];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(
                        e.path()
                            .strip_prefix(self.repo())
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
            }
        }
        out.sort();
        out
    }
    pub fn snapshots(&self) -> Vec<(String, String)> {
        let j = self.ok(&["--json", "snapshots"]).json();
        j.as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_string(),
                    s["time"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
    /// Copy a directory of the repository aside (to roll back to later).
    pub fn save(&self, kind: &str) -> PathBuf {
        let to = self
            .dir
            .path()
            .join(format!("saved-{kind}-{}", rand::random::<u32>()));
        copy_dir(&self.at(kind), &to);
        to
    }
    /// Replace a directory of the repository with a saved copy.
    pub fn roll_back(&self, kind: &str, saved: &Path) {
        fs::remove_dir_all(self.at(kind)).unwrap();
        copy_dir(saved, &self.at(kind));
    }
    /// Put back every object of a saved copy that is gone now; returns how many.
    pub fn replay(&self, kind: &str, saved: &Path) -> usize {
        let mut n = 0;
        let mut stack = vec![saved.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let rel = e.path().strip_prefix(saved).unwrap().to_path_buf();
                let to = self.at(kind).join(&rel);
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else if !to.exists() {
                    fs::create_dir_all(to.parent().unwrap()).unwrap();
                    fs::copy(e.path(), &to).unwrap();
                    n += 1;
                }
            }
        }
        n
    }
    /// Forget the first snapshot and prune, so its pack and index files are deleted.
    pub fn forget_first_and_prune(&self) {
        self.ok(&["forget", "--keep-last", "1"]);
        self.ok(&["prune", "--max-unused", "0"]);
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

pub fn flip(path: &Path, offset: usize) {
    let mut d = fs::read(path).unwrap();
    let at = offset.min(d.len() - 1);
    d[at] ^= 0x10;
    fs::write(path, d).unwrap();
}
