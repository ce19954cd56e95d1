//! holdfast repositories on object storage, through OpenDAL: `s3://bucket/prefix` on any
//! S3-compatible store (AWS S3, Garage, Ceph RGW, MinIO).
//!
//! Objects live under `prefix/` with the same names as in a local repository
//! (`config`, `keys/…`, `data/xx/…`, `index/…`, …). A PUT is atomic on every S3 store (an object
//! is visible whole or not at all), so no temporary names are needed. `flush` is a no-op: a PUT
//! that returned is durable. `CreateNew` is a HEAD before the PUT; it is only used for objects
//! with random or content-derived names, where a lost race cannot write different bytes under a
//! taken name. Every request is retried with exponential backoff and jitter on transient errors.

#![warn(missing_docs)]

#[cfg(feature = "azblob")]
mod azblob;
pub mod bucket;
pub mod bucket_versions;
pub mod buckets;
mod fastget;
mod lock;
mod signing;
pub mod tagging;
mod versions;

#[cfg(feature = "azblob")]
pub use azblob::AzblobConfig;

use std::time::Duration;

use holdfast_storage::{
    BucketLock, LockMode, ObjectInfo, ObjectKind, PutMode, Result, Storage, StorageError,
};
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator};

/// Where and how to reach an S3-compatible store.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// Bucket.
    pub bucket: String,
    /// Key prefix (the repository's "directory").
    pub prefix: String,
    /// Endpoint URL (default from `AWS_ENDPOINT_URL`, else AWS).
    pub endpoint: Option<String>,
    /// Region (default from `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// Access key (default from `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// Secret key (default from `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<String>,
    /// The environment variable prefix the credentials come from (`AWS` unless `env=` says
    /// otherwise), for error messages.
    pub env_prefix: String,
}

impl S3Config {
    /// Parse `s3://bucket/prefix`; the rest comes from the usual AWS environment variables.
    ///
    /// Query parameters override the environment per repository (so one command can reach two
    /// stores, as `copy` does): `endpoint=URL`, `region=R`, and `env=PREFIX` to read
    /// `PREFIX_ACCESS_KEY_ID`, `PREFIX_SECRET_ACCESS_KEY` (and `PREFIX_ENDPOINT_URL`,
    /// `PREFIX_REGION`) instead of the `AWS_` ones. Secrets never go in the URL.
    pub fn from_url(url: &str) -> std::result::Result<S3Config, String> {
        let (bucket, prefix, params) = parse_url(url, "s3", &["endpoint", "region", "env"])?;
        let prefix_env = params.get("env").cloned().unwrap_or_else(|| "AWS".into());
        let env = |k: &str| {
            std::env::var(format!("{prefix_env}_{k}"))
                .ok()
                .filter(|v| !v.is_empty())
        };
        Ok(S3Config {
            bucket,
            prefix,
            endpoint: params
                .get("endpoint")
                .cloned()
                .or_else(|| env("ENDPOINT_URL")),
            region: params
                .get("region")
                .cloned()
                .or_else(|| env("REGION"))
                .or_else(|| env("DEFAULT_REGION")),
            access_key_id: env("ACCESS_KEY_ID"),
            secret_access_key: env("SECRET_ACCESS_KEY"),
            env_prefix: prefix_env,
        })
    }
}

/// What to do when the store refuses a request.
pub(crate) const S3_DENIED_FIX: &str = "these credentials lack the permission for this request (a bucket or IAM policy refuses it): use credentials that have it; backup needs put, get and list, while forget and prune also need delete";

/// Split `SCHEME://CONTAINER/PREFIX?k=v&...` into container, prefix (no slashes at either end)
/// and the query parameters, which must be among `allowed`.
pub(crate) fn parse_url(
    url: &str,
    scheme: &str,
    allowed: &[&str],
) -> std::result::Result<(String, String, std::collections::HashMap<String, String>), String> {
    let rest = url
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
        .ok_or_else(|| format!("{url:?} is not a {scheme}:// URL"))?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (container, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if container.is_empty() {
        return Err(format!(
            "{url:?} names no bucket or container: use {scheme}://NAME/PREFIX"
        ));
    }
    let mut params = std::collections::HashMap::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("{url:?}: query parameter {kv:?} needs a value"))?;
        if !allowed.contains(&k) {
            return Err(format!(
                "{url:?}: unknown parameter {k:?} ({})",
                allowed.join(", ")
            ));
        }
        params.insert(k.to_string(), v.to_string());
    }
    Ok((
        container.to_string(),
        prefix.trim_matches('/').to_string(),
        params,
    ))
}

