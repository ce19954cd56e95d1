//! Database and stream sources against real servers: SQLite under a writer, PostgreSQL under
//! pgbench (logical and physical), command streams; and their failures.

use std::fs;
use std::path::{Path, PathBuf};

use std::process::Command as Std;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use assert_cmd::Command;
use holdfast_policy::sources::pg_scratch;
use serde_json::Value;

struct W {
    dir: tempfile::TempDir,
}

impl W {
    fn new(sources: &str) -> W {
        let w = W {
            dir: tempfile::tempdir().unwrap(),
        };
        let toml = format!(
            "[repository.local]\nurl = \"repo\"\npassword-env = \"TEST_REPO_PW\"\n\n[class.critical]\nrpo = \"15m\"\nrto = \"10m\"\nkeep = {{ last = 20 }}\n\n{sources}"
        );
        fs::write(w.path("holdfast.toml"), toml).unwrap();
        w
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("holdfast").unwrap();
        c.env("TEST_REPO_PW", "pw")
            .env("HOLDFAST_INSECURE_TEST_KDF", "1")
            .env("HOLDFAST_CONFIG", self.path("holdfast.toml"))
            .env("HOLDFAST_STATE_DIR", self.path("state"))
            .env_remove("HOLDFAST_NOW")
            .current_dir(self.dir.path())
            .args(args);
        c
    }
    fn json(&self, args: &[&str], code: i32) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let o = self.cmd(&a).output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(code),
            "{args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }
    /// Run protect for one source and return its backup job record.
    fn protect(&self, source: &str) -> Value {
        self.protect_at(source, chrono::Utc::now())
    }
    /// The same, at a given time.
    fn protect_at(&self, source: &str, now: chrono::DateTime<chrono::Utc>) -> Value {
        let o = self
            .cmd(&["--json", "protect", "--source", source])
            .env("HOLDFAST_NOW", now.to_rfc3339())
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stderr)));
        let jobs = v["protect"][0]["jobs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        jobs.into_iter()
            .find(|j| j["job"] == "backup")
            .unwrap_or(Value::Null)
    }
    fn snapshot_count(&self, source: &str) -> usize {
        let o = self.cmd(&["--json", "status"]).output().unwrap();
        let st: Value = serde_json::from_slice(&o.stdout).unwrap();
        st["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["facts"]["name"] == source)
            .unwrap()["points"]
            .as_array()
            .unwrap()
            .len()
    }
}

