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
    let h = s.get("/healthz").unwrap();
    assert_eq!(h.body, "ok\n");
    assert!(
        h.headers
            .iter()
            .any(|(k, v)| k == "cache-control" && v == "no-store"),
        "{h:?}"
    );
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

fn jobs_of(v: &Value, source: &str) -> Vec<Value> {
    v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["source"] == source)
        .cloned()
        .collect()
}

/// kill -9 of the service in the middle of a backup: the job dies with it, the repository
/// checks clean, and the next start records the interrupted job as failed and catches up.
#[test]
fn kill_9_mid_job_is_recorded_and_caught_up() {
    let w = Svc::new("1h", "");
    // Enough data that the backup is still writing when the kill comes.
    support::run::write_random_files(&w.dir.path().join("data"), "big", 40, 2 << 20, 7);
    let slow = "pre = \"sleep 1\"\n";
    let body = fs::read_to_string(w.dir.path().join("holdfast.toml")).unwrap();
    fs::write(
        w.dir.path().join("holdfast.toml"),
        body.replace(
            "strategy = \"backup\"\n",
            &format!("strategy = \"backup\"\n{slow}"),
        ),
    )
    .unwrap();
    let mut s = w.serve();
    s.wait_for("the backup to run", Duration::from_secs(30), |v| {
        v["running"].as_array().is_some_and(|r| !r.is_empty())
    });
    std::thread::sleep(Duration::from_millis(1300));
    s.kill9();
    // The job died with the service (no orphan keeps writing).
    std::thread::sleep(Duration::from_millis(500));
    let ps = Command::new("pgrep")
        .args(["-f", "protect --source files"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&ps.stdout).trim().is_empty(),
        "an orphaned job still runs"
    );
    let check = w.on_repo().args(["check", "--read-data"]).output().unwrap();
    assert!(
        check.status.success(),
        "the repository does not check clean after kill -9: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        w.dir
            .path()
            .join("state/service/running/files.backup.json")
            .exists(),
        "the journal lost the running job"
    );
    // The next start: the lost job is recorded as failed, then the backup catches up.
    fs::write(w.dir.path().join("holdfast.toml"), &body).unwrap();
    let s = w.serve();
    let snap = s.wait_for("the catch-up backup", Duration::from_secs(60), |v| {
        v["sources"][0]["last_success"].is_string()
    });
    let jobs = jobs_of(&snap, "files");
    let failed: Vec<_> = jobs
        .iter()
        .filter(|j| j["state"] == "failed" && j["job"] == "backup")
        .collect();
    assert_eq!(failed.len(), 1, "{jobs:#?}");
    assert!(
        failed[0]["messages"][0]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{failed:?}"
    );
    assert!(jobs
        .iter()
        .any(|j| j["state"] == "completed" && j["job"] == "backup"));
    assert!(!w
        .dir
        .path()
        .join("state/service/running/files.backup.json")
        .exists());
    let check = w.on_repo().args(["check"]).output().unwrap();
    assert!(check.status.success());
}

