//! Answers that must be true (issue 10, items 1-9): each test makes a verdict false and checks
//! the exit code, on real files, real SQLite databases and real PostgreSQL and MariaDB servers.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command as Std, Stdio};
use std::time::Duration;

use holdfast_policy::sources::pg_scratch;
use serde_json::Value;

mod support;
use support::workload::{source, W};

fn python(script: &str) -> Std {
    let mut c = Std::new("python3");
    c.arg("-c").arg(script);
    c
}

fn rows(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

/// Item 1: a restore over an existing SQLite database yields exactly the recovery point,
/// whatever sidecar files the old database left, and refuses while another process has it open.
#[test]
fn sqlite_restore_over_a_live_database_is_exact_or_refused() {
    let w = W::new("");
    let db = w.path("app.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x INTEGER);")
            .unwrap();
        let tx = c.unchecked_transaction().unwrap();
        for i in 0..100 {
            tx.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        tx.commit().unwrap();
    }
    w.write(
        "holdfast.toml",
        &format!(
            "[[source]]\nname = \"app\"\nkind = \"sqlite\"\npath = \"{}\"\nclass = \"critical\"\nstrategy = \"backup\"\n",
            db.display()
        ),
    );
    w.run(&mut w.cmd(&["protect", "--source", "app"]), 4); // never drilled: RTO not measured
    let restore = |into: &Path, replace: bool, code: i32| {
        let mut a = vec![
            "restore",
            "--source",
            "app",
            "--into",
            into.to_str().unwrap(),
        ];
        if replace {
            a.push("--replace");
        }
        w.run(&mut w.cmd(&a), code)
    };
    // After the backup the application goes on writing, then crashes: its committed rows are in
    // the WAL only (no checkpoint), as after a power cut.
    let st = python(&format!(
        "import sqlite3, os\nc = sqlite3.connect({:?})\nc.execute('PRAGMA wal_autocheckpoint=0')\nc.executemany('INSERT INTO t VALUES (?)', [(i,) for i in range(50)])\nc.commit()\nos.kill(os.getpid(), 9)\n",
        db.display().to_string()
    ))
    .status()
    .unwrap();
    assert!(!st.success(), "the writer was killed");
    let wal = w.path("app.db-wal");
    assert!(
        fs::metadata(&wal).unwrap().len() > 0,
        "the crash left a WAL"
    );
    // A writer that is still connected: the restore refuses and names it, and changes nothing.
    let mut live = python(&format!(
        "import sqlite3, time, sys\nc = sqlite3.connect({:?})\nc.execute('SELECT count(*) FROM t').fetchone()\nprint('open', flush=True)\ntime.sleep(60)\n",
        db.display().to_string()
    ))
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(live.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "open");
    let (_, err) = restore(&db, true, 1);
    assert!(
        err.contains("is open by process") && err.contains(&live.id().to_string()),
        "{err}"
    );
    live.kill().unwrap();
    live.wait().unwrap();
    // (Read-only: closing a read-only connection does not checkpoint the WAL away.)
    let ro = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let n: i64 = ro
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    drop(ro);
    assert_eq!(n, 150, "the refused restore left the database as it was");
    // Let the WAL of the crashed writer stay, unreplayed: the restore must not mix it in.
    assert!(wal.exists());
    let (out, _) = restore(&db, true, 0);
    assert!(out.contains("integrity_check: ok"), "{out}");
    assert!(!wal.exists(), "the old WAL was removed");
    assert_eq!(rows(&db), 100, "exactly the recovery point's rows");
    let c = rusqlite::Connection::open(&db).unwrap();
    let ic: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ic, "ok");
    // A stale sidecar beside a missing database is refused without --replace.
    drop(c);
    let other = w.path("new.db");
    fs::write(w.path("new.db-wal"), b"stale").unwrap();
    let (_, err) = restore(&other, false, 1);
    assert!(
        err.contains("new.db-wal") && err.contains("--replace"),
        "{err}"
    );
}

