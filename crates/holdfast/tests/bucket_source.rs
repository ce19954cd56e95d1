//! `kind = "s3"` sources on the real Garage cluster (loopback): a bucket prefix of many small
//! objects and some large ones backed up, changed by 1% and backed up again reading only the
//! changed objects, deletions recorded, metadata kept, restored into a directory and into
//! another prefix without overwriting a newer object unless `--replace`, and drilled.
//! HOLDFAST_SKIP_S3=1 opts out.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use holdfast_backend_opendal::bucket::{Bucket, ObjectMeta};
use holdfast_backend_opendal::tagging::{TagRead, Tagging, Tags};
use holdfast_backend_opendal::S3Config;
use serde_json::Value;
use support::bytes;
use support::garage::{cluster, skip};

struct Setup {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl Setup {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("holdfast").unwrap();
        c.envs(&self.env)
            .env("TEST_REPO_PW", "pw")
            .env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .env("HOLDFAST_CONFIG", self.path("holdfast.toml"))
            .env("HOLDFAST_STATE_DIR", self.path("state"))
            .current_dir(self.dir.path())
            .args(args);
        c
    }
    fn ok(&self, c: &mut Command) -> String {
        let started = std::time::Instant::now();
        let o = c.output().unwrap();
        eprintln!(
            "{:?} took {:?}",
            c.get_args().collect::<Vec<_>>(),
            started.elapsed()
        );
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "stdout: {out}\nstderr: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    }
    /// A backup of the source at `now`; the new snapshot (from `snapshots --json`).
    fn protect_at(&self, now: chrono::DateTime<chrono::Utc>) -> Value {
        // protect's exit code is the status's (no drill yet): the job's state is what counts.
        let started = std::time::Instant::now();
        let o = self
            .cmd(&["--json", "protect", "--source", "objects"])
            .env("HOLDFAST_NOW", now.to_rfc3339())
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stderr)));
        let job = v["protect"][0]["jobs"]
            .as_array()
            .unwrap_or_else(|| panic!("no jobs: {v}"))
            .iter()
            .rfind(|j| j["job"] == "backup")
            .cloned()
            .unwrap_or_else(|| panic!("no backup job: {v}"));
        assert_eq!(job["state"], "completed", "{job}");
        eprintln!("protect took {:?}", started.elapsed());
        let out = self.ok(self
            .cmd(&["--json", "--repo", "repo", "snapshots"])
            .env("HOLDFAST_PASSWORD", "pw"));
        let all: Value = serde_json::from_str(&out).unwrap();
        let all = all.as_array().unwrap_or_else(|| panic!("{all}"));
        all.last().unwrap().clone()
    }
}

/// The store a round trip runs on.
struct Store {
    env: HashMap<String, String>,
}

fn bucket(env: &HashMap<String, String>) -> Bucket {
    Bucket::connect(&S3Config {
        bucket: env["HOLDFAST_TEST_BUCKET"].clone(),
        prefix: String::new(),
        endpoint: Some(env["AWS_ENDPOINT_URL"].clone()),
        region: Some(env["AWS_REGION"].clone()),
        access_key_id: Some(env["AWS_ACCESS_KEY_ID"].clone()),
        secret_access_key: Some(env["AWS_SECRET_ACCESS_KEY"].clone()),
        env_prefix: "AWS".into(),
    })
    .unwrap()
}

fn put(b: &Bucket, key: &str, data: &[u8], ctype: Option<&str>, user: &[(&str, &str)]) {
    let meta = ObjectMeta {
        content_type: ctype.map(str::to_string),
        user: user
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let data = data.to_vec();
    b.put(key, &meta, &mut |send| send(data.clone())).unwrap();
}

fn get(b: &Bucket, key: &str) -> (Vec<u8>, ObjectMeta) {
    let m = b
        .head(key)
        .unwrap()
        .unwrap_or_else(|| panic!("{key} missing"));
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut b.reader(key, &m), &mut out).unwrap();
    (out, m)
}

fn small_key(i: u64) -> String {
    if i.is_multiple_of(50) {
        format!("o{i}")
    } else {
        format!("d{}/sub{}/o{i}", i % 20, i % 3)
    }
}