/// SIGTERM lets a running job finish within the stop timeout (exit 0, job completed); past
/// the timeout the job is stopped and recorded as failed, never left unrecorded.
#[test]
fn sigterm_lets_jobs_finish_or_records_them_stopped() {
    // Finishes within the timeout.
    let w = Svc::new("1h", "stop-timeout = \"30s\"\n");
    let body = fs::read_to_string(w.dir.path().join("holdfast.toml")).unwrap();
    let with_hook = |secs: u32| {
        body.replace(
            "strategy = \"backup\"\n",
            &format!("strategy = \"backup\"\npre = \"sleep {secs}\"\nhook-timeout = \"1m\"\n"),
        )
    };
    fs::write(w.dir.path().join("holdfast.toml"), with_hook(2)).unwrap();
    let mut s = w.serve();
    s.wait_for("the backup to run", Duration::from_secs(30), |v| {
        v["running"].as_array().is_some_and(|r| !r.is_empty())
    });
    let st = s.stop(Duration::from_secs(40));
    assert!(st.success(), "{st}\n{}", s.log());
    let jobs = w.holdfast_json(&["snapshots"]);
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .any(|p| p["source"] == "files"),
        "the job was not let finish: {jobs}"
    );
    // Past the timeout: stopped, recorded failed.
    let w = Svc::new("1h", "stop-timeout = \"1s\"\n");
    let body = fs::read_to_string(w.dir.path().join("holdfast.toml")).unwrap();
    fs::write(
        w.dir.path().join("holdfast.toml"),
        body.replace(
            "strategy = \"backup\"\n",
            "strategy = \"backup\"\npre = \"sleep 60\"\nhook-timeout = \"2m\"\n",
        ),
    )
    .unwrap();
    let mut s = w.serve();
    s.wait_for("the backup to run", Duration::from_secs(30), |v| {
        v["running"].as_array().is_some_and(|r| !r.is_empty())
    });
    let t = std::time::Instant::now();
    let st = s.stop(Duration::from_secs(30));
    assert!(st.success(), "{st}\n{}", s.log());
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "stop took {:?}",
        t.elapsed()
    );
    assert!(!w
        .dir
        .path()
        .join("state/service/running/files.backup.json")
        .exists());
    // A fresh service reads the record: the job is failed, with the reason.
    let s = w.serve();
    let snap = s.wait_for("the record", Duration::from_secs(30), |v| {
        !jobs_of(v, "files").is_empty()
    });
    let jobs = jobs_of(&snap, "files");
    assert!(
        jobs.iter().any(|j| j["state"] == "failed"
            && j["messages"][0]
                .as_str()
                .unwrap_or("")
                .contains("stop-timeout")),
        "{jobs:#?}"
    );
}

/// SIGHUP reloads the workload; an invalid file keeps the old one and says so; fixing it
/// clears the error.
#[test]
fn sighup_reloads_and_keeps_the_old_workload_when_the_new_one_is_invalid() {
    let w = Svc::new("1h", "");
    let s = w.serve();
    s.wait_for("the first status", Duration::from_secs(30), |v| {
        v["sources"][0]["rpo_seconds"] == 3600
    });
    w.write("2h", "");
    s.signal(libc::SIGHUP);
    s.wait_for("the new RPO", Duration::from_secs(30), |v| {
        v["sources"][0]["rpo_seconds"] == 7200 && v["config"]["error"].is_null()
    });
    let good = fs::read_to_string(w.dir.path().join("holdfast.toml")).unwrap();
    fs::write(
        w.dir.path().join("holdfast.toml"),
        good.replace("rpo = \"2h\"", "rpo = \"2 hours\""),
    )
    .unwrap();
    s.signal(libc::SIGHUP);
    let snap = s.wait_for("the reload error", Duration::from_secs(30), |v| {
        v["config"]["error"].is_string()
    });
    assert!(
        snap["config"]["error"]
            .as_str()
            .unwrap()
            .contains("holdfast.toml"),
        "{snap}"
    );
    // The old workload stays in use.
    assert_eq!(snap["sources"][0]["rpo_seconds"], 7200);
    assert!(s.get("/healthz").unwrap().status == 200);
    fs::write(w.dir.path().join("holdfast.toml"), &good).unwrap();
    s.signal(libc::SIGHUP);
    s.wait_for("the error to clear", Duration::from_secs(30), |v| {
        v["config"]["error"].is_null()
    });
}