/// Item 2: two hosts declaring a source of the same name in one repository each back up their
/// own data; neither's status or drill stands on the other's recovery point.
#[test]
fn hosts_sharing_a_repository_keep_their_own_recovery_points() {
    let w = W::new("");
    for (host, content) in [("a", "data of host a\n"), ("b", "data of host b\n")] {
        fs::create_dir_all(w.path(&format!("logs-{host}"))).unwrap();
        fs::write(w.path(&format!("logs-{host}/app.log")), content).unwrap();
        w.write(
            &format!("host-{host}.toml"),
            &format!(
                "[[source]]\nname = \"logs\"\nkind = \"path\"\npath = \"logs-{host}\"\nclass = \"critical\"\nstrategy = \"backup\"\nverify = \"grep -q 'host {host}' \\\"$HOLDFAST_DRILL_DIR/logs-{host}/app.log\\\"\"\n"
            ),
        );
    }
    let ran = |v: &Value| v["protect"][0]["action"] == "ran";
    let a = w.json_on("host-a", "host-a.toml", &["protect"], 4);
    assert!(ran(&a), "{a}");
    // Host b's first protect must back up host b's directory, not find host a's point.
    let b = w.json_on("host-b", "host-b.toml", &["protect"], 4);
    assert!(ran(&b), "host b's data was never backed up: {b}");
    let snaps = w.json_on("host-b", "host-b.toml", &["--repo", "repo", "snapshots"], 0);
    let hosts: Vec<&str> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(hosts.len(), 2, "{snaps}");
    assert!(hosts.contains(&"host-a") && hosts.contains(&"host-b"));
    // Each host's drill restores its own point (its verify greps for its own data).
    for h in ["a", "b"] {
        let d = w.json_on(
            &format!("host-{h}"),
            &format!("host-{h}.toml"),
            &["drill", "logs"],
            0,
        );
        assert_eq!(d[0]["passed"], true, "host {h}: {d}");
    }
    // A third host with the same source name has nothing: breached, not met.
    fs::create_dir_all(w.path("logs-c")).unwrap();
    w.write(
        "host-c.toml",
        "[[source]]\nname = \"logs\"\nkind = \"path\"\npath = \"logs-c\"\nclass = \"critical\"\nstrategy = \"backup\"\n",
    );
    let st = w.json_on("host-c", "host-c.toml", &["status", "--no-discover"], 4);
    assert_eq!(source(&st, "logs")["status"]["rpo"], "breached", "{st}");
    // The driver says how the source is backed up (the evidence a report shows).
    let how = source(&st, "logs")["facts"]["mechanism"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        how.starts_with("files under") && how.contains("logs-c"),
        "{how}"
    );
    assert_eq!(source(&st, "logs")["status"]["rto"], "not_measured", "{st}");
    let (_, err) = w.run(
        &mut w.cmd_on(
            "host-c",
            "host-c.toml",
            &["restore", "--source", "logs", "--into", "x"],
        ),
        1,
    );
    assert!(err.contains("made by host host-c"), "{err}");
    // A source that is one shared thing says so, and then any host's point counts.
    w.write(
        "host-c.toml",
        "[[source]]\nname = \"logs\"\nkind = \"path\"\npath = \"logs-c\"\nclass = \"critical\"\nstrategy = \"backup\"\nshared = true\n",
    );
    // (Its drills count too: hosts a and b drilled it.)
    let st = w.json_on("host-c", "host-c.toml", &["status", "--no-discover"], 0);
    assert_eq!(source(&st, "logs")["status"]["rpo"], "met", "{st}");
    assert_eq!(source(&st, "logs")["status"]["rto"], "met", "{st}");
}

