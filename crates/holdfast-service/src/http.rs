//! The HTTP server (axum): the live status page, a JSON API, `/metrics` and `/healthz`. Every
//! route is GET (and HEAD): nothing over HTTP can start, delete or change anything, and any
//! other method is answered 405.
//!
//! It binds 127.0.0.1 by default; the workload refuses another address without a bearer
//! token (`[service] token-file`). With a token, every request must carry
//! `Authorization: Bearer TOKEN` (compared in constant time). With `tls-cert` and `tls-key`
//! it speaks HTTPS only (rustls).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::snapshot::Snapshot;

/// What the handlers read.
pub struct Shared {
    /// The newest snapshot.
    pub snapshot: RwLock<Arc<Snapshot>>,
    /// The bearer token, if one is required.
    pub token: RwLock<Option<String>>,
    /// When the service loop last went round (for `/healthz`).
    pub alive: RwLock<Instant>,
    /// `/metrics` of the newest snapshot, rendered once when it was published.
    pub metrics: RwLock<Arc<String>>,
}

impl Shared {
    /// The newest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("not poisoned").clone()
    }
    /// Publish a new snapshot (and its metrics, rendered now: a scrape never renders).
    pub fn publish(&self, s: Snapshot) {
        let m = Arc::new(crate::metrics::render(&s));
        *self.snapshot.write().expect("not poisoned") = Arc::new(s);
        *self.metrics.write().expect("not poisoned") = m;
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address cannot be bound.
    #[error(
        "cannot listen on {addr}: {source} (another process uses the port? set [service] listen)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS files are unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// The token file cannot be read.
    #[error("token file {path}: {message}")]
    Token {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

/// Read a bearer token file: its first line, which must not be empty.
pub fn read_token(p: &Path) -> Result<String, HttpError> {
    let fail = |message: String| HttpError::Token {
        path: p.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(p).map_err(|e| fail(e.to_string()))?;
    let t = text.lines().next().unwrap_or("").trim().to_string();
    if t.len() < 16 {
        return Err(fail(
            "the token must be at least 16 characters on the first line (e.g. `openssl rand -hex 32`)".into(),
        ));
    }
    Ok(t)
}

/// The routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/status", get(status))
        .route("/api/snapshot", get(snapshot))
        .route("/api/sources", get(sources))
        .route("/api/jobs", get(jobs))
        .route("/api/drills", get(drills))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .layer(middleware::from_fn_with_state(shared.clone(), auth))
        .with_state(shared)
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let want = s.token.read().expect("not poisoned").clone();
    if let Some(want) = want {
        let got = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same(got.as_bytes(), want.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required (Authorization: Bearer TOKEN, from [service] token-file)\n",
            )
                .into_response();
        }
    }
    // Every answer is the state of now: never served from a cache.
    let mut res = next.run(req).await;
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}

async fn page(State(s): State<Arc<Shared>>) -> Response {
    let snap = s.snapshot();
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        crate::page::html(&snap),
    )
        .into_response()
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    let snap = s.snapshot();
    match &snap.status {
        Some(r) => Json(r.clone()).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "status not computed yet\n").into_response(),
    }
}

async fn snapshot(State(s): State<Arc<Shared>>) -> Response {
    Json(s.snapshot().as_ref().clone()).into_response()
}

async fn sources(State(s): State<Arc<Shared>>) -> Response {
    Json(s.snapshot().sources.clone()).into_response()
}

async fn jobs(State(s): State<Arc<Shared>>) -> Response {
    let snap = s.snapshot();
    Json(serde_json::json!({ "running": snap.running, "recent": snap.jobs })).into_response()
}

async fn drills(State(s): State<Arc<Shared>>) -> Response {
    Json(s.snapshot().drills.clone()).into_response()
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let text = s.metrics.read().expect("not poisoned").clone();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text.as_ref().clone(),
    )
        .into_response()
}

/// 200 while the service loop goes round (at most 30 s since its last turn); 503 otherwise.
/// It says nothing about compliance: that is `/metrics` and the alerts.
async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    let age = s.alive.read().expect("not poisoned").elapsed();
    if age.as_secs() <= 30 {
        "ok\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the service loop has not gone round for {}s\n",
                age.as_secs()
            ),
        )
            .into_response()
    }
}

/// TLS settings: certificate chain and key (PEM).
fn tls_config(
    cert: &Path,
    key: &Path,
) -> Result<Arc<tokio_rustls::rustls::ServerConfig>, HttpError> {
    use tokio_rustls::rustls;
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| HttpError::Tls(format!("{}: {e}", p.display())));
    let certs: Vec<_> = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| HttpError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(HttpError::Tls(format!(
            "{}: no certificate in it",
            cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| HttpError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| HttpError::Tls(format!("{}: no private key in it", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| HttpError::Tls(e.to_string()))?;
    Ok(Arc::new(cfg))
}

/// A running server: dropping it (or [`Server::stop`]) stops it.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    /// Stop serving.
    pub fn stop(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Bind and serve in the background (two worker threads).
pub fn start(
    addr: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<(&Path, &Path)>,
) -> Result<Server, HttpError> {
    let tls = tls.map(|(c, k)| tls_config(c, k)).transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("holdfast-http")
        .enable_all()
        .build()
        .map_err(|source| HttpError::Bind { addr, source })?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .map_err(|source| HttpError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let app = router(shared);
    match tls {
        None => {
            rt.spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!("http server stopped: {e}");
                }
            });
        }
        Some(cfg) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            rt.spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    let app = app.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let svc = hyper_util::service::TowerToHyperService::new(app);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                            .await;
                    });
                }
            });
        }
    }
    Ok(Server {
        addr: bound,
        runtime: Some(rt),
    })
}
