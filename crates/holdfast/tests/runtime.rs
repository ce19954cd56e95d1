//! The workload runtime (issue 11): one CLI vocabulary for restoring files and sources, and
//! the library runtime giving a second front end exactly what the command line does.

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use holdfast_core::keys::KdfParams;
use holdfast_core::progress::NoProgress;
use holdfast_policy::config::Workload;
use holdfast_policy::runtime::restore::{SourceRestoreRequest, SourceRestored};
use holdfast_policy::runtime::{Backends, Runtime};
use serde_json::Value;

struct W {
    dir: tempfile::TempDir,
}

impl W {
    /// A workload with a path source `docs` and an SQLite source `kv`, both backed up.
    fn new() -> W {
        let w = W {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir_all(w.path("data/docs")).unwrap();
        fs::write(w.path("data/docs/a.txt"), "alpha\n").unwrap();
        let db = w.path("kv.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("CREATE TABLE kv(k TEXT, v TEXT); INSERT INTO kv VALUES ('key', 'value');")
            .unwrap();
        drop(c);
        fs::write(
            w.path("holdfast.toml"),
            format!(
                "[repository.local]\nurl = \"repo\"\npassword-env = \"TEST_REPO_PW\"\n\n[class.critical]\nrpo = \"15m\"\nrto = \"10m\"\nkeep = {{ last = 5 }}\n\n[[source]]\nname = \"docs\"\nkind = \"path\"\npath = \"data/docs\"\nclass = \"critical\"\nstrategy = \"backup\"\n\n[[source]]\nname = \"kv\"\nkind = \"sqlite\"\npath = \"{}\"\nclass = \"critical\"\nstrategy = \"backup\"\n",
                db.display()
            ),
        )
        .unwrap();
        w
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("holdfast").unwrap();
        c.env("TEST_REPO_PW", "pw")
            .env("HOLDFAST_PASSWORD", "pw")
            .env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .env("HOLDFAST_CONFIG", self.path("holdfast.toml"))
            .env("HOLDFAST_STATE_DIR", self.path("state"))
            .env("HOLDFAST_REPOSITORY", self.path("repo"))
            .env_remove("HOLDFAST_NOW")
            .current_dir(self.dir.path())
            .args(args);
        c
    }
    /// Run and return (code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let o = self.cmd(args).output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
    fn ok(&self, args: &[&str]) -> String {
        self.code(args, 0)
    }
    fn code(&self, args: &[&str], want: i32) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, want, "{args:?}\nstdout: {out}\nstderr: {err}");
        out
    }
    /// `protect`: every job completes; exit 4 as no drill has run yet (a control fails).
    fn protect(&self) {
        let out = self.code(&["protect"], 4);
        assert_eq!(out.matches("backup completed in").count(), 2, "{out}");
    }
    /// The runtime a second front end would build, on this workload's state directory.
    fn runtime(&self) -> Runtime {
        Runtime {
            backends: Backends::builtin(),
            clock: None,
            state_dir: self.path("state"),
            kdf: KdfParams::insecure_for_tests(),
        }
    }
}

fn kv_value(db: &Path) -> String {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("SELECT v FROM kv WHERE k = 'key'", [], |r| r.get(0))
        .unwrap()
}

/// Files and sources take the same words: `--target` for where, `--replace` for over what
/// is there (before: `--replace` was refused without `--source`, and a source restore ignored
/// `--target`).
#[test]
fn restore_files_and_sources_share_target_and_replace() {
    let w = W::new();
    w.protect();
    let dir = w.path("out");
    let d = dir.to_str().unwrap();
    // Files: --target, then --replace over the non-empty directory.
    w.ok(&["restore", "--of", "docs", "latest", "--target", d]);
    assert_eq!(
        fs::read_to_string(dir.join("docs/a.txt")).unwrap(),
        "alpha\n"
    );
    let (code, _, err) = w.run(&["restore", "--of", "docs", "latest", "--target", d]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--replace"),
        "the refusal names the new word: {err}"
    );
    fs::write(dir.join("docs/a.txt"), "damaged\n").unwrap();
    w.ok(&[
        "restore",
        "--of",
        "docs",
        "latest",
        "--target",
        d,
        "--replace",
    ]);
    assert_eq!(
        fs::read_to_string(dir.join("docs/a.txt")).unwrap(),
        "alpha\n"
    );
    // An SQLite source: --target is where the file goes, --replace restores over it.
    let db = w.path("restored.db");
    let t = db.to_str().unwrap();
    w.ok(&["restore", "--source", "kv", "--target", t]);
    assert_eq!(kv_value(&db), "value");
    let (code, _, err) = w.run(&["restore", "--source", "kv", "--target", t]);
    assert_ne!(
        code, 0,
        "restoring over an existing file without --replace: {err}"
    );
    assert!(err.contains("--replace"), "{err}");
    w.ok(&["restore", "--source", "kv", "--target", t, "--replace"]);
    assert_eq!(kv_value(&db), "value");
    // A path source through --source: the same words.
    let pd = w.path("docs-out");
    let p = pd.to_str().unwrap();
    w.ok(&["restore", "--source", "docs", "--target", p]);
    fs::write(pd.join("docs/a.txt"), "damaged\n").unwrap();
    w.ok(&["restore", "--source", "docs", "--target", p, "--replace"]);
    assert_eq!(
        fs::read_to_string(pd.join("docs/a.txt")).unwrap(),
        "alpha\n"
    );
}

