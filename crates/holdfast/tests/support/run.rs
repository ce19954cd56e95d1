//! Running the real `holdfast` binary on one repository and keeping what it did, for the
//! garbage-collection fault tests (`gc_faults.rs`, `tamper_gc.rs`).

use std::fs;
use std::path::Path;
use std::time::Duration;

use assert_cmd::cargo::CommandCargoExt;
use rand::{RngCore, SeedableRng};
use serde_json::Value;

/// `holdfast --repo REPO` with `password`, cheap key derivation and none of the caller's
/// holdfast settings; `env` is added (a test's heartbeat, its state directory).
pub fn cmd(repo: &Path, password: &str, env: &[(&str, String)]) -> std::process::Command {
    let mut c = std::process::Command::cargo_bin("holdfast").expect("holdfast binary");
    for v in [
        "HOLDFAST_REPOSITORY",
        "HOLDFAST_PASSWORD_FILE",
        "HOLDFAST_PASSWORD_COMMAND",
        "HOLDFAST_NOW",
        "HOLDFAST_LOG",
        "HOLDFAST_TEST_HEARTBEAT_MS",
    ] {
        c.env_remove(v);
    }
    c.env("HOLDFAST_PASSWORD", password)
        .env("HOLDFAST_INSECURE_TEST_KDF", "1")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .arg("--repo")
        .arg(repo);
    c
}

/// What a command did.
pub struct Run {
    /// The command line, for messages.
    pub what: String,
    /// Its exit code.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- {} exited with {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }
}

impl Run {
    /// From a finished process.
    pub fn from_output(what: String, out: std::process::Output) -> Run {
        Run {
            what,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
    /// It succeeded (or the test fails, showing what it printed).
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "{self}");
        self
    }
    /// Its standard output as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{self}"))
    }
}

/// Run `c` with `args` (at most `timeout`).
pub fn run(c: std::process::Command, args: &[&str], timeout: Duration) -> Run {
    let mut c = assert_cmd::Command::from_std(c);
    c.timeout(timeout).args(args);
    Run::from_output(
        format!("holdfast {}", args.join(" ")),
        c.output().expect("running holdfast"),
    )
}

/// A path as the CLI takes it.
pub fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test paths")
}

/// `files` files of `size` random bytes (from `seed`) named PREFIX0, PREFIX1, ... under `root`.
pub fn write_random_files(root: &Path, prefix: &str, files: usize, size: usize, seed: u64) {
    fs::create_dir_all(root).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in 0..files {
        let mut v = vec![0u8; size];
        rng.fill_bytes(&mut v);
        fs::write(root.join(format!("{prefix}{i}")), v).unwrap();
    }
}