/// Never more jobs than max-jobs; a job that cannot start within its start window is recorded
/// as expired; one that runs past its complete window is stopped and recorded as failed.
#[test]
fn limits_start_and_complete_windows() {
    let dir = tempfile::tempdir().unwrap();
    for n in ["a", "b"] {
        fs::create_dir(dir.path().join(n)).unwrap();
        fs::write(dir.path().join(n).join("f"), n).unwrap();
    }
    let w = Svc { dir };
    fs::write(
        w.dir.path().join("holdfast.toml"),
        "[repository.main]\nurl = \"repo\"\npassword-env = \"TEST_PW\"\n\n[class.critical]\nrpo = \"1h\"\nrto = \"10m\"\nstart-window = \"2s\"\ncomplete-window = \"3s\"\n\n[[source]]\nname = \"a\"\nkind = \"path\"\npaths = [\"a\"]\nclass = \"critical\"\nstrategy = \"backup\"\npre = \"sleep 30\"\nhook-timeout = \"1m\"\n\n[[source]]\nname = \"b\"\nkind = \"path\"\npaths = [\"b\"]\nclass = \"critical\"\nstrategy = \"backup\"\npre = \"sleep 30\"\nhook-timeout = \"1m\"\n\n[service]\nrefresh = \"1s\"\nmax-jobs = 1\n",
    )
    .unwrap();
    let s = w.serve();
    let snap = s.wait_for(
        "one expired and one stopped job",
        Duration::from_secs(60),
        |v| {
            let all: Vec<Value> = v["jobs"].as_array().unwrap().clone();
            all.iter().any(|j| j["state"] == "expired")
                && all.iter().any(|j| j["state"] == "failed")
        },
    );
    let jobs = snap["jobs"].as_array().unwrap();
    let expired: Vec<_> = jobs.iter().filter(|j| j["state"] == "expired").collect();
    assert!(
        expired[0]["messages"][0]
            .as_str()
            .unwrap()
            .contains("start-window"),
        "{expired:?}"
    );
    let failed: Vec<_> = jobs.iter().filter(|j| j["state"] == "failed").collect();
    assert!(
        failed[0]["messages"][0]
            .as_str()
            .unwrap()
            .contains("complete-window"),
        "{failed:?}"
    );
    assert_ne!(expired[0]["source"], failed[0]["source"], "{jobs:?}");
    // max-jobs = 1: the service never ran two at once (it said so in every snapshot).
    assert!(snap["running"].as_array().unwrap().len() <= 1);
}

/// With a maintenance window, backups never run retention; `protect --retain` (what the
/// service schedules in the window) and the first `protect` inside the window do, once per
/// window.
#[test]
fn retention_waits_for_the_maintenance_window() {
    let w = Svc::new("1h", "maintenance-window = \"02:00-03:00\"\n");
    let body = fs::read_to_string(w.dir.path().join("holdfast.toml")).unwrap();
    fs::write(
        w.dir.path().join("holdfast.toml"),
        body.replace("keep = { last = 3 }", "keep = { last = 1 }"),
    )
    .unwrap();
    let protect_at = |t: &str, args: &[&str]| {
        let o = w
            .cmd()
            .env("HOLDFAST_NOW", t)
            .args(["--json", "protect"])
            .args(args)
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stderr)));
        v
    };
    let points = || {
        w.holdfast_json(&["snapshots"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["source"] == "files")
            .count()
    };
    // Outside the window: three backups, nothing forgotten.
    for h in ["10", "12", "14"] {
        let v = protect_at(&format!("2026-12-01T{h}:00:00Z"), &[]);
        assert!(
            !v.to_string().contains("\"retention\""),
            "retention ran outside the window: {v}"
        );
    }
    assert_eq!(points(), 3);
    // Inside the window (the next day, 02:10): the first protect applies the keep policy.
    let v = protect_at("2026-12-02T02:10:00Z", &[]);
    assert!(
        v.to_string().contains("retention ran (maintenance window)"),
        "{v}"
    );
    assert_eq!(points(), 1);
    // Once per window: a second backup in the same window keeps both points.
    fs::write(w.dir.path().join("data/b.txt"), "more").unwrap();
    protect_at("2026-12-02T03:10:00Z", &[]);
    let v = protect_at("2026-12-02T02:50:00Z", &[]);
    assert!(!v.to_string().contains("maintenance window"), "{v}");
    // protect --retain applies it at once, whenever asked.
    let v = protect_at("2026-12-02T05:00:00Z", &["--retain"]);
    assert!(v.to_string().contains("retention ran"), "{v}");
    assert_eq!(points(), 1);
}

