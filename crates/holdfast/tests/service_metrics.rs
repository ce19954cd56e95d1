//! Metrics and alerts of `holdfast serve` with the real Prometheus tools: `promtool` checks
//! and unit-tests the shipped rules, a real Prometheus server scrapes a real service and fires
//! the shipped RPO alert on a real breach, `/metrics` parses as the Prometheus text format,
//! and the token guards it.
//!
//! Needs `prometheus` and `promtool` (Debian/Ubuntu: `apt-get install prometheus`; or the
//! release tarball from https://prometheus.io/download/ on PATH). The tests fail, never skip,
//! when they are missing.

mod support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::service::{free_port, request, Served};

const PW: &str = "pw";
const INSTALL: &str = "install Prometheus: `apt-get install prometheus` (Debian/Ubuntu; scripts/test.sh does it), or put prometheus and promtool from https://prometheus.io/download/ on PATH";

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/prometheus")
}

/// A Prometheus tool as a command; panics (never skips) when it is not installed.
fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(found, "{name} is not on PATH: {INSTALL}");
    Command::new(name)
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A workload directory: one path source `files` in class `critical`.
struct Svc {
    dir: tempfile::TempDir,
}

impl Svc {
    fn new(rpo: &str, service: &str) -> Svc {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("data")).unwrap();
        fs::write(dir.path().join("data/a.txt"), "first\n").unwrap();
        let s = Svc { dir };
        s.write(rpo, service);
        s
    }
    fn write(&self, rpo: &str, service: &str) {
        fs::write(
            self.dir.path().join("holdfast.toml"),
            format!(
                "[repository.main]\nurl = \"repo\"\npassword-env = \"TEST_PW\"\n\n[class.critical]\nrpo = \"{rpo}\"\nrto = \"10m\"\ndrill-every = \"1h\"\nkeep = {{ last = 3 }}\n\n[[source]]\nname = \"files\"\nkind = \"path\"\npaths = [\"data\"]\nclass = \"critical\"\nstrategy = \"backup\"\n\n[service]\nrefresh = \"1s\"\n{service}"
            ),
        )
        .unwrap();
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn cmd(&self) -> Command {
        support::service::workload_cmd(self.dir.path(), "svc-host", PW)
    }
}

