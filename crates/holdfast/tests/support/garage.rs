//! A real Garage cluster for the object-storage tests, started by `scripts/garage-cluster.sh`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command as Std;
use std::sync::OnceLock;

use assert_cmd::Command;
use serde_json::Value;

use super::bytes;

/// A running Garage cluster (three nodes, three zones, replication factor 3) and the AWS_*
/// variables that reach it.
pub struct Cluster {
    pub dir: PathBuf,
    pub env: HashMap<String, String>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/garage-cluster.sh")
}

impl Cluster {
    pub fn up(name: &str) -> Cluster {
        let dir =
            std::env::temp_dir().join(format!("holdfast-garage-{name}-{}", std::process::id()));
        let env = super::start_store(
            &script(),
            &dir,
            "GARAGE_OWNER_PID",
            "install Garage with `cargo install garage`, as scripts/test.sh does, or set HOLDFAST_SKIP_S3=1 to opt out",
        );
        Cluster { dir, env }
    }
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.env["HOLDFAST_TEST_BUCKET"])
    }
    pub fn node(&self, action: &str, n: u32) {
        let o = Std::new("bash")
            .arg(script())
            .arg(action)
            .arg(&self.dir)
            .arg(n.to_string())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    /// A new key holding only `perms` (`read`, `write`, `owner`) on the bucket: its AWS_*
    /// variables, the endpoint and region included.
    pub fn key(&self, name: &str, perms: &[&str]) -> HashMap<String, String> {
        let o = Std::new("bash")
            .arg(script())
            .arg("key")
            .arg(&self.dir)
            .arg(name)
            .args(perms)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut env = self.env.clone();
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            if let Some((k, v)) = l.split_once('=') {
                env.insert(k.into(), v.into());
            }
        }
        env
    }

    /// A scratch directory, a source tree of `files` files in it (`seed` picks the bytes), and
    /// a new repository `name` with 1 MiB packs (many packs from little data).
    pub fn scratch(
        &self,
        name: &str,
        seed: u64,
        files: u64,
    ) -> (tempfile::TempDir, PathBuf, String) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        tree(&src, seed, files);
        let repo = self.url(name);
        self.hf(&repo, &["init", "--pack-size-mib", "1"])
            .assert()
            .success();
        (tmp, src, repo)
    }

    pub fn hf(&self, repo: &str, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("holdfast").unwrap();
        c.envs(&self.env)
            .env("HOLDFAST_PASSWORD", "s3 test")
            .env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .arg("--repo")
            .arg(repo)
            .args(args);
        c
    }
    pub fn json(&self, repo: &str, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let o = self.hf(repo, &a).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Std::new("bash")
            .arg(script())
            .arg("down")
            .arg(&self.dir)
            .output();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub fn skip() -> bool {
    std::env::var("HOLDFAST_SKIP_S3").is_ok_and(|v| v == "1")
}

pub fn cluster() -> &'static Cluster {
    static C: OnceLock<Cluster> = OnceLock::new();
    C.get_or_init(|| Cluster::up("a"))
}

/// A tree of `files` pseudo-random files (every seventh 1.5 MB), some in `sub/`.
pub fn tree(dir: &Path, seed: u64, files: u64) {
    fs::create_dir_all(dir.join("sub")).unwrap();
    for i in 0..files {
        let d = if i % 3 == 0 {
            dir.join("sub")
        } else {
            dir.to_path_buf()
        };
        let n = if i % 7 == 0 {
            1_500_000
        } else {
            20_000 + (i as usize * 997) % 50_000
        };
        fs::write(d.join(format!("f{i}")), bytes(seed * 1000 + i, n)).unwrap();
    }
}
