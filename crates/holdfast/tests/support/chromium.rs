//! Headless Chromium driven over the DevTools protocol (CDP) on a websocket: start it on a
//! free debugging port (`--remote-debugging-port=0`, the address read from its stderr), open
//! one page, navigate, set request headers, evaluate JavaScript. Missing Chromium fails the
//! test, saying how to install it: a browser test never skips.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// A running headless Chromium with one page attached.
pub struct Chromium {
    child: Child,
    ws: WebSocket<TcpStream>,
    next: u64,
    session: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The browser binary: `$CHROMIUM`, else the first of chromium, chromium-browser, google-chrome
/// on PATH. Panics with how to install it.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return p.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "this test drives a headless Chromium and none was found (chromium, chromium-browser or \
         google-chrome on PATH, or $CHROMIUM): install it, e.g. `apt-get install chromium` \
         (scripts/test.sh does)"
    );
}

impl Chromium {
    /// Start it and attach to a blank page.
    pub fn start() -> Chromium {
        let bin = binary();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("chromium.log");
        let err = std::fs::File::create(&log).unwrap();
        let child = Command::new(&bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("profile").display()
            ))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let t = Instant::now();
        let url = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(u) = text
                .lines()
                .find_map(|l| l.split("DevTools listening on ").nth(1))
            {
                break u.trim().to_string();
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{} did not say \"DevTools listening on ws://...\" within 30 s:\n{text}",
                bin.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let hostport = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let tcp = TcpStream::connect(&hostport).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (ws, _) = tungstenite::client(url.as_str(), tcp)
            .unwrap_or_else(|e| panic!("websocket to {url}: {e}"));
        let mut c = Chromium {
            child,
            ws,
            next: 0,
            session: String::new(),
            log,
            _dir: dir,
        };
        let target = c.call(
            "Target.createTarget",
            json!({ "url": "about:blank" }),
            false,
        );
        let id = target["targetId"].as_str().unwrap().to_string();
        let att = c.call(
            "Target.attachToTarget",
            json!({ "targetId": id, "flatten": true }),
            false,
        );
        c.session = att["sessionId"].as_str().unwrap().to_string();
        c.page("Runtime.enable", json!({}));
        c.page("Network.enable", json!({}));
        c.page("Page.enable", json!({}));
        c
    }

    /// One CDP command (on the page's session with `page`); its result. Events are skipped.
    fn call(&mut self, method: &str, params: Value, page: bool) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if page {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .unwrap_or_else(|e| panic!("CDP {method}: {e}"));
        loop {
            let m = self
                .ws
                .read()
                .unwrap_or_else(|e| panic!("CDP {method}: {e}\n{}", self.log()));
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"] == id {
                assert!(v["error"].is_null(), "CDP {method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// A command on the page.
    pub fn page(&mut self, method: &str, params: Value) -> Value {
        self.call(method, params, true)
    }

    /// Send these headers with every request the page makes (what a header-setting browser
    /// extension or a reverse proxy does).
    pub fn set_headers(&mut self, headers: Value) {
        self.page("Network.setExtraHTTPHeaders", json!({ "headers": headers }));
    }

    /// Load `url` and wait until the document is complete.
    pub fn navigate(&mut self, url: &str) {
        let r = self.page("Page.navigate", json!({ "url": url }));
        assert!(r["errorText"].is_null(), "navigate {url}: {r}");
        self.wait("the page to load", Duration::from_secs(30), |c| {
            c.eval("document.readyState") == "complete"
        });
    }

    /// Evaluate a JavaScript expression in the page; its value (JSON).
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.page(
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true }),
        );
        assert!(r["exceptionDetails"].is_null(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Poll (every 200 ms) until `f` holds; panic naming `what` after `limit`.
    pub fn wait(&mut self, what: &str, limit: Duration, mut f: impl FnMut(&mut Self) -> bool) {
        let t = Instant::now();
        while !f(self) {
            assert!(
                t.elapsed() < limit,
                "waited {limit:?} for {what}; the page says:\n{}",
                self.eval("document.body ? document.body.innerText : ''")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The browser's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
