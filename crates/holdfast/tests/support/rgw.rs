//! A real Ceph radosgw for the immutability tests, started by `scripts/ceph-rgw.sh`. Unlike
//! Garage it enforces S3 Object Lock and bucket policies. Administrative requests (bucket
//! creation with Object Lock, policies, version listings) go through curl's SigV4 signing, as in
//! `scripts/ceph-rgw-selftest.sh`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command as Std;
use std::sync::OnceLock;

use assert_cmd::Command;

/// A running radosgw and its owner user's credentials.
pub struct Rgw {
    pub dir: PathBuf,
    pub env: HashMap<String, String>,
}

/// An S3 user: access key and secret.
#[derive(Clone)]
pub struct User {
    pub uid: String,
    pub key: String,
    pub secret: String,
}

/// One answer: HTTP status and body.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// HOLDFAST_SKIP_RGW=1 opts out of the radosgw tests (never in CI).
pub fn skip() -> bool {
    let s = std::env::var("HOLDFAST_SKIP_RGW").is_ok_and(|v| v == "1");
    if s {
        eprintln!("HOLDFAST_SKIP_RGW=1: radosgw tests opted out");
    }
    s
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ceph-rgw.sh")
}

/// The radosgw shared by the tests of one test binary.
pub fn rgw() -> &'static Rgw {
    static R: OnceLock<Rgw> = OnceLock::new();
    R.get_or_init(Rgw::up)
}

impl Rgw {
    fn up() -> Rgw {
        let dir = std::env::temp_dir().join(format!("holdfast-rgw-{}", std::process::id()));
        let env = super::start_store(
            &script(),
            &dir,
            "RGW_OWNER_PID",
            "scripts/ceph-rgw.sh installs Debian's ceph packages; set HOLDFAST_SKIP_RGW=1 to opt out",
        );
        Rgw { dir, env }
    }

    /// The user `scripts/ceph-rgw.sh` created; it owns the buckets the tests create.
    pub fn owner(&self) -> User {
        User {
            uid: "holdfast".into(),
            key: self.env["RGW_ACCESS_KEY_ID"].clone(),
            secret: self.env["RGW_SECRET_ACCESS_KEY"].clone(),
        }
    }

    /// A new S3 user (radosgw-admin).
    pub fn user(&self, uid: &str) -> User {
        let key: String = format!("HF{:018X}", rand_u64() >> 8);
        let secret = format!("{:016x}{:016x}", rand_u64(), rand_u64());
        let o = Std::new("radosgw-admin")
            .args(["-c", &self.env["RGW_CONF"], "user", "create"])
            .arg(format!("--uid={uid}"))
            .arg(format!("--display-name={uid}"))
            .arg(format!("--access-key={key}"))
            .arg(format!("--secret={secret}"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        User {
            uid: uid.into(),
            key,
            secret,
        }
    }

    /// Environment for holdfast acting as `u`.
    pub fn env_for(&self, u: &User) -> HashMap<String, String> {
        HashMap::from([
            ("AWS_ENDPOINT_URL".into(), self.env["RGW_ENDPOINT"].clone()),
            ("AWS_REGION".into(), self.env["RGW_REGION"].clone()),
            ("AWS_ACCESS_KEY_ID".into(), u.key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), u.secret.clone()),
        ])
    }

    /// holdfast acting as `u` on `repo`.
    pub fn hf(&self, u: &User, repo: &str, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("holdfast").unwrap();
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env_for(u))
            .env("HOLDFAST_PASSWORD", "rgw test")
            .env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .arg("--repo")
            .arg(repo)
            .args(args);
        c
    }

