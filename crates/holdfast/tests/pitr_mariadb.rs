//! Point-in-time recovery of a continuous mysql source on a real MariaDB server with a binary
//! log, through the real CLI: a writer inserts a timestamped row every 100 ms while
//! `holdfast replicate` archives the binary log; the server is lost and replaced by an empty
//! one; `restore --at latest` and `--at T` must give exactly the promised rows. The stream is
//! broken (its child killed, the server crashed and restarted) and must resume without a gap.
//! The tests fail when MariaDB is missing.

use std::io::Write;
use std::process::{Child, ChildStdin, Command as Std, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, Utc};
use holdfast_policy::sources::pitr::Window;
use holdfast_policy::sources::{my_scratch, Conn};

mod support;
use support::workload::W;

const SERVER: &[&str] = &[
    "--log-bin=binlog",
    "--server-id=7",
    "--binlog-format=ROW",
    // The server's zone is not the client's nor UTC: only epoch seconds may be compared.
    "--default-time-zone=+03:00",
    // kill -9 must not lose a commit the binary log already holds.
    "--innodb-flush-log-at-trx-commit=1",
];

/// Local time zone of every holdfast run (POSIX spelling, no tzdata needed): mariadb-binlog
/// reads --stop-datetime in it unless holdfast sets TZ=UTC for it.
const LOCAL_TZ: &str = "IST-5:30";

