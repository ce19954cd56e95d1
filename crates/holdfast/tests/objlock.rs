//! Immutability on a store that enforces it: Ceph's radosgw (scripts/ceph-rgw.sh), with S3
//! Object Lock and bucket policies. Set HOLDFAST_SKIP_RGW=1 to opt out explicitly (CI never
//! does).

mod support;

use std::fs;
use std::path::PathBuf;

use chrono::{Duration, Utc};
use serde_json::Value;
use support::garage::tree;
use support::rgw::{rgw, skip, Rgw, User};

fn json(o: &std::process::Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// The shared radosgw, its owner, a new bucket (with `lock`: Object Lock with that default
/// rule) and a scratch directory with a source tree `src` of `files` files.
fn setup(
    bucket: &str,
    lock: Option<(&str, u32)>,
    seed: u64,
    files: u64,
) -> (&'static Rgw, User, tempfile::TempDir, PathBuf) {
    let r = rgw();
    r.bucket(bucket, lock);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tree(&src, seed, files);
    (r, r.owner(), tmp, src)
}

/// A bucket policy: `user` may do `allow` and never `deny`; `owner` may do everything.
fn policy(bucket: &str, user: &User, owner: &User, allow: &[&str], deny: &[&str]) -> String {
    let statement = |effect: &str, who: &str, actions: &[&str]| {
        serde_json::json!({
            "Effect": effect,
            "Principal": {"AWS": [format!("arn:aws:iam:::user/{who}")]},
            "Action": actions,
            "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")],
        })
    };
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            statement("Allow", &user.uid, allow),
            statement("Deny", &user.uid, deny),
            statement("Allow", &owner.uid, &["s3:*"]),
        ],
    })
    .to_string()
}

fn packs(v: &[(String, String, bool)]) -> Vec<&(String, String, bool)> {
    v.iter().filter(|(k, _, _)| k.contains("/data/")).collect()
}