/// The old spellings keep working for one release (`--into`, `--overwrite`), in both modes,
/// but are no longer shown.
#[test]
fn old_spellings_are_hidden_aliases() {
    let w = W::new();
    w.protect();
    let dir = w.path("out");
    let d = dir.to_str().unwrap();
    w.ok(&["restore", "--of", "docs", "latest", d]);
    fs::write(dir.join("docs/a.txt"), "damaged\n").unwrap();
    w.ok(&["restore", "--of", "docs", "latest", d, "--overwrite"]);
    assert_eq!(
        fs::read_to_string(dir.join("docs/a.txt")).unwrap(),
        "alpha\n"
    );
    let db = w.path("restored.db");
    let t = db.to_str().unwrap();
    w.ok(&["restore", "--source", "kv", "--into", t]);
    w.ok(&["restore", "--source", "kv", "--into", t, "--overwrite"]);
    assert_eq!(kv_value(&db), "value");
    let help = w.ok(&["restore", "--help"]);
    assert!(
        help.contains("--target") && help.contains("--replace"),
        "{help}"
    );
    assert!(
        !help.contains("--into") && !help.contains("--overwrite"),
        "old spellings must be hidden: {help}"
    );
}

/// A second front end calling the runtime gets what the command line gets: the library's
/// `protect` writes what the CLI's `status` reads, and the library's source restore brings
/// back the same data as the CLI's.
#[test]
fn library_runtime_matches_the_command_line() {
    let w = W::new();
    let rt = w.runtime();
    let wl = Workload::load(&w.path("holdfast.toml")).unwrap();
    std::env::set_var("TEST_REPO_PW", "pw");
    let done = rt.protect(&wl, None, &NoProgress).unwrap();
    assert!(!done.failed(), "{:?}", done.protect);
    assert_eq!(done.protect.len(), 2);
    let out = w.code(&["--json", "status", "--no-discover"], 4);
    let cli: Value = serde_json::from_str(&out).unwrap();
    let lib = serde_json::to_value(rt.status(&wl, false, &NoProgress)).unwrap();
    for name in ["docs", "kv"] {
        let pick = |v: &Value| {
            v["sources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["facts"]["name"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("no {name} in {v}"))
        };
        let (c, l) = (pick(&cli), pick(&lib));
        assert_eq!(c["status"]["rpo"], "met", "{c}");
        assert_eq!(c["status"]["rpo"], l["status"]["rpo"]);
        assert!(c["facts"]["newest_point"].is_string(), "{c}");
        assert_eq!(
            c["facts"]["newest_point"], l["facts"]["newest_point"],
            "{c}\n{l}"
        );
        assert_eq!(c["facts"]["points"], 1, "{c}");
    }
    // The library restores what the CLI would.
    let db = w.path("lib.db");
    let req = SourceRestoreRequest {
        source: "kv".into(),
        target: Some(db.display().to_string()),
        ..Default::default()
    };
    let r = rt.restore_source(&wl, &req, &NoProgress).unwrap();
    assert!(matches!(r, SourceRestored::Tool { .. }), "{r:?}");
    assert_eq!(kv_value(&db), "value");
    let cli: Value = serde_json::from_str(&w.ok(&[
        "--json",
        "restore",
        "--source",
        "kv",
        "--target",
        w.path("cli.db").to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(
        cli["snapshot"],
        r.snapshot(),
        "both restore the newest point"
    );
    // An unknown source is a usage error (exit 2) through the runtime too.
    let (code, _, err) = w.run(&["restore", "--source", "nosuch", "--target", "x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("docs, kv"), "{err}");
}
