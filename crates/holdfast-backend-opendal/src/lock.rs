//! S3 Object Lock: the bucket's lock configuration and per-object retention.
//!
//! OpenDAL (0.50) has no Object Lock calls, so these three requests (`GET ?object-lock`,
//! `PUT ?retention`, `GET ?retention`) are signed with reqsign, the signer OpenDAL itself uses,
//! and sent with reqwest. They are retried like OpenDAL's own requests: exponential backoff with
//! jitter on 429, 500, 502, 503, 504 and connection errors.

use std::time::Duration;

use base64::Engine;
use holdfast_storage::{BucketLock, LockMode, ObjectKind, StorageError};
use md5::{Digest, Md5};
use serde::Deserialize;

use crate::signing::Signing;

/// Signs and sends Object Lock requests for one bucket.
pub(crate) struct LockClient {
    http: reqwest::Client,
    /// The signer, and `endpoint/bucket` (path style, as OpenDAL addresses it).
    pub(crate) signing: Signing,
    /// The repository prefix inside the bucket, without slashes at either end.
    pub(crate) prefix: String,
    location: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LockConfiguration {
    object_lock_enabled: Option<String>,
    rule: Option<Rule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Rule {
    default_retention: Option<DefaultRetention>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DefaultRetention {
    mode: Option<String>,
    days: Option<u32>,
    years: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Retention {
    mode: Option<String>,
    retain_until_date: Option<String>,
}

/// An S3 error response's code.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct S3Error {
    code: Option<String>,
}

impl LockClient {
    pub(crate) fn new(
        endpoint: &str,
        region: &str,
        bucket: &str,
        prefix: &str,
        access_key_id: &str,
        secret_access_key: &str,
        location: &str,
    ) -> Result<LockClient, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("starting the HTTP client: {e}"))?;
        Ok(LockClient {
            http,
            signing: Signing::new(endpoint, region, bucket, access_key_id, secret_access_key),
            prefix: prefix.into(),
            location: location.into(),
        })
    }

    fn object_url(&self, key: &str) -> String {
        match self.prefix.as_str() {
            "" => format!("{}/{key}", self.signing.base),
            p => format!("{}/{p}/{key}", self.signing.base),
        }
    }

    /// Send one request (rebuilt and re-signed on each try); returns status and body.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&[u8]>,
        op: &str,
    ) -> Result<(u16, Vec<u8>), StorageError> {
        let mut delay = Duration::from_millis(100);
        let mut last = String::new();
        for attempt in 0..8 {
            if attempt > 0 {
                let jitter = rand_jitter(delay);
                tokio::time::sleep(delay + jitter).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            let mut b = self
                .http
                .request(method.clone(), url)
                .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD");
            if let Some(body) = body {
                let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(body));
                b = b.header("content-md5", md5).body(body.to_vec());
            }
            let mut req = b
                .build()
                .map_err(|e| self.remote(op, e.to_string(), false))?;
            self.signing
                .sign_reqwest(&mut req)
                .map_err(|e| self.remote(op, e, false))?;
            match self.http.execute(req).await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let bytes = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    // 501 Not Implemented is an answer, not a failure.
                    if matches!(status, 429 | 500 | 502 | 503 | 504) {
                        last = format!("HTTP {status}");
                        continue;
                    }
                    return Ok((status, bytes));
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(self.remote(
            op,
            format!("{last} (after retries; check that the store is reachable)"),
            true,
        ))
    }

    pub(crate) fn remote(&self, op: &str, message: String, transient: bool) -> StorageError {
        StorageError::Remote {
            op: op.into(),
            location: self.location.clone(),
            message,
            transient,
        }
    }

    /// Map a non-success answer to the error it means.
    pub(crate) fn refused(&self, op: &str, status: u16, body: &[u8]) -> StorageError {
        let code = quick_xml::de::from_reader::<_, S3Error>(body)
            .ok()
            .and_then(|e| e.code)
            .unwrap_or_default();
        match (status, code.as_str()) {
            (403, _) => StorageError::PermissionDenied {
                op: format!("{op} ({code})"),
                location: self.location.clone(),
                fix: format!("these credentials lack {}: grant it in the bucket or IAM policy, or use credentials that have it", permission_for(op)),
            },
            (501, _) | (_, "NotImplemented") | (400, "InvalidRequest") => {
                StorageError::Unsupported {
                    what: format!("object lock on this bucket ({op}: {code}; create the bucket with Object Lock enabled)"),
                    location: self.location.clone(),
                }
            }
            _ => self.remote(op, format!("HTTP {status} {code}"), false),
        }
    }

    /// The bucket's Object Lock configuration; `None` if the store does not implement it.
    pub(crate) async fn bucket_lock(&self) -> Result<Option<BucketLock>, StorageError> {
        let op = "reading the bucket's object lock configuration";
        let url = format!("{}?object-lock", self.signing.base);
        let (status, body) = self.send(reqwest::Method::GET, &url, None, op).await?;
        if status == 404 {
            // ObjectLockConfigurationNotFoundError: a store that has Object Lock, not enabled
            // on this bucket.
            return Ok(Some(BucketLock {
                enabled: false,
                default_rule: None,
            }));
        }
        if status == 501 || status == 400 {
            return Ok(None);
        }
        if status != 200 {
            return Err(self.refused(op, status, &body));
        }
        // A store that ignores `?object-lock` answers with a bucket listing instead.
        let Ok(c) = quick_xml::de::from_reader::<_, LockConfiguration>(&body[..]) else {
            return Ok(None);
        };
        if !String::from_utf8_lossy(&body).contains("ObjectLockConfiguration") {
            return Ok(None);
        }
        let default_rule = c.rule.and_then(|r| r.default_retention).and_then(|d| {
            let mode = LockMode::parse(d.mode.as_deref()?)?;
            let days = d.days.or(d.years.map(|y| y * 365))?;
            Some((mode, days))
        });
        Ok(Some(BucketLock {
            enabled: c.object_lock_enabled.as_deref() == Some("Enabled"),
            default_rule,
        }))
    }

    /// Lock one object until `until` (Unix seconds).
    pub(crate) async fn retain(
        &self,
        kind: ObjectKind,
        key: &str,
        name: &str,
        mode: LockMode,
        until: i64,
    ) -> Result<(), StorageError> {
        let op = format!("locking {kind} {name}");
        let date = chrono::DateTime::from_timestamp(until, 0)
            .ok_or_else(|| self.remote(&op, format!("bad time {until}"), false))?
            .format("%Y-%m-%dT%H:%M:%S.000Z");
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode><RetainUntilDate>{date}</RetainUntilDate></Retention>",
            mode.as_str()
        );
        let url = format!("{}?retention", self.object_url(key));
        let (status, resp) = self
            .send(reqwest::Method::PUT, &url, Some(body.as_bytes()), &op)
            .await?;
        match status {
            200 | 204 => Ok(()),
            404 => Err(StorageError::NotFound {
                kind,
                name: name.into(),
                location: self.location.clone(),
            }),
            _ => Err(self.refused(&op, status, &resp)),
        }
    }

