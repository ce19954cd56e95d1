//! `holdfast serve` operations: it hosts the continuous replication tasks (restarted when they
//! die, restarted and reported when they make no progress), and it speaks systemd's notify
//! protocol (READY, WATCHDOG, STOPPING) on a real datagram socket.

mod support;

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::service::Served;

fn workload(dir: &std::path::Path, body: &str) {
    fs::write(
        dir.join("holdfast.toml"),
        format!("[repository.main]\nurl = \"repo\"\npassword-env = \"TEST_PW\"\n\n{body}\n[service]\nrefresh = \"1s\"\n"),
    )
    .unwrap();
}

fn cmd(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_holdfast"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TEST_PW", "pw")
        .env("HOLDFAST_INSECURE_TEST_KDF", "1")
        .env("HOLDFAST_HOSTNAME", "ops-host")
        .env("HOLDFAST_CONFIG", dir.join("holdfast.toml"))
        .env("HOLDFAST_STATE_DIR", dir.join("state"))
        .current_dir(dir);
    c
}

/// The pids of this workload's `replicate` children.
fn replicators(dir: &std::path::Path) -> Vec<i32> {
    let o = Command::new("pgrep")
        .args(["-f", &format!("{}.*replicate --source db", dir.display())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn task(v: &Value) -> &Value {
    &v["tasks"][0]
}

/// A continuous SQLite source: the service starts its replication task; killed, the task is
/// restarted (with backoff); stopped (SIGSTOP, so it makes no progress), it is reported
/// stalled once its log lags past the RPO, then restarted; writes after that are shipped.
#[test]
fn replication_tasks_are_restarted_when_they_die_or_stall() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("app.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);")
        .unwrap();
    workload(
        d.path(),
        &format!(
            "[class.critical]\nrpo = \"4s\"\nrto = \"10m\"\nkeep = {{ last = 5 }}\n\n[[source]]\nname = \"db\"\nkind = \"sqlite\"\npath = \"{}\"\nclass = \"critical\"\nstrategy = \"backup\"\nmode = \"continuous\"\n[source.log]\ninterval = \"1s\"\nheartbeat = \"1s\"\n",
            db.display()
        ),
    );
    let s = Served::start(cmd(d.path()), &d.path().join("serve.log"));
    s.wait_for("a running task that ships", Duration::from_secs(60), |v| {
        task(v)["health"] == "running" && v["sources"][0]["rpo_met"] == true
    });
    assert_eq!(replicators(d.path()).len(), 1, "{}", s.log());
    // Killed: restarted.
    for p in replicators(d.path()) {
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    s.wait_for("the task restarted", Duration::from_secs(30), |v| {
        task(v)["restarts"].as_u64() >= Some(1) && task(v)["health"] == "running"
    });
    assert_eq!(replicators(d.path()).len(), 1);
    // Stopped: no progress, so stalled (an RPO failure too), then restarted.
    let before = replicators(d.path());
    for p in &before {
        unsafe { libc::kill(*p, libc::SIGSTOP) };
    }
    let snap = s.wait_for("the task stalled", Duration::from_secs(30), |v| {
        task(v)["health"] == "stalled"
    });
    assert_eq!(snap["sources"][0]["rpo_met"], false, "{snap}");
    s.wait_for("the stalled task replaced", Duration::from_secs(60), |v| {
        task(v)["restarts"].as_u64() >= Some(2) && task(v)["health"] == "running"
    });
    let after = replicators(d.path());
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "{before:?} {after:?}"
    );
    // And it ships again: a row written now is inside the window soon.
    c.execute("INSERT INTO t (v) VALUES ('after')", []).unwrap();
    let t = chrono::Utc::now();
    s.wait_for("the new write shipped", Duration::from_secs(30), |v| {
        v["sources"][0]["rpo_met"] == true
            && v["status"]["sources"][0]["status"]["window"][1]
                .as_str()
                .and_then(|w| chrono::DateTime::parse_from_rfc3339(w).ok())
                .is_some_and(|w| w >= t)
    });
}

/// systemd's notify protocol: READY=1 once serving, WATCHDOG=1 while the loop runs (at least
/// twice per WATCHDOG_USEC), STOPPING=1 on SIGTERM.
#[test]
fn it_speaks_systemd_notify_and_pings_the_watchdog() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir(d.path().join("data")).unwrap();
    fs::write(d.path().join("data/f"), "x").unwrap();
    workload(
        d.path(),
        "[class.critical]\nrpo = \"1h\"\nrto = \"10m\"\n\n[[source]]\nname = \"files\"\nkind = \"path\"\npaths = [\"data\"]\nclass = \"critical\"\nstrategy = \"backup\"\n",
    );
    let sock_path = d.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    // systemd sets WATCHDOG_PID to the service's pid: the shell execs into holdfast.
    let port = support::service::free_port();
    let exe = env!("CARGO_BIN_EXE_holdfast");
    let mut c = cmd(d.path());
    c.env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "2000000")
        .env("HOLDFAST_EXE", exe);
    let mut c2 = Command::new("sh");
    c2.envs(
        c.get_envs()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
    )
    .env_remove("WATCHDOG_PID")
    .current_dir(d.path())
    .args(["-c", "WATCHDOG_PID=$$ exec \"$HOLDFAST_EXE\" \"$@\"", "sh"]);
    let mut s = Served::start_on(&mut c2, &d.path().join("serve.log"), port, None);
    let mut got: Vec<String> = Vec::new();
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    while t.elapsed() < Duration::from_secs(5) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    assert!(
        got.iter().any(|m| m.contains("READY=1")),
        "{got:?}\n{}",
        s.log()
    );
    let pings = got.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(
        pings >= 4,
        "{pings} watchdog pings in 5 s (WATCHDOG_USEC 2 s): {got:?}"
    );
    assert!(s.stop(Duration::from_secs(30)).success());
    let mut tail = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        tail.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    assert!(tail.iter().any(|m| m.contains("STOPPING=1")), "{tail:?}");
}

