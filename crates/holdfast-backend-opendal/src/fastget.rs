//! Object reads (GET, whole or ranged) over plain HTTP/1.1 with an immediate ACK of every
//! response segment.
//!
//! Why: a GET's response is a header segment and then the body. A server that leaves Nagle's
//! algorithm on (Garage does) holds the body's last, partial segment until the header is
//! ACKed, and a Linux client that has just sent a request is in "ping-pong" mode, where it
//! delays that ACK by up to 40 ms (the delayed-ACK timer). Every GET then costs about 40 ms
//! however small, which bounds restore by request latency, not by bandwidth or CPU. The kernel
//! leaves quick-ACK mode on its own after a while, so this client sets `TCP_QUICKACK` again
//! before every read of a connection (one cheap `setsockopt`). On loopback to Garage this took
//! a 10 kB ranged GET from about 50 ms to about 4 ms.
//!
//! Only `http://` endpoints go through here (a local or in-cluster store, where the round trip
//! is short and the 40 ms dominate); `https://` reads stay on OpenDAL. Requests are signed
//! with reqsign, the signer OpenDAL uses, and retried like OpenDAL's own: exponential backoff
//! with jitter on 429, 500, 502, 503, 504, connection and body errors, 8 tries; each try has
//! the same 60 s timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::signing::Signing;

/// How one read ended, when it did not return the bytes.
#[derive(Debug)]
pub(crate) enum GetError {
    /// 404: no such object.
    NotFound,
    /// 403: the credentials may not read it.
    Denied,
    /// 416: the range lies past the object's end.
    BadRange,
    /// Anything else, after the retries.
    Failed {
        /// What happened last.
        message: String,
        /// Whether a later retry may succeed.
        transient: bool,
    },
}

/// Reads objects of one bucket over HTTP/1.1 with quick ACKs.
pub(crate) struct FastGet {
    client: Client<QuickConnector, Empty<Bytes>>,
    /// The signer, and `http://host:port/bucket` (path style, as OpenDAL addresses it).
    signing: Signing,
    /// The repository prefix inside the bucket, without slashes at either end.
    prefix: String,
    /// Requests sent (tries included).
    pub(crate) requests: AtomicU64,
}

/// Percent-encode everything but unreserved characters and `/` in a key.
const KEY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