#[test]
fn sqlite_backup_is_consistent_under_a_writer() {
    let w = W::new("");
    let db = w.path("bank.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);").unwrap();
        let tx = c.unchecked_transaction().unwrap();
        for i in 0..1000 {
            tx.execute("INSERT INTO accounts VALUES (?1, 100)", [i])
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let toml = fs::read_to_string(w.path("holdfast.toml")).unwrap()
        + &format!("[[source]]\nname = \"bank\"\nkind = \"sqlite\"\npath = \"{}\"\nclass = \"critical\"\nstrategy = \"backup\"\nverify = \"SELECT sum(balance) = 100000 FROM accounts\"\n", db.display());
    fs::write(w.path("holdfast.toml"), toml).unwrap();
    // A writer moves money between accounts in transactions: the total never changes.
    let stop = Arc::new(AtomicBool::new(false));
    let (s2, db2) = (stop.clone(), db.clone());
    let writer = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(&db2).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        let mut n = 0u64;
        while !s2.load(Ordering::Relaxed) {
            let (a, b) = (n % 1000, (n * 7 + 3) % 1000);
            c.execute_batch(&format!("BEGIN; UPDATE accounts SET balance = balance - 1 WHERE id = {a}; UPDATE accounts SET balance = balance + 1 WHERE id = {b}; COMMIT;")).unwrap();
            n += 1;
        }
        n
    });
    std::thread::sleep(Duration::from_millis(200));
    let job = w.protect("bank");
    stop.store(true, Ordering::Relaxed);
    let transfers = writer.join().unwrap();
    assert_eq!(job["state"], "completed", "{job}");
    assert!(transfers > 0);
    // Restore with one command; the copy is consistent.
    let out = w.path("restored.db");
    w.cmd(&[
        "restore",
        "--source",
        "bank",
        "--into",
        out.to_str().unwrap(),
    ])
    .assert()
    .success();
    let c = rusqlite::Connection::open(&out).unwrap();
    let ic: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ic, "ok");
    let (n, sum): (i64, i64) = c
        .query_row("SELECT count(*), sum(balance) FROM accounts", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((n, sum), (1000, 100_000));
    // (A restore over a database this process still has open is refused: close it first.)
    drop(c);
    // Refuses to overwrite the file it just restored, unless asked.
    let o = w
        .cmd(&[
            "restore",
            "--source",
            "bank",
            "--into",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--replace"));
    w.cmd(&[
        "restore",
        "--source",
        "bank",
        "--into",
        out.to_str().unwrap(),
        "--replace",
    ])
    .assert()
    .success();
    // The drill checks integrity, counts rows and runs the verify query.
    let d = w.json(&["drill", "bank"], 0);
    assert_eq!(d[0]["passed"], true, "{d}");
    let msgs = d[0]["messages"].to_string();
    assert!(
        msgs.contains("integrity_check: ok") && msgs.contains("accounts: 1000 rows"),
        "{msgs}"
    );
}

fn pg_setup(dir: &Path) -> pg_scratch::Server {
    pg_scratch::Server::start(dir, Duration::from_secs(60))
        .expect("a PostgreSQL server (scripts/test.sh installs the postgresql package)")
}

fn pg(conn: &holdfast_policy::sources::Conn, prog: &str) -> Std {
    let mut c = Std::new(prog);
    c.env("PGHOST", conn.host.as_deref().unwrap())
        .env("PGPORT", conn.port.unwrap().to_string())
        .env("PGUSER", "postgres");
    c
}

fn psql(conn: &holdfast_policy::sources::Conn, db: &str, q: &str) -> String {
    let o = pg(conn, "psql")
        .args(["-X", "-At", "-d", db, "-c", q])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "psql {q}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

const PGBENCH_INVARIANT: &str = "SELECT (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT sum(bbalance) FROM pgbench_branches) AND (SELECT sum(bbalance) FROM pgbench_branches) = (SELECT sum(tbalance) FROM pgbench_tellers) AND (SELECT sum(tbalance) FROM pgbench_tellers) = (SELECT coalesce(sum(delta),0) FROM pgbench_history)";

#[test]
fn postgres_logical_and_physical_under_pgbench() {
    let scratch = tempfile::tempdir().unwrap();
    let server = pg_setup(scratch.path());
    let conn = server.conn();
    psql(&conn, "postgres", "CREATE DATABASE shop");
    let o = pg(&conn, "pgbench")
        .args(["-i", "-s", "2", "-q", "shop"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let src = |name: &str, mode: &str| {
        format!(
            "[[source]]\nname = \"{name}\"\nkind = \"postgres\"\nmode = \"{mode}\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\nclass = \"critical\"\nstrategy = \"backup\"\nverify = \"{}\"\n{}\n",
            conn.port.unwrap(),
            PGBENCH_INVARIANT,
            "database = \"shop\"" // physical: the database the verify query runs in
        )
    };
    let w = W::new(&(src("shop", "logical") + &src("cluster", "physical")));
    // Write load while both backups run.
    let mut load = pg(&conn, "pgbench")
        .args(["-c", "2", "-T", "8", "-n", "shop"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let j1 = w.protect("shop");
    let j2 = w.protect("cluster");
    let _ = load.wait();
    assert_eq!(j1["state"], "completed", "{j1}");
    assert_eq!(j2["state"], "completed", "{j2}");
    // Logical: restore into a fresh database with one command; the invariant holds.
    w.cmd(&["restore", "--source", "shop", "--into", "shop_restored"])
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", conn.port.unwrap().to_string())
        .env("PGUSER", "postgres")
        .assert()
        .success();
    assert_eq!(psql(&conn, "shop_restored", PGBENCH_INVARIANT), "t");
    assert_eq!(
        psql(
            &conn,
            "shop_restored",
            "SELECT count(*) FROM pgbench_accounts"
        ),
        "200000"
    );
    // A non-empty target is refused without --replace.
    let o = w
        .cmd(&["restore", "--source", "shop", "--into", "shop_restored"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Drills restore into scratch servers on free loopback ports and run the verify query.
    let d = w.json(&["drill", "shop"], 0);
    assert_eq!(d[0]["passed"], true, "{d}");
    let d = w.json(&["drill", "cluster"], 0);
    assert_eq!(d[0]["passed"], true, "{d}");

    // Repeated dumps of a slowly changing database deduplicate: each adds a small part of its
    // size in new (raw) data.
    let repo_json = |args: &[&str]| -> Value {
        let repo = w.path("repo");
        let o = Command::cargo_bin("holdfast")
            .unwrap()
            .env("HOLDFAST_PASSWORD", "pw")
            .arg("--json")
            .arg("--repo")
            .arg(&repo)
            .args(args)
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout).unwrap()
    };
    // (pgbench's own tables are runs of blanks, which no content-defined chunker can cut
    // stably, so the slowly changing data is a table of varied rows.)
    psql(&conn, "shop", "CREATE TABLE items AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS h FROM generate_series(1, 150000) g");
    for i in 1..=3 {
        psql(
            &conn,
            "shop",
            &format!(
                "UPDATE items SET h = md5(h) WHERE id IN ({}, {})",
                i * 11,
                100_000 + i
            ),
        );
        let before = repo_json(&["stats"])["snapshots"]["unique_raw_bytes"]
            .as_u64()
            .unwrap();
        let later = chrono::Utc::now() + chrono::Duration::minutes(15 * i);
        let o = w
            .cmd(&["--json", "protect", "--source", "shop"])
            .env("HOLDFAST_NOW", later.to_rfc3339())
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let j = v["protect"][0]["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|j| j["job"] == "backup")
            .cloned()
            .unwrap();
        assert_eq!(j["state"], "completed", "{v}");
        let after = repo_json(&["stats"])["snapshots"]["unique_raw_bytes"]
            .as_u64()
            .unwrap();
        let snaps = repo_json(&["snapshots"]);
        let dump = snaps
            .as_array()
            .unwrap()
            .iter()
            .rfind(|s| s["source"] == "shop")
            .unwrap()["summary"]["total_bytes"]
            .as_u64()
            .unwrap();
        // The first of these follows the write load's thousands of updates; the next ones see
        // two transactions each.
        if i > 1 {
            assert!(
                (after - before) * 2 < dump,
                "dump {i} of {dump} bytes added {} new bytes",
                after - before
            );
        }
    }

    // Faults: a database that is down fails the job and records no recovery point.
    let points = w.snapshot_count("shop");
    server.stop();
    let j = w.protect("shop");
    assert_eq!(j["state"], "failed", "{j}");
    assert!(j["messages"].to_string().contains("pg_dump"), "{j}");
    assert_eq!(w.snapshot_count("shop"), points);
}

#[test]
fn postgres_wrong_credentials_and_missing_tool_fail_the_job() {
    let scratch = tempfile::tempdir().unwrap();
    let server = pg_setup(scratch.path());
    let port = server.conn().port.unwrap();
    let w = W::new(&format!(
        "[[source]]\nname = \"nobody\"\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"no_such_role\"\ndatabase = \"postgres\"\nclass = \"critical\"\nstrategy = \"backup\"\n\n[[source]]\nname = \"ok\"\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"postgres\"\ndatabase = \"postgres\"\nclass = \"critical\"\nstrategy = \"backup\"\n"
    ));
    let j = w.protect("nobody");
    assert_eq!(j["state"], "failed");
    assert!(j["messages"].to_string().contains("no_such_role"), "{j}");
    // pg_dump missing from PATH: a clear message, a failed job.
    let o = w
        .cmd(&["--json", "protect", "--source", "ok"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let j = &v["protect"][0]["jobs"][0];
    assert_eq!(j["state"], "failed", "{v}");
    assert!(j["messages"].to_string().contains("not installed"), "{j}");
    assert_eq!(w.snapshot_count("ok"), 0);
}

#[test]
fn command_streams_and_failures() {
    let w = W::new(
        "[[source]]\nname = \"kv\"\nkind = \"command\"\ncommand = \"printf 'key=value\\\\n'; seq 1 20000\"\nrestore-command = \"cat > \\\"$HOLDFAST_RESTORE_TARGET/kv.txt\\\"\"\nfile-name = \"kv.txt\"\nclass = \"critical\"\nstrategy = \"backup\"\nverify = \"grep -q key=value \\\"$HOLDFAST_DRILL_DIR/kv.txt\\\"\"\n\n[[source]]\nname = \"halfway\"\nkind = \"command\"\ncommand = \"head -c 3000000 /dev/urandom; echo dump broke >&2; exit 3\"\nclass = \"critical\"\nstrategy = \"backup\"\n\n[[source]]\nname = \"hooked\"\nkind = \"command\"\ncommand = \"echo data\"\npre = \"echo freezing failed >&2; exit 1\"\nclass = \"critical\"\nstrategy = \"backup\"\n",
    );
    let j = w.protect("kv");
    assert_eq!(j["state"], "completed", "{j}");
    let out = w.path("out");
    fs::create_dir_all(&out).unwrap();
    w.cmd(&["restore", "--source", "kv", "--into", out.to_str().unwrap()])
        .assert()
        .success();
    let text = fs::read_to_string(out.join("kv.txt")).unwrap();
    assert!(text.starts_with("key=value\n1\n2\n") && text.ends_with("20000\n"));
    let d = w.json(&["drill", "kv"], 0);
    assert_eq!(d[0]["passed"], true, "{d}");
    // A dump that fails half way: failed job with the producer's message, no recovery point.
    let j = w.protect("halfway");
    assert_eq!(j["state"], "failed", "{j}");
    assert!(j["messages"].to_string().contains("dump broke"), "{j}");
    assert_eq!(w.snapshot_count("halfway"), 0);
    // A failing pre hook fails the job with the hook's output.
    let j = w.protect("hooked");
    assert_eq!(j["state"], "failed", "{j}");
    assert!(j["messages"].to_string().contains("freezing failed"), "{j}");
    // The repository stays sound after the failures.
    let repo = w.path("repo");
    Command::cargo_bin("holdfast")
        .unwrap()
        .env("HOLDFAST_PASSWORD", "pw")
        .args(["check", "--read-data", "--repo", repo.to_str().unwrap()])
        .assert()
        .success();
}

fn maria(conn: &holdfast_policy::sources::Conn, db: Option<&str>, q: &str) -> String {
    let mut c = Std::new("mariadb");
    c.arg(format!("--socket={}", conn.host.as_deref().unwrap()))
        .args(["--user=root", "-N", "-B"]);
    if let Some(db) = db {
        c.arg(format!("--database={db}"));
    }
    let o = c.args(["-e", q]).output().unwrap();
    assert!(
        o.status.success(),
        "mariadb {q}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn mariadb_dump_is_consistent_under_inserts_and_drills() {
    let scratch = tempfile::tempdir().unwrap();
    let server = holdfast_policy::sources::my_scratch::Server::start(
        scratch.path(),
        Duration::from_secs(60),
    )
    .expect("a MariaDB server (scripts/test.sh installs mariadb-server)");
    let conn = server.conn();
    maria(&conn, None, "CREATE DATABASE shop");
    maria(
        &conn,
        Some("shop"),
        "CREATE TABLE ledger(id INT AUTO_INCREMENT PRIMARY KEY, amount INT NOT NULL) ENGINE=InnoDB",
    );
    // Every transaction inserts a pair that sums to zero: any consistent copy sums to zero.
    let stop = Arc::new(AtomicBool::new(false));
    let (s2, sock) = (stop.clone(), conn.host.clone().unwrap());
    let writer = std::thread::spawn(move || {
        let mut n = 0;
        while !s2.load(Ordering::Relaxed) {
            let q = "START TRANSACTION; INSERT INTO ledger(amount) VALUES (7); INSERT INTO ledger(amount) VALUES (-7); COMMIT;".repeat(20);
            let o = Std::new("mariadb")
                .arg(format!("--socket={sock}"))
                .args(["--user=root", "--database=shop", "-e", &q])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            n += 20;
        }
        n
    });
    std::thread::sleep(Duration::from_millis(300));
    let w = W::new(&format!(
        "[[source]]\nname = \"shop\"\nkind = \"mysql\"\nhost = \"{}\"\nuser = \"root\"\ndatabase = \"shop\"\nclass = \"critical\"\nstrategy = \"backup\"\nverify = \"SELECT count(*) > 0 AND sum(amount) = 0 FROM ledger\"\n",
        conn.host.as_deref().unwrap()
    ));
    let j = w.protect("shop");
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0);
    assert_eq!(j["state"], "completed", "{j}");
    // The drill restores into a scratch server and checks the invariant.
    let d = w.json(&["drill", "shop"], 0);
    assert_eq!(d[0]["passed"], true, "{d}");
    // Restoring over the live (non-empty) server is refused without --replace.
    let o = w.cmd(&["restore", "--source", "shop"]).output().unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--replace"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // After losing the database, one command brings it back, consistent.
    maria(&conn, None, "DROP DATABASE shop");
    w.cmd(&["restore", "--source", "shop"]).assert().success();
    assert_eq!(
        maria(
            &conn,
            Some("shop"),
            "SELECT sum(amount) = 0 AND count(*) > 0 FROM ledger"
        ),
        "1"
    );
    // Down server: failed job, no recovery point.
    let before = w.snapshot_count("shop");
    drop(server);
    let j = w.protect_at("shop", chrono::Utc::now() + chrono::Duration::minutes(20));
    assert_eq!(j["state"], "failed", "{j}");
    assert_eq!(w.snapshot_count("shop"), before);
}