/// With tls-cert and tls-key the service speaks HTTPS only (a client that trusts the
/// certificate gets the page; plain HTTP gets nothing); a token-file makes every request need
/// `Authorization: Bearer`.
#[test]
fn tls_and_a_bearer_token() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir(d.path().join("data")).unwrap();
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .current_dir(d.path())
        .output()
        .expect("openssl (scripts/test.sh installs it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let token = "0123456789abcdef0123456789abcdef";
    fs::write(d.path().join("token"), format!("{token}\n")).unwrap();
    let port = support::service::free_port();
    let body = format!(
        "[class.critical]\nrpo = \"1h\"\nrto = \"10m\"\n\n[[source]]\nname = \"files\"\nkind = \"path\"\npaths = [\"data\"]\nclass = \"critical\"\nstrategy = \"backup\"\n\n[service]\nrefresh = \"1s\"\ntls-cert = \"cert.pem\"\ntls-key = \"key.pem\"\ntoken-file = \"token\"\nlisten = \"127.0.0.1:{port}\"\n"
    );
    fs::write(
        d.path().join("holdfast.toml"),
        format!("[repository.main]\nurl = \"repo\"\npassword-env = \"TEST_PW\"\n\n{body}"),
    )
    .unwrap();
    let log = fs::File::create(d.path().join("serve.log")).unwrap();
    let mut child = cmd(d.path()).arg("serve").stderr(log).spawn().unwrap();
    let curl = |args: &[&str]| {
        Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let url = format!("https://127.0.0.1:{port}/healthz");
    let auth = format!("Authorization: Bearer {token}");
    let cert = d.path().join("cert.pem");
    let t = Instant::now();
    loop {
        let o = curl(&["--cacert", cert.to_str().unwrap(), "-H", &auth, &url]);
        if String::from_utf8_lossy(&o.stdout) == "200" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no HTTPS answer: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            fs::read_to_string(d.path().join("serve.log")).unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Without the token: 401; with a wrong one: 401.
    let o = curl(&["--cacert", cert.to_str().unwrap(), &url]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "401");
    let o = curl(&[
        "--cacert",
        cert.to_str().unwrap(),
        "-H",
        "Authorization: Bearer 0123456789abcdef0123456789abcdee",
        &url,
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "401");
    // A client that does not trust the certificate, and plain HTTP, get nothing.
    let o = curl(&["-H", &auth, &url]);
    assert_ne!(String::from_utf8_lossy(&o.stdout), "200");
    let o = curl(&["-H", &auth, &format!("http://127.0.0.1:{port}/healthz")]);
    assert_ne!(String::from_utf8_lossy(&o.stdout), "200");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    // A short token is refused at start, naming the file and the fix.
    fs::write(d.path().join("token"), "short\n").unwrap();
    let o = cmd(d.path()).arg("serve").output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("token") && err.contains("16 characters"),
        "{err}"
    );
}

/// It refuses to start, naming the cause and the fix: an invalid workload file (exit 2, at its
/// line), a public address without a token (exit 2), a port in use (exit 1, naming it). Its
/// log is one JSON object per line with `--log-format json`.
#[test]
fn startup_errors_name_the_cause_and_logs_can_be_json() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir(d.path().join("data")).unwrap();
    let src = "[class.critical]\nrpo = \"1h\"\nrto = \"10m\"\n\n[[source]]\nname = \"files\"\nkind = \"path\"\npaths = [\"data\"]\nclass = \"critical\"\nstrategy = \"backup\"\n";
    workload(d.path(), &format!("{src}rpo = 5\n"));
    let o = cmd(d.path()).arg("serve").output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("holdfast.toml:"));
    workload(d.path(), src);
    let o = cmd(d.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("token-file"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let o = cmd(d.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains(&port.to_string()));
    // JSON logs.
    let mut c = cmd(d.path());
    c.env("HOLDFAST_LOG_FORMAT", "json");
    let mut s = Served::start(c, &d.path().join("serve.log"));
    s.wait_for("a backup", Duration::from_secs(30), |v| {
        v["sources"][0]["last_success"].is_string()
    });
    assert!(s.stop(Duration::from_secs(30)).success());
    let log = s.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{log}");
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{l}");
    }
    assert!(log.contains("job started"), "{log}");
}
