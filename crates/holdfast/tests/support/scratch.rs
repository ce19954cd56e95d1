//! A scratch directory holding a workload file (a local repository, class `critical`) and the
//! holdfast CLI run in it: the fixture of the source tests on real devices and files
//! (`volume.rs`, `btrfs.rs`, `journal.rs`), each adding its own methods.

use std::cell::Cell;
use std::fs;
use std::path::PathBuf;

use assert_cmd::Command;
use serde_json::Value;

/// The scratch directory and how many protect runs it has seen.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    runs: Cell<i64>,
}

impl Scratch {
    /// An empty scratch directory (no workload file yet).
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
            runs: Cell::new(0),
        }
    }
    /// `p` inside it.
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    /// Write the workload file: the repository and class, then `s` (its sources).
    pub fn sources(&self, s: &str) {
        let toml = format!(
            "[repository.local]\nurl = \"repo\"\npassword-env = \"TEST_REPO_PW\"\n\n[class.critical]\nrpo = \"15m\"\nrto = \"10m\"\nkeep = {{ last = 20 }}\n\n{s}"
        );
        fs::write(self.path("holdfast.toml"), toml).unwrap();
    }
    /// The CLI on this workload (and `--repo repo` with `HOLDFAST_PASSWORD`).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("holdfast").unwrap();
        c.env("TEST_REPO_PW", "pw")
            .env("HOLDFAST_PASSWORD", "pw")
            .env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .env("HOLDFAST_CONFIG", self.path("holdfast.toml"))
            .env("HOLDFAST_STATE_DIR", self.path("state"))
            .env_remove("HOLDFAST_NOW")
            .current_dir(self.dir.path())
            .args(args);
        c
    }
    /// Run; assert the exit code; stdout and stderr.
    pub fn run(&self, args: &[&str], code: i32) -> (String, String) {
        let o = self.cmd(args).output().unwrap();
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        );
        assert_eq!(
            o.status.code(),
            Some(code),
            "{args:?}\nstdout: {out}\nstderr: {err}"
        );
        (out, err)
    }
    /// [`Scratch::run`] with `--json`, parsed.
    pub fn json(&self, args: &[&str], code: i32) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.run(&a, code).0).unwrap()
    }
    /// `protect --source SOURCE` at the next run's time, as host `host` if given: its backup
    /// job record and exit code (the code says compliance, which a new source without a drill
    /// does not meet yet).
    pub fn protect_as(&self, source: &str, host: Option<&str>) -> (Value, i32) {
        let mut c = self.cmd(&["--json", "protect", "--source", source]);
        c.env("HOLDFAST_NOW", self.next_run().to_rfc3339());
        if let Some(h) = host {
            c.env("HOLDFAST_HOSTNAME", h);
        }
        let o = c.output().unwrap();
        let v: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stderr)));
        let job = v["protect"][0]["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["job"] == "backup")
            .cloned()
            .unwrap_or_else(|| panic!("no backup job: {v}"));
        (job, o.status.code().unwrap_or(-1))
    }
    /// The time of the next protect run: 20 minutes after the last, so the source is due.
    pub fn next_run(&self) -> chrono::DateTime<chrono::Utc> {
        self.runs.set(self.runs.get() + 1);
        chrono::Utc::now() + chrono::Duration::minutes(20 * self.runs.get())
    }
}
