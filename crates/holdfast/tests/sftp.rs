//! SFTP repositories (`sftp://HOST/PATH`) on a real OpenSSH server on loopback, started by
//! `scripts/sshd.sh`. Set HOLDFAST_SKIP_SFTP=1 to opt out explicitly (CI never does).

mod support;

use std::fs;
use std::path::Path;
use std::process::Command as Std;
use std::time::Duration;

use support::garage::tree;
use support::sshd::{skip, sshd};

fn spawn_backup(repo: &str, src: &Path) -> std::process::Child {
    Std::new(assert_cmd::cargo::cargo_bin("holdfast"))
        .env("HOLDFAST_PASSWORD", "sftp test")
        .env("HOLDFAST_INSECURE_TEST_KDF", "1")
        .args(["--repo", repo, "backup"])
        .arg(src)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// A new repository `name` (1 MiB packs) on the server, and a scratch source tree.
fn scratch(name: &str, seed: u64, files: u64) -> (String, tempfile::TempDir, std::path::PathBuf) {
    let s = sshd();
    let repo = s.url(name);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tree(&src, seed, files);
    s.hf(&repo, &["init", "--pack-size-mib", "1"])
        .assert()
        .success();
    (repo, tmp, src)
}

#[test]
fn sftp_backup_restore_check_prune_and_concurrent_writers() {
    if skip() {
        return;
    }
    let s = sshd();
    let (repo, tmp, src) = scratch("roundtrip", 41, 30);
    s.hf(&repo, &["backup", src.to_str().unwrap()])
        .assert()
        .success();
    fs::write(src.join("f1"), b"changed").unwrap();
    s.hf(&repo, &["backup", src.to_str().unwrap()])
        .assert()
        .success();
    support::check_and_restore_latest(&|a| s.hf(&repo, a), tmp.path(), &src);
    s.hf(&repo, &["forget", "--keep-last", "1", "--prune"])
        .assert()
        .success();
    s.hf(&repo, &["check", "--read-data"]).assert().success();
    let src2 = tmp.path().join("src2");
    tree(&src2, 42, 20);
    let (mut a, mut b) = (spawn_backup(&repo, &src), spawn_backup(&repo, &src2));
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    s.hf(&repo, &["check", "--read-data"]).assert().success();
    // Every object is whole under its final name; writes go through temporary names only.
    let leftovers: Vec<_> = walk(&s.path("roundtrip"))
        .into_iter()
        .filter(|p| p.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// SIGKILL in the middle of backups: the repository checks clean every time, the kept snapshots
/// restore, and the next backup completes.
#[test]
fn sftp_kill_during_backup_leaves_a_clean_repository() {
    if skip() {
        return;
    }
    let s = sshd();
    let (repo, tmp, src) = scratch("kill", 43, 40);
    let packs = |name: &str| {
        let d = s.path(name).join("data");
        if d.exists() {
            walk(&d).len()
        } else {
            0
        }
    };
    for i in 0..3 {
        fs::write(
            src.join(format!("new{i}")),
            format!("round {i} ").repeat(200_000),
        )
        .unwrap();
        let before = packs("kill");
        let mut child = spawn_backup(&repo, &src);
        // Kill once this backup has stored a pack (or a temporary file): in the middle of it.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while packs("kill") <= before && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        s.hf(&repo, &["check", "--read-data"]).assert().success();
    }
    // The kills really interrupted backups: not every round left a snapshot.
    let o = s.hf(&repo, &["--json", "snapshots"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let done = v.as_array().unwrap().len();
    assert!(
        done < 3,
        "{done} of 3 killed backups finished: the kills came too late"
    );
    s.hf(&repo, &["backup", src.to_str().unwrap()])
        .assert()
        .success();
    support::check_and_restore_latest(&|a| s.hf(&repo, a), tmp.path(), &src);
}

/// A server whose host key does not match known_hosts is refused, with ssh's own words and the
/// fix; nothing is written.
#[test]
fn sftp_wrong_host_key_is_refused_with_a_clear_error() {
    if skip() {
        return;
    }
    let s = sshd();
    let cfg = fs::read_to_string(&s.env["HOLDFAST_SFTP_CONFIG"]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let kh = tmp.path().join("known_hosts");
    let line = fs::read_to_string(s.dir.join("known_hosts")).unwrap();
    let (host, _) = line.split_once(' ').unwrap();
    // Another key under the server's name.
    let o = Std::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(tmp.path().join("other"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let other = fs::read_to_string(tmp.path().join("other.pub")).unwrap();
    let other: Vec<&str> = other.split_whitespace().take(2).collect();
    fs::write(&kh, format!("{host} {}\n", other.join(" "))).unwrap();
    let bad_cfg = tmp.path().join("ssh_config");
    let known = s.dir.join("known_hosts");
    fs::write(
        &bad_cfg,
        cfg.replace(known.to_str().unwrap(), kh.to_str().unwrap()),
    )
    .unwrap();
    let repo = format!(
        "sftp://holdfast-sftp{}/repos/hostkey?config={}",
        s.dir.display(),
        bad_cfg.display()
    );
    let o = s.hf(&repo, &["init"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("SFTP session did not start"), "{err}");
    assert!(err.to_lowercase().contains("host key"), "{err}");
    assert!(!s.path("hostkey").exists());
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}