/// A repository in an S3 bucket.
pub struct ObjectStorage {
    op: Operator,
    rt: tokio::runtime::Runtime,
    location: String,
    /// S3 Object Lock requests (S3 only).
    lock: Option<lock::LockClient>,
    /// Reads with quick ACKs ([`fastget`]; S3 on `http://` endpoints only).
    fast: Option<fastget::FastGet>,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectStorage({})", self.location)
    }
}

impl ObjectStorage {
    /// Connect (lazily: nothing is sent until the first call).
    ///
    /// Credentials must be given (as keys, in the environment or the workload file): holdfast
    /// does not fall back to instance metadata, so a missing key is a clear error at once rather
    /// than a minute of retries against an unreachable metadata service.
    pub fn s3(c: &S3Config) -> std::result::Result<ObjectStorage, String> {
        let location = format!("s3://{}/{}", c.bucket, c.prefix);
        let (Some(key_id), Some(secret)) = (&c.access_key_id, &c.secret_access_key) else {
            return Err(format!(
                "no credentials for {location}: set {p}_ACCESS_KEY_ID and {p}_SECRET_ACCESS_KEY",
                p = c.env_prefix
            ));
        };
        let region = c.region.as_deref().unwrap_or("us-east-1");
        let endpoint = c
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let lock = lock::LockClient::new(
            &endpoint, region, &c.bucket, &c.prefix, key_id, secret, &location,
        )?;
        let mut b = opendal::services::S3::default()
            .bucket(&c.bucket)
            .root(&format!("/{}", c.prefix))
            .region(c.region.as_deref().unwrap_or("us-east-1"))
            .disable_config_load();
        if let Some(e) = &c.endpoint {
            b = b.endpoint(e);
        }
        if let Some(k) = &c.access_key_id {
            b = b.access_key_id(k);
        }
        if let Some(k) = &c.secret_access_key {
            b = b.secret_access_key(k);
        }
        let op = Operator::new(b)
            .map_err(|e| format!("configuring {location}: {e}"))?
            .finish();
        let mut s = Self::with_layers(op, location, Some(lock))?;
        s.fast = fastget::FastGet::new(&endpoint, region, &c.bucket, &c.prefix, key_id, secret);
        Ok(s)
    }