/// A random drill with the class's `drill-within` picks only among the recovery points of that
/// recent past (AWS restore testing's selection window); without it, among all.
#[test]
fn random_drills_pick_inside_the_selection_window() {
    let w = Svc::new("1h", "");
    let body = fs::read_to_string(w.dir.path().join("holdfast.toml")).unwrap();
    let set = |within: &str| {
        fs::write(
            w.dir.path().join("holdfast.toml"),
            body.replace(
                "drill-every = \"1h\"",
                &format!("drill-every = \"1h\"\n{within}"),
            ),
        )
        .unwrap()
    };
    set("drill-within = \"2d\"");
    let mut ids = Vec::new();
    for (i, day) in ["01", "05", "09", "10"].iter().enumerate() {
        fs::write(w.dir.path().join("data/a.txt"), format!("v{i}")).unwrap();
        let o = w
            .cmd()
            .env("HOLDFAST_NOW", format!("2026-11-{day}T10:00:00Z"))
            .args(["--json", "protect"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let made = v["protect"][0]["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|j| j["snapshot"].as_str())
            .unwrap_or_else(|| panic!("no backup: {v}"));
        ids.push(made.to_string());
    }
    let picked = |n: usize| -> std::collections::BTreeSet<String> {
        (0..n)
            .map(|_| {
                let o = w
                    .cmd()
                    .env("HOLDFAST_NOW", "2026-11-10T12:00:00Z")
                    .args(["--json", "drill", "files", "--random"])
                    .output()
                    .unwrap();
                let v: Value = serde_json::from_slice(&o.stdout).unwrap();
                v[0]["snapshot"].as_str().unwrap().to_string()
            })
            .collect()
    };
    // Within 2 days of Nov 10 12:00: the points of Nov 9 and Nov 10 only.
    let got = picked(12);
    assert!(
        got.iter().all(|p| ids[2..].contains(p)),
        "{got:?} not within {:?}",
        &ids[2..]
    );
    // Without the window, older points are drilled too (12 draws of 4: all from the last two
    // has chance (1/2)^12).
    set("");
    let got = picked(12);
    assert!(got.iter().any(|p| ids[..2].contains(p)), "{got:?}");
}

/// A backup that fails is recorded once (by the job itself), shown as failing with its cause,
/// and retried with backoff, not in a loop.
#[test]
fn a_failing_backup_is_recorded_once_and_retried_with_backoff() {
    let w = Svc::new("1h", "");
    fs::remove_dir_all(w.dir.path().join("data")).unwrap();
    let s = w.serve();
    let snap = s.wait_for("the failure", Duration::from_secs(30), |v| {
        v["sources"][0]["failing"] == true && !jobs_of(v, "files").is_empty()
    });
    let src = source(&snap, "files");
    assert_eq!(src["rpo_met"], false, "{snap}");
    assert!(src["last_failure_message"].is_string(), "{src}");
    // Several refreshes later: still the one failed attempt (the backoff is 30 s).
    std::thread::sleep(Duration::from_secs(4));
    let snap = s.json("/api/snapshot");
    let failed: Vec<_> = jobs_of(&snap, "files")
        .into_iter()
        .filter(|j| j["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
}

/// A repository the service cannot open (here: the wrong password) is unreadable in its
/// snapshot, and the sources in it are not met: never the last known green.
#[test]
fn an_unreadable_repository_is_shown_and_never_green() {
    let w = Svc::new("1h", "");
    let mut s = w.serve();
    s.wait_for("a backup", Duration::from_secs(30), |v| {
        v["sources"][0]["rpo_met"] == true && v["repositories"][0]["readable"] == true
    });
    assert!(s.stop(Duration::from_secs(30)).success());
    let mut c = w.cmd();
    c.env("TEST_PW", "not the password");
    let s = Served::start(c, &w.dir.path().join("serve2.log"));
    let snap = s.wait_for("the unreadable repository", Duration::from_secs(30), |v| {
        v["repositories"][0]["readable"] == false
    });
    assert_eq!(source(&snap, "files")["rpo_met"], false, "{snap}");
    let m = s.get("/metrics").unwrap().body;
    assert!(
        m.lines()
            .any(|l| l.starts_with("holdfast_repository_readable{") && l.ends_with(" 0.0")),
        "{m}"
    );
}