/// Item 5: what cannot be backed up is refused up front.
#[test]
fn unsupported_data_is_refused_up_front() {
    let w = W::new("");
    let repo = w.path("repo");
    let r = repo.to_str().unwrap();
    w.run(&mut w.cmd(&["--repo", r, "init"]), 0);
    let fifo = w.path("pipe");
    assert!(Std::new("mkfifo").arg(&fifo).status().unwrap().success());
    for (p, what) in [
        (PathBuf::from("/dev/null"), "character device"),
        (fifo, "named pipe"),
    ] {
        let (_, err) = w.run(&mut w.cmd(&["--repo", r, "backup", p.to_str().unwrap()]), 2);
        assert!(err.contains(what) && err.contains("device node"), "{err}");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let dev = w.path("loop");
        assert!(Std::new("mknod")
            .arg(&dev)
            .args(["b", "7", "200"])
            .status()
            .unwrap()
            .success());
        let (_, err) = w.run(
            &mut w.cmd(&["--repo", r, "backup", dev.to_str().unwrap()]),
            2,
        );
        assert!(err.contains("block device"), "{err}");
    }
    let snaps = w.json(&["--repo", r, "snapshots"], 0);
    assert_eq!(snaps.as_array().unwrap().len(), 0, "nothing was stored");
    // A source that cannot be backed up as declared is a high finding of plan, before any
    // protect: a missing path, a device, a "database" that is not one.
    fs::write(w.path("notes.txt"), "not a database").unwrap();
    w.write(
        "holdfast.toml",
        "[[source]]\nname = \"gone\"\nkind = \"path\"\npath = \"missing-dir\"\nclass = \"critical\"\nstrategy = \"backup\"\n\n[[source]]\nname = \"dev\"\nkind = \"path\"\npath = \"/dev/null\"\nclass = \"critical\"\nstrategy = \"backup\"\n\n[[source]]\nname = \"db\"\nkind = \"sqlite\"\npath = \"notes.txt\"\nclass = \"critical\"\nstrategy = \"backup\"\n",
    );
    let plan = w.json(&["plan", "--no-discover"], 4);
    for (src, why) in [
        ("gone", "does not exist"),
        ("dev", "device"),
        ("db", "not an SQLite database"),
    ] {
        assert!(
            plan["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["code"] == "source-cannot-be-backed-up"
                    && f["subject"] == src
                    && f["severity"] == "high"
                    && f["message"].as_str().unwrap().contains(why)),
            "{src}: {plan}"
        );
    }
    // A bucket source without its bucket is refused by plan (and everything else) at its line.
    w.write(
        "holdfast.toml",
        "[[source]]\nname = \"media\"\nkind = \"s3\"\nclass = \"critical\"\nstrategy = \"backup\"\n",
    );
    let (_, err) = w.run(&mut w.cmd(&["plan", "--no-discover"]), 2);
    assert!(
        err.contains("of kind s3 needs bucket") && err.contains("holdfast.toml:"),
        "{err}"
    );
}

