//! The fleet view against a real Garage cluster (the shared bucket): three hosts, each with its
//! own state directory, host name and data, protect into ONE repository; a fourth host that
//! holds only the repository's password sees every host's sources separately with
//! `status --all-hosts`, and a host that stops reporting shows red (exit 4).
//! Set HOLDFAST_SKIP_S3=1 to opt out explicitly (CI never does).

mod support;

use std::fs;
use std::path::PathBuf;

use assert_cmd::Command;
use serde_json::Value;
use support::garage::{cluster, skip, Cluster};

const T0: &str = "2026-03-02T10:00:00Z";

fn at(mins: i64) -> String {
    (chrono::DateTime::parse_from_rfc3339(T0).unwrap() + chrono::Duration::minutes(mins))
        .to_rfc3339()
}

/// A scratch directory with one workload file per host, all naming one Garage repository.
struct Fleet {
    c: &'static Cluster,
    dir: tempfile::TempDir,
    repo: String,
}

impl Fleet {
    fn new(prefix: &str) -> Fleet {
        let c = cluster();
        let repo = c.url(&format!("{prefix}-{}", std::process::id()));
        Fleet {
            c,
            dir: tempfile::tempdir().unwrap(),
            repo,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Host `host`'s workload: `sources` are (name, data directory) pairs; its own data.
    fn host(&self, host: &str, sources: &[(&str, &str)]) {
        let mut toml = format!(
            "[repository.shared]\nurl = \"{}\"\npassword-env = \"TEST_REPO_PW\"\n\n[class.critical]\nrpo = \"1h\"\nrto = \"10m\"\nkeep = {{ last = 5 }}\n\n[service]\nheartbeat = \"5m\"\n",
            self.repo
        );
        for (name, dir) in sources {
            let d = self.path(dir);
            if !d.exists() {
                fs::create_dir_all(&d).unwrap();
                fs::write(d.join("data.txt"), format!("{name} of host {host}\n")).unwrap();
            }
            toml += &format!(
                "\n[[source]]\nname = \"{name}\"\nkind = \"path\"\npath = \"{dir}\"\nclass = \"critical\"\nstrategy = \"backup\"\nverify = \"grep -q 'host {host}' \\\"$HOLDFAST_DRILL_DIR/{dir}/data.txt\\\"\"\n"
            );
        }
        fs::write(self.path(&format!("{host}.toml")), toml).unwrap();
    }

    /// The CLI as `host` at minute `min`, with its own state directory and workload.
    fn on(&self, host: &str, min: i64, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("holdfast").unwrap();
        c.envs(&self.c.env)
            .env_remove("HOLDFAST_REPOSITORY")
            .env("TEST_REPO_PW", "s3 test")
            .env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .env("HOLDFAST_HOSTNAME", host)
            .env("HOLDFAST_STATE_DIR", self.path(&format!("state-{host}")))
            .env("HOLDFAST_CONFIG", self.path(&format!("{host}.toml")))
            .env("HOLDFAST_NOW", at(min))
            .env("TMPDIR", self.path("tmp"))
            .current_dir(self.dir.path())
            .args(args);
        fs::create_dir_all(self.path("tmp")).unwrap();
        c
    }

    fn run(&self, host: &str, min: i64, args: &[&str], code: i32) -> String {
        let o = self.on(host, min, args).output().unwrap();
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        );
        assert_eq!(
            o.status.code(),
            Some(code),
            "{host} {args:?} at +{min}m\nstdout: {out}\nstderr: {err}"
        );
        out
    }

    /// The fourth host's view: the repository and its password only, no workload. Its
    /// standard output; the exit code must be `code`.
    fn view_text(&self, min: i64, extra: &[&str], code: i32) -> String {
        let mut c = self.on(
            "viewer",
            min,
            &["status", "--all-hosts", "--repo", &self.repo],
        );
        c.args(extra)
            .env("HOLDFAST_PASSWORD", "s3 test")
            .env("HOLDFAST_CONFIG", self.path("none.toml"));
        let o = c.output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(
            o.status.code(),
            Some(code),
            "view at +{min}m\nstdout: {out}\nstderr: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    }

    /// The fourth host's view as JSON.
    fn view(&self, min: i64, code: i32) -> Value {
        let out = self.view_text(min, &["--json"], code);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["ok"], code == 0, "{v}");
        v
    }
}

fn host<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == name)
        .unwrap_or_else(|| panic!("no host {name}: {v}"))
}

