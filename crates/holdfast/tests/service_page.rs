//! The service's live status page in a real headless Chromium: it renders each source's state,
//! updates in place (no reload) when a job changes it, and says so when the service stops
//! answering. The service is a real `holdfast serve` behind a bearer token; the browser sends
//! the token as a header on every request, as a reverse proxy or a header extension would.

mod support;

use std::fs;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::chromium::Chromium;
use support::service::{request, Served};

const PW: &str = "pw";
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// Per source on the page: (name, RPO cell, last-job cell).
const ROWS: &str = "JSON.stringify(Array.from(document.querySelectorAll('tr[data-source]')).map(function (tr) { return [tr.getAttribute('data-source'), tr.querySelector('[data-f=rpo]').textContent, tr.querySelector('[data-f=job]').textContent]; }))";

fn rows(c: &mut Chromium) -> Vec<(String, String, String)> {
    let v: Value = serde_json::from_str(c.eval(ROWS).as_str().unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().into(),
                r[1].as_str().unwrap().into(),
                r[2].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn row(c: &mut Chromium, name: &str) -> (String, String) {
    let all = rows(c);
    all.iter()
        .find(|r| r.0 == name)
        .map(|r| (r.1.clone(), r.2.clone()))
        .unwrap_or_else(|| panic!("no row for {name} on the page: {all:?}"))
}

#[test]
fn the_live_page_shows_each_source_updates_in_place_and_shows_a_dead_service() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir(d.join("data")).unwrap();
    fs::write(d.join("data/a.txt"), "first\n").unwrap();
    fs::write(d.join("token"), format!("{TOKEN}\n")).unwrap();
    // `files` is backed up at once; `late` cannot be (its directory does not exist yet), so it
    // is breached until the test creates it and the service's retry backs it up.
    fs::write(
        d.join("holdfast.toml"),
        format!(
            "[repository.main]\nurl = \"repo\"\npassword-env = \"TEST_PW\"\n\n[class.critical]\nrpo = \"1h\"\nrto = \"10m\"\ndrill-every = \"1h\"\nkeep = {{ last = 3 }}\n\n[[source]]\nname = \"files\"\nkind = \"path\"\npaths = [\"data\"]\nclass = \"critical\"\nstrategy = \"backup\"\n\n[[source]]\nname = \"late\"\nkind = \"path\"\npaths = [\"late\"]\nclass = \"critical\"\nstrategy = \"backup\"\n\n[service]\nrefresh = \"1s\"\ntoken-file = \"{}\"\n",
            d.join("token").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_holdfast"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TEST_PW", PW)
        .env("HOLDFAST_INSECURE_TEST_KDF", "1")
        .env("HOLDFAST_HOSTNAME", "page-host")
        .env("HOLDFAST_CONFIG", d.join("holdfast.toml"))
        .env("HOLDFAST_STATE_DIR", d.join("state"))
        .current_dir(d);
    let port = support::service::free_port();
    let mut s = Served::start_on(&mut cmd, &d.join("serve.log"), port, Some(TOKEN.into()));
    // The page is guarded like every route.
    assert_eq!(request(port, "GET", "/", None).unwrap().status, 401);
    s.wait_for(
        "files backed up, late failed",
        Duration::from_secs(60),
        |v| {
            let src = |n: &str| {
                v["sources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["name"] == n)
                    .cloned()
                    .unwrap_or(Value::Null)
            };
            src("files")["rpo_met"] == true && src("late")["last_failure"].is_string()
        },
    );

    let mut c = Chromium::start();
    c.set_headers(json!({ "Authorization": format!("Bearer {TOKEN}") }));
    c.navigate(&format!("http://127.0.0.1:{port}/?every=1"));
    assert_eq!(c.eval("document.title"), "holdfast status");
    // A mark that a reload would wipe: it must survive every update below.
    c.eval("window.hfTestMark = 'no reload'");
    let (rpo, _) = row(&mut c, "files");
    assert_eq!(rpo, "met", "{:?}", rows(&mut c));
    let (rpo, late_job_before) = row(&mut c, "late");
    assert!(late_job_before.contains("failed"), "{late_job_before}");
    assert!(
        rpo == "breached" || rpo == "not measured",
        "late is not backed up, the page says {rpo}"
    );
    let text_before = c
        .eval("document.body.innerText")
        .as_str()
        .unwrap()
        .to_string();
    assert!(text_before.contains("Running jobs") && text_before.contains("Replication tasks"));
    assert!(text_before.contains("page-host"), "{text_before}");
    assert!(
        !text_before.contains("every control passes"),
        "{text_before}"
    );
    // The script is polling (it wrote when the service last answered).
    c.wait("the first poll", Duration::from_secs(10), |c| {
        c.eval("document.getElementById('hf-checked').textContent")
            .as_str()
            .unwrap()
            .ends_with("UTC")
    });
    assert_eq!(c.eval("document.getElementById('hf-banner').hidden"), true);

    // The data appears; the service's retry backs it up; the page follows by itself.
    fs::create_dir(d.join("late")).unwrap();
    fs::write(d.join("late/b.txt"), "late data\n").unwrap();
    c.wait(
        "late to turn met on the page",
        Duration::from_secs(90),
        |c| row(c, "late").0 == "met",
    );
    let (_, job) = row(&mut c, "late");
    // Its backup, or what follows it (retention, the drill).
    assert!(
        job != late_job_before && (job.contains(" completed ") || job.contains(" passed ")),
        "{job}"
    );
    assert_eq!(c.eval("window.hfTestMark"), "no reload");
    let text_after = c
        .eval("document.body.innerText")
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(text_before, text_after);
    // The service agrees with the page.
    let snap = s.json("/api/snapshot");
    let late = snap["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "late")
        .unwrap();
    assert_eq!(late["rpo_met"], true, "{snap}");

    // The header stops coming (the proxy's session ended): refused polls are trouble too, and
    // the banner goes when the answers come back.
    c.set_headers(json!({}));
    c.wait(
        "the page to see refused polls",
        Duration::from_secs(20),
        |c| {
            c.eval("document.getElementById('hf-banner').textContent")
                .as_str()
                .unwrap()
                .contains("(HTTP 401)")
        },
    );
    c.set_headers(json!({ "Authorization": format!("Bearer {TOKEN}") }));
    c.wait("the banner to go", Duration::from_secs(20), |c| {
        c.eval("document.getElementById('hf-banner').hidden") == true
    });

    // The service dies: the page says so, and nothing on it stays green.
    s.kill9();
    c.wait(
        "the page to see the dead service",
        Duration::from_secs(30),
        |c| c.eval("document.getElementById('hf-banner').hidden") == false,
    );
    let banner = c.eval("document.getElementById('hf-banner').textContent");
    assert!(
        banner
            .as_str()
            .unwrap()
            .starts_with("service not answering since "),
        "{banner}"
    );
    let green = c.eval(
        "Array.from(document.querySelectorAll('.ok')).filter(function (e) { return getComputedStyle(e).backgroundColor === 'rgb(46, 125, 50)'; }).length",
    );
    assert_eq!(green, 0, "green marks on the page of a dead service");
    assert!(
        c.eval("document.querySelectorAll('.ok').length")
            .as_u64()
            .unwrap()
            > 0,
        "the page had met verdicts to grey out"
    );
    assert_eq!(c.eval("window.hfTestMark"), "no reload");
}