/// Every object a young recovery point needs is locked by the store until the point's time
/// plus the bucket's retention, reused packs included; nobody can delete a locked version; a
/// backup whose credentials may not extend locks says so, and `--verify` (asking the store)
/// finds exactly that gap until the locks are extended.
#[test]
fn rgw_object_lock_covers_every_object_of_young_recovery_points() {
    if skip() {
        return;
    }
    let (r, owner, _tmp, src) = setup("hf-lock", Some(("COMPLIANCE", 1)), 21, 30);
    let repo = "s3://hf-lock/repo";
    r.hf(&owner, repo, &["init", "--pack-size-mib", "1"])
        .assert()
        .success();

    // What the store says about the bucket.
    let o = r
        .hf(&owner, repo, &["--json", "object-lock"])
        .output()
        .unwrap();
    let v = json(&o);
    assert_eq!(
        (v["enabled"].as_bool(), v["mode"].as_str()),
        (Some(true), Some("COMPLIANCE")),
        "{v}"
    );
    assert_eq!(v["window_days"], 1);

    // First backup: everything it wrote is new, so the store's default rule already covers it;
    // holdfast still extends what it reused (config, key).
    let o = r
        .hf(&owner, repo, &["--json", "backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b1 = json(&o);
    assert!(b1["object_lock"]["needed"].as_u64().unwrap() > 10, "{b1}");
    let o = r
        .hf(&owner, repo, &["--json", "object-lock", "--verify"])
        .output()
        .unwrap();
    let v = json(&o);
    assert_eq!(o.status.code(), Some(0), "{v}");
    assert_eq!(v["verified_snapshots"], 1);
    assert_eq!(v["short"].as_array().unwrap().len(), 0, "{v}");
    let first_packs: Vec<String> = packs(&r.versions("hf-lock", "repo/"))
        .iter()
        .map(|(k, _, _)| k.clone())
        .collect();
    assert!(first_packs.len() >= 3, "{first_packs:?}");

    // A locked version cannot be deleted, not even by the bucket owner.
    let (key, version, _) = packs(&r.versions("hf-lock", "repo/"))[0].clone();
    let a = r.s3(
        &owner,
        "DELETE",
        &format!("/hf-lock/{key}?versionId={version}"),
        None,
        &[],
    );
    assert_eq!(
        a.status, 403,
        "deleting a locked version must be refused: {}",
        a.body
    );

    // A second backup 30 hours later reuses the first one's packs, whose locks (1 day from
    // when they were written, plus holdfast's slack) end too early for it; a user who may
    // write but not extend locks gets a warning and exit code 3, not plain success.
    let writer = r.user("hf-lock-writer");
    r.policy(
        "hf-lock",
        &policy(
            "hf-lock",
            &writer,
            &owner,
            &[
                "s3:PutObject",
                "s3:GetObject",
                "s3:ListBucket",
                "s3:GetBucketObjectLockConfiguration",
                "s3:GetObjectRetention",
            ],
            &[
                "s3:PutObjectRetention",
                "s3:DeleteObject",
                "s3:DeleteObjectVersion",
            ],
        ),
    );
    fs::write(src.join("f1"), b"changed").unwrap();
    let later = (Utc::now() + Duration::hours(30)).to_rfc3339();
    let at_later = |u: &User, args: &[&str]| {
        let mut c = r.hf(u, repo, args);
        c.env("HOLDFAST_NOW", &later);
        c.output().unwrap()
    };
    let o = at_later(&writer, &["backup", src.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("object lock was not extended") && err.contains("object-lock --extend"),
        "{err}"
    );
    let o = at_later(&writer, &["--json", "object-lock", "--verify"]);
    let v = json(&o);
    assert_eq!(o.status.code(), Some(4), "verify must fail: {v}");
    let short: Vec<String> = v["short"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        first_packs
            .iter()
            .any(|k| short.iter().any(|s| k.ends_with(s.as_str()))),
        "a reused pack of the first backup must be reported short: {short:?}"
    );

    // The owner extends; the store now holds everything long enough.
    let o = at_later(&owner, &["--json", "object-lock", "--extend"]);
    let v = json(&o);
    assert!(o.status.success(), "{v}");
    assert!(
        v["extend"]["extended"].as_u64().unwrap() >= short.len() as u64,
        "{v}"
    );
    let o = at_later(&owner, &["--json", "object-lock", "--verify"]);
    let v = json(&o);
    assert_eq!(o.status.code(), Some(0), "{v}");
    // 30 hours on, only the second recovery point is inside the 1-day window; what it reuses
    // from the first is what had to be extended.
    assert_eq!(v["verified_snapshots"], 1);
    // A second extension finds nothing to do: the records save the requests.
    let o = at_later(&owner, &["--json", "object-lock", "--extend"]);
    assert_eq!(json(&o)["extend"]["extended"], 0);

    // forget + prune on a locked bucket: the snapshot disappears from the listing (delete
    // markers), but every locked version is still in the store and cannot be deleted.
    let o = at_later(&owner, &["forget", "--keep-last", "1", "--prune"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let after = r.versions("hf-lock", "repo/");
    for k in &first_packs {
        assert!(
            after.iter().any(|(key, _, marker)| key == k && !marker),
            "locked pack {k} must survive prune as a version"
        );
    }
    r.hf(&owner, repo, &["check", "--read-data"])
        .assert()
        .success();
}

/// Least privilege on a store that enforces it: the backup user may write, read and list but
/// never delete (a bucket policy); backups succeed, while forget/prune with its credentials
/// fail with a permission error that leaves the repository clean; prune with the owner's
/// credentials works.
#[test]
fn rgw_backup_credentials_cannot_delete() {
    if skip() {
        return;
    }
    let (r, owner, tmp, src) = setup("hf-nodelete", None, 22, 20);
    let backup = r.user("hf-backup-only");
    r.policy(
        "hf-nodelete",
        &policy(
            "hf-nodelete",
            &backup,
            &owner,
            &[
                "s3:PutObject",
                "s3:GetObject",
                "s3:ListBucket",
                "s3:GetBucketObjectLockConfiguration",
            ],
            &[
                "s3:DeleteObject",
                "s3:DeleteObjectVersion",
                "s3:PutBucketPolicy",
            ],
        ),
    );
    let repo = "s3://hf-nodelete/repo";
    r.hf(&backup, repo, &["init", "--pack-size-mib", "1"])
        .assert()
        .success();
    for i in 0..2 {
        fs::write(src.join("round"), format!("{i}")).unwrap();
        let o = r
            .hf(&backup, repo, &["backup", src.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "backup {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // The policy really holds: a direct DELETE as the backup user is refused.
    let (key, _, _) = packs(&r.versions("hf-nodelete", "repo/"))[0].clone();
    let a = r.s3(&backup, "DELETE", &format!("/hf-nodelete/{key}"), None, &[]);
    assert_eq!(a.status, 403, "{}", a.body);
    // forget/prune with the backup credentials: a permission error, nothing lost.
    let o = r
        .hf(&backup, repo, &["forget", "--keep-last", "1", "--prune"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "prune must fail without delete permission"
    );
    assert!(err.contains("permission denied"), "{err}");
    r.hf(&owner, repo, &["check", "--read-data"])
        .assert()
        .success();
    // The owner's credentials prune; the newest snapshot restores.
    let o = r
        .hf(
            &owner,
            repo,
            &["--json", "forget", "--keep-last", "1", "--prune"],
        )
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    support::check_and_restore_latest(&|a| r.hf(&owner, repo, a), tmp.path(), &src);
}

/// `protect` on a workload whose repository is a locked bucket: the backup extends the locks by
/// itself, and `status` reports the repository as immutable through the store's Object Lock.
#[test]
fn rgw_status_reports_object_lock_and_protect_extends_it() {
    if skip() {
        return;
    }
    let (r, owner, tmp, src) = setup("hf-status", Some(("GOVERNANCE", 2)), 23, 10);
    let url = format!(
        "s3://hf-status/repo?endpoint={}&region={}&env=HFRGW",
        r.env["RGW_ENDPOINT"], r.env["RGW_REGION"]
    );
    let toml = format!(
        r#"
[repository.main]
url = "{url}"
password-env = "TEST_RGW_PW"

[class.critical]
rpo = "1h"
rto = "1h"
keep = {{ last = 5 }}

[[source]]
name = "data"
kind = "path"
path = "{}"
class = "critical"
strategy = "backup"
"#,
        src.display()
    );
    let cfg = tmp.path().join("holdfast.toml");
    fs::write(&cfg, toml).unwrap();
    let run = |args: &[&str], now: &str| {
        let mut c = assert_cmd::Command::cargo_bin("holdfast").unwrap();
        c.env_clear()
            .env("HOLDFAST_NOW", now)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HFRGW_ACCESS_KEY_ID", &owner.key)
            .env("HFRGW_SECRET_ACCESS_KEY", &owner.secret)
            .env("TEST_RGW_PW", "rgw status")
            .env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .env("HOLDFAST_STATE_DIR", tmp.path().join("state"))
            .arg("--config")
            .arg(&cfg)
            .args(args);
        c.output().unwrap()
    };
    // protect at a time: a backup must complete; its report comes back.
    let protect = |now: &str| {
        let v = json(&run(&["--json", "protect"], now));
        let jobs = v["protect"][0]["jobs"].as_array().unwrap();
        assert!(
            jobs.iter()
                .any(|j| j["job"] == "backup" && j["state"] == "completed"),
            "{v}"
        );
        v
    };
    // protect creates the repository on first use.
    let v = protect(&Utc::now().to_rfc3339());
    let repo = &v["status"]["repositories"][0];
    let imm = repo["immutability"].as_str().unwrap();
    assert!(
        imm.contains("S3 Object Lock GOVERNANCE mode, 2d") && imm.contains("enforced by the store"),
        "{repo}"
    );
    // Three hours on, the next backup is due; it reuses every pack of the first, whose locks
    // end 2 days after they were written, too early for it. protect extends them, and the
    // store, asked object by object, agrees.
    let later = (Utc::now() + Duration::hours(3)).to_rfc3339();
    protect(&later);
    let o = r
        .hf(
            &owner,
            "s3://hf-status/repo",
            &["--json", "object-lock", "--verify"],
        )
        .env("HOLDFAST_PASSWORD", "rgw status")
        .env("HOLDFAST_NOW", &later)
        .output()
        .unwrap();
    let v = json(&o);
    assert_eq!(o.status.code(), Some(0), "{v}");
    assert_eq!(v["verified_snapshots"], 2, "{v}");
}

/// Whoever holds delete permission (a compromised host) deletes every object of the repository.
/// On a locked bucket the data stays as object versions, and `object-lock --undelete-since`
/// brings the repository back, byte for byte, without the password; a dry run changes nothing.
#[test]
fn rgw_deleted_repository_comes_back_from_locked_versions() {
    if skip() {
        return;
    }
    let (r, owner, tmp, src) = setup("hf-undelete", Some(("COMPLIANCE", 1)), 24, 20);
    let repo = "s3://hf-undelete/repo";
    r.hf(&owner, repo, &["init", "--pack-size-mib", "1"])
        .assert()
        .success();
    for i in 0..2 {
        fs::write(src.join("round"), format!("{i}")).unwrap();
        r.hf(&owner, repo, &["backup", src.to_str().unwrap()])
            .assert()
            .success();
    }
    // Sessions and the like were deleted during the backups: before `since`, so they stay gone.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let since = Utc::now().to_rfc3339();
    // The objects in sight: keys with a version and no delete marker (sessions ended during
    // the backups have one); a key written twice has two versions but counts once.
    let all = r.versions("hf-undelete", "repo/");
    let deleted: std::collections::BTreeSet<&str> = all
        .iter()
        .filter(|(_, _, marker)| *marker)
        .map(|(k, _, _)| k.as_str())
        .collect();
    let live: Vec<String> = all
        .iter()
        .filter(|(k, _, _)| !deleted.contains(k.as_str()))
        .map(|(k, _, _)| k.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(live.len() > 10, "{live:?}");
    for k in &live {
        let a = r.s3(&owner, "DELETE", &format!("/hf-undelete/{k}"), None, &[]);
        assert_eq!(a.status, 204, "{k}: {}", a.body);
    }
    let o = r.hf(&owner, repo, &["snapshots"]).output().unwrap();
    assert_eq!(o.status.code(), Some(10), "the repository must look gone");

    let undelete = |dry: bool| {
        let mut args = vec!["--json", "object-lock", "--undelete-since", since.as_str()];
        if dry {
            args.push("--dry-run");
        }
        let o = r
            .hf(&owner, repo, &args)
            .env_remove("HOLDFAST_PASSWORD")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        json(&o)["objects"].as_array().unwrap().len()
    };
    assert_eq!(undelete(true), live.len());
    let o = r.hf(&owner, repo, &["snapshots"]).output().unwrap();
    assert_eq!(o.status.code(), Some(10), "a dry run changes nothing");
    assert_eq!(undelete(false), live.len());
    // Nothing left to undo.
    assert_eq!(undelete(true), 0);
    let o = r
        .hf(&owner, repo, &["--json", "snapshots"])
        .output()
        .unwrap();
    assert_eq!(json(&o).as_array().unwrap().len(), 2);
    support::check_and_restore_latest(&|a| r.hf(&owner, repo, a), tmp.path(), &src);
}