    /// The timeouts and retries (exponential backoff with jitter) every request goes through.
    pub(crate) fn layered(op: Operator) -> Operator {
        op.layer(
            TimeoutLayer::new()
                .with_timeout(Duration::from_secs(60))
                .with_io_timeout(Duration::from_secs(30)),
        )
        .layer(
            RetryLayer::new()
                .with_jitter()
                .with_max_times(8)
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(10)),
        )
    }

    /// Wrap an operator with timeouts and retries (exponential backoff with jitter) and an I/O
    /// runtime.
    pub(crate) fn with_layers(
        op: Operator,
        location: String,
        lock: Option<lock::LockClient>,
    ) -> std::result::Result<ObjectStorage, String> {
        let op = Self::layered(op);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .map_err(|e| format!("starting the I/O runtime: {e}"))?;
        Ok(ObjectStorage {
            op,
            rt,
            location,
            lock,
            fast: None,
        })
    }

    fn key(kind: ObjectKind, name: &str) -> String {
        match kind {
            ObjectKind::Config => "config".into(),
            k if k.fanned_out() && name.len() >= 2 => {
                format!("{}/{}/{}", k.dir(), &name[..2], name)
            }
            k => format!("{}/{}", k.dir(), name),
        }
    }

    fn err(&self, op: &str, kind: ObjectKind, name: &str, e: opendal::Error) -> StorageError {
        match e.kind() {
            ErrorKind::NotFound => StorageError::NotFound {
                kind,
                name: name.into(),
                location: self.location.clone(),
            },
            ErrorKind::PermissionDenied => StorageError::PermissionDenied {
                op: format!("{op} {kind} {name}"),
                location: self.location.clone(),
                fix: S3_DENIED_FIX.into(),
            },
            ErrorKind::ConditionNotMatch | ErrorKind::AlreadyExists => StorageError::AlreadyExists {
                kind,
                name: name.into(),
                location: self.location.clone(),
            },
            _ => StorageError::Remote {
                op: format!("{op} {kind} {name}"),
                location: self.location.clone(),
                transient: e.is_temporary(),
                message: format!("{e} (after retries; check that the store is reachable and the credentials are right)"),
            },
        }
    }

    /// A read through [`fastget`]: the object whole, or `len` bytes from `offset`.
    fn fast_read(
        &self,
        fast: &fastget::FastGet,
        kind: ObjectKind,
        name: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Vec<u8>> {
        use fastget::GetError;
        let key = Self::key(kind, name);
        let op = format!("reading {kind} {name}");
        match self.rt.block_on(fast.get(&key, range)) {
            Ok(b) => Ok(b),
            Err(GetError::NotFound) => Err(StorageError::NotFound {
                kind,
                name: name.into(),
                location: self.location.clone(),
            }),
            Err(GetError::Denied) => Err(StorageError::PermissionDenied {
                op,
                location: self.location.clone(),
                fix: S3_DENIED_FIX.into(),
            }),
            // Past the end: the caller's length check names it.
            Err(GetError::BadRange) => Ok(Vec::new()),
            Err(GetError::Failed { message, transient }) => Err(StorageError::Remote {
                op,
                location: self.location.clone(),
                transient,
                message: format!(
                    "{message}; check that the store is reachable and the credentials are right"
                ),
            }),
        }
    }
}

impl Storage for ObjectStorage {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn create(&self) -> Result<()> {
        match self.rt.block_on(self.op.stat("config")) {
            Ok(_) => Err(StorageError::AlreadyExists {
                kind: ObjectKind::Config,
                name: "config".into(),
                location: self.location.clone(),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("checking", ObjectKind::Config, "config", e)),
        }
    }

    fn put(&self, kind: ObjectKind, name: &str, data: &[u8], mode: PutMode) -> Result<()> {
        self.put_owned(kind, name, data.to_vec(), mode)
    }

