//! Azurite, Microsoft's Azure Storage emulator, for the Azure Blob repository tests, started by
//! `scripts/azurite.sh`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command as Std;
use std::sync::OnceLock;

use assert_cmd::Command;

/// A running Azurite and the AZURE_STORAGE_* variables that reach it.
pub struct Azurite {
    pub dir: PathBuf,
    pub env: HashMap<String, String>,
}

/// HOLDFAST_SKIP_AZURE=1 opts out of the Azure Blob tests (never in CI).
pub fn skip() -> bool {
    let s = std::env::var("HOLDFAST_SKIP_AZURE").is_ok_and(|v| v == "1");
    if s {
        eprintln!("HOLDFAST_SKIP_AZURE=1: Azure Blob tests opted out");
    }
    s
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/azurite.sh")
}

/// The Azurite shared by the tests of one test binary.
pub fn azurite() -> &'static Azurite {
    static A: OnceLock<Azurite> = OnceLock::new();
    A.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("holdfast-azurite-{}", std::process::id()));
        let env = super::start_store(
            &script(),
            &dir,
            "AZURITE_OWNER_PID",
            "scripts/azurite.sh installs Azurite with npm; set HOLDFAST_SKIP_AZURE=1 to opt out",
        );
        Azurite { dir, env }
    })
}

impl Azurite {
    /// A new container; its repository URL with `prefix`.
    pub fn container(&self, name: &str, prefix: &str) -> String {
        let o = Std::new("bash")
            .arg(script())
            .arg("container")
            .arg(&self.dir)
            .arg(name)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        format!("azblob://{name}/{prefix}")
    }

    /// holdfast on `repo` with the emulator's credentials.
    pub fn hf(&self, repo: &str, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("holdfast").unwrap();
        c.envs(&self.env)
            .env("HOLDFAST_PASSWORD", "azure test")
            .env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .arg("--repo")
            .arg(repo)
            .args(args);
        c
    }
}
