//! Azure Blob Storage repositories (`azblob://CONTAINER/PREFIX`) on Azurite, Microsoft's
//! emulator of the Blob API, started by `scripts/azurite.sh`. Set HOLDFAST_SKIP_AZURE=1 to opt
//! out explicitly (CI never does).

mod support;

use std::fs;
use std::path::Path;
use std::process::Command as Std;

use support::azurite::{azurite, skip};
use support::garage::tree;

#[test]
fn azblob_backup_restore_check_prune_and_concurrent_writers() {
    if skip() {
        return;
    }
    let a = azurite();
    let repo = a.container("roundtrip", "repo");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tree(&src, 31, 30);
    a.hf(&repo, &["init", "--pack-size-mib", "1"])
        .assert()
        .success();
    a.hf(&repo, &["backup", src.to_str().unwrap()])
        .assert()
        .success();
    fs::write(src.join("f1"), b"changed").unwrap();
    let o = a
        .hf(&repo, &["--json", "backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["summary"]["files_changed"], 1, "{v}");
    support::check_and_restore_latest(&|x| a.hf(&repo, x), tmp.path(), &src);
    a.hf(&repo, &["forget", "--keep-last", "1", "--prune"])
        .assert()
        .success();
    a.hf(&repo, &["check", "--read-data"]).assert().success();
    // Two writers at once into one container both succeed, and the repository checks clean.
    let src2 = tmp.path().join("src2");
    tree(&src2, 32, 20);
    let spawn = |p: &Path| {
        Std::new(assert_cmd::cargo::cargo_bin("holdfast"))
            .envs(&a.env)
            .env("HOLDFAST_PASSWORD", "azure test")
            .env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .args(["--repo", &repo, "backup"])
            .arg(p)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut x, mut y) = (spawn(&src), spawn(&src2));
    assert!(x.wait().unwrap().success() && y.wait().unwrap().success());
    a.hf(&repo, &["check", "--read-data"]).assert().success();
    let o = a.hf(&repo, &["--json", "snapshots"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3, "{v}");
}

#[test]
fn azblob_wrong_key_and_missing_credentials_are_clear_errors() {
    if skip() {
        return;
    }
    let a = azurite();
    let repo = a.container("creds", "repo");
    let o = a
        .hf(&repo, &["init"])
        .env_remove("AZURE_STORAGE_KEY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("AZURE_STORAGE_KEY"), "{err}");
    // A wrong account key: the emulator refuses the signature; holdfast says permission.
    let o = a
        .hf(&repo, &["init"])
        .env(
            "AZURE_STORAGE_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a wrong key must not write");
    assert!(err.contains("permission denied"), "{err}");
    // Nothing was created: the right key finds no repository there.
    let o = a.hf(&repo, &["snapshots"]).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(10),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