/// Item 6: a drill that takes longer than the RTO fails, with exit code 4; one just within
/// passes.
#[test]
fn a_drill_past_its_rto_fails() {
    let body = |rto: &str| {
        format!(
            "[class.fast]\nrpo = \"1h\"\nrto = \"{rto}\"\nkeep = {{ last = 3 }}\n\n[[source]]\nname = \"docs\"\nkind = \"path\"\npath = \"docs\"\nclass = \"fast\"\nstrategy = \"backup\"\nverify = \"sleep 2\"\n"
        )
    };
    let w = W::new(&body("1s"));
    fs::create_dir_all(w.path("docs")).unwrap();
    fs::write(w.path("docs/a.txt"), "a").unwrap();
    w.run(&mut w.cmd(&["protect"]), 4);
    let (out, _) = w.run(&mut w.cmd(&["drill", "docs"]), 4);
    assert!(
        out.contains("FAILED") && out.contains("longer than the RTO of 1s"),
        "{out}"
    );
    let st = w.json(&["status", "--no-discover"], 4);
    assert_eq!(source(&st, "docs")["status"]["rto"], "breached");
    w.write("holdfast.toml", &body("1m"));
    let (out, _) = w.run(&mut w.cmd(&["drill", "docs"]), 0);
    assert!(out.contains("PASSED"), "{out}");
    // The status page's timeline: points and drills on separate lanes, no label cut off.
    let html = w.path("status.html");
    w.run(
        &mut w.cmd(&["status", "--no-discover", "--html", html.to_str().unwrap()]),
        0,
    );
    let page = fs::read_to_string(&html).unwrap();
    let svg_w: f64 = page
        .split("<svg width=")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    let last_label_x: f64 = page
        .rsplit("<text x=")
        .find(|s| s.contains("text-anchor=middle"))
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(last_label_x + 20.0 <= svg_w, "{last_label_x} in {svg_w}");
    let cy: f64 = page
        .split("<circle cx=")
        .nth(1)
        .unwrap()
        .split("cy=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let poly = page.split("<polygon points=\"").nth(1).unwrap();
    let top: f64 = poly
        .split(' ')
        .next()
        .unwrap()
        .split(',')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        top > cy + 3.5,
        "the drill marker starts below the point's dot: {top} vs {cy}"
    );
}

/// Item 7: a physical PostgreSQL restore leaves a data directory PostgreSQL starts on.
#[test]
fn physical_postgres_restore_is_startable() {
    let scratch = tempfile::tempdir().unwrap();
    let server = pg_scratch::Server::start(scratch.path(), Duration::from_secs(60))
        .expect("PostgreSQL (scripts/test.sh installs it)");
    let conn = server.conn();
    let port = conn.port.unwrap();
    let w = W::new(&format!(
        "[[source]]\nname = \"cluster\"\nkind = \"postgres\"\nmode = \"physical\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"postgres\"\nclass = \"critical\"\nstrategy = \"backup\"\n"
    ));
    let psql = |port: u16, q: &str| {
        let o = Std::new("psql")
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", port.to_string())
            .env("PGUSER", "postgres")
            .args(["-X", "-At", "-d", "postgres", "-c", q])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    psql(port, "CREATE TABLE marker AS SELECT 42 AS answer");
    w.run(&mut w.cmd(&["protect"]), 4);
    // Restore into a directory that holds another cluster's leftovers: with --replace they go.
    let target = w.path("restored/data");
    fs::create_dir_all(&target).unwrap();
    fs::write(target.join("leftover"), "old").unwrap();
    let (out, _) = w.run(
        &mut w.cmd(&[
            "restore",
            "--source",
            "cluster",
            "--into",
            target.to_str().unwrap(),
            "--replace",
        ]),
        0,
    );
    let m = fs::metadata(&target).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o700, "{out}");
    assert!(
        !target.join("leftover").exists(),
        "nothing of the old contents is mixed in"
    );
    assert!(out.contains("pg_ctl -D"), "it says how to start it: {out}");
    let owner = fs::metadata(target.join("PG_VERSION")).unwrap().uid();
    assert_eq!(
        m.uid(),
        owner,
        "the directory belongs to the cluster's owner"
    );
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_ne!(
            m.uid(),
            0,
            "not root: PostgreSQL refuses a root-owned data directory"
        );
        // Open the path for the postgres user, as a real restore target would be.
        for d in [w.dir.path(), &w.path("restored")] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    // Start PostgreSQL on it, as the message says, and find the data.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bindir = pg_scratch::bindir().unwrap();
    let pg_ctl = bindir.join("pg_ctl");
    let opts = format!(
        "-p {free} -k {} -c listen_addresses=127.0.0.1",
        target.display()
    );
    let mut c = if unsafe { libc::geteuid() } == 0 {
        let mut c = Std::new("setpriv");
        c.args([
            &format!("--reuid={owner}"),
            &format!(
                "--regid={}",
                fs::metadata(target.join("PG_VERSION")).unwrap().gid()
            ),
            "--clear-groups",
        ])
        .arg(&pg_ctl);
        c
    } else {
        Std::new(&pg_ctl)
    };
    c.arg("-D")
        .arg(&target)
        .args(["-o", &opts, "-w", "-l"])
        .arg(target.join("startup.log"))
        .arg("start");
    let st = c.status().unwrap();
    assert!(
        st.success(),
        "{}",
        fs::read_to_string(target.join("startup.log")).unwrap_or_default()
    );
    assert_eq!(psql(free, "SELECT answer FROM marker"), "42");
    let mut stop = if unsafe { libc::geteuid() } == 0 {
        let mut c = Std::new("setpriv");
        c.args([&format!("--reuid={owner}"), "--clear-groups"])
            .arg(&pg_ctl);
        c
    } else {
        Std::new(&pg_ctl)
    };
    stop.arg("-D")
        .arg(&target)
        .args(["-m", "fast", "-w", "stop"])
        .status()
        .unwrap();
    drop(server);
}

