//! `holdfast serve` notifications, end to end: a real service, a failing source, a webhook
//! receiver on loopback (a small HTTP server in this test recording every POST) and a
//! notify-command writing what it gets to a file. One message per breach and one per
//! recovery, retries while the receiver is down, reminders at the interval, no re-sending
//! after a restart.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::service::Served;

const PW: &str = "pw";

/// A webhook receiver: answers every POST with `status` and records the bodies it accepted.
struct Receiver {
    port: u16,
    status: Arc<AtomicU16>,
    accepted: Arc<Mutex<Vec<Value>>>,
    refused: Arc<AtomicUsize>,
}

impl Receiver {
    fn start() -> Receiver {
        Receiver::start_on(TcpListener::bind("127.0.0.1:0").unwrap())
    }
    fn start_on(l: TcpListener) -> Receiver {
        let r = Receiver {
            port: l.local_addr().unwrap().port(),
            status: Arc::new(AtomicU16::new(200)),
            accepted: Arc::default(),
            refused: Arc::default(),
        };
        let (status, accepted, refused) = (r.status.clone(), r.accepted.clone(), r.refused.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                let (status, accepted, refused) =
                    (status.clone(), accepted.clone(), refused.clone());
                std::thread::spawn(move || {
                    let _ = serve_one(c, &status, &accepted, &refused);
                });
            }
        });
        r
    }
    fn set_status(&self, s: u16) {
        self.status.store(s, Ordering::SeqCst);
    }
    fn bodies(&self) -> Vec<Value> {
        self.accepted.lock().unwrap().clone()
    }
    /// (event, key) of every accepted message, in order.
    fn events(&self) -> Vec<(String, String)> {
        self.bodies().iter().map(event_key).collect()
    }
}

fn event_key(v: &Value) -> (String, String) {
    (
        v["event"].as_str().unwrap_or("?").to_string(),
        v["key"].as_str().unwrap_or("?").to_string(),
    )
}

fn serve_one(
    c: TcpStream,
    status: &AtomicU16,
    accepted: &Mutex<Vec<Value>>,
    refused: &AtomicUsize,
) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(c.try_clone()?);
    let mut first = String::new();
    r.read_line(&mut first)?;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let code = status.load(Ordering::SeqCst);
    let mut c = c;
    if first.starts_with("POST ") && code == 200 {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        accepted.lock().unwrap().push(v);
        c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    } else {
        refused.fetch_add(1, Ordering::SeqCst);
        write!(
            c,
            "HTTP/1.1 {code} Down\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndown"
        )?;
    }
    c.flush()
}

/// A workload whose one source `files` backs up `data` (missing at first: its backup fails).
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new(class: &str, notify: &str) -> Work {
        let dir = tempfile::tempdir().unwrap();
        let w = Work { dir };
        fs::write(
            w.path("holdfast.toml"),
            format!(
                "[repository.main]\nurl = \"repo\"\npassword-env = \"TEST_PW\"\n\n[class.critical]\nrpo = \"1h\"\nkeep = {{ last = 3 }}\n{class}\n\n[[source]]\nname = \"files\"\nkind = \"path\"\npaths = [\"data\"]\nclass = \"critical\"\nstrategy = \"backup\"\n\n[service]\nrefresh = \"1s\"\n\n[service.notify]\n{notify}"
            ),
        )
        .unwrap();
        w
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn cmd(&self) -> Command {
        support::service::workload_cmd(self.dir.path(), "notify-host", PW)
    }
    fn serve(&self) -> Served {
        Served::start(self.cmd(), &self.path("serve.log"))
    }
    /// Fix the cause: the path exists.
    fn fix(&self) {
        fs::create_dir(self.path("data")).unwrap();
        fs::write(self.path("data/a.txt"), "hello\n").unwrap();
    }
}

/// Wait until `f` holds, up to `limit` (then panic naming `what` and the service's log).
fn until(what: &str, limit: Duration, s: &Served, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < limit,
            "waited {limit:?} for {what}\nlog:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn count(events: &[(String, String)]) -> BTreeMap<(String, String), usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(e.clone()).or_insert(0) += 1;
    }
    m
}

fn ek(e: &str, k: &str) -> (String, String) {
    (e.to_string(), k.to_string())
}