impl FastGet {
    /// A client for `endpoint` if it is plain `http://` (else `None`: reads go through OpenDAL).
    pub(crate) fn new(
        endpoint: &str,
        region: &str,
        bucket: &str,
        prefix: &str,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Option<FastGet> {
        if !endpoint.starts_with("http://") || std::env::var_os("HOLDFAST_S3_NO_FASTGET").is_some()
        {
            return None;
        }
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(QuickConnector);
        Some(FastGet {
            client,
            signing: Signing::new(endpoint, region, bucket, access_key_id, secret_access_key),
            prefix: prefix.trim_matches('/').into(),
            requests: AtomicU64::new(0),
        })
    }

    fn url(&self, key: &str) -> String {
        let key = percent_encoding::utf8_percent_encode(key, KEY);
        match self.prefix.as_str() {
            "" => format!("{}/{key}", self.signing.base),
            p => format!(
                "{}/{}/{key}",
                self.signing.base,
                percent_encoding::utf8_percent_encode(p, KEY)
            ),
        }
    }

    /// The object `key` (relative to the prefix), whole or bytes `range` (start, end
    /// exclusive, non-empty).
    pub(crate) async fn get(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Vec<u8>, GetError> {
        let url = self.url(key);
        let mut delay = Duration::from_millis(100);
        let mut last = String::new();
        for attempt in 0..8 {
            if attempt > 0 {
                tokio::time::sleep(delay + crate::lock::rand_jitter(delay)).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            match tokio::time::timeout(Duration::from_secs(60), self.try_get(&url, range)).await {
                Ok(Ok(b)) => return Ok(b),
                Ok(Err(Try::Final(e))) => return Err(e),
                Ok(Err(Try::Again(m))) => last = m,
                Err(_) => last = "no answer within 60 s".into(),
            }
        }
        Err(GetError::Failed {
            message: format!("{last} (after 8 tries)"),
            transient: true,
        })
    }

    async fn try_get(&self, url: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>, Try> {
        let mut b = hyper::Request::get(url).header("x-amz-content-sha256", "UNSIGNED-PAYLOAD");
        if let Some((from, to)) = range {
            b = b.header("range", format!("bytes={from}-{}", to - 1));
        }
        let mut req = b
            .body(Empty::<Bytes>::new())
            .map_err(|e| Try::Final(failed(format!("building the request: {e}"))))?;
        self.signing
            .sign_http(&mut req)
            .map_err(|e| Try::Final(failed(e)))?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| Try::Again(format!("sending: {e}")))?;
        let status = resp.status().as_u16();
        // A ranged answer must start where asked (a store that ignored the range and sent
        // the whole object with 200 is cut down to the range).
        let starts_at = resp
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split('-').next())
            .and_then(|v| v.parse::<u64>().ok());
        // Read no more than the answer can use (a store may be hostile or broken): the
        // range, the start of the object up to the range's end when the store ignored the
        // range, a bounded error text, or a whole object up to MAX_OBJECT.
        let cap = match (status, range) {
            (206, Some((from, to))) => to - from,
            (200, Some((_, to))) => to,
            (200, None) => MAX_OBJECT,
            _ => 64 << 10,
        };
        // Sized once from the announced length (bounded by the cap, so a hostile header
        // cannot make it allocate more than the answer may hold), not grown by doubling.
        let announced = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let body = at_most(resp.into_body(), cap, announced.min(cap).min(RESERVE_MAX))
            .await
            .map_err(|e| Try::Again(format!("reading the body: {e}")))?;
        match status {
            200 => Ok(match range {
                None => body,
                Some((from, to)) => {
                    let (from, to) = (from.min(body.len() as u64), to.min(body.len() as u64));
                    body[from as usize..to as usize].to_vec()
                }
            }),
            206 => match (range, starts_at) {
                (Some((from, _)), Some(at)) if at == from => Ok(body),
                _ => Err(Try::Final(failed(format!(
                    "the store answered a read of {range:?} with the range starting at {starts_at:?}"
                )))),
            },
            404 => Err(Try::Final(GetError::NotFound)),
            403 => Err(Try::Final(GetError::Denied)),
            416 => Err(Try::Final(GetError::BadRange)),
            429 | 500 | 502 | 503 | 504 => Err(Try::Again(format!("HTTP {status}"))),
            s => Err(Try::Final(failed(format!(
                "HTTP {s}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )))),
        }
    }
}

/// The largest whole object read: repository objects are at most a 1 GiB pack and its header.
const MAX_OBJECT: u64 = 2 << 30;

/// The most reserved up front for a body from its `Content-Length` (a larger body grows as it
/// arrives): a ranged read of a restore is at most 8 MiB.
const RESERVE_MAX: u64 = 64 << 20;

/// The body's first `cap` bytes, in a buffer of `reserve` bytes to start with; the rest is not
/// read (the connection is then dropped).
async fn at_most(
    mut body: hyper::body::Incoming,
    cap: u64,
    reserve: u64,
) -> Result<Vec<u8>, hyper::Error> {
    let mut out = Vec::with_capacity(reserve as usize);
    while (out.len() as u64) < cap {
        let Some(frame) = body.frame().await else {
            break;
        };
        if let Ok(data) = frame?.into_data() {
            let room = (cap - out.len() as u64).min(data.len() as u64) as usize;
            out.extend_from_slice(&data[..room]);
        }
    }
    Ok(out)
}

fn failed(message: String) -> GetError {
    GetError::Failed {
        message,
        transient: false,
    }
}

/// One try's outcome, when not the bytes.
enum Try {
    /// Retry (transient).
    Again(String),
    /// Give up.
    Final(GetError),
}

/// Connects TCP (no TLS) with `TCP_NODELAY`, wrapping the stream in [`QuickIo`].
#[derive(Clone, Copy)]
struct QuickConnector;

impl tower_service::Service<Uri> for QuickConnector {
    type Response = QuickIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<QuickIo>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::other(format!("{uri} names no host")))?
                .trim_matches(|c| c == '[' || c == ']')
                .to_string();
            let port = uri.port_u16().unwrap_or(80);
            let s = TcpStream::connect((host.as_str(), port)).await?;
            s.set_nodelay(true)?;
            Ok(QuickIo {
                io: TokioIo::new(s),
            })
        })
    }
}

/// A TCP stream that asks for quick ACKs before every read (see the module docs).
struct QuickIo {
    io: TokioIo<TcpStream>,
}

impl hyper::rt::Read for QuickIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        #[cfg(target_os = "linux")]
        let _ = self.io.inner().set_quickack(true);
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for QuickIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

impl Connection for QuickIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_and_keys_are_encoded() {
        let f = |e: &str, p: &str| FastGet::new(e, "r", "bkt", p, "k", "s");
        assert!(
            f("https://s3.example.com", "").is_none(),
            "TLS stays on OpenDAL"
        );
        let g = f("http://127.0.0.1:3900/", "/a b/c+d/").unwrap();
        assert_eq!(
            g.url("data/ab/abcd"),
            "http://127.0.0.1:3900/bkt/a%20b/c%2Bd/data/ab/abcd"
        );
        let g = f("http://127.0.0.1:3900", "").unwrap();
        assert_eq!(g.url("config"), "http://127.0.0.1:3900/bkt/config");
    }

    /// A store that answers with far more bytes than asked is read only as far as the answer
    /// can use: the range of a 206, the start of the object of a 200 that ignored the range.
    #[test]
    fn an_oversized_answer_is_read_only_as_far_as_it_is_used() {
        use std::io::{Read, Write};
        for (status, extra) in [
            ("206 Partial Content", "content-range: bytes 2-5/99\r\n"),
            ("200 OK", ""),
        ] {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            let sent = std::thread::spawn(move || {
                let (mut c, _) = l.accept().unwrap();
                let mut req = [0u8; 4096];
                let _ = c.read(&mut req).unwrap();
                let head = format!("HTTP/1.1 {status}\r\n{extra}content-length: 100000000\r\n\r\n");
                c.write_all(head.as_bytes()).unwrap();
                // Far more than the range; stop when the reader hangs up.
                let chunk = [b'x'; 64 << 10];
                let mut sent = 0usize;
                while c.write_all(&chunk).is_ok() && sent < 100_000_000 {
                    sent += chunk.len();
                }
                sent
            });
            let g = FastGet::new(
                &format!("http://127.0.0.1:{port}"),
                "r",
                "bkt",
                "",
                "k",
                "s",
            )
            .unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let got = rt.block_on(g.get("data/x", Some((2, 6)))).unwrap();
            drop(g);
            drop(rt);
            let want: &[u8] = b"xxxx";
            assert_eq!(got, want, "{status}");
            assert!(
                sent.join().unwrap() < 100_000_000,
                "{status}: the whole answer was read"
            );
        }
    }
}
