//! A real OpenSSH server on loopback for the SFTP repository tests, started by
//! `scripts/sshd.sh`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use assert_cmd::Command;

/// A running sshd, and the ssh_config that reaches it as `holdfast-sftp`.
pub struct Sshd {
    pub dir: PathBuf,
    pub env: HashMap<String, String>,
}

/// HOLDFAST_SKIP_SFTP=1 opts out of the SFTP tests (never in CI).
pub fn skip() -> bool {
    let s = std::env::var("HOLDFAST_SKIP_SFTP").is_ok_and(|v| v == "1");
    if s {
        eprintln!("HOLDFAST_SKIP_SFTP=1: SFTP tests opted out");
    }
    s
}

/// The sshd shared by the tests of one test binary.
pub fn sshd() -> &'static Sshd {
    static S: OnceLock<Sshd> = OnceLock::new();
    S.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("holdfast-sshd-{}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/sshd.sh");
        let env = super::start_store(
            &script,
            &dir,
            "SSHD_OWNER_PID",
            "install openssh-server, as scripts/test.sh does, or set HOLDFAST_SKIP_SFTP=1 to opt out",
        );
        Sshd { dir, env }
    })
}

impl Sshd {
    /// The URL of a repository named `name` on the server.
    pub fn url(&self, name: &str) -> String {
        format!(
            "sftp://{}{}/repos/{name}?config={}",
            self.env["HOLDFAST_SFTP_HOST"],
            self.dir.display(),
            self.env["HOLDFAST_SFTP_CONFIG"]
        )
    }

    /// Where that repository's files are (the server is this host).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join("repos").join(name)
    }

    /// holdfast on `repo`.
    pub fn hf(&self, repo: &str, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("holdfast").unwrap();
        c.env("HOLDFAST_PASSWORD", "sftp test")
            .env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .arg("--repo")
            .arg(repo)
            .args(args);
        c
    }
}