/// What the notify-command wrote: the JSON documents it got on stdin.
fn command_events(file: &Path) -> Vec<Value> {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A failing backup fires its job alert, the RPO (never met) and the RTO (never drilled) once
/// each, however many refreshes and restarts follow; fixing the cause while the receiver is
/// down resolves each once, delivered when the receiver is back; the notify-command gets the
/// same events.
#[test]
fn one_message_per_breach_and_per_recovery_with_retries_and_restart() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let envs = dir.path().join("env.txt");
    let w = Work::new(
        "rto = \"10m\"\ndrill-every = \"1h\"",
        &format!(
            "command = \"cat >> {} && printf '%s %s %s\\\\n' \\\"$HOLDFAST_ALERT_EVENT\\\" \\\"$HOLDFAST_ALERT_KEY\\\" \\\"$HOLDFAST_ALERT_HOST\\\" >> {}\"\n\n[[service.notify.webhook]]\nurl = \"http://127.0.0.1:{}/hook\"\nformat = \"json\"\n",
            events.display(),
            envs.display(),
            rx.port
        ),
    );
    let mut s = w.serve();
    let breaches = ["job:files", "rpo:files", "rto:files"];
    until(
        "a firing message per breach",
        Duration::from_secs(60),
        &s,
        || {
            let e = rx.events();
            breaches.iter().all(|k| e.contains(&ek("firing", k)))
        },
    );
    // The backup is retried (and fails) at every refresh: still one message per breach.
    s.wait_for("a failed backup job", Duration::from_secs(30), |v| {
        v["sources"][0]["failing"] == true
    });
    std::thread::sleep(Duration::from_secs(4));
    let firing: BTreeMap<_, _> = breaches.iter().map(|k| (ek("firing", k), 1)).collect();
    assert_eq!(count(&rx.events()), firing, "{:#?}", rx.bodies());
    let job = rx
        .bodies()
        .into_iter()
        .find(|b| b["key"] == "job:files")
        .unwrap();
    assert_eq!(job["kind"], "job_failed");
    assert_eq!(job["source"], "files");
    assert_eq!(job["host"], "notify-host");
    assert!(
        job["summary"]
            .as_str()
            .unwrap()
            .contains("the newest backup failed"),
        "{job}"
    );
    let rpo = rx
        .bodies()
        .into_iter()
        .find(|b| b["key"] == "rpo:files")
        .unwrap();
    assert_eq!(rpo["kind"], "rpo_breached");
    assert!(
        rpo["summary"]
            .as_str()
            .unwrap()
            .contains("no recovery point"),
        "{rpo}"
    );

    // A restart while the alerts fire sends nothing again.
    assert!(s.stop(Duration::from_secs(60)).success());
    let alerts_json: Value =
        serde_json::from_slice(&fs::read(w.path("state/service/alerts.json")).unwrap()).unwrap();
    assert_eq!(
        alerts_json["firing"].as_object().unwrap().len(),
        3,
        "{alerts_json}"
    );
    let s = w.serve();
    s.wait_for(
        "the restarted service's view",
        Duration::from_secs(30),
        |v| v["status"].is_object() && v["sources"][0]["failing"] == true,
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(count(&rx.events()), firing, "re-sent after a restart");

    // The receiver goes down; the cause is fixed; every alert resolves while it is down.
    rx.set_status(500);
    w.fix();
    s.wait_for(
        "a backup and a drill after the fix",
        Duration::from_secs(90),
        |v| {
            let x = &v["sources"][0];
            x["failing"] == false && x["rpo_met"] == true && x["rto_met"] == true
        },
    );
    until("failed deliveries", Duration::from_secs(30), &s, || {
        rx.refused.load(Ordering::SeqCst) >= 2
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(&rx.events()), firing, "accepted while down");
    rx.set_status(200);
    until(
        "the resolved messages after the receiver is back",
        Duration::from_secs(120),
        &s,
        || {
            let e = rx.events();
            breaches.iter().all(|k| e.contains(&ek("resolved", k)))
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let mut want = firing.clone();
    for k in breaches {
        want.insert(ek("resolved", k), 1);
    }
    assert_eq!(count(&rx.events()), want, "{:#?}", rx.bodies());
    // Per key, firing came before resolved, and the resolved one says since when it fired.
    for k in breaches {
        let b = rx.bodies();
        let f = b
            .iter()
            .position(|x| event_key(x) == ek("firing", k))
            .unwrap();
        let r = b
            .iter()
            .position(|x| event_key(x) == ek("resolved", k))
            .unwrap();
        assert!(f < r, "{k}: {b:#?}");
        assert_eq!(b[r]["since"], b[f]["at"], "{k}");
    }
    assert!(rx.refused.load(Ordering::SeqCst) >= 2);

    // The notify-command got the same events, on stdin and in its environment.
    let got = command_events(&events);
    let cmd_events: Vec<(String, String)> = got.iter().map(event_key).collect();
    assert_eq!(count(&cmd_events), want, "{got:#?}");
    let env_lines = fs::read_to_string(&envs).unwrap();
    let mut env_events: Vec<(String, String)> = env_lines
        .lines()
        .map(|l| {
            let p: Vec<&str> = l.split(' ').collect();
            assert_eq!(p[2], "notify-host", "{l}");
            ek(p[0], p[1])
        })
        .collect();
    env_events.sort();
    let mut sorted = cmd_events.clone();
    sorted.sort();
    assert_eq!(env_events, sorted);
    let state: Value =
        serde_json::from_slice(&fs::read(w.path("state/service/alerts.json")).unwrap()).unwrap();
    assert_eq!(state["firing"], serde_json::json!({}), "{state}");
    assert_eq!(state["outbox"], serde_json::json!([]), "{state}");
}

/// While an alert fires, a reminder goes out every `reminder`, and no more often.
#[test]
fn reminders_at_the_configured_interval() {
    let rx = Receiver::start();
    let w = Work::new(
        "",
        &format!(
            "reminder = \"2s\"\n\n[[service.notify.webhook]]\nurl = \"http://127.0.0.1:{}/hook\"\n",
            rx.port
        ),
    );
    let s = w.serve();
    until("the job alert", Duration::from_secs(60), &s, || {
        rx.events().contains(&ek("firing", "job:files"))
    });
    std::thread::sleep(Duration::from_secs(9));
    let msgs: Vec<Value> = rx
        .bodies()
        .into_iter()
        .filter(|b| b["key"] == "job:files")
        .collect();
    assert_eq!(msgs[0]["event"], "firing", "{msgs:#?}");
    let reminders = &msgs[1..];
    assert!(
        // At most one per 2 s (the gaps are checked below); at least two in 9 s even on a
        // loaded machine whose observations come slower than `refresh`.
        (2..=5).contains(&reminders.len()),
        "{} reminders in 9 s at a 2 s interval: {msgs:#?}",
        reminders.len()
    );
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v["at"].as_str().unwrap()).unwrap();
    for pair in msgs.windows(2) {
        assert_eq!(pair[1]["event"], "reminder", "{msgs:#?}");
        assert_eq!(pair[1]["since"], msgs[0]["at"]);
        let gap = at(&pair[1]) - at(&pair[0]);
        assert!(
            gap >= chrono::Duration::seconds(2),
            "{gap} apart: {msgs:#?}"
        );
    }
}

/// A receiver that refuses connections (nothing listens on its port yet) gets the message
/// once it listens: delivery is retried, and the service goes on meanwhile.
#[test]
fn a_receiver_that_refuses_connections_gets_the_message_when_it_is_back() {
    let port = support::service::free_port();
    let w = Work::new(
        "",
        &format!("[[service.notify.webhook]]\nurl = \"http://127.0.0.1:{port}/hook\"\nformat = \"json\"\n"),
    );
    let s = w.serve();
    until("failed deliveries", Duration::from_secs(60), &s, || {
        s.log().matches("notification not delivered").count() >= 2
    });
    assert!(
        s.log().contains("Connection refused") || s.log().contains("connect"),
        "{}",
        s.log()
    );
    // The service is not held up: it still answers and refreshes.
    let before = s.json("/api/snapshot")["at"].clone();
    s.wait_for("a newer snapshot", Duration::from_secs(10), |v| {
        v["at"] != before
    });
    let rx = Receiver::start_on(TcpListener::bind(("127.0.0.1", port)).unwrap());
    until(
        "the messages after the receiver listens",
        Duration::from_secs(60),
        &s,
        || {
            let e = rx.events();
            e.contains(&ek("firing", "job:files")) && e.contains(&ek("firing", "rpo:files"))
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let e = count(&rx.events());
    assert_eq!(e.get(&ek("firing", "job:files")), Some(&1), "{e:?}");
    assert_eq!(e.get(&ek("firing", "rpo:files")), Some(&1), "{e:?}");
}