    /// One signed S3 request as `u`. Query parameters must be written `name=` or `name=value`,
    /// in sorted order (curl signs the query string as written).
    pub fn s3(
        &self,
        u: &User,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[&str],
    ) -> Answer {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let data = body.unwrap_or("");
        fs::write(tmp.path(), data).unwrap();
        let sha = sha256_hex(data.as_bytes());
        let mut c = Std::new("curl");
        c.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "30"])
            .arg("--aws-sigv4")
            .arg(format!("aws:amz:{}:s3", self.env["RGW_REGION"]))
            .arg("--user")
            .arg(format!("{}:{}", u.key, u.secret))
            .arg("-H")
            .arg(format!("x-amz-content-sha256: {sha}"));
        match method {
            "GET" => {}
            "PUT" | "POST" => {
                let md5 = Std::new("sh")
                    .arg("-c")
                    .arg(format!(
                        "openssl md5 -binary < {} | base64",
                        tmp.path().display()
                    ))
                    .output()
                    .unwrap();
                c.args(["-X", method, "--data-binary"])
                    .arg(format!("@{}", tmp.path().display()))
                    .arg("-H")
                    .arg(format!(
                        "Content-MD5: {}",
                        String::from_utf8_lossy(&md5.stdout).trim()
                    ));
            }
            m => {
                c.args(["-X", m]);
            }
        }
        for h in headers {
            c.args(["-H", h]);
        }
        let o = c
            .arg(format!("{}{path}", self.env["RGW_ENDPOINT"]))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        let (body, status) = out.rsplit_once('\n').unwrap_or(("", "000"));
        Answer {
            status: status.trim().parse().unwrap_or(0),
            body: body.to_string(),
        }
    }

    /// A new bucket owned by the owner user; with `lock`, Object Lock enabled with this
    /// default rule (mode, days).
    pub fn bucket(&self, name: &str, lock: Option<(&str, u32)>) {
        let o = self.owner();
        let a = if lock.is_some() {
            self.s3(
                &o,
                "PUT",
                &format!("/{name}"),
                None,
                &["x-amz-bucket-object-lock-enabled: true"],
            )
        } else {
            self.s3(&o, "PUT", &format!("/{name}"), None, &[])
        };
        assert_eq!(a.status, 200, "creating bucket {name}: {}", a.body);
        if let Some((mode, days)) = lock {
            let xml = format!("<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>{mode}</Mode><Days>{days}</Days></DefaultRetention></Rule></ObjectLockConfiguration>");
            let a = self.s3(&o, "PUT", &format!("/{name}?object-lock="), Some(&xml), &[]);
            assert_eq!(a.status, 200, "object lock rule on {name}: {}", a.body);
        }
    }

    /// Set a bucket policy (as the owner).
    pub fn policy(&self, bucket: &str, json: &str) {
        let a = self.s3(
            &self.owner(),
            "PUT",
            &format!("/{bucket}?policy="),
            Some(json),
            &[],
        );
        assert!(
            matches!(a.status, 200 | 204),
            "policy on {bucket}: {}",
            a.body
        );
    }

    /// Every (key, version id, is a delete marker) under `prefix`, as the owner sees them.
    pub fn versions(&self, bucket: &str, prefix: &str) -> Vec<(String, String, bool)> {
        let a = self.s3(
            &self.owner(),
            "GET",
            &format!(
                "/{bucket}?max-keys=1000&prefix={}&versions=",
                prefix.replace('/', "%2F")
            ),
            None,
            &[],
        );
        assert_eq!(a.status, 200, "{}", a.body);
        let mut out = Vec::new();
        for (tag, marker) in [("<Version>", false), ("<DeleteMarker>", true)] {
            for part in a.body.split(tag).skip(1) {
                let field = |f: &str| {
                    part.split(&format!("<{f}>"))
                        .nth(1)
                        .and_then(|r| r.split(&format!("</{f}>")).next())
                        .unwrap_or("")
                        .to_string()
                };
                out.push((field("Key"), field("VersionId"), marker));
            }
        }
        out
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    u64::from_le_bytes(b)
}

/// SHA-256 of a request body, for the x-amz-content-sha256 header (via sha256sum, so the
/// tests need no hashing crate of their own).
fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut p = Std::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(data).unwrap();
    let o = p.wait_with_output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}
