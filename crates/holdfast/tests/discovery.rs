//! Discovery by identity (issue 10, items 3 and 4): a server is covered only by a source that
//! connects to it, its data directory only through it, and `plan` and `status` see what host
//! discovery finds. Real PostgreSQL and MariaDB servers.

use std::time::Duration;

use holdfast_policy::sources::{my_scratch, pg_scratch};
use serde_json::Value;

mod support;
use support::workload::W;

fn found<'a>(list: &'a Value, pred: &dyn Fn(&Value) -> bool) -> Option<&'a Value> {
    list.as_array().unwrap().iter().find(|f| pred(f))
}

fn has_port(f: &Value, port: u16) -> bool {
    f["ports"]
        .as_array()
        .is_some_and(|p| p.iter().any(|x| x.as_u64() == Some(port as u64)))
}

/// Items 3 and 4: coverage is by identity (port, socket, data directory), never by kind; plan
/// and status include what host discovery finds, and a finding can be accepted on purpose.
#[test]
fn discovery_matches_servers_by_identity_and_plan_and_status_see_them() {
    let scratch = tempfile::tempdir().unwrap();
    let pg_a = pg_scratch::Server::start(scratch.path(), Duration::from_secs(60))
        .expect("PostgreSQL (scripts/test.sh installs it)");
    let pg_b =
        pg_scratch::Server::start(scratch.path(), Duration::from_secs(60)).expect("PostgreSQL");
    let my_a = my_scratch::Server::start(scratch.path(), Duration::from_secs(60))
        .expect("MariaDB (scripts/test.sh installs it)");
    let my_b = my_scratch::Server::start(scratch.path(), Duration::from_secs(60)).expect("MariaDB");
    let (pa, pb) = (pg_a.conn().port.unwrap(), pg_b.conn().port.unwrap());
    let sock = |s: &my_scratch::Server| s.conn().host.clone().unwrap();
    let body = format!(
        "[[source]]\nname = \"pg\"\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {pa}\nuser = \"postgres\"\nclass = \"critical\"\nstrategy = \"backup\"\n\n[[source]]\nname = \"maria\"\nkind = \"mysql\"\nhost = \"{}\"\nuser = \"root\"\nclass = \"critical\"\nstrategy = \"backup\"\n\n[discover]\nroots = [\"{}\"]\n",
        sock(&my_a),
        scratch.path().display()
    );
    let w = W::new(&body);
    let list = w.json(&["discover"], 0);
    let a = found(&list, &|f| f["kind"] == "postgres" && has_port(f, pa)).expect("server a");
    let b = found(&list, &|f| f["kind"] == "postgres" && has_port(f, pb)).expect("server b");
    assert_eq!(a["protected_by"], "pg", "{a}");
    assert!(
        b["protected_by"].is_null(),
        "a source of the same kind on another port does not cover it: {b}"
    );
    // The data directories (found under the root): covered through the server serving them.
    let dir_of = |f: &Value| {
        f["data_dir"]
            .as_str()
            .unwrap_or_else(|| panic!("{f}"))
            .to_string()
    };
    let (da, db) = (dir_of(a), dir_of(b));
    let on_disk = |d: &str| found(&list, &|f| f["location"] == d && f["ports"].is_null());
    assert_eq!(on_disk(&da).expect("data dir a")["protected_by"], "pg");
    assert!(on_disk(&db).expect("data dir b")["protected_by"].is_null());
    // MariaDB: the same, by socket.
    let ma = found(&list, &|f| {
        f["kind"] == "mysql" && f["sockets"].to_string().contains(&sock(&my_a))
    })
    .expect("mariadb a");
    let mb = found(&list, &|f| {
        f["kind"] == "mysql" && f["sockets"].to_string().contains(&sock(&my_b))
    })
    .expect("mariadb b");
    assert_eq!(ma["protected_by"], "maria", "{ma}");
    assert!(mb["protected_by"].is_null(), "{mb}");
    // plan sees the unprotected server (before: "no anti-patterns", exit 0).
    let plan = w.json(&["plan"], 4);
    let unknown = |p: &Value, loc: &str| {
        p["findings"].as_array().unwrap().iter().any(|f| {
            f["code"] == "unknown-source" && f["subject"] == loc && f["severity"] == "high"
        })
    };
    let loc_b = b["location"].as_str().unwrap().to_string();
    assert!(unknown(&plan, &loc_b), "{plan}");
    let st = w.json(&["status"], 4);
    let ctl = st["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "all-data-sources-known")
        .cloned()
        .unwrap();
    assert_eq!(ctl["passed"], false);
    assert!(ctl["failing"].to_string().contains(&loc_b), "{ctl}");
    // Accept every unprotected location on purpose: plan has no unknown source left.
    let mut accept = String::new();
    for f in list.as_array().unwrap() {
        if f["protected_by"].is_null() {
            accept += &format!(
                "\n[[discover.accept]]\nlocation = {}\nreason = \"test: not this workload's\"\n",
                f["location"]
            );
        }
    }
    w.write("holdfast.toml", &(body.clone() + &accept));
    let plan = w.json_any(&["plan"]);
    assert!(
        !plan["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == "unknown-source" && f["subject"] == loc_b.as_str()),
        "{plan}"
    );
    let st = w.json(&["status"], 4);
    let ctl = st["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "all-data-sources-known")
        .cloned()
        .unwrap();
    // (Other tests start servers of their own meanwhile: look at this test's.)
    assert!(!ctl["failing"].to_string().contains(&loc_b), "{ctl}");
    // An accepted location needs a reason.
    w.write(
        "holdfast.toml",
        &(body + "\n[[discover.accept]]\nlocation = \"tcp:1\"\nreason = \"\"\n"),
    );
    let (_, err) = w.run(&mut w.cmd(&["plan"]), 2);
    assert!(err.contains("needs a reason"), "{err}");
    drop((pg_a, pg_b, my_a, my_b));
}