    /// The client sends the body it owns: a pack's 16 MiB are not copied again (a copy into
    /// fresh pages cost about 0.5 s of CPU in a backup of the Linux sources).
    fn put_owned(&self, kind: ObjectKind, name: &str, data: Vec<u8>, mode: PutMode) -> Result<()> {
        let key = Self::key(kind, name);
        if mode == PutMode::CreateNew {
            match self.rt.block_on(self.op.stat(&key)) {
                Ok(_) => {
                    return Err(StorageError::AlreadyExists {
                        kind,
                        name: name.into(),
                        location: self.location.clone(),
                    })
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(self.err("checking", kind, name, e)),
            }
        }
        self.rt
            .block_on(self.op.write(&key, data))
            .map(|_| ())
            .map_err(|e| self.err("writing", kind, name, e))
    }

    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        if let Some(f) = &self.fast {
            return self.fast_read(f, kind, name, None);
        }
        let key = Self::key(kind, name);
        self.rt
            .block_on(self.op.read(&key))
            .map(|b| b.to_vec())
            .map_err(|e| self.err("reading", kind, name, e))
    }

    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if let (Some(f), true) = (&self.fast, len > 0) {
            let b = self.fast_read(f, kind, name, Some((offset, offset + len)))?;
            return StorageError::whole_range(kind, name, offset, len, b);
        }
        let key = Self::key(kind, name);
        let b = self
            .rt
            .block_on(async { self.op.read_with(&key).range(offset..offset + len).await })
            .map_err(|e| self.err("reading", kind, name, e))?
            .to_vec();
        StorageError::whole_range(kind, name, offset, len, b)
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        if kind == ObjectKind::Config {
            return match self.rt.block_on(self.op.stat("config")) {
                Ok(m) => Ok(vec![ObjectInfo {
                    name: "config".into(),
                    size: m.content_length(),
                }]),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(vec![]),
                Err(e) => Err(self.err("listing", kind, "", e)),
            };
        }
        let dir = format!("{}/", kind.dir());
        let entries = self
            .rt
            .block_on(async { self.op.list_with(&dir).recursive(true).await })
            .map_err(|e| self.err("listing", kind, "", e))?;
        let mut out = Vec::new();
        for e in entries {
            if e.metadata().is_dir() {
                continue;
            }
            let name = e.name().to_string();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                continue;
            }
            out.push(ObjectInfo {
                name,
                size: e.metadata().content_length(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn modified(&self, kind: ObjectKind, name: &str) -> Result<Option<std::time::SystemTime>> {
        let key = Self::key(kind, name);
        let m = self
            .rt
            .block_on(self.op.stat(&key))
            .map_err(|e| self.err("reading metadata of", kind, name, e))?;
        Ok(m.last_modified().map(std::time::SystemTime::from))
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        let key = Self::key(kind, name);
        match self.rt.block_on(self.op.delete(&key)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("deleting", kind, name, e)),
        }
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn write_concurrency(&self) -> usize {
        4
    }

    fn read_concurrency(&self) -> usize {
        32
    }

    fn undelete(&self, since: i64, dry_run: bool) -> Result<Vec<String>> {
        match &self.lock {
            Some(l) => self.rt.block_on(l.undelete(since, dry_run)),
            None => Err(StorageError::Unsupported {
                what: "undeleting object versions".into(),
                location: self.location.clone(),
            }),
        }
    }

    fn object_lock(&self) -> Result<Option<BucketLock>> {
        match &self.lock {
            Some(l) => self.rt.block_on(l.bucket_lock()),
            None => Ok(None),
        }
    }

    fn retain(&self, kind: ObjectKind, name: &str, mode: LockMode, until: i64) -> Result<()> {
        let key = Self::key(kind, name);
        match &self.lock {
            Some(l) => self.rt.block_on(l.retain(kind, &key, name, mode, until)),
            None => Err(StorageError::Unsupported {
                what: "object lock".into(),
                location: self.location.clone(),
            }),
        }
    }

    fn retention(&self, kind: ObjectKind, name: &str) -> Result<Option<(LockMode, i64)>> {
        let key = Self::key(kind, name);
        match &self.lock {
            Some(l) => self.rt.block_on(l.retention(kind, &key, name)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_keys() {
        let c = S3Config::from_url("s3://bucket/some/prefix/").unwrap();
        assert_eq!(
            (c.bucket.as_str(), c.prefix.as_str()),
            ("bucket", "some/prefix")
        );
        assert!(S3Config::from_url("s3:///x").is_err());
        let c = S3Config::from_url(
            "s3://b/p?endpoint=http://127.0.0.1:1&region=r&env=HOLDFAST_NO_SUCH",
        )
        .unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(c.region.as_deref(), Some("r"));
        assert!(c.access_key_id.is_none());
        // No key: a clear error at once, naming the variables, not retries against instance
        // metadata.
        let e = ObjectStorage::s3(&c).unwrap_err();
        assert!(
            e.contains("HOLDFAST_NO_SUCH_ACCESS_KEY_ID")
                && e.contains("HOLDFAST_NO_SUCH_SECRET_ACCESS_KEY"),
            "{e}"
        );
        assert!(S3Config::from_url("s3://b/p?secret=x").is_err());
        assert!(S3Config::from_url("/local").is_err());
        assert_eq!(ObjectStorage::key(ObjectKind::Pack, "abcd"), "data/ab/abcd");
        assert_eq!(ObjectStorage::key(ObjectKind::Index, "abcd"), "index/abcd");
        assert_eq!(ObjectStorage::key(ObjectKind::Config, "config"), "config");
    }
}