/// A Prometheus server on loopback, scraping `target` every second with the shipped rules
/// loaded; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules = contrib().join("holdfast.rules.yml").canonicalize().unwrap();
        let config = dir.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: holdfast\n    static_configs:\n      - targets: [\"127.0.0.1:{target}\"]\n",
                rules.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let log = dir.path().join("prometheus.log");
        let child = tool("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start prometheus: {e}: {INSTALL}"));
        let mut p = Prometheus {
            child,
            port,
            log,
            _dir: dir,
        };
        let t = Instant::now();
        loop {
            if let Ok(r) = request(port, "GET", "/-/ready", None) {
                if r.status == 200 {
                    break;
                }
            }
            if let Some(st) = p.child.try_wait().unwrap() {
                panic!("prometheus exited ({st}):\n{}", p.log());
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "prometheus not ready within 60 s:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn api(&self, path: &str) -> Value {
        let r = request(self.port, "GET", path, None).unwrap();
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["status"], "success", "{v}");
        v["data"].clone()
    }
    /// An instant query: the result vector.
    fn query(&self, q: &str) -> Vec<Value> {
        let d = self.api(&format!("/api/v1/query?query={}", encode(q)));
        d["result"].as_array().cloned().unwrap_or_default()
    }
    /// The one value of `q` (`None`: no sample).
    fn value(&self, q: &str) -> Option<f64> {
        let r = self.query(q);
        assert!(r.len() <= 1, "{q}: more than one series: {r:?}");
        r.first()
            .map(|s| s["value"][1].as_str().unwrap().parse().unwrap())
    }
    /// The alerts Prometheus has, pending or firing.
    fn alerts(&self) -> Vec<Value> {
        self.api("/api/v1/alerts")["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
    fn alert(&self, name: &str, state: &str) -> Option<Value> {
        self.alerts()
            .into_iter()
            .find(|a| a["labels"]["alertname"] == name && a["state"] == state)
    }
    /// Poll `f` until it gives something (panics after `limit` with the log).
    fn wait<T>(&self, what: &str, limit: Duration, f: impl Fn() -> Option<T>) -> T {
        let t = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                t.elapsed() < limit,
                "waited {limit:?} for {what}; alerts: {:?}\nprometheus log:\n{}",
                self.alerts(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encoding for a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The names of the alerts in the shipped rules file.
fn shipped_alerts() -> Vec<String> {
    fs::read_to_string(contrib().join("holdfast.rules.yml"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|s| s.trim().to_string())
        .collect()
}

/// `promtool check rules`, `promtool test rules` and `promtool check config` pass on the
/// shipped files, the unit tests cover every alert, and docs/SERVICE.md lists every alert
/// and every metric.
#[test]
fn promtool_checks_and_unit_tests_the_shipped_rules() {
    let dir = contrib();
    for args in [
        vec!["check", "rules", "holdfast.rules.yml"],
        vec!["test", "rules", "holdfast.rules.test.yml"],
        vec!["check", "config", "prometheus.yml"],
    ] {
        let o = tool("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "promtool {args:?}: {}", show(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("SUCCESS"),
            "{}",
            show(&o)
        );
    }
    let alerts = shipped_alerts();
    let want = [
        "HoldfastRpoBreached",
        "HoldfastRtoBreached",
        "HoldfastDrillFailed",
        "HoldfastBackupFailing",
        "HoldfastReplicationStalled",
        "HoldfastConfigReloadFailed",
        "HoldfastSnapshotStale",
        "HoldfastServiceDown",
        "HoldfastMetricsAbsent",
    ];
    for w in want {
        assert!(alerts.iter().any(|a| a == w), "{w} not in {alerts:?}");
    }
    // Every alert has a test that expects it to fire, and one that expects it quiet.
    let tests = fs::read_to_string(dir.join("holdfast.rules.test.yml")).unwrap();
    let blocks: Vec<&str> = tests.split("- eval_time:").skip(1).collect();
    for a in &alerts {
        let mine: Vec<&&str> = blocks
            .iter()
            .filter(|b| b.contains(&format!("alertname: {a}\n")))
            .collect();
        assert!(
            mine.iter().any(|b| b.contains("exp_labels")),
            "no test shows {a} firing"
        );
        assert!(
            mine.iter().any(|b| b.contains("exp_alerts: []")),
            "no test shows {a} quiet"
        );
    }
    let docs =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/SERVICE.md"))
            .unwrap();
    let section = docs
        .split("## Metrics and alerts")
        .nth(1)
        .expect("docs/SERVICE.md has a section \"Metrics and alerts\"");
    for m in holdfast_service::metrics::names() {
        assert!(
            section.contains(&format!("`{m}`")),
            "docs/SERVICE.md does not list {m}"
        );
    }
    for a in &alerts {
        assert!(
            section.contains(&format!("`{a}`")),
            "docs/SERVICE.md does not list {a}"
        );
    }
}

/// A real Prometheus scrapes a real service: the metrics of a met source arrive with the
/// service's own values; then the source's backups fail and its RPO is a few seconds, and
/// Prometheus sees rpo_met go to 0 and the shipped HoldfastRpoBreached and
/// HoldfastBackupFailing alerts fire; an invalid workload on SIGHUP fires
/// HoldfastConfigReloadFailed; a killed service makes HoldfastServiceDown pending.
#[test]
fn prometheus_scrapes_the_service_and_fires_the_shipped_alerts() {
    let t0 = Instant::now();
    let phase = |what: &str| eprintln!("{:>6.1}s {what}", t0.elapsed().as_secs_f64());
    let w = Svc::new("1h", "");
    let mut s = Served::start(w.cmd(), &w.path("serve.log"));
    s.wait_for("a backup", Duration::from_secs(90), |v| {
        v["sources"][0]["last_success"].is_string() && v["sources"][0]["rpo_met"] == true
    });
    phase("backed up");
    let p = Prometheus::start(s.port);
    phase("prometheus ready");
    let sel = "{job=\"holdfast\",source=\"files\",class=\"critical\",host=\"svc-host\"}";
    let q = |m: &str| format!("{m}{sel}");
    p.wait(
        "holdfast_source_rpo_met == 1 in Prometheus",
        Duration::from_secs(60),
        || (p.value(&q("holdfast_source_rpo_met")) == Some(1.0)).then_some(()),
    );
    phase("scraped: rpo_met 1");
    assert_eq!(p.value(&q("holdfast_source_rpo_seconds")), Some(3600.0));
    assert_eq!(p.value(&q("holdfast_source_rto_seconds")), Some(600.0));
    assert_eq!(p.value(&q("holdfast_source_failing")), Some(0.0));
    assert_eq!(p.value("up{job=\"holdfast\"}"), Some(1.0));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        p.value(&format!(
            "holdfast_up{{job=\"holdfast\",host=\"svc-host\",version=\"{version}\"}}"
        )),
        Some(1.0)
    );
    // The same values as the service's own JSON.
    let snap = s.json("/api/snapshot");
    let src = &snap["sources"][0];
    let success =
        chrono::DateTime::parse_from_rfc3339(src["last_success"].as_str().unwrap()).unwrap();
    let age = p
        .value(&q("holdfast_source_recovery_point_age_seconds"))
        .unwrap();
    assert!((0.0..3600.0).contains(&age), "{age}");
    let ts = p
        .value(&q("holdfast_source_recovery_point_timestamp_seconds"))
        .unwrap();
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(ts <= now + 1.0 && ts > now - 3600.0, "{ts} vs {now}");
    assert_eq!(
        p.value(&q("holdfast_source_last_success_timestamp_seconds")),
        Some(success.timestamp_millis() as f64 / 1000.0)
    );
    assert_eq!(
        p.value(&q("holdfast_source_last_job_read_bytes")),
        src["last_job_bytes_read"].as_f64()
    );
    assert!(p.value(&q("holdfast_source_last_job_read_bytes")).unwrap() > 0.0);
    let snap_ts = p
        .value("holdfast_snapshot_timestamp_seconds{job=\"holdfast\",host=\"svc-host\"}")
        .unwrap();
    // Renewed every second ([service] refresh = 1s; scraped every second).
    assert!(
        snap_ts <= now + 1.0 && snap_ts > now - 30.0,
        "{snap_ts} vs {now}"
    );
    assert_eq!(
        p.value("holdfast_repository_readable{job=\"holdfast\",repository=\"main\"}"),
        Some(1.0)
    );
    assert!(
        p.value("holdfast_repository_size_bytes{job=\"holdfast\",repository=\"main\"}")
            .unwrap()
            > 0.0
    );
    assert_eq!(
        p.value("holdfast_config_reload_failed{job=\"holdfast\"}"),
        Some(0.0)
    );
    // Met: the rule has evaluated (the rule group ran with these samples) and stays quiet.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        p.alerts()
            .iter()
            .all(|a| a["labels"]["alertname"] != "HoldfastRpoBreached"),
        "{:?}",
        p.alerts()
    );

    // The breach: backups fail (the data is gone) and the RPO is 3 s.
    fs::rename(w.path("data"), w.path("data.moved")).unwrap();
    w.write("3s", "");
    s.signal(libc::SIGHUP);
    p.wait(
        "holdfast_source_rpo_met == 0",
        Duration::from_secs(90),
        || (p.value(&q("holdfast_source_rpo_met")) == Some(0.0)).then_some(()),
    );
    phase("rpo_met 0");
    let a = p.wait(
        "HoldfastRpoBreached firing",
        Duration::from_secs(30),
        || p.alert("HoldfastRpoBreached", "firing"),
    );
    assert_eq!(a["labels"]["source"], "files", "{a}");
    assert_eq!(a["labels"]["host"], "svc-host", "{a}");
    assert_eq!(a["labels"]["severity"], "critical", "{a}");
    assert_eq!(
        a["annotations"]["summary"], "svc-host/files: RPO breached",
        "{a}"
    );
    assert_eq!(p.value(&q("holdfast_source_rpo_seconds")), Some(3.0));
    phase("HoldfastRpoBreached firing");
    p.wait(
        "HoldfastBackupFailing firing",
        Duration::from_secs(60),
        || p.alert("HoldfastBackupFailing", "firing"),
    );
    phase("HoldfastBackupFailing firing");

    // An invalid workload on SIGHUP: the old one stays, the alert fires.
    fs::write(w.path("holdfast.toml"), "this is [not toml\n").unwrap();
    s.signal(libc::SIGHUP);
    p.wait(
        "HoldfastConfigReloadFailed firing",
        Duration::from_secs(30),
        || p.alert("HoldfastConfigReloadFailed", "firing"),
    );
    assert_eq!(
        p.value("holdfast_config_reload_failed{job=\"holdfast\"}"),
        Some(1.0)
    );

    // A dead service: the scrape fails and the down alert starts (it fires after its 2m
    // `for`, which the promtool unit tests show).
    phase("HoldfastConfigReloadFailed firing");
    s.kill9();
    p.wait("up == 0", Duration::from_secs(30), || {
        (p.value("up{job=\"holdfast\"}") == Some(0.0)).then_some(())
    });
    p.wait(
        "HoldfastServiceDown pending",
        Duration::from_secs(30),
        || p.alert("HoldfastServiceDown", "pending"),
    );
}

/// `holdfast serve` as a child, waited for up to `limit` (killed and failed if it is still
/// running: a refused start must exit, not serve).
fn run_briefly(mut c: Command, limit: Duration) -> Output {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("holdfast serve did not exit within {limit:?}: {}", show(&o));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// A non-loopback address without a token is refused (exit 2, naming token-file), whether it
/// comes from the workload or from --listen; with a token, /metrics without it is 401 and
/// with it 200, and what it serves parses as the Prometheus text format (promtool check
/// metrics).
#[test]
fn metrics_parse_and_a_token_guards_them() {
    let port = free_port();
    let w = Svc::new("1h", &format!("listen = \"0.0.0.0:{port}\"\n"));
    let mut c = w.cmd();
    c.arg("serve");
    let o = run_briefly(c, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("token-file"),
        "{}",
        show(&o)
    );
    w.write("1h", "");
    let mut c = w.cmd();
    c.args(["serve", "--listen", &format!("0.0.0.0:{port}")]);
    let o = run_briefly(c, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("token-file"),
        "{}",
        show(&o)
    );

    let token = "0123456789abcdef0123456789abcdef";
    fs::write(w.path("token"), format!("{token}\n")).unwrap();
    w.write("1h", "token-file = \"token\"\n");
    let s = Served::start_on(
        &mut w.cmd(),
        &w.path("serve.log"),
        free_port(),
        Some(token.into()),
    );
    s.wait_for("a backup", Duration::from_secs(90), |v| {
        v["sources"][0]["last_success"].is_string()
    });
    for path in ["/metrics", "/api/status", "/healthz"] {
        let r = request(s.port, "GET", path, None).unwrap();
        assert_eq!(r.status, 401, "GET {path} without the token: {}", r.body);
        assert!(!r.body.contains("holdfast_"), "{}", r.body);
        let r = request(s.port, "GET", path, Some("0123456789abcdef-wrong-token-xx")).unwrap();
        assert_eq!(r.status, 401, "GET {path} with a wrong token");
    }
    let r = request(s.port, "GET", "/metrics", Some(token)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.headers
    );
    assert!(
        r.body.contains(
            "holdfast_source_rpo_met{source=\"files\",class=\"critical\",host=\"svc-host\"} 1.0\n"
        ),
        "{}",
        r.body
    );
    let mut check = tool("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(r.body.as_bytes())
        .unwrap();
    let o = check.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool check metrics: {}\n{}",
        show(&o),
        r.body
    );
    assert!(
        o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool check metrics found problems: {}",
        show(&o)
    );
    // A broken exposition is caught by the same check (it is not a check that passes anything).
    let mut check = tool("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(b"# TYPE holdfast_x gauge\nholdfast_x{a=\"b} 1\n")
        .unwrap();
    assert!(!check.wait_with_output().unwrap().status.success());
}