    /// One object's lock: mode and until when (Unix seconds), or `None`.
    pub(crate) async fn retention(
        &self,
        kind: ObjectKind,
        key: &str,
        name: &str,
    ) -> Result<Option<(LockMode, i64)>, StorageError> {
        let op = format!("reading the lock of {kind} {name}");
        let url = format!("{}?retention", self.object_url(key));
        let (status, body) = self.send(reqwest::Method::GET, &url, None, &op).await?;
        let code = || {
            quick_xml::de::from_reader::<_, S3Error>(&body[..])
                .ok()
                .and_then(|e| e.code)
                .unwrap_or_default()
        };
        match status {
            200 => {}
            404 if code() == "NoSuchKey" => {
                return Err(StorageError::NotFound {
                    kind,
                    name: name.into(),
                    location: self.location.clone(),
                })
            }
            // NoSuchObjectLockConfiguration: the object has no lock.
            404 => return Ok(None),
            _ => return Err(self.refused(&op, status, &body)),
        }
        let r: Retention = quick_xml::de::from_reader(&body[..])
            .map_err(|e| self.remote(&op, format!("unreadable answer: {e}"), false))?;
        let (Some(mode), Some(until)) = (r.mode, r.retain_until_date) else {
            return Ok(None);
        };
        let mode = LockMode::parse(&mode)
            .ok_or_else(|| self.remote(&op, format!("unknown lock mode {mode:?}"), false))?;
        let until = chrono::DateTime::parse_from_rfc3339(&until)
            .map_err(|e| self.remote(&op, format!("unreadable date {until:?}: {e}"), false))?
            .timestamp();
        Ok(Some((mode, until)))
    }
}

/// The S3 permission an Object Lock request needs.
fn permission_for(op: &str) -> &'static str {
    if op.starts_with("locking") {
        "s3:PutObjectRetention"
    } else if op.starts_with("reading the lock") {
        "s3:GetObjectRetention"
    } else {
        "s3:GetBucketObjectLockConfiguration"
    }
}

/// Up to half of `d`, at random, so retries from many workers spread apart.
pub(crate) fn rand_jitter(d: Duration) -> Duration {
    use rand::Rng;
    Duration::from_millis(rand::thread_rng().gen_range(0..=d.as_millis() as u64 / 2))
}
