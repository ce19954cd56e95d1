//! `holdfast serve` as a child process of a test: started on a free loopback port with its own
//! state directory, its log in a file, talked to over real HTTP (a minimal HTTP/1.1 client on
//! a TCP socket, so the test sees exactly what a client sees), signalled, killed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running service.
pub struct Served {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
    /// Its log (stderr).
    pub log: PathBuf,
    /// Its bearer token, if the test gave one.
    pub token: Option<String>,
}

/// A free loopback port (bound and released: a tiny race another test could win, so the
/// service's own bind error names the port if it does).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

/// A request on `127.0.0.1:port`.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = b.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        b = rest[n..].trim_start_matches("\r\n");
    }
    out
}

impl Served {
    /// Start `holdfast serve` from `cmd` (a holdfast command with its environment: config,
    /// state directory, host name, password) on a free port; wait until `/healthz` answers.
    pub fn start(mut cmd: Command, log: &Path) -> Served {
        Self::start_on(&mut cmd, log, free_port(), None)
    }

    /// [`Served::start`] on a given port, with a bearer token for the test's requests.
    pub fn start_on(cmd: &mut Command, log: &Path, port: u16, token: Option<String>) -> Served {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = cmd
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        let mut s = Served {
            child: Some(child),
            port,
            log: log.to_path_buf(),
            token,
        };
        let t = Instant::now();
        loop {
            if let Ok(r) = s.get("/healthz") {
                if r.status == 200 {
                    break;
                }
            }
            if let Some(st) = s.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "holdfast serve exited ({st}) before it served:\n{}",
                    s.log()
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "holdfast serve did not answer /healthz within 30 s:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    /// GET a path.
    pub fn get(&self, path: &str) -> std::io::Result<Response> {
        request(self.port, "GET", path, self.token.as_deref())
    }

    /// GET a JSON path (status 200 expected).
    pub fn json(&self, path: &str) -> Value {
        let r = self.get(path).unwrap();
        assert_eq!(r.status, 200, "GET {path}: {}\n{}", r.body, self.log());
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("GET {path}: {e}: {}", r.body))
    }

    /// Poll `/api/snapshot` until `f` holds (panics with the last snapshot and the log after
    /// `limit`).
    pub fn wait_for(&self, what: &str, limit: Duration, f: impl Fn(&Value) -> bool) -> Value {
        let t = Instant::now();
        loop {
            let v = self.json("/api/snapshot");
            if f(&v) {
                return v;
            }
            assert!(
                t.elapsed() < limit,
                "waited {limit:?} for {what}; last snapshot:\n{v:#}\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The service's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Send a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our child.
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }

    /// SIGKILL, and wait for it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait (up to `limit`) for it to exit.
    pub fn stop(&mut self, limit: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let mut c = self.child.take().unwrap();
        let t = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if t.elapsed() > limit {
                let _ = c.kill();
                panic!(
                    "holdfast serve did not stop within {limit:?} after SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The holdfast binary on the workload in `dir` (`holdfast.toml`, state in `dir/state`) as host
/// `host`, with a clean environment: the repository password `pw` in `TEST_PW` (for the
/// workload's `password-env`) and `HOLDFAST_PASSWORD`, cheap key derivation.
pub fn workload_cmd(dir: &Path, host: &str, pw: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_holdfast"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TEST_PW", pw)
        .env("HOLDFAST_PASSWORD", pw)
        .env("HOLDFAST_INSECURE_TEST_KDF", "1")
        .env("HOLDFAST_HOSTNAME", host)
        .env("HOLDFAST_CONFIG", dir.join("holdfast.toml"))
        .env("HOLDFAST_STATE_DIR", dir.join("state"))
        .current_dir(dir);
    c
}
