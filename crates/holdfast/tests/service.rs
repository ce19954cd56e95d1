//! `holdfast serve`: the scheduler runs what is due, the HTTP API is read-only and guarded,
//! signals behave, a killed service records the job it lost. Real binary, real repository,
//! real HTTP.

mod support;

use std::fs;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::service::{request, Served};

const PW: &str = "pw";

/// A workload directory: one path source `files` (RPO `rpo`), drills every hour.
struct Svc {
    dir: tempfile::TempDir,
}

impl Svc {
    fn new(rpo: &str, extra: &str) -> Svc {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("data")).unwrap();
        fs::write(dir.path().join("data/a.txt"), "first\n").unwrap();
        let s = Svc { dir };
        s.write(rpo, extra);
        s
    }
    fn write(&self, rpo: &str, extra: &str) {
        fs::write(
            self.dir.path().join("holdfast.toml"),
            format!(
                "[repository.main]\nurl = \"repo\"\npassword-env = \"TEST_PW\"\n\n[class.critical]\nrpo = \"{rpo}\"\nrto = \"10m\"\ndrill-every = \"1h\"\nkeep = {{ last = 3 }}\n\n[[source]]\nname = \"files\"\nkind = \"path\"\npaths = [\"data\"]\nclass = \"critical\"\nstrategy = \"backup\"\n\n[service]\nrefresh = \"1s\"\n{extra}"
            ),
        )
        .unwrap();
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_holdfast"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TEST_PW", PW)
            .env("HOLDFAST_PASSWORD", PW)
            .env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .env("HOLDFAST_HOSTNAME", "svc-host")
            .env("HOLDFAST_CONFIG", self.dir.path().join("holdfast.toml"))
            .env("HOLDFAST_STATE_DIR", self.dir.path().join("state"))
            .current_dir(self.dir.path());
        c
    }
    /// The CLI on the workload's repository directly.
    fn on_repo(&self) -> Command {
        let mut c = self.cmd();
        c.env("HOLDFAST_REPOSITORY", self.dir.path().join("repo"));
        c
    }
    fn serve(&self) -> Served {
        Served::start(self.cmd(), &self.dir.path().join("serve.log"))
    }
    fn holdfast_json(&self, args: &[&str]) -> Value {
        let o = self.on_repo().arg("--json").args(args).output().unwrap();
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| {
            panic!(
                "holdfast {args:?}: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
    }
}

fn source<'a>(snap: &'a Value, name: &str) -> &'a Value {
    snap["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no source {name} in {snap}"))
}

/// The service backs up a due source and drills it, without being asked, and its API shows
/// the outcome; nothing over HTTP changes anything.
#[test]
fn it_runs_what_is_due_and_serves_read_only() {
    let w = Svc::new("1h", "");
    let s = w.serve();
    let snap = s.wait_for("a backup and a drill", Duration::from_secs(60), |v| {
        let src = &v["sources"][0];
        src["last_success"].is_string() && src["drill_passed"] == true
    });
    let src = source(&snap, "files");
    assert_eq!(src["rpo_met"], true, "{snap}");
    assert_eq!(src["failing"], false);
    // The repository agrees: one recovery point of this host and source.
    let snaps = w.holdfast_json(&["snapshots"]);
    let mine: Vec<_> = snaps
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"] == "files" && p["hostname"] == "svc-host")
        .collect();
    assert_eq!(mine.len(), 1, "{snaps}");
    // Read-only: every other method is refused, and nothing changed.
    for m in ["POST", "PUT", "DELETE", "PATCH"] {
        for p in ["/api/status", "/api/snapshot", "/api/jobs", "/metrics", "/"] {
            let r = request(s.port, m, p, None).unwrap();
            assert_eq!(r.status, 405, "{m} {p}: {}", r.body);
        }
    }
    assert_eq!(s.get("/nothing-here").unwrap().status, 404);
    assert_eq!(
        w.holdfast_json(&["snapshots"]).as_array().unwrap().len(),
        snaps.as_array().unwrap().len()
    );
    let status = s.json("/api/status");
    assert_eq!(status["sources"][0]["facts"]["name"], "files");
    let jobs = s.json("/api/jobs");
    assert!(
        jobs["recent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["job"] == "backup" && j["state"] == "completed"),
        "{jobs}"
    );
    assert_eq!(s.get("/healthz").unwrap().body, "ok\n");
    // Not due again within the RPO's cadence: still one point after a few refreshes.
    std::thread::sleep(Duration::from_secs(3));
    let n = w
        .holdfast_json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"] == "files")
        .count();
    assert_eq!(n, 1, "a source that is not due ran again");
}