fn source<'a>(h: &'a Value, name: &str) -> &'a Value {
    h["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no source {name}: {h}"))
}

fn names(h: &Value) -> Vec<&str> {
    h["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}

/// Protect (exit 4 before the first drill: the RTO is not measured yet), then drill.
fn first_run(f: &Fleet, h: &str, min: i64) {
    f.run(h, min, &["protect"], 4);
    f.run(h, min, &["drill"], 0);
}

#[test]
fn three_hosts_report_separately_and_one_that_stops_shows_red() {
    if skip() {
        return;
    }
    let f = Fleet::new("fleet-three");
    // Hosts a and b both have a source named "app" (different data); c has "logs".
    f.host("a", &[("app", "app-a"), ("docs", "docs-a")]);
    f.host("b", &[("app", "app-b")]);
    f.host("c", &[("logs", "logs-c")]);
    first_run(&f, "a", 0);
    first_run(&f, "b", 2);
    first_run(&f, "c", 4);

    let v = f.view(10, 0);
    assert_eq!(v["hosts"].as_array().unwrap().len(), 3, "{v}");
    let o = f
        .on("b", 10, &["--json", "status", "--all-hosts"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (a, b, c) = (host(&v, "a"), host(&v, "b"), host(&v, "c"));
    assert_eq!(names(a), ["app", "docs"]);
    assert_eq!(names(b), ["app"]);
    assert_eq!(names(c), ["logs"]);
    for h in [a, b, c] {
        assert_eq!(h["state"], "reporting", "{h}");
        assert_eq!(h["failing"], false, "{h}");
        for s in h["sources"].as_array().unwrap() {
            assert_eq!(s["rpo"], "met", "{s}");
            assert_eq!(s["rto"], "met", "{s}");
            assert_eq!(s["rpo_seconds"], 3600, "{s}");
        }
    }
    // Each host's "app" is its own: a's newest point is 10 minutes old, b's 8.
    assert_eq!(source(a, "app")["age_seconds"], 600, "{a}");
    assert_eq!(source(b, "app")["age_seconds"], 480, "{b}");
    assert_eq!(source(b, "app")["newest_point"], "2026-03-02T10:02:00Z");
    // The human view and the page say the same.
    let page = f.path("fleet.html");
    let text = f.view_text(10, &["--html", page.to_str().unwrap()], 0);
    assert!(
        text.contains("3 host(s): every one reporting, every source met")
            && !text.contains("FAILING"),
        "{text}"
    );
    let html = fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("<section id=fleet>") && !html.contains("class=bad"),
        "{html}"
    );

    // a and b keep reporting (protect every run, here at +30m); c stops after +4m.
    f.run("a", 30, &["protect"], 0);
    f.run("b", 30, &["protect"], 0);
    let v = f.view(32, 4);
    let c = host(&v, "c");
    assert_eq!(c["state"], "stopped", "{c}");
    assert_eq!(c["failing"], true, "{c}");
    assert!(
        c["problems"][0]
            .as_str()
            .unwrap()
            .contains("stopped reporting"),
        "{c}"
    );
    for h in ["a", "b"] {
        assert_eq!(host(&v, h)["state"], "reporting", "{v}");
        assert_eq!(host(&v, h)["failing"], false, "{v}");
    }
    // Host a's own view, through its workload's repositories (no --repo), says the same.
    let o = f
        .on("a", 32, &["--json", "status", "--all-hosts"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mine: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(host(&mine, "c")["state"], "stopped", "{mine}");
    assert_eq!(
        mine["repositories"],
        serde_json::json!(["shared"]),
        "{mine}"
    );
    // Its recovery point is still young (28 minutes, the RPO is 1 hour): red only because it
    // stopped reporting.
    assert_eq!(source(c, "logs")["rpo"], "met", "{c}");
    let page = f.path("fleet-32.html");
    let text = f.view_text(32, &["--html", page.to_str().unwrap()], 4);
    assert!(
        text.contains("host c: FAILING, stopped")
            && text.contains("FAILING: 1 of 3 host(s) (1 not reporting)"),
        "{text}"
    );
    let html = fs::read_to_string(&page).unwrap();
    assert!(html.contains("<span class=bad>stopped</span>"), "{html}");

    // c is decommissioned on purpose: retired, the fleet is green again; its sources are no
    // longer judged.
    let o = f
        .on(
            "viewer",
            33,
            &[
                "retire-host",
                "c",
                "--reason",
                "decommissioned",
                "--repo",
                &f.repo,
            ],
        )
        .env("HOLDFAST_PASSWORD", "s3 test")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = f.view(34, 0);
    let c = host(&v, "c");
    assert_eq!(c["state"], "retired", "{c}");
    assert_eq!(c["failing"], false, "{c}");
    assert!(
        c["problems"][0]
            .as_str()
            .unwrap()
            .contains("retired by viewer: decommissioned"),
        "{c}"
    );
    // A retirement without a reason is refused.
    let o = f
        .on(
            "viewer",
            33,
            &["retire-host", "b", "--reason", " ", "--repo", &f.repo],
        )
        .env("HOLDFAST_PASSWORD", "s3 test")
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));

    // A host that keeps reporting but whose source's newest point is older than its RPO is red
    // too: a backs up only docs at +70m, so its app point (from +0m) is 70 minutes old.
    f.run("a", 70, &["protect", "--source", "docs"], 4);
    f.run("b", 70, &["protect"], 0);
    let v = f.view(71, 4);
    let a = host(&v, "a");
    assert_eq!(a["state"], "reporting", "{a}");
    assert_eq!(a["failing"], true, "{a}");
    assert_eq!(source(a, "app")["rpo"], "breached", "{a}");
    assert_eq!(source(a, "docs")["rpo"], "met", "{a}");
    assert_eq!(host(&v, "b")["failing"], false, "{v}");
    // c comes back (a protect after its retirement): judged again, and met.
    f.run("c", 72, &["protect"], 0);
    let v = f.view(73, 4);
    assert_eq!(host(&v, "c")["state"], "reporting", "{v}");
    assert_eq!(host(&v, "c")["failing"], false, "{v}");
}

#[test]
fn a_point_of_one_host_does_not_count_for_another_hosts_source_of_the_same_name() {
    if skip() {
        return;
    }
    let f = Fleet::new("fleet-same-name");
    f.host("a", &[("app", "app-a")]);
    first_run(&f, "a", 0);
    // b declares "app" too, but its data is not there yet: its backup fails, it reports.
    f.host("b", &[("app", "app-b")]);
    fs::remove_dir_all(f.path("app-b")).unwrap();
    let o = f.on("b", 1, &["protect"]).output().unwrap();
    assert_ne!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = f.view(2, 4);
    assert_eq!(host(&v, "a")["failing"], false, "{v}");
    let b = host(&v, "b");
    assert_eq!(b["state"], "reporting", "{b}");
    let app = source(b, "app");
    assert_eq!(
        app["rpo"], "breached",
        "a's point must not count for b: {b}"
    );
    assert_eq!(app["newest_point"], Value::Null, "{b}");
    assert_eq!(
        app["rto"], "not_measured",
        "a's drill must not count for b: {b}"
    );
    // Once b's own data is backed up and drilled, it is met.
    fs::create_dir_all(f.path("app-b")).unwrap();
    fs::write(f.path("app-b/data.txt"), "app of host b\n").unwrap();
    first_run(&f, "b", 3);
    let v = f.view(4, 0);
    assert_eq!(source(host(&v, "b"), "app")["rpo"], "met", "{v}");
    assert_eq!(
        source(host(&v, "b"), "app")["newest_point"],
        "2026-03-02T10:03:00Z"
    );
}

/// The same fleet run by services: three `holdfast serve` processes (hosts a, b, c, each
/// with its own state directory) back up and drill into one Garage repository and write their
/// heartbeats; the viewer sees each host's sources separately, all met; the service of c
/// stops and, once its reports are older than twice its heartbeat plus the minute of grace, c
/// shows red (exit 4) while a and b stay met.
#[test]
fn three_services_report_separately_and_a_stopped_one_shows_red() {
    if skip() {
        return;
    }
    let f = Fleet::new("fleet-services");
    f.host("a", &[("app", "app-a")]);
    f.host("b", &[("app", "app-b")]);
    f.host("c", &[("logs", "logs-c")]);
    for h in ["a", "b", "c"] {
        let p = f.path(&format!("{h}.toml"));
        let t = fs::read_to_string(&p)
            .unwrap()
            .replace("heartbeat = \"5m\"", "heartbeat = \"2s\"\nrefresh = \"1s\"")
            .replace(
                "keep = { last = 5 }",
                "keep = { last = 5 }\ndrill-every = \"1h\"",
            );
        fs::write(p, t).unwrap();
    }
    let serve = |h: &str| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"));
        c.envs(&f.c.env)
            .env_remove("HOLDFAST_REPOSITORY")
            .env("TEST_REPO_PW", "s3 test")
            .env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .env("HOLDFAST_HOSTNAME", h)
            .env("HOLDFAST_STATE_DIR", f.path(&format!("state-{h}")))
            .env("HOLDFAST_CONFIG", f.path(&format!("{h}.toml")))
            .env("TMPDIR", f.path("tmp"))
            .current_dir(f.dir.path());
        support::service::Served::start(c, &f.path(&format!("serve-{h}.log")))
    };
    let (sa, sb, mut sc) = (serve("a"), serve("b"), serve("c"));
    // Real time: the viewer without a fixed clock.
    let view = || {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .envs(&f.c.env)
            .env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .env("HOLDFAST_PASSWORD", "s3 test")
            .env("HOLDFAST_HOSTNAME", "viewer")
            .env("HOLDFAST_STATE_DIR", f.path("state-viewer"))
            .env("HOLDFAST_CONFIG", f.path("none.toml"))
            .args(["--json", "status", "--all-hosts", "--repo", &f.repo])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        (o.status.code(), v)
    };
    let wait = |what: &str, limit: u64, ok: &dyn Fn(Option<i32>, &Value) -> bool| -> Value {
        let t = std::time::Instant::now();
        loop {
            let (code, v) = view();
            if ok(code, &v) {
                return v;
            }
            assert!(
                t.elapsed().as_secs() < limit,
                "waited {limit}s for {what}: exit {code:?}\n{v:#}\n{}",
                fs::read_to_string(f.path("serve-c.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    };
    let v = wait("every host met", 90, &|code, v| {
        code == Some(0) && v["hosts"].as_array().is_some_and(|h| h.len() == 3)
    });
    assert_eq!(names(host(&v, "a")), ["app"]);
    assert_eq!(names(host(&v, "b")), ["app"]);
    assert_eq!(names(host(&v, "c")), ["logs"]);
    for h in ["a", "b", "c"] {
        let s = &host(&v, h)["sources"][0];
        assert_eq!(s["rpo"], "met", "{s}");
        assert_eq!(s["rto"], "met", "{s}");
    }
    // Each service's own page agrees about its own host only.
    let snap = sa.json("/api/snapshot");
    assert_eq!(snap["host"], "a");
    assert_eq!(snap["sources"].as_array().unwrap().len(), 1);
    assert!(sc.stop(std::time::Duration::from_secs(30)).success());
    let v = wait("c to show red", 120, &|code, v| {
        code == Some(4)
            && v["hosts"]
                .as_array()
                .is_some_and(|hs| hs.iter().any(|h| h["host"] == "c" && h["failing"] == true))
    });
    assert_eq!(host(&v, "c")["state"], "stopped", "{v}");
    for h in ["a", "b"] {
        assert_eq!(host(&v, h)["failing"], false, "{v}");
    }
    drop((sa, sb));
}
