//! Restores over live databases (issue 10, item 1's class): `--replace` yields exactly the
//! recovery point (objects made after the backup do not survive), and is refused while another
//! session is connected. Real PostgreSQL and MariaDB servers.

use std::process::{Command as Std, Stdio};
use std::time::{Duration, Instant};

use holdfast_policy::sources::{my_scratch, pg_scratch, Conn};

mod support;
use support::workload::W;

fn psql(conn: &Conn, db: &str, q: &str) -> String {
    let o = Std::new("psql")
        .env("PGHOST", conn.host.as_deref().unwrap())
        .env("PGPORT", conn.port.unwrap().to_string())
        .env("PGUSER", "postgres")
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

fn maria(conn: &Conn, q: &str) -> String {
    let o = Std::new("mariadb")
        .arg(format!("--socket={}", conn.host.as_deref().unwrap()))
        .args(["--user=root", "-N", "-B", "-e", q])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mariadb {q}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Wait until `f` holds (a server noticed a client), at most 20 s.
fn until(what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn postgres_replace_is_exact_and_refused_under_a_session() {
    let scratch = tempfile::tempdir().unwrap();
    let server = pg_scratch::Server::start(scratch.path(), Duration::from_secs(60))
        .expect("PostgreSQL (scripts/test.sh installs it)");
    let conn = server.conn();
    psql(&conn, "postgres", "CREATE DATABASE shop");
    psql(
        &conn,
        "shop",
        "CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 100) g",
    );
    let w = W::new(&format!(
        "[[source]]\nname = \"shop\"\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndatabase = \"shop\"\nclass = \"critical\"\nstrategy = \"backup\"\n",
        conn.port.unwrap()
    ));
    w.run(&mut w.cmd(&["protect"]), 4);
    // After the backup: more rows, and a table the recovery point does not have.
    psql(
        &conn,
        "shop",
        "INSERT INTO orders SELECT g FROM generate_series(101, 150) g; CREATE TABLE later(x int)",
    );
    // Another session is connected: refused, and nothing changes.
    let mut session = Std::new("psql")
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", conn.port.unwrap().to_string())
        .env("PGUSER", "postgres")
        .env("PGAPPNAME", "the-application")
        .args(["-X", "-d", "shop"])
        .stdin(Stdio::piped()) // an idle session, as an application's connection pool holds
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until("the session", || {
        psql(
            &conn,
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'the-application'",
        ) == "1"
    });
    let (_, err) = w.run(&mut w.cmd(&["restore", "--source", "shop", "--replace"]), 1);
    assert!(
        err.contains("other session") && err.contains("the-application"),
        "{err}"
    );
    assert_eq!(psql(&conn, "shop", "SELECT count(*) FROM orders"), "150");
    session.kill().unwrap();
    session.wait().unwrap();
    until("the session to end", || {
        psql(
            &conn,
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'the-application'",
        ) == "0"
    });
    // Without sessions: exactly the recovery point.
    let (out, _) = w.run(&mut w.cmd(&["restore", "--source", "shop", "--replace"]), 0);
    assert!(out.contains("dropped database shop"), "{out}");
    assert_eq!(psql(&conn, "shop", "SELECT count(*) FROM orders"), "100");
    assert_eq!(
        psql(
            &conn,
            "shop",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'later'"
        ),
        "0"
    );
    drop(server);
}

#[test]
fn mariadb_replace_is_exact_and_refused_under_a_session() {
    let scratch = tempfile::tempdir().unwrap();
    let server = my_scratch::Server::start(scratch.path(), Duration::from_secs(60))
        .expect("MariaDB (scripts/test.sh installs it)");
    let conn = server.conn();
    maria(&conn, "CREATE DATABASE shop; CREATE TABLE shop.orders(id INT PRIMARY KEY); INSERT INTO shop.orders VALUES (1),(2),(3)");
    let w = W::new(&format!(
        "[[source]]\nname = \"shop\"\nkind = \"mysql\"\nhost = \"{}\"\nuser = \"root\"\nclass = \"critical\"\nstrategy = \"backup\"\n",
        conn.host.as_deref().unwrap()
    ));
    w.run(&mut w.cmd(&["protect"]), 4);
    maria(
        &conn,
        "INSERT INTO shop.orders VALUES (4); CREATE TABLE shop.later(x INT); CREATE DATABASE newer",
    );
    let mut session = Std::new("mariadb")
        .arg(format!("--socket={}", conn.host.as_deref().unwrap()))
        .args(["--user=root", "shop"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until("the session", || {
        maria(
            &conn,
            "SELECT count(*) FROM information_schema.processlist WHERE db = 'shop' AND command = 'Sleep'",
        ) == "1"
    });
    let (_, err) = w.run(&mut w.cmd(&["restore", "--source", "shop", "--replace"]), 1);
    assert!(err.contains("other session"), "{err}");
    assert_eq!(maria(&conn, "SELECT count(*) FROM shop.orders"), "4");
    session.kill().unwrap();
    session.wait().unwrap();
    until("the session to end", || {
        maria(
            &conn,
            "SELECT count(*) FROM information_schema.processlist WHERE db = 'shop' AND command = 'Sleep'",
        ) == "0"
    });
    let (out, _) = w.run(&mut w.cmd(&["restore", "--source", "shop", "--replace"]), 0);
    assert!(out.contains("replaced database shop"), "{out}");
    assert!(
        out.contains("left as they are") && out.contains("newer"),
        "{out}"
    );
    assert_eq!(maria(&conn, "SELECT count(*) FROM shop.orders"), "3");
    assert_eq!(
        maria(&conn, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'shop' AND table_name = 'later'"),
        "0"
    );
    drop(server);
}