fn maria(conn: &Conn, q: &str) -> String {
    let o = Std::new("mariadb")
        .arg(format!("--socket={}", conn.host.as_deref().unwrap()))
        .args(["--user=root", "-N", "-B", "-e", q])
        .output()
        .expect("the mariadb client (scripts/test.sh installs it)");
    assert!(
        o.status.success(),
        "mariadb {q}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn server(scratch: &std::path::Path) -> my_scratch::Server {
    let s = my_scratch::Server::start_with(scratch, Duration::from_secs(60), SERVER)
        .expect("MariaDB (scripts/test.sh installs it)");
    maria(
        &s.conn(),
        "CREATE DATABASE shop; CREATE TABLE shop.ticks(id INT AUTO_INCREMENT PRIMARY KEY, at DATETIME(6) NOT NULL)",
    );
    s
}

/// A client inserting one row stamped with its statement's start (UTC) every 100 ms.
struct Writer {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Writer {
    fn start(conn: &Conn) -> Writer {
        let mut child = Std::new("mariadb")
            .arg(format!("--socket={}", conn.host.as_deref().unwrap()))
            .args(["--user=root", "shop"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        Writer { child, stdin }
    }
    /// Write for `d`.
    fn run_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            let s = self.stdin.as_mut().unwrap();
            s.write_all(b"INSERT INTO ticks(at) VALUES (UTC_TIMESTAMP(6));\n")
                .unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    fn stop(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Every row: (id, statement start).
fn rows(conn: &Conn) -> Vec<(u64, DateTime<Utc>)> {
    let out = maria(
        conn,
        "SELECT id, DATE_FORMAT(at, '%Y-%m-%dT%H:%i:%s.%fZ') FROM shop.ticks ORDER BY id",
    );
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (id, at) = l.split_once('\t').unwrap();
            (
                id.parse().unwrap(),
                DateTime::parse_from_rfc3339(at)
                    .unwrap()
                    .with_timezone(&Utc),
            )
        })
        .collect()
}

fn workload(conn: &Conn) -> W {
    W::new(&format!(
        "[[source]]\nname = \"shop\"\nkind = \"mysql\"\nhost = \"{}\"\nuser = \"root\"\ndatabase = \"shop\"\nclass = \"critical\"\nstrategy = \"backup\"\nmode = \"continuous\"\nverify = \"SELECT count(*) >= 0 FROM ticks\"\n[source.log]\ninterval = \"1s\"\nheartbeat = \"2s\"\n",
        conn.host.as_deref().unwrap()
    ))
}

/// `holdfast replicate --source shop` in the background, its output in `replicate.out`.
fn replicate(w: &W) -> Child {
    let out = std::fs::File::create(w.path("replicate.out")).unwrap();
    Std::new(assert_cmd::cargo::cargo_bin("holdfast"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TZ", LOCAL_TZ)
        .env("TEST_REPO_PW", "pw")
        .env("HOLDFAST_PASSWORD", "pw")
        .env("HOLDFAST_INSECURE_TEST_KDF", "1")
        .env("HOLDFAST_HOSTNAME", "host-a")
        .env("HOLDFAST_CONFIG", w.path("holdfast.toml"))
        .env("HOLDFAST_STATE_DIR", w.path("state-host-a"))
        .current_dir(w.dir.path())
        .args(["replicate", "--source", "shop"])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap()
}

fn signal(c: &Child, sig: i32) {
    // SAFETY: kill with a pid this test started.
    assert_eq!(unsafe { libc::kill(c.id() as i32, sig) }, 0);
}

fn stop(mut c: Child) {
    // SAFETY: kill with a pid this test started.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let st = c.wait().unwrap();
    assert!(st.code().is_some(), "replicate died of a signal: {st}");
}

fn restore(w: &W, at: &str) -> String {
    let mut c = w.cmd(&["restore", "--source", "shop", "--at", at, "--replace"]);
    c.env("TZ", LOCAL_TZ);
    let (out, _) = w.run(&mut c, 0);
    out
}

/// The source's recoverable window, computed by its driver from the repository's snapshots.
fn window(w: &W) -> Window {
    let storage: std::sync::Arc<dyn holdfast_storage::Storage> =
        std::sync::Arc::new(holdfast_backend_local::LocalStorage::new(w.path("repo")));
    let repo = holdfast_core::Repository::open(storage, b"pw").unwrap();
    let (all, _) = holdfast_core::snapshot::load_all(&repo).unwrap();
    let bases: Vec<_> = all
        .iter()
        .filter(|e| e.snapshot.source.as_deref() == Some("shop") && e.snapshot.complete)
        .collect();
    let batches = holdfast_core::logs::batches(&all, "shop", holdfast_core::logs::LogKind::Binlog);
    let wl = holdfast_policy::config::Workload::load(&w.path("holdfast.toml")).unwrap();
    let c = wl.sources[0].driver().continuous().expect("continuous");
    c.window(&bases, &batches)
}

fn secs(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(chrono::Duration::seconds(1)).unwrap()
}

fn base_backup(w: &W) {
    let (out, err) = w.run(&mut w.cmd(&["protect", "--source", "shop"]), 4);
    assert!(!err.contains("binary log position"), "{out}{err}");
}

#[test]
fn mariadb_restores_latest_and_exact_seconds_into_a_replaced_server() {
    let t0 = Instant::now();
    let scratch = tempfile::tempdir().unwrap();
    let mut s = server(scratch.path());
    let conn = s.conn();
    let w = workload(&conn);
    let mut writer = Writer::start(&conn);
    writer.run_for(Duration::from_millis(1500));
    let rep = replicate(&w);
    writer.run_for(Duration::from_millis(1000));
    base_backup(&w);
    let base_done = Utc::now();
    writer.run_for(Duration::from_millis(5000));
    // replicate is held (its stream child runs on, spooling) while the last rows are written,
    // so that when the server is lost the spool holds log the repository does not.
    signal(&rep, libc::SIGSTOP);
    writer.run_for(Duration::from_millis(1500));
    writer.stop();
    let truth = rows(&conn);
    std::thread::sleep(Duration::from_millis(500));
    // The server is lost (SIGKILL, data directory deleted); replicate goes on.
    s.kill();
    signal(&rep, libc::SIGCONT);
    std::thread::sleep(Duration::from_millis(2500));
    stop(rep);
    s.replace_with_empty(Duration::from_secs(60)).unwrap();
    assert_eq!(
        maria(
            &conn,
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'shop'"
        ),
        "0"
    );

    // Latest: everything the stream received before the server was lost.
    let out = restore(&w, "latest");
    let got = rows(&conn);
    assert!(
        !got.is_empty() && truth.starts_with(&got),
        "not a prefix: {} of {} rows\n{out}",
        got.len(),
        truth.len()
    );
    let lost = truth.last().unwrap().1 - got.last().unwrap().1;
    eprintln!(
        "latest: {} of {} rows, newest {} behind",
        got.len(),
        truth.len(),
        lost
    );
    assert_eq!(
        got.len(),
        truth.len(),
        "latest lost {lost}\n{out}\n{}",
        std::fs::read_to_string(w.path("replicate.out")).unwrap()
    );

    // Exact targets: the rows whose statement started before T's whole second.
    let after = secs(base_done) + chrono::Duration::seconds(1);
    for (k, offset_ms) in [0i64, 1300, 2500, 2999, 3500].into_iter().enumerate() {
        let at = after + chrono::Duration::milliseconds(offset_ms);
        let text = if k % 2 == 0 {
            at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        } else {
            // The same instant, written in another zone.
            at.with_timezone(&chrono::FixedOffset::east_opt(-4 * 3600).unwrap())
                .to_rfc3339()
        };
        let out = restore(&w, &text);
        let want: Vec<_> = truth.iter().filter(|r| r.1 < secs(at)).cloned().collect();
        let got = rows(&conn);
        assert!(want.len() > 5, "too few rows before {at}");
        assert_eq!(
            got.len(),
            want.len(),
            "--at {text}: {} rows, want {} (newest {:?}, want {:?})\n{out}",
            got.len(),
            want.len(),
            got.last(),
            want.last()
        );
        assert_eq!(got, want, "--at {text}");
        assert!(
            out.contains(&format!("restored shop to {}", secs(at).to_rfc3339())),
            "{out}"
        );
    }

    // Before the window: refused, naming it.
    let before = secs(base_done) - chrono::Duration::seconds(10);
    let mut c = w.cmd(&[
        "restore",
        "--source",
        "shop",
        "--at",
        &before.to_rfc3339(),
        "--replace",
    ]);
    let (_, err) = w.run(&mut c, 1);
    assert!(err.contains("before the recoverable window"), "{err}");
    eprintln!("test took {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(60));
}

/// The pids of this test's mariadb-binlog children (their result file is under `spool`).
fn stream_children(spool: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("--raw") && cmd.contains(spool) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn mariadb_binlog_stream_resumes_without_a_gap() {
    let t0 = Instant::now();
    let scratch = tempfile::tempdir().unwrap();
    let mut s = server(scratch.path());
    let conn = s.conn();
    let w = workload(&conn);
    let mut writer = Writer::start(&conn);
    base_backup(&w);
    let rep = replicate(&w);
    writer.run_for(Duration::from_millis(2000));
    // 1. The stream's child dies.
    let spool = w.path("state-host-a").display().to_string();
    let kids = stream_children(&spool);
    assert_eq!(kids.len(), 1, "one mariadb-binlog child: {kids:?}");
    // SAFETY: a pid of a process this test's replicate started.
    unsafe { libc::kill(kids[0], libc::SIGKILL) };
    writer.run_for(Duration::from_millis(2000));
    // 2. The server crashes and comes back (a new binary log file).
    writer.stop();
    s.kill();
    std::thread::sleep(Duration::from_millis(1500));
    s.start_again(Duration::from_secs(60)).unwrap();
    let mut writer = Writer::start(&conn);
    writer.run_for(Duration::from_millis(3000));
    writer.stop();
    std::thread::sleep(Duration::from_millis(2500));
    stop(rep);
    let log = std::fs::read_to_string(w.path("replicate.out")).unwrap();
    assert!(
        log.matches("the binary log stream ended").count() >= 2,
        "the stream did not end twice:\n{log}"
    );
    // 3. A new replicate run resumes where the archive ends.
    let mut writer = Writer::start(&conn);
    let rep = replicate(&w);
    writer.run_for(Duration::from_millis(1500));
    writer.stop();
    let idle_from = Utc::now();
    let truth = rows(&conn);
    let files = maria(&conn, "SHOW BINARY LOGS");
    assert!(files.lines().count() >= 2, "{files}");
    // Idle for longer than the heartbeat (2 s): a heartbeat says the log is shipped to now.
    std::thread::sleep(Duration::from_millis(3500));
    stop(rep);
    let stopped = Utc::now();
    // Stored closed files leave the spool: only the current one is there.
    let spooled: Vec<_> = std::fs::read_dir(w.path("state-host-a/binlog/shop/stream"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(spooled.len(), 1, "{spooled:?}");
    let snaps = w.json(&["--repo", "repo", "snapshots"], 0);
    let pieces: Vec<&serde_json::Value> = snaps
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["log"]["pieces"].as_array())
        .flatten()
        .collect();
    let time = |p: &serde_json::Value| {
        p["last_time"]
            .as_str()
            .map(|t| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc))
    };
    let beats: Vec<_> = pieces
        .iter()
        .filter(|p| p["meta"]["heartbeat"] == "true")
        .filter_map(|p| time(p))
        .collect();
    assert!(
        beats
            .iter()
            .any(|t| *t >= idle_from + chrono::Duration::seconds(1)),
        "no heartbeat while idle: {beats:?}"
    );
    assert!(
        pieces.iter().filter_map(|p| time(p)).all(|t| t <= stopped),
        "a piece claims a time after replicate stopped"
    );
    // Across two stream deaths, a crash and a second run: one whole chain.
    let win = window(&w);
    assert!(win.whole(), "{win:?}");
    assert!(
        win.to.unwrap() >= idle_from + chrono::Duration::seconds(1),
        "{win:?}"
    );
    assert!(win.to.unwrap() <= stopped, "{win:?}");
    assert!(win.from.unwrap() < idle_from, "{win:?}");
    let log2 = std::fs::read_to_string(w.path("replicate.out")).unwrap();
    assert!(log2.contains("the archive resumes at binlog."), "{log2}");

    // The server is lost; an empty one takes its place; latest has every row.
    s.replace_with_empty(Duration::from_secs(60)).unwrap();
    let out = restore(&w, "latest");
    let got = rows(&conn);
    assert_eq!(
        got.len(),
        truth.len(),
        "rows lost across the stream's restarts\n{out}\n{log}\n{log2}"
    );
    assert_eq!(got, truth);

    // A drill restores a random instant of the window on a scratch server and passes its
    // verify query; with a verify query that fails, the drill fails (exit 4).
    let d = w.json(&["drill", "shop"], 0);
    let rec = d.to_string();
    assert!(rec.contains("drilled point-in-time recovery to"), "{rec}");
    assert!(rec.contains("replayed the binary log"), "{rec}");
    assert!(rec.contains("verify query returned"), "{rec}");
    let body = std::fs::read_to_string(w.path("holdfast.toml")).unwrap();
    std::fs::write(
        w.path("holdfast.toml"),
        body.replace(
            "SELECT count(*) >= 0 FROM ticks",
            "SELECT * FROM no_such_table",
        ),
    )
    .unwrap();
    let d = w.json(&["drill", "shop"], 4);
    assert!(d.to_string().contains("no_such_table"), "{d}");
    eprintln!("test took {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(60));
}

#[test]
fn mariadb_binlog_purged_before_it_was_archived_is_a_gap_not_a_stall() {
    let t0 = Instant::now();
    let scratch = tempfile::tempdir().unwrap();
    let s = server(scratch.path());
    let conn = s.conn();
    let w = workload(&conn);
    let mut writer = Writer::start(&conn);
    base_backup(&w);
    let rep = replicate(&w);
    writer.run_for(Duration::from_millis(2000));
    writer.stop();
    let archived = rows(&conn);
    std::thread::sleep(Duration::from_millis(2000));
    stop(rep);
    // While replicate is down, rows are written and their binary log file is purged.
    let mut writer = Writer::start(&conn);
    writer.run_for(Duration::from_millis(1000));
    writer.stop();
    maria(&conn, "FLUSH BINARY LOGS");
    let current = maria(&conn, "SHOW MASTER STATUS");
    let current = current.split('\t').next().unwrap().to_string();
    // The server purges a file only once its transactions are checkpointed: retry.
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        maria(&conn, &format!("PURGE BINARY LOGS TO '{current}'"));
        if !maria(&conn, "SHOW BINARY LOGS").contains("binlog.000001") {
            break;
        }
        assert!(Instant::now() < until, "binlog.000001 was not purged");
        std::thread::sleep(Duration::from_millis(200));
    }
    let after_gap = Utc::now() + chrono::Duration::seconds(1);
    let mut writer = Writer::start(&conn);
    writer.run_for(Duration::from_millis(1500));
    writer.stop();
    let rep = replicate(&w);
    std::thread::sleep(Duration::from_millis(3000));
    stop(rep);
    let log = std::fs::read_to_string(w.path("replicate.out")).unwrap();
    assert!(
        log.contains("GAP: the server no longer has binlog.000001"),
        "{log}"
    );
    assert!(log.contains(&format!("streams from {current}")), "{log}");
    let win = window(&w);
    assert_eq!(win.gaps.len(), 1, "{win:?}");
    assert!(
        win.gaps[0]
            .missing
            .starts_with("binlog.000001 from position "),
        "{win:?}"
    );
    assert_eq!(win.gaps[0].resumes, None, "no base after the gap: {win:?}");
    assert!(win.problems.is_empty(), "{win:?}");
    // Restored up to the gap, and said so: exit 3 (warnings), never a plain success.
    let (out, err) = w.run(
        &mut w.cmd(&["restore", "--source", "shop", "--at", "latest", "--replace"]),
        3,
    );
    assert!(
        err.contains("warning: the archived binary log has a gap"),
        "{out}{err}"
    );
    assert_eq!(rows(&conn), archived, "{out}");
    // A time after the gap cannot be reached from the only base.
    let (_, err) = w.run(
        &mut w.cmd(&[
            "restore",
            "--source",
            "shop",
            "--at",
            &after_gap.to_rfc3339(),
            "--replace",
        ]),
        1,
    );
    assert!(err.contains("reaches only"), "{err}");
    eprintln!("test took {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(60));
}
