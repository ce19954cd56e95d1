//! Object-storage repositories on a real Garage cluster (three nodes in three zones, replication
//! factor 3, on loopback), started by `scripts/garage-cluster.sh`; and a second, independent
//! cluster standing for another region. Requires `garage` (scripts/test.sh installs it); set
//! HOLDFAST_SKIP_S3=1 to opt out explicitly.

mod support;

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Command as Std;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;
use support::assert_same_tree;
use support::garage::{cluster, skip, tree, Cluster};

#[test]
fn s3_backup_restore_check_prune() {
    if skip() {
        eprintln!("HOLDFAST_SKIP_S3=1: object-storage tests opted out");
        return;
    }
    let c = cluster();
    let (tmp, src, repo) = c.scratch("roundtrip", 1, 40);
    let first = c.json(&repo, &["backup", src.to_str().unwrap()]);
    assert_eq!(first["complete"], true);
    fs::write(src.join("f1"), b"changed").unwrap();
    let second = c.json(&repo, &["backup", src.to_str().unwrap()]);
    assert_eq!(second["summary"]["files_changed"], 1);
    c.hf(&repo, &["check", "--read-data"]).assert().success();
    let out = tmp.path().join("out");
    c.hf(&repo, &["restore", "latest", out.to_str().unwrap()])
        .assert()
        .success();
    assert_same_tree(&src, &out.join("src"));
    c.hf(&repo, &["forget", "--keep-last", "1", "--prune"])
        .assert()
        .success();
    // Garage has no Object Lock: said plainly, and asking to extend or undelete is an error
    // that names it, not a silent success.
    let o = c.hf(&repo, &["object-lock"]).output().unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("the store has no object lock"));
    let o = c.hf(&repo, &["object-lock", "--extend"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let o = c
        .hf(&repo, &["object-lock", "--undelete-since", "1h"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not support object lock"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    c.hf(&repo, &["check", "--read-data"]).assert().success();
    // Two concurrent writers into one bucket both succeed.
    let src2 = tmp.path().join("src2");
    tree(&src2, 2, 20);
    let spawn = |p: &Path| {
        Std::new(assert_cmd::cargo::cargo_bin("holdfast"))
            .envs(&c.env)
            .env("HOLDFAST_PASSWORD", "s3 test")
            .args(["--repo", &repo, "backup"])
            .arg(p)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn(&src), spawn(&src2));
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    c.hf(&repo, &["check", "--read-data"]).assert().success();
}

#[test]
fn s3_survives_a_node_killed_mid_backup_and_resumes_after_sigkill() {
    if skip() {
        return;
    }
    let c = cluster();
    let (tmp, src, repo) = c.scratch("faults", 3, 60);
    // A node dies while the backup runs: replication factor 3 keeps a write quorum.
    let mut child = Std::new(assert_cmd::cargo::cargo_bin("holdfast"))
        .envs(&c.env)
        .env("HOLDFAST_PASSWORD", "s3 test")
        .args(["--repo", &repo, "backup"])
        .arg(&src)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    c.node("kill", 3);
    assert!(
        child.wait().unwrap().success(),
        "backup with one of three nodes down"
    );
    c.node("start", 3);
    std::thread::sleep(Duration::from_secs(2));
    c.hf(&repo, &["check", "--read-data"]).assert().success();
    // SIGKILL part way through a backup of new data: the next backup reuses what was uploaded.
    let src2 = tmp.path().join("src2");
    tree(&src2, 4, 60);
    let t = Instant::now();
    let full_repo = c.url("faults-measure");
    c.hf(&full_repo, &["init", "--pack-size-mib", "1"])
        .assert()
        .success();
    let full = c.json(&full_repo, &["backup", src2.to_str().unwrap()]);
    let full_bytes = full["summary"]["bytes_added"].as_u64().unwrap();
    let took = t.elapsed();
    let mut child = Std::new(assert_cmd::cargo::cargo_bin("holdfast"))
        .envs(&c.env)
        .env("HOLDFAST_PASSWORD", "s3 test")
        .args(["--repo", &repo, "backup"])
        .arg(&src2)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(took.mul_f64(0.8));
    let _ = child.kill();
    let _ = child.wait();
    c.hf(&repo, &["check"]).assert().success();
    let resumed = c.json(&repo, &["backup", src2.to_str().unwrap()]);
    assert!(
        resumed["summary"]["bytes_added"].as_u64().unwrap() < full_bytes,
        "nothing was reused: {resumed}"
    );
    c.hf(&repo, &["check", "--read-data"]).assert().success();
}

#[test]
fn s3_unreachable_store_is_a_clear_error() {
    if skip() {
        return;
    }
    let c = cluster();
    let mut cmd = Command::cargo_bin("holdfast").unwrap();
    let o = cmd
        .envs(&c.env)
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("HOLDFAST_PASSWORD", "x")
        .args(["--repo", &c.url("nowhere"), "snapshots"])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("reachable"), "{err}");
}

#[test]
fn s3_copy_to_another_region() {
    if skip() {
        return;
    }
    let a = cluster();
    let b = Cluster::up("b");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tree(&src, 5, 20);
    let ra = a.url("primary");
    let rb = b.url("copy");
    a.hf(&ra, &["init"]).assert().success();
    b.hf(&rb, &["init"]).assert().success();
    a.json(&ra, &["backup", src.to_str().unwrap()]);
    // A pull from the other side: the copy job holds a read-only key on region A (it cannot
    // write or delete there) and region B's key, which the protected host never holds. Each
    // side's credentials come from its own variables (env=PREFIX in the URL).
    let puller = a.key("region-b-puller", &["read"]);
    let mut envs: HashMap<String, String> = HashMap::new();
    for (side, vars) in [("REGION_A", &puller), ("REGION_B", &b.env)] {
        for (k, v) in vars {
            if let Some(rest) = k.strip_prefix("AWS_") {
                envs.insert(format!("{side}_{rest}"), v.clone());
            }
        }
    }
    let from = format!("{ra}?env=REGION_A");
    let to = format!("{rb}?env=REGION_B");
    let copy = |expected: usize| {
        let o = Command::cargo_bin("holdfast")
            .unwrap()
            .env_remove("AWS_ACCESS_KEY_ID")
            .envs(&envs)
            .env("HOLDFAST_PASSWORD", "s3 test")
            .args(["--json", "copy", "--from", &from, "--to", &to])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["copied"].as_array().unwrap().len(), expected, "{v}");
    };
    copy(1);
    copy(0);
    // The puller's key really is read-only on region A.
    let o = Command::cargo_bin("holdfast")
        .unwrap()
        .envs(&puller)
        .env("HOLDFAST_PASSWORD", "s3 test")
        .env("HOLDFAST_INSECURE_TEST_KDF", "1")
        .args(["--repo", &ra, "backup"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(!o.status.success(), "a read-only key must not write");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("denied") || err.contains("ermission"), "{err}");
    // Region A's credentials cannot reach region B's store at all.
    let o = Command::cargo_bin("holdfast")
        .unwrap()
        .envs(&a.env)
        .env("AWS_ENDPOINT_URL", &b.env["AWS_ENDPOINT_URL"])
        .env("HOLDFAST_PASSWORD", "s3 test")
        .args(["--repo", &rb, "snapshots"])
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "region A's key must not open region B's bucket"
    );
    let out = tmp.path().join("out");
    b.hf(&rb, &["restore", "latest", out.to_str().unwrap()])
        .assert()
        .success();
    assert_same_tree(&src, &out.join("src"));
    b.hf(&rb, &["check", "--read-data"]).assert().success();
}
