//! End-to-end tests of the workload commands (discover, plan, protect, drill, status) on real
//! directories and real SQLite files, with an injected clock (HOLDFAST_NOW).

mod support;

use std::fs;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;

use assert_cmd::Command;
use serde_json::Value;

struct W {
    dir: tempfile::TempDir,
}

const T0: &str = "2026-03-02T10:00:00Z";

fn at(mins: i64) -> String {
    (chrono::DateTime::parse_from_rfc3339(T0).unwrap() + chrono::Duration::minutes(mins))
        .to_rfc3339()
}

impl W {
    fn new(extra: &str) -> W {
        let w = W {
            dir: tempfile::tempdir().unwrap(),
        };
        let d = w.dir.path();
        fs::create_dir_all(d.join("data/orders")).unwrap();
        fs::write(d.join("data/orders/ledger.csv"), "1,apple\n2,pear\n").unwrap();
        fs::create_dir_all(d.join("data/logs")).unwrap();
        fs::write(d.join("data/logs/app.log"), "started\n").unwrap();
        fs::create_dir_all(d.join("data/cache")).unwrap();
        let toml = format!(
            r#"
[repository.local]
url = "repo"
password-env = "TEST_REPO_PW"

[class.critical]
rpo = "15m"
rto = "10m"
keep = {{ last = 5 }}
drill-every = "7d"

[class.low]
rpo = "1d"
rto = "1h"
keep = {{ daily = 3 }}

[[source]]
name = "orders"
kind = "path"
path = "data/orders"
class = "critical"
strategy = "backup"
verify = "grep -q apple \"$HOLDFAST_DRILL_DIR/orders/ledger.csv\""

[[source]]
name = "logs"
kind = "path"
path = "data/logs"
class = "low"
strategy = "backup"

[[source]]
name = "cache"
kind = "path"
path = "data/cache"
class = "low"
strategy = "reproduce"
reproduce = {{ from = "orders", command = "cp {d}/data/orders/ledger.csv \"$HOLDFAST_SCRATCH/c\"", verify = "test -s \"$HOLDFAST_SCRATCH/c\"" }}
why-not-backup = "a copy of the ledger"

[discover]
roots = ["data"]
{extra}
"#,
            d = d.display()
        );
        fs::write(d.join("holdfast.toml"), toml).unwrap();
        w
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn cmd(&self, now: &str, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("holdfast").unwrap();
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TEST_REPO_PW", "pw")
            .env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .env("HOLDFAST_CONFIG", self.path("holdfast.toml"))
            .env("HOLDFAST_STATE_DIR", self.path("state"))
            .env("HOLDFAST_NOW", now)
            .current_dir(self.dir.path())
            .args(args);
        c
    }

    fn json(&self, now: &str, args: &[&str], code: i32) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let o = self.cmd(now, &a).output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(code),
            "{args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

fn ran(protect: &Value) -> Vec<String> {
    let mut v: Vec<String> = protect["protect"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["action"] == "ran")
        .map(|l| l["source"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn source<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["facts"]["name"] == name)
        .unwrap()
}

fn control(status: &Value, id: &str) -> bool {
    status["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap()["passed"]
        .as_bool()
        .unwrap()
}

#[test]
fn protect_runs_only_what_is_due_and_catches_up_once() {
    let w = W::new("");
    // First run: everything backed up (the repository is created from the workload).
    let p = w.json(T0, &["protect"], 4); // drills never measured: RTO control fails
    assert_eq!(ran(&p), vec!["logs", "orders"]);
    // Five minutes later: nothing is due (critical interval is 15m - 1m tick = 14m).
    let p = w.json(&at(5), &["protect"], 4);
    assert!(ran(&p).is_empty(), "{p}");
    // Fifteen minutes later: only the critical source.
    let p = w.json(&at(15), &["protect"], 4);
    assert_eq!(ran(&p), vec!["orders"]);
    // The host was off for an hour: one catch-up run, and the missed runs are recorded as expired.
    let p = w.json(&at(75), &["protect"], 4);
    assert_eq!(ran(&p), vec!["orders"]);
    let jobs = p["protect"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["source"] == "orders")
        .unwrap()["jobs"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(jobs[0]["state"], "expired", "{jobs:?}");
    assert!(
        jobs[0]["messages"][0]
            .as_str()
            .unwrap()
            .contains("3 scheduled run(s)"),
        "{jobs:?}"
    );
    assert_eq!(jobs[1]["state"], "completed");
    assert_eq!(jobs[2]["job"], "retention");
    // Snapshots carry their source and the injected time.
    let st = w.json(&at(75), &["status", "--no-discover"], 4);
    assert_eq!(source(&st, "orders")["points"].as_array().unwrap().len(), 3);
    assert_eq!(source(&st, "orders")["status"]["rpo"], "met");
}

#[test]
fn breached_rpo_turns_status_red() {
    let w = W::new("");
    w.json(T0, &["protect"], 4);
    w.json(T0, &["drill"], 0);
    let ok = w.json(&at(1), &["status", "--no-discover"], 0);
    // Each source says how it is protected: its driver, or its recipe.
    let how = |n: &str| {
        source(&ok, n)["facts"]["mechanism"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        how("orders").starts_with("files under"),
        "{}",
        how("orders")
    );
    assert!(
        how("cache").starts_with("reproduced from orders by"),
        "{}",
        how("cache")
    );
    assert!(control(&ok, "recovery-point-within-rpo"));
    // Two days later without protect: both RPOs breached, exit code 4.
    let st = w.json(&at(2 * 24 * 60), &["status", "--no-discover"], 4);
    assert_eq!(source(&st, "orders")["status"]["rpo"], "breached");
    assert_eq!(source(&st, "logs")["status"]["rpo"], "breached");
    assert!(!control(&st, "recovery-point-within-rpo"));
    // The reproduced source inherits the state of what it is reproduced from.
    assert_eq!(source(&st, "cache")["status"]["rpo"], "breached");
    // The HTML page names the sources and draws the timeline.
    let html = w.path("status.html");
    w.cmd(
        &at(2 * 24 * 60),
        &["status", "--no-discover", "--html", html.to_str().unwrap()],
    )
    .assert()
    .code(4);
    let page = fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("orders") && page.contains("breached"));
    assert!(
        !page.contains("http://") || page.contains("xmlns=\"http://www.w3.org/2000/svg\""),
        "no external resources"
    );
}

#[test]
fn drills_are_timed_recorded_and_can_fail() {
    let w = W::new("");
    w.json(T0, &["protect"], 4);
    let d = w.json(&at(1), &["drill", "orders"], 0);
    assert_eq!(d[0]["passed"], true, "{d}");
    assert_eq!(d[0]["files"], 1);
    assert!(d[0]["seconds"].as_f64().unwrap() > 0.0);
    // The reproduce recipe is run and verified in a scratch directory.
    let d = w.json(&at(2), &["drill", "cache"], 0);
    assert_eq!(d[0]["kind"], "reproduce");
    assert_eq!(d[0]["passed"], true, "{d}");
    let st = w.json(&at(3), &["status", "--no-discover"], 4); // logs never drilled
    assert_eq!(source(&st, "orders")["status"]["rto"], "met");
    assert!(source(&st, "orders")["status"]["drill_seconds"]
        .as_f64()
        .is_some());
    assert_eq!(source(&st, "logs")["status"]["rto"], "not_measured");
    // Without a source, drill runs every due drill; afterwards nothing is due.
    let d = w.json(&at(4), &["drill"], 0);
    assert_eq!(d.as_array().unwrap().len(), 1, "{d}");
    assert_eq!(d[0]["source"], "logs");
    assert_eq!(
        w.json(&at(5), &["status", "--no-discover"], 0)["controls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["passed"] == false)
            .count(),
        0
    );

    // A failing validation is a failed drill, never a pass: the verify command sees a file that
    // no longer matches what it expects.
    let t = fs::read_to_string(w.path("holdfast.toml"))
        .unwrap()
        .replace("grep -q apple", "grep -q banana");
    fs::write(w.path("holdfast.toml"), t).unwrap();
    let d = w.json(&at(6), &["drill", "orders"], 4);
    assert_eq!(d[0]["passed"], false);
    let st = w.json(&at(7), &["status", "--no-discover"], 4);
    assert_eq!(source(&st, "orders")["status"]["rto"], "breached");
}

#[test]
fn a_second_protect_does_not_run_a_source_that_is_running() {
    let w = W::new("");
    fs::create_dir_all(w.path("state")).unwrap();
    let f = fs::File::create(w.path("state/orders.lock")).unwrap();
    assert_eq!(
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let p = w.json(T0, &["protect"], 4);
    assert_eq!(ran(&p), vec!["logs"]);
    let line = p["protect"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["source"] == "orders")
        .unwrap();
    assert!(
        line["action"].as_str().unwrap().contains("another protect"),
        "{line}"
    );
    drop(f);
    assert_eq!(ran(&w.json(T0, &["protect"], 4)), vec!["orders"]);
}

#[test]
fn discover_finds_an_unprotected_sqlite_database() {
    let w = W::new("");
    let db = w.path("data/app/shop.db");
    fs::create_dir_all(db.parent().unwrap()).unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(c);
    let found = w.json(T0, &["discover", "--no-host"], 0);
    let arr = found.as_array().unwrap();
    let first = &arr[0];
    assert_eq!(
        first["kind"], "sqlite",
        "unprotected sources come first: {found}"
    );
    assert!(first["location"].as_str().unwrap().ends_with("shop.db"));
    assert!(first["protected_by"].is_null());
    // --suggest prints a block that, pasted into the workload, protects it.
    let out = w
        .cmd(T0, &["discover", "--no-host", "--suggest"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let block = &text[text.find("[[source]]").unwrap()..];
    let block = block.split("\n\n").next().unwrap().to_string();
    assert!(block.contains("kind = \"sqlite\""), "{block}");
    let mut toml = fs::read_to_string(w.path("holdfast.toml")).unwrap();
    toml.push('\n');
    toml.push_str(&block);
    fs::write(w.path("holdfast.toml"), toml).unwrap();
    let found = w.json(T0, &["discover", "--no-host"], 0);
    assert!(
        found
            .as_array()
            .unwrap()
            .iter()
            .all(|f| !f["protected_by"].is_null() || f["kind"] != "sqlite"),
        "{found}"
    );
    // plan reports the unknown source until it is declared.
    let w2 = W::new("");
    fs::create_dir_all(w2.path("data/x")).unwrap();
    let c = rusqlite::Connection::open(w2.path("data/x/y.sqlite")).unwrap();
    c.execute_batch("CREATE TABLE t(x);").unwrap();
    drop(c);
    let plan = w2.json(T0, &["plan"], 4);
    assert!(
        plan["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == "unknown-source"
                && f["subject"].as_str().unwrap().ends_with("y.sqlite")
                && f["severity"] == "high"),
        "{plan}"
    );
}

#[test]
fn plan_names_each_anti_pattern() {
    let w = W::new(
        r#"
[class.nothing]

[class.tight]
rpo = "1m"
rto = "1m"

[[source]]
name = "no-class"
kind = "path"
path = "data/logs"
strategy = "backup"

[[source]]
name = "undecided"
kind = "path"
path = "data/logs"
class = "low"

[[source]]
name = "unrecipe"
kind = "path"
path = "data/logs"
class = "critical"
strategy = "reproduce"

[[source]]
name = "too-tight"
kind = "path"
path = "data/logs"
class = "tight"
strategy = "backup"

[[source]]
name = "classless"
kind = "path"
path = "data/logs"
"#,
    );
    let plan = w.json(T0, &["plan", "--no-discover"], 4);
    let codes: Vec<(String, String)> = plan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_string(),
                f["subject"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (code, subject) in [
        ("class-without-rpo", "nothing"),
        ("class-without-rto", "nothing"),
        ("backup-without-criticality", "no-class"),
        ("no-backup-or-reproduce-decision", "undecided"),
        ("reproduce-without-recipe", "unrecipe"),
        ("reproduce-without-reason", "unrecipe"),
        ("reproduce-never-proved", "unrecipe"),
        ("reproduce-never-proved", "cache"),
        ("cadence-cannot-meet-rpo", "too-tight"),
        ("source-without-class", "classless"),
        ("no-copy-elsewhere", "critical"),
    ] {
        assert!(
            codes.contains(&(code.to_string(), subject.to_string())),
            "missing {code} for {subject}: {codes:?}"
        );
    }
    // Every finding carries the seed's anti-pattern and a fix.
    for f in plan["findings"].as_array().unwrap() {
        assert!(!f["anti_pattern"].as_str().unwrap().is_empty());
        assert!(!f["fix"].as_str().unwrap().is_empty());
    }
    // The schedule shows the derived cadence.
    let sched = plan["schedule"].as_array().unwrap();
    let orders = sched.iter().find(|s| s["source"] == "orders").unwrap();
    assert_eq!(orders["cadence"]["interval"], 840.0);
    assert_eq!(orders["cadence"]["feasible"], true);
    // A drilled recipe is no longer "never proved".
    w.json(T0, &["drill", "cache"], 0);
    let plan = w.json(T0, &["plan", "--no-discover"], 4);
    assert!(!plan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["code"] == "reproduce-never-proved" && f["subject"] == "cache"));
}

#[test]
fn workload_errors_name_file_line_and_column() {
    let w = W::new("");
    let t = fs::read_to_string(w.path("holdfast.toml"))
        .unwrap()
        .replace(
            "class = \"low\"\nstrategy = \"backup\"",
            "class = \"lo\"\nstrategy = \"backup\"",
        );
    fs::write(w.path("holdfast.toml"), t).unwrap();
    let o = w.cmd(T0, &["status", "--no-discover"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("holdfast.toml:"), "{err}");
    assert!(err.contains("class \"lo\""), "{err}");
    let o = w
        .cmd(T0, &["status", "--no-discover"])
        .env("HOLDFAST_CONFIG", w.path("missing.toml"))
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.toml"));
}

#[test]
fn class_copies_are_made_verified_and_reported() {
    let w = W::new("");
    let t = fs::read_to_string(w.path("holdfast.toml")).unwrap();
    let t = t.replace(
        "[class.critical]\n",
        "[repository.offsite]\nurl = \"offsite\"\npassword-env = \"TEST_OFFSITE_PW\"\n\n[class.critical]\ncopies = [\"offsite\"]\n",
    );
    let t = t.replace(
        "strategy = \"backup\"\n",
        "strategy = \"backup\"\nrepository = \"local\"\n",
    );
    fs::write(w.path("holdfast.toml"), t).unwrap();
    let run = |now: &str, args: &[&str]| -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let o = w
            .cmd(now, &a)
            .env("TEST_OFFSITE_PW", "other")
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stderr)))
    };
    let p = run(T0, &["protect"]);
    let orders = p["protect"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["source"] == "orders")
        .unwrap();
    let copy = orders["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "copy")
        .unwrap();
    assert_eq!(copy["state"], "completed", "{orders}");
    assert!(copy["messages"][0]
        .as_str()
        .unwrap()
        .contains("1 recovery point(s) copied and verified"));
    let st = &p["status"];
    assert_eq!(source(st, "orders")["status"]["copies"], "met", "{st}");
    assert!(control(st, "copy-in-another-location"));
    // A later point not yet copied turns the control red until protect copies it.
    let later = at(20);
    let o = w
        .cmd(&later, &["--json", "protect"])
        .env("TEST_OFFSITE_PW", "wrong")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let orders = v["protect"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["source"] == "orders")
        .unwrap();
    let copy = orders["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "copy")
        .unwrap();
    assert_eq!(copy["state"], "failed", "{orders}");
    let st = run(&later, &["status", "--no-discover"]);
    assert_eq!(
        source(&st, "orders")["status"]["copies"],
        "breached",
        "{st}"
    );
    // protect catches up the copy even though no backup is due.
    let p = run(&at(21), &["protect"]);
    let orders = p["protect"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["source"] == "orders")
        .unwrap();
    assert_eq!(orders["action"], "copied", "{orders}");
    assert_eq!(source(&p["status"], "orders")["status"]["copies"], "met");
    // Per repository: encryption, immutability, and what it holds.
    let repos = p["status"]["repositories"].as_array().unwrap();
    let off = repos.iter().find(|r| r["name"] == "offsite").unwrap();
    assert_eq!(off["encryption"], "xchacha20-poly1305");
    assert!(off["immutability"].as_str().unwrap().starts_with("none"));
    assert!(
        off["holds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "orders"),
        "{off}"
    );
}