/// Item 8: one strict, documented duration grammar.
#[test]
fn durations_are_read_strictly() {
    for bad in ["5M", "5 min", "5 minutes", "15"] {
        let w = W::new(&format!("[class.x]\nrpo = \"{bad}\"\n"));
        let (_, err) = w.run(&mut w.cmd(&["plan", "--no-discover"]), 2);
        assert!(
            err.contains("holdfast.toml:") && err.contains("units: s (seconds), m (minutes)"),
            "{bad}: {err}"
        );
    }
    let w = W::new("[class.x]\nrpo = \"1h 30m\"\nrto = \"5m\"\nkeep = { within = \"7d\" }\n");
    w.run(&mut w.cmd(&["plan", "--no-discover"]), 0);
    let w = W::new("[class.x]\nrpo = \"1h\"\nkeep = { within = \"1y\" }\n");
    let (_, err) = w.run(&mut w.cmd(&["plan", "--no-discover"]), 2);
    assert!(err.contains("units:"), "{err}");
}

/// Item 9: the smaller wrong answers.
#[test]
fn small_wrong_answers() {
    let w = W::new(
        "[[source]]\nname = \"docs\"\nkind = \"path\"\npath = \"docs\"\nclass = \"critical\"\nstrategy = \"backup\"\n\n[[source]]\nname = \"more\"\nkind = \"path\"\npath = \"more\"\nclass = \"critical\"\nstrategy = \"backup\"\n",
    );
    fs::create_dir_all(w.path("docs")).unwrap();
    for i in 0..3000 {
        fs::write(
            w.path(&format!("docs/file-with-a-long-name-{i:05}.txt")),
            "x",
        )
        .unwrap();
    }
    fs::create_dir_all(w.path("more")).unwrap();
    fs::write(w.path("more/only.txt"), "only").unwrap();
    // protect -q prints no status table.
    let (out, _) = w.run(&mut w.cmd(&["-q", "protect"]), 4);
    assert!(
        !out.contains("controls:") && !out.contains("source "),
        "{out}"
    );
    assert!(
        out.contains("[FAIL]"),
        "failing controls are still named: {out}"
    );
    // A closed pipe ends the listing quietly (no panic, no backtrace, exit 141).
    let repo = w.path("repo");
    let bin = assert_cmd::cargo::cargo_bin("holdfast");
    let o = Std::new("bash")
        .arg("-c")
        .arg(format!(
            "{} --repo {} ls --of docs latest | head -1; echo \"status=${{PIPESTATUS[0]}}\"",
            bin.display(),
            repo.display()
        ))
        .env("HOLDFAST_PASSWORD", "pw")
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.contains("status=141"), "{out} {err}");
    // `latest` with a filter picks the newest of what matches; unfiltered it says what it chose.
    let ls = |args: &[&str]| {
        let mut a = vec!["--repo", repo.to_str().unwrap(), "ls"];
        a.extend_from_slice(args);
        let o = w.cmd(&a).env("HOLDFAST_PASSWORD", "pw").output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (docs, _) = ls(&["--of", "docs", "latest"]);
    assert!(docs.contains("file-with-a-long-name-00000.txt") && !docs.contains("only.txt"));
    let (more, _) = ls(&["--path", w.path("more").to_str().unwrap(), "latest"]);
    assert!(
        more.contains("only.txt") && !more.contains("file-with"),
        "{more}"
    );
    let (_, note) = ls(&["latest"]);
    assert!(note.contains("choose with --host"), "{note}");
    // Unknown source names are usage errors (exit 2).
    w.run(&mut w.cmd(&["drill", "nosuch"]), 2);
    w.run(&mut w.cmd(&["protect", "--source", "nosuch"]), 2);
    w.run(
        &mut w.cmd(&["restore", "--source", "nosuch", "--into", "x"]),
        2,
    );
    // A wrong password on a workload repository is exit 12, as on the command line.
    let o = w
        .cmd(&["drill", "docs"])
        .env("TEST_REPO_PW", "wrong")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(12),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // With a wrong password nothing is known about encryption: the control fails.
    let o = w
        .cmd(&["--json", "status", "--no-discover"])
        .env("TEST_REPO_PW", "wrong")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4));
    let st: Value = serde_json::from_slice(&o.stdout).unwrap();
    let enc = st["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "recovery-points-encrypted")
        .unwrap();
    assert_eq!(enc["passed"], false, "{st}");
    // discover --suggest: one block per location, every name unique and new.
    for d in ["a", "b"] {
        fs::create_dir_all(w.path(&format!("data/{d}"))).unwrap();
        let c = rusqlite::Connection::open(w.path(&format!("data/{d}/app.db"))).unwrap();
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    let (out, _) = w.run(
        &mut w.cmd(&["discover", "--no-host", "--root", "data", "--suggest"]),
        0,
    );
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("name = "))
        .collect();
    assert_eq!(names.len(), 2, "{out}");
    assert_ne!(names[0], names[1], "{out}");
    let blocks: String = out
        .split("\n\n")
        .map(|b| b.trim_start())
        .filter(|b| b.starts_with("[[source]]"))
        .collect::<Vec<_>>()
        .join("\n\n");
    let toml = fs::read_to_string(w.path("holdfast.toml")).unwrap() + "\n" + &blocks + "\n";
    fs::write(w.path("holdfast.toml"), toml).unwrap();
    let list = w.json(&["discover", "--no-host", "--root", "data"], 0);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == "sqlite")
            .all(|f| !f["protected_by"].is_null()),
        "{list}"
    );
}

/// Item 12, as `status` sees it: a recovery point deleted on the store (outside `forget`) is an
/// alarm that fails `status`, not a silently older RPO.
#[test]
fn a_wiped_newest_point_is_an_alarm_in_status() {
    let w = W::new(
        "[[source]]\nname = \"docs\"\nkind = \"path\"\npath = \"docs\"\nclass = \"critical\"\nstrategy = \"backup\"\nverify = \"true\"\n",
    );
    fs::create_dir_all(w.path("docs")).unwrap();
    fs::write(w.path("docs/a.txt"), "a").unwrap();
    w.run(&mut w.cmd(&["protect"]), 4);
    w.run(&mut w.cmd(&["drill", "docs"]), 0);
    let st = w.json(&["status", "--no-discover"], 0);
    assert!(st["alarms"].as_array().unwrap().is_empty(), "{st}");
    let snaps: Vec<_> = fs::read_dir(w.path("repo/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(snaps.len(), 1);
    fs::remove_file(&snaps[0]).unwrap();
    let (out, _) = w.run(&mut w.cmd(&["status", "--no-discover"]), 4);
    assert!(
        out.contains("ALARM") && out.contains("vanished outside forget"),
        "{out}"
    );
}
