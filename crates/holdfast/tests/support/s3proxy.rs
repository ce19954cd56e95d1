//! A fault-injecting HTTP/1.1 proxy in front of a real S3 store, for tests.
//!
//! Requests pass through unchanged (byte for byte, so SigV4 signatures stay valid) over one
//! upstream connection per client connection; on the way, the proxy can answer `503 SlowDown`
//! instead of forwarding, delay a request, cut a response in half and reset the connection,
//! refuse deletes with `403 AccessDenied` (a key without `s3:DeleteObject`), or drop every
//! connection (the store is unreachable). Every injected fault is counted, so a test can assert
//! that its faults really happened.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which faults to inject; change them at any time with [`FaultProxy::set`].
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer every Nth request with `503 SlowDown` (0: never).
    pub fail_every: u64,
    /// Forward every Nth response only half way, then reset the connection (0: never).
    pub reset_every: u64,
    /// Hold every request this long before forwarding it.
    pub delay: Duration,
    /// Refuse `DELETE` (and multi-object delete) with `403 AccessDenied`.
    pub deny_delete: bool,
    /// Close every connection at once: the store is unreachable.
    pub down: bool,
}

/// What the proxy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub failed_503: u64,
    pub resets: u64,
    pub delayed: u64,
    pub denied_deletes: u64,
    pub refused: u64,
    pub forwarded_deletes: u64,
    /// PUTs of packs (`data/…`) forwarded and answered.
    pub pack_puts: u64,
}

struct Shared {
    faults: Mutex<Faults>,
    counts: Mutex<Counts>,
    seq: AtomicU64,
    stop: AtomicBool,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listen on a free loopback port and forward to `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> FaultProxy {
        let up: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("upstream is http://IP:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults::default()),
            counts: Mutex::new(Counts::default()),
            seq: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let sh = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sh.stop.load(Ordering::Acquire) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let sh = sh.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, up, &sh);
                });
            }
        });
        FaultProxy { addr, shared }
    }

    /// The endpoint URL clients should use.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replace the faults injected from now on.
    pub fn set(&self, f: Faults) {
        *self.shared.faults.lock().unwrap() = f;
    }

    /// What happened so far.
    pub fn counts(&self) -> Counts {
        self.shared.counts.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
    }
}

struct Message {
    raw: Vec<u8>,
    method: String,
    target: String,
    close: bool,
}

fn serve(client: TcpStream, upstream: SocketAddr, sh: &Shared) -> io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let mut up: Option<(BufReader<TcpStream>, TcpStream)> = None;
    loop {
        if sh.faults.lock().unwrap().down {
            sh.counts.lock().unwrap().refused += 1;
            return to_client.shutdown(Shutdown::Both);
        }
        let Some(req) = read_message(&mut from_client, None)? else {
            return Ok(());
        };
        let n = sh.seq.fetch_add(1, Ordering::AcqRel) + 1;
        let f = sh.faults.lock().unwrap().clone();
        let is_delete =
            req.method == "DELETE" || (req.method == "POST" && req.target.contains("?delete"));
        {
            let mut c = sh.counts.lock().unwrap();
            c.requests += 1;
        }
        if f.down {
            sh.counts.lock().unwrap().refused += 1;
            return to_client.shutdown(Shutdown::Both);
        }
        if f.deny_delete && is_delete {
            sh.counts.lock().unwrap().denied_deletes += 1;
            reply(
                &mut to_client,
                "403 Forbidden",
                "AccessDenied",
                "Access Denied",
            )?;
            continue;
        }
        if f.fail_every > 0 && n.is_multiple_of(f.fail_every) {
            sh.counts.lock().unwrap().failed_503 += 1;
            reply(
                &mut to_client,
                "503 Service Unavailable",
                "SlowDown",
                "Please reduce your request rate.",
            )?;
            continue;
        }
        if !f.delay.is_zero() {
            sh.counts.lock().unwrap().delayed += 1;
            std::thread::sleep(f.delay);
        }
        if is_delete {
            sh.counts.lock().unwrap().forwarded_deletes += 1;
        }
        if up.is_none() {
            let s = TcpStream::connect(upstream)?;
            up = Some((BufReader::new(s.try_clone()?), s));
        }
        let (up_r, up_w) = up.as_mut().unwrap();
        up_w.write_all(&req.raw)?;
        let Some(resp) = read_message(up_r, Some(&req.method))? else {
            return to_client.shutdown(Shutdown::Both);
        };
        if f.reset_every > 0 && n.is_multiple_of(f.reset_every) {
            sh.counts.lock().unwrap().resets += 1;
            to_client.write_all(&resp.raw[..resp.raw.len() / 2])?;
            to_client.flush()?;
            return to_client.shutdown(Shutdown::Both);
        }
        to_client.write_all(&resp.raw)?;
        to_client.flush()?;
        if req.method == "PUT" && req.target.contains("/data/") {
            sh.counts.lock().unwrap().pack_puts += 1;
        }
        if resp.close || req.close {
            return to_client.shutdown(Shutdown::Both);
        }
    }
}

fn reply(w: &mut TcpStream, status: &str, code: &str, message: &str) -> io::Result<()> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

/// Read one whole HTTP/1.1 message (a request if `req_method` is None, else the response to a
/// request with that method), keeping its exact bytes.
fn read_message(
    r: &mut BufReader<TcpStream>,
    req_method: Option<&str>,
) -> io::Result<Option<Message>> {
    let mut raw = Vec::new();
    let mut line = Vec::new();
    let mut first = String::new();
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = false;
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            if raw.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated head",
            ));
        }
        raw.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if first.is_empty() {
            first = text;
            continue;
        }
        if text.is_empty() {
            break;
        }
        if let Some((k, v)) = text.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match k.as_str() {
                "content-length" => length = v.parse().ok(),
                "transfer-encoding" => chunked = v.contains("chunked"),
                "connection" => close = v.contains("close"),
                _ => {}
            }
        }
    }
    let mut parts = first.split_whitespace();
    let (a, b) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let bodiless = match req_method {
        None => false,
        Some(m) => m == "HEAD" || b == "204" || b == "304" || b.starts_with('1'),
    };
    if bodiless {
    } else if chunked {
        loop {
            line.clear();
            r.read_until(b'\n', &mut line)?;
            raw.extend_from_slice(&line);
            let size_text = String::from_utf8_lossy(&line);
            let size = u64::from_str_radix(size_text.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                loop {
                    line.clear();
                    r.read_until(b'\n', &mut line)?;
                    raw.extend_from_slice(&line);
                    if line == b"\r\n" || line.is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = raw.len();
            raw.resize(start + size as usize + 2, 0);
            r.read_exact(&mut raw[start..])?;
        }
    } else if let Some(n) = length {
        let start = raw.len();
        raw.resize(start + n as usize, 0);
        r.read_exact(&mut raw[start..])?;
    } else if req_method.is_some() {
        r.read_to_end(&mut raw)?;
        close = true;
    }
    let (method, target) = match req_method {
        None => (a, b),
        Some(_) => (String::new(), String::new()),
    };
    Ok(Some(Message {
        raw,
        method,
        target,
        close,
    }))
}