fn same_dir(dir: &Path, want: &BTreeMap<String, Vec<u8>>) {
    for (k, v) in want {
        let got = fs::read(dir.join(k)).unwrap_or_else(|e| panic!("{k}: {e}"));
        assert!(got == *v, "{k}: restored bytes differ");
    }
}

#[test]
fn bucket_source_incremental_metadata_restore_drill() {
    if skip() {
        eprintln!("HOLDFAST_SKIP_S3=1: object-storage tests opted out");
        return;
    }
    let started = std::time::Instant::now();
    let c = cluster();
    eprintln!("cluster took {:?}", started.elapsed());
    round_trip(&c.env, 1000);
}

/// The same on Ceph's radosgw (another S3 implementation: its listing, ETags and metadata).
#[test]
fn bucket_source_on_radosgw() {
    if support::rgw::skip() {
        return;
    }
    let r = support::rgw::rgw();
    let name = format!("bsrc{}", std::process::id());
    r.bucket(&name, None);
    let mut env = r.env_for(&r.owner());
    env.insert("HOLDFAST_TEST_BUCKET".into(), name);
    round_trip(&env, 300);
}

/// Objects put, backed up, changed by 1% (only those read), deleted, restored into a
/// directory and into another prefix, and drilled, on the store `c_env` names
/// (`AWS_*`, `HOLDFAST_TEST_BUCKET`); `n` small objects unless HOLDFAST_BUCKET_OBJECTS says.
fn round_trip(c_env: &HashMap<String, String>, n: u64) {
    let started = std::time::Instant::now();
    let c = Store { env: c_env.clone() };
    let b = bucket(&c.env);
    let run = format!("bsrc-{}", std::process::id());
    let src = format!("{run}/src/");
    let n: u64 = std::env::var("HOLDFAST_BUCKET_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    let mut want: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut small = Vec::new();
    for i in 0..n {
        let k = small_key(i);
        let data = bytes(i, 200 + (i as usize * 37) % 3000);
        small.push((format!("{src}{k}"), ObjectMeta::default(), data.clone()));
        want.insert(k, data);
    }
    for r in b.put_all(small, 16) {
        r.unwrap();
    }
    for j in 0..3u64 {
        let data = bytes(10_000 + j, 3_000_000 + j as usize * 1_234_567);
        put(
            &b,
            &format!("{src}big/b{j}"),
            &data,
            Some("application/x-big"),
            &[],
        );
        want.insert(format!("big/b{j}"), data);
    }
    put(
        &b,
        &format!("{src}meta.json"),
        b"{}",
        Some("application/json"),
        &[("owner", "shop"), ("tier", "gold")],
    );
    want.insert("meta.json".into(), b"{}".to_vec());
    // Names that sort around the directory `d1/` ('!' < '.' < '/' < '0'): a flat listing
    // gives `d1!x`, `d1.txt`, `d1/...`, `d10/...`, and each must land in its directory.
    for k in ["d1!x", "d1.txt"] {
        put(&b, &format!("{src}{k}"), k.as_bytes(), None, &[]);
        want.insert(k.into(), k.as_bytes().to_vec());
    }
    // Outside the prefix: not part of the source.
    put(&b, &format!("{run}/other/x"), b"not mine", None, &[]);
    // Tags, on a key that needs encoding in a URL: kept where the store implements tagging
    // (radosgw does; Garage answers 501, so it has no tags to keep).
    let tags: Tags = [
        ("class".to_string(), "gold & <b>".to_string()),
        ("owner name".to_string(), "shop".to_string()),
    ]
    .into();
    let spaced = "sp ace/é+1.txt";
    put(&b, &format!("{src}{spaced}"), b"spaced", None, &[]);
    want.insert(spaced.into(), b"spaced".to_vec());
    let tagging = b.put_tags(&format!("{src}{spaced}"), &tags).unwrap();
    if tagging {
        assert!(b.put_tags(&format!("{src}d1!x"), &tags).unwrap());
        assert_eq!(b.tagging(), Tagging::Supported);
    } else {
        assert_eq!(b.tagging(), Tagging::Unsupported);
    }

    let s = Setup {
        dir: tempfile::tempdir().unwrap(),
        env: c.env.clone(),
    };
    fs::write(
        s.path("holdfast.toml"),
        format!(
            "[repository.local]\nurl = \"repo\"\npassword-env = \"TEST_REPO_PW\"\n\n[class.critical]\nrpo = \"15m\"\nrto = \"10m\"\nkeep = {{ last = 20 }}\n\n[[source]]\nname = \"objects\"\nkind = \"s3\"\nclass = \"critical\"\nstrategy = \"backup\"\nbucket = \"{}\"\nprefix = \"{src}\"\n",
            c.env["HOLDFAST_TEST_BUCKET"]
        ),
    )
    .unwrap();
    eprintln!("setup took {:?}", started.elapsed());
    let t0 = chrono::Utc::now();
    let first = s.protect_at(t0);
    let total = want.len() as u64;
    assert_eq!(first["summary"]["files_new"], total, "{first}");
    assert_eq!(
        first["paths"][0],
        format!("s3://{}/{src}", c.env["HOLDFAST_TEST_BUCKET"])
    );

    // Change 1% of the objects, delete some, add some: only the changed and new are read.
    let keys: Vec<String> = want.keys().cloned().collect();
    let mut read_bytes = 0u64;
    let changed: Vec<String> = keys.iter().step_by(100).cloned().collect();
    for (i, k) in changed.iter().enumerate() {
        let data = bytes(99_000 + i as u64, 500 + i * 7);
        put(&b, &format!("{src}{k}"), &data, Some("text/changed"), &[]);
        read_bytes += data.len() as u64;
        want.insert(k.clone(), data);
    }
    let deleted: Vec<String> = keys
        .iter()
        .skip(7)
        .step_by(300)
        .filter(|k| !changed.contains(k))
        .cloned()
        .collect();
    for k in &deleted {
        b.delete(&format!("{src}{k}")).unwrap();
        want.remove(k);
    }
    // The same bytes written again with new metadata: the ETag stays, the last-modified does
    // not, so the object is read again.
    assert!(!changed.iter().any(|c| c == "d1.txt"));
    put(
        &b,
        &format!("{src}d1.txt"),
        b"d1.txt",
        Some("text/rewritten"),
        &[],
    );
    read_bytes += 6;
    for i in 0..5u64 {
        let k = format!("new/n{i}");
        let data = bytes(77_000 + i, 1000);
        put(&b, &format!("{src}{k}"), &data, None, &[]);
        read_bytes += data.len() as u64;
        want.insert(k, data);
    }
    // The next run is due one RPO (15 minutes) after the first.
    let t1 = std::cmp::max(
        chrono::Utc::now() + chrono::Duration::minutes(1),
        t0 + chrono::Duration::minutes(16),
    );
    let second = s.protect_at(t1);
    let sum = &second["summary"];
    assert_eq!(sum["files_changed"], changed.len() as u64 + 1, "{second}");
    assert_eq!(sum["files_new"], 5, "{second}");
    assert_eq!(
        sum["files_unmodified"],
        total - changed.len() as u64 - 1 - deleted.len() as u64,
        "{second}"
    );
    assert_eq!(
        sum["bytes_read"], read_bytes,
        "only changed objects are read: {second}"
    );
    let notes = second["warnings"].to_string();
    assert!(
        notes.contains(&format!("{} objects deleted", deleted.len()))
            && notes.contains(&deleted[0]),
        "{second}"
    );

    // Restore into a directory: every object's bytes, the metadata beside them.
    let out = s.path("out");
    let said = s.ok(&mut s.cmd(&[
        "restore",
        "--source",
        "objects",
        "--target",
        out.to_str().unwrap(),
    ]));
    let listing = std::process::Command::new("find")
        .arg(&out)
        .arg("-maxdepth")
        .arg("3")
        .output()
        .unwrap();
    assert!(
        out.is_dir(),
        "{said}\n{}",
        String::from_utf8_lossy(&listing.stdout)
    );
    let got: Vec<_> = walk(&out)
        .into_iter()
        .filter(|p| !p.ends_with(".holdfast-s3-metadata.jsonl"))
        .collect();
    assert_eq!(got.len(), want.len(), "restored objects");
    same_dir(&out, &want);
    assert!(!out.join(&deleted[0]).exists());
    let side = fs::read_to_string(out.join(".holdfast-s3-metadata.jsonl")).unwrap();
    let meta_line: Value = side
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["key"] == "meta.json")
        .unwrap();
    assert_eq!(meta_line["meta"]["content_type"], "application/json");
    assert_eq!(meta_line["meta"]["user"]["owner"], "shop");
    let spaced_line: Value = side
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["key"] == spaced)
        .unwrap();
    if tagging {
        assert_eq!(
            spaced_line["meta"]["tags"]["class"], "gold & <b>",
            "{spaced_line}"
        );
        assert_eq!(
            spaced_line["meta"]["tags"]["owner name"], "shop",
            "{spaced_line}"
        );
    } else {
        assert!(spaced_line["meta"].get("tags").is_none(), "{spaced_line}");
    }

    // Restore into another prefix: a newer object there is kept unless --replace.
    let dst = format!("{run}/restored/");
    let newer_key = format!("{dst}meta.json");
    put(&b, &newer_key, b"newer", None, &[]);
    let target = format!("s3://{}/{dst}", c.env["HOLDFAST_TEST_BUCKET"]);
    let said = s.ok(&mut s.cmd(&["restore", "--source", "objects", "--target", &target]));
    assert!(said.contains("kept 1 newer"), "{said}");
    assert_eq!(get(&b, &newer_key).0, b"newer");
    let (data, m) = get(&b, &format!("{dst}big/b1"));
    assert!(data == want["big/b1"]);
    assert_eq!(m.content_type.as_deref(), Some("application/x-big"));
    let (_, m) = get(&b, &format!("{dst}{}", changed[1]));
    assert_eq!(m.content_type.as_deref(), Some("text/changed"));
    let (_, m) = get(&b, &format!("{dst}d1.txt"));
    assert_eq!(m.content_type.as_deref(), Some("text/rewritten"));
    if tagging {
        // Tags of objects unchanged since the first point came through the second.
        for k in [spaced, "d1!x"] {
            assert!(!changed.iter().any(|c| c == k), "{k} was changed");
            assert_eq!(
                b.tags(&format!("{dst}{k}"), None).unwrap(),
                TagRead::Tags(tags.clone()),
                "{k}"
            );
        }
        assert_eq!(
            b.tags(&format!("{dst}meta.json"), None).unwrap(),
            TagRead::Tags(Tags::new())
        );
    }
    s.ok(&mut s.cmd(&[
        "restore",
        "--source",
        "objects",
        "--target",
        &target,
        "--replace",
    ]));
    let (data, m) = get(&b, &newer_key);
    assert_eq!(data, b"{}");
    assert_eq!(m.user.get("tier").map(String::as_str), Some("gold"));

    // A drill restores and compares every object.
    let drill_started = std::time::Instant::now();
    let o = s.cmd(&["--json", "drill", "objects"]).output().unwrap();
    eprintln!("drill took {:?}", drill_started.elapsed());
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        said.contains(&format!("compared {} objects", want.len())),
        "{said}"
    );
    // Every object was a single-part upload: each is also checked against its ETag (MD5).
    assert!(
        said.contains(&format!("{} of them also match their ETag", want.len())),
        "{said}"
    );

    // A key that is both an object and the prefix of others (`d1` beside `d1/...`) cannot be
    // a path: the backup fails naming both keys, and records nothing.
    let count = || {
        let out = s.ok(s
            .cmd(&["--json", "--repo", "repo", "snapshots"])
            .env("HOLDFAST_PASSWORD", "pw"));
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    let snapshots = count();
    put(&b, &format!("{src}d1"), b"both", None, &[]);
    let o = s
        .cmd(&["--json", "protect", "--source", "objects"])
        .env(
            "HOLDFAST_NOW",
            (t1 + chrono::Duration::minutes(16)).to_rfc3339(),
        )
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stderr)));
    let job = v["protect"][0]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|j| j["job"] == "backup")
        .cloned()
        .unwrap_or_else(|| panic!("no backup job: {v}"));
    assert_eq!(job["state"], "failed", "{job}");
    let said: String = job["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{job}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        said.contains(&format!(
            "object \"{src}d1\" is also the prefix of \"{src}d1/"
        )),
        "{job}"
    );
    assert_eq!(count(), snapshots, "a failed backup records no snapshot");
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `discover` lists the buckets of each `s3` source's endpoint: covered only by a source of
/// that bucket at that endpoint reading all of it; a prefix source leaves its bucket
/// unprotected (with a note); the workload's own repository bucket is not data; credentials
/// that cannot list are a finding, never silence.
#[test]
fn discover_lists_the_buckets_no_source_covers() {
    if support::rgw::skip() {
        return;
    }
    let r = support::rgw::rgw();
    let id = std::process::id();
    let (whole, part, repo, lone) = (
        format!("dbk-whole-{id}"),
        format!("dbk-part-{id}"),
        format!("dbk-repo-{id}"),
        format!("dbk-lone-{id}"),
    );
    for b in [&whole, &part, &repo, &lone] {
        r.bucket(b, None);
    }
    let endpoint = r.env["RGW_ENDPOINT"].trim_end_matches('/').to_string();
    let dir = tempfile::tempdir().unwrap();
    let toml = |whole_prefix: &str| {
        format!(
            "[repository.local]\nurl = \"repo\"\npassword-env = \"TEST_REPO_PW\"\n\n[repository.offsite]\nurl = \"s3://{repo}/hf\"\npassword-env = \"TEST_REPO_PW\"\n\n[class.critical]\nrpo = \"1h\"\nrto = \"1h\"\nkeep = {{ last = 3 }}\n\n[[source]]\nname = \"media\"\nkind = \"s3\"\nclass = \"critical\"\nstrategy = \"backup\"\nrepository = \"local\"\nbucket = \"{whole}\"\nprefix = \"{whole_prefix}\"\nendpoint = \"{endpoint}\"\n\n[[source]]\nname = \"logs\"\nkind = \"s3\"\nclass = \"critical\"\nstrategy = \"backup\"\nrepository = \"local\"\nbucket = \"{part}\"\nprefix = \"app/\"\nendpoint = \"{endpoint}\"\n"
        )
    };
    let discover = |env: &HashMap<String, String>| -> Vec<Value> {
        let o = Command::cargo_bin("holdfast")
            .unwrap()
            .envs(env)
            .env("TEST_REPO_PW", "pw")
            .env("HOLDFAST_CONFIG", dir.path().join("holdfast.toml"))
            .current_dir(dir.path())
            .args(["--json", "discover", "--no-host"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<Value>(&o.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let find = |all: &[Value], bucket: &str| -> Option<Value> {
        let loc = format!("s3://{bucket}?endpoint={endpoint}");
        all.iter().find(|f| f["location"] == loc.as_str()).cloned()
    };
    fs::write(dir.path().join("holdfast.toml"), toml("")).unwrap();
    let env = r.env_for(&r.owner());
    let all = discover(&env);
    let f = find(&all, &whole).unwrap_or_else(|| panic!("{whole} not found: {all:?}"));
    assert_eq!(f["protected_by"], "media", "{f}");
    let f = find(&all, &part).unwrap_or_else(|| panic!("{part} not found: {all:?}"));
    assert!(
        f["protected_by"].is_null(),
        "a prefix source does not cover its bucket: {f}"
    );
    assert!(
        f["note"].as_str().unwrap().contains("only its prefix app/"),
        "{f}"
    );
    let f = find(&all, &lone).unwrap_or_else(|| panic!("{lone} not found: {all:?}"));
    assert!(f["protected_by"].is_null(), "{f}");
    assert!(
        find(&all, &repo).is_none(),
        "the repository's bucket is not data: {all:?}"
    );

    // The whole-bucket source reads a prefix now: its bucket is no longer covered.
    fs::write(dir.path().join("holdfast.toml"), toml("photos/")).unwrap();
    let all = discover(&env);
    let f = find(&all, &whole).unwrap();
    assert!(f["protected_by"].is_null(), "{f}");

    // Credentials that cannot list buckets: a finding naming the fix.
    let mut bad = env.clone();
    bad.insert("AWS_SECRET_ACCESS_KEY".into(), "wrong".into());
    let all = discover(&bad);
    let f = find(&all, "*").unwrap_or_else(|| panic!("no listing failure: {all:?}"));
    assert!(
        f["detail"]
            .as_str()
            .unwrap()
            .contains("could not be listed"),
        "{f}"
    );
}

/// `versions = true` on a versioned radosgw bucket: every version (noncurrent ones of live
/// objects and of a deleted one) is in the recovery point, a later run reads only the new
/// versions, a directory restore writes each version's exact bytes, and the drill checks them.
#[test]
fn versioned_bucket_keeps_every_version() {
    if support::rgw::skip() {
        return;
    }
    let r = support::rgw::rgw();
    let name = format!("bver{}", std::process::id());
    r.bucket(&name, None);
    let a = r.s3(
        &r.owner(),
        "PUT",
        &format!("/{name}?versioning="),
        Some("<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>"),
        &[],
    );
    assert_eq!(a.status, 200, "enabling versioning: {}", a.body);
    let mut env = r.env_for(&r.owner());
    env.insert("HOLDFAST_TEST_BUCKET".into(), name.clone());
    let b = bucket(&env);
    // doc: 3 versions; gone: 2 versions, then deleted; big: 1 version of 9 MiB (ranged reads).
    let mut all: Vec<(String, Vec<u8>)> = Vec::new();
    for (key, n) in [("v/doc", 3u64), ("v/gone", 2)] {
        for i in 0..n {
            let data = bytes(i * 31 + key.len() as u64, 1000 + i as usize);
            put(&b, &format!("src/{key}"), &data, None, &[]);
            all.push((key.to_string(), data));
        }
    }
    let big = bytes(77, 9 << 20);
    put(&b, "src/big", &big, None, &[]);
    all.push(("big".into(), big));
    let tags: Tags = [("stage".to_string(), "final".to_string())].into();
    assert!(b.put_tags("src/big", &tags).unwrap());
    b.delete("src/v/gone").unwrap();
    let s = Setup {
        dir: tempfile::tempdir().unwrap(),
        env,
    };
    fs::write(
        s.path("holdfast.toml"),
        format!(
            "[repository.local]\nurl = \"repo\"\npassword-env = \"TEST_REPO_PW\"\n\n[class.critical]\nrpo = \"15m\"\nrto = \"10m\"\nkeep = {{ last = 20 }}\n\n[[source]]\nname = \"objects\"\nkind = \"s3\"\nclass = \"critical\"\nstrategy = \"backup\"\nbucket = \"{name}\"\nprefix = \"src/\"\nversions = true\n"
        ),
    )
    .unwrap();
    let t0 = chrono::Utc::now();
    let first = s.protect_at(t0);
    assert!(
        first["warnings"]
            .to_string()
            .contains("6 object versions kept (6 read now"),
        "{first}"
    );
    // One more version of doc: only it is read.
    let newest = bytes(999, 1500);
    put(&b, "src/v/doc", &newest, None, &[]);
    all.push(("v/doc".into(), newest.clone()));
    let second = s.protect_at(t0 + chrono::Duration::hours(1));
    assert!(
        second["warnings"]
            .to_string()
            .contains("7 object versions kept (1 read now, 1500 bytes)"),
        "{second}"
    );
    let out = s.path("out");
    let said = s.ok(&mut s.cmd(&[
        "restore",
        "--source",
        "objects",
        "--target",
        out.to_str().unwrap(),
    ]));
    assert!(said.contains("restored 7 object versions"), "{said}");
    // The current objects: doc (newest) and big; gone is deleted.
    assert_eq!(fs::read(out.join("v/doc")).unwrap(), newest);
    assert!(!out.join("v/gone").exists());
    // Every version, by its id, with exactly its bytes.
    let vdir = out.join(".holdfast-s3-versions");
    let mut got: Vec<(String, Vec<u8>)> = Vec::new();
    for (key, vid, marker) in r.versions(&name, "src/") {
        if marker {
            continue;
        }
        let rel = key.strip_prefix("src/").unwrap().to_string();
        let data = fs::read(vdir.join(&rel).join(&vid))
            .unwrap_or_else(|e| panic!("{rel} version {vid}: {e}"));
        got.push((rel, data));
    }
    all.sort();
    got.sort();
    assert_eq!(got.len(), 7);
    assert!(got == all, "restored versions differ from what was written");
    // Each version's tags, read with its version id: big's only version has them.
    let side = fs::read_to_string(out.join(".holdfast-s3-metadata.jsonl")).unwrap();
    let tagged: Vec<Value> = side
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["meta"]["tags"]["stage"] == "final")
        .collect();
    assert_eq!(tagged.len(), 2, "big and its one version: {side}");
    assert!(
        tagged
            .iter()
            .all(|v| v["key"].as_str().unwrap().contains("big")),
        "{side}"
    );
    // The drill compares every object and version.
    let o = s.cmd(&["--json", "drill", "objects"]).output().unwrap();
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(said.contains("7 object versions"), "{said}");
}

/// A recovery point of tagged objects (from radosgw, which implements tagging) restored into
/// a store that does not (Garage answers 501): the objects are written, and the restore fails
/// naming the tags it could not set, never exit 0.
#[test]
fn tags_that_the_target_store_cannot_take_fail_the_restore() {
    if support::rgw::skip() || skip() {
        return;
    }
    let r = support::rgw::rgw();
    let name = format!("btag{}", std::process::id());
    r.bucket(&name, None);
    let mut env = r.env_for(&r.owner());
    env.insert("HOLDFAST_TEST_BUCKET".into(), name.clone());
    let b = bucket(&env);
    let tags: Tags = [("class".to_string(), "gold".to_string())].into();
    put(&b, "src/tagged", b"tagged", None, &[]);
    put(&b, "src/plain", b"plain", None, &[]);
    assert!(b.put_tags("src/tagged", &tags).unwrap());
    let g = cluster();
    for (k, v) in [
        ("GARAGE_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("GARAGE_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    ] {
        env.insert(k.into(), g.env[v].clone());
    }
    let s = Setup {
        dir: tempfile::tempdir().unwrap(),
        env,
    };
    let config = |object_tags: bool| {
        fs::write(
            s.path("holdfast.toml"),
            format!(
                "[repository.local]\nurl = \"repo\"\npassword-env = \"TEST_REPO_PW\"\n\n[class.critical]\nrpo = \"15m\"\nrto = \"10m\"\nkeep = {{ last = 20 }}\n\n[[source]]\nname = \"objects\"\nkind = \"s3\"\nclass = \"critical\"\nstrategy = \"backup\"\nbucket = \"{name}\"\nprefix = \"src/\"\nobject-tags = {object_tags}\n"
            ),
        )
        .unwrap()
    };
    let gb = bucket(&g.env);
    let restore = |round: u32| {
        let dst = format!("btag-{}-{round}/", std::process::id());
        let target = format!(
            "s3://{}/{dst}?endpoint={}&region={}&env=GARAGE",
            g.env["HOLDFAST_TEST_BUCKET"], g.env["AWS_ENDPOINT_URL"], g.env["AWS_REGION"]
        );
        let o = s
            .cmd(&["restore", "--source", "objects", "--target", &target])
            .output()
            .unwrap();
        // The objects themselves are written either way.
        assert_eq!(get(&gb, &format!("{dst}tagged")).0, b"tagged");
        assert_eq!(get(&gb, &format!("{dst}plain")).0, b"plain");
        (o, dst)
    };
    let t0 = chrono::Utc::now();
    // Tags not kept: the point claims none, and the restore succeeds.
    config(false);
    s.protect_at(t0);
    let (o, _) = restore(1);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Tags kept from now on: the unchanged objects' tags are read (only tags, no bodies),
    // and the restore into Garage fails naming what it could not set.
    config(true);
    let second = s.protect_at(t0 + chrono::Duration::minutes(16));
    assert_eq!(second["summary"]["files_unmodified"], 2, "{second}");
    assert_eq!(second["summary"]["bytes_read"], 0, "{second}");
    let (o, dst) = restore(2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the tags of 1 objects could not be set")
            && err.contains("does not implement object tagging")
            && err.contains(&format!("{dst}tagged")),
        "{err}"
    );
    // Tags off again: the unchanged objects' nodes drop the tags they no longer claim.
    config(false);
    s.protect_at(t0 + chrono::Duration::minutes(32));
    let (o, _) = restore(3);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
