//! A workload in a scratch directory, and the CLI run on it as a given host, for the tests of
//! answers that must be true (`answers.rs`, `discovery.rs`).

use std::fs;
use std::path::PathBuf;

use assert_cmd::Command;
use serde_json::Value;

pub const HEAD: &str = r#"
[repository.local]
url = "repo"
password-env = "TEST_REPO_PW"

[class.critical]
rpo = "15m"
rto = "10m"
keep = { last = 5 }
"#;

pub struct W {
    pub dir: tempfile::TempDir,
}

impl W {
    pub fn new(body: &str) -> W {
        let w = W {
            dir: tempfile::tempdir().unwrap(),
        };
        w.write("holdfast.toml", body);
        w
    }
    pub fn write(&self, name: &str, body: &str) {
        fs::write(self.path(name), format!("{HEAD}\n{body}")).unwrap();
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    /// The CLI as host `host`, on workload file `file`.
    pub fn cmd_on(&self, host: &str, file: &str, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("holdfast").unwrap();
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TEST_REPO_PW", "pw")
            .env("HOLDFAST_PASSWORD", "pw")
            .env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .env("HOLDFAST_HOSTNAME", host)
            .env("HOLDFAST_CONFIG", self.path(file))
            .env("HOLDFAST_STATE_DIR", self.path(&format!("state-{host}")))
            .current_dir(self.dir.path())
            .args(args);
        c
    }
    pub fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_on("host-a", "holdfast.toml", args)
    }
    pub fn run(&self, c: &mut Command, code: i32) -> (String, String) {
        let o = c.output().unwrap();
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        );
        assert_eq!(o.status.code(), Some(code), "stdout: {out}\nstderr: {err}");
        (out, err)
    }
    pub fn json_on(&self, host: &str, file: &str, args: &[&str], code: i32) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let (out, _) = self.run(&mut self.cmd_on(host, file, &a), code);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
    pub fn json(&self, args: &[&str], code: i32) -> Value {
        self.json_on("host-a", "holdfast.toml", args, code)
    }
    /// JSON output whatever the exit code.
    pub fn json_any(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let o = self.cmd(&a).output().unwrap();
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)))
    }
}

pub fn source<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["facts"]["name"] == name)
        .unwrap_or_else(|| panic!("no source {name} in {status}"))
}
