//! A bucket (or a prefix of one) as a data source: listing every key in order, reading
//! objects with their metadata, and writing them back. Synchronous, over OpenDAL's S3 service
//! with the same retries and timeouts as repositories.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use chrono::{DateTime, Utc};
use opendal::{Metakey, Operator};

use crate::lock::LockClient;
use crate::tagging::{TagRead, Tags};
use crate::S3Config;

/// One entry of a listing: an object, or a directory marker (its key ending `/`).
#[derive(Debug, Clone)]
pub struct Listed {
    /// The key, relative to the bucket's root.
    pub key: String,
    /// A directory marker (key ending `/`) rather than an object.
    pub dir: bool,
    /// Size in bytes.
    pub size: u64,
    /// The ETag as the store gives it.
    pub etag: Option<String>,
    /// Last modified.
    pub last_modified: Option<DateTime<Utc>>,
}

/// An object's metadata (from a HEAD).
#[derive(Debug, Clone, Default)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
    /// ETag.
    pub etag: Option<String>,
    /// Last modified.
    pub last_modified: Option<DateTime<Utc>>,
    /// Version id, in a versioned bucket.
    pub version: Option<String>,
    /// Content type.
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*`, names without the prefix).
    pub user: BTreeMap<String, String>,
    /// Tags, when read ([`Bucket::read_tags_too`]) and the store implements tagging; `None`
    /// when not read.
    pub tags: Option<Tags>,
}

/// An object read whole by [`Bucket::fetch_all`]: its metadata and bytes, or `None` when it
/// was deleted after it was listed.
pub type Fetched = Option<(ObjectMeta, Vec<u8>)>;

fn meta_of(m: &opendal::Metadata) -> ObjectMeta {
    ObjectMeta {
        size: m.content_length(),
        etag: m.etag().map(str::to_string),
        last_modified: m.last_modified(),
        version: m.version().map(str::to_string),
        content_type: m.content_type().map(str::to_string),
        user: m
            .user_metadata()
            .map(|u| u.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        tags: None,
    }
}

/// Takes one piece of an object's body being written.
pub type BodySink<'a> = dyn FnMut(Vec<u8>) -> Result<(), String> + 'a;

/// A connection to one bucket.
pub struct Bucket {
    pub(crate) op: Operator,
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) location: String,
    pub(crate) gets: AtomicU64,
    /// Signs the requests OpenDAL has no call for (tagging).
    pub(crate) signed: LockClient,
    /// Whether the store implements tagging (see [`crate::tagging::Tagging`]).
    pub(crate) tagging: AtomicU8,
    /// Whether reads of whole objects and HEADs also read their tags.
    pub(crate) with_tags: bool,
}

/// Objects larger than this are read in ranges of this size, each conditional on the ETag
/// first seen (an object replaced while it is read fails rather than mixing two versions).
pub const RANGE: u64 = 8 << 20;

impl Bucket {
    /// Connect to the bucket of `c` (its prefix is ignored: keys are relative to the bucket).
    pub fn connect(c: &S3Config) -> Result<Bucket, String> {
        let location = format!("s3://{}", c.bucket);
        let (Some(key_id), Some(secret)) = (&c.access_key_id, &c.secret_access_key) else {
            return Err(format!(
                "no credentials for {location}: set {p}_ACCESS_KEY_ID and {p}_SECRET_ACCESS_KEY",
                p = c.env_prefix
            ));
        };
        let mut b = opendal::services::S3::default()
            .bucket(&c.bucket)
            .root("/")
            .region(c.region.as_deref().unwrap_or("us-east-1"))
            .access_key_id(key_id)
            .secret_access_key(secret)
            // Version ids are sent only where asked for (a versioned source's listing and
            // reads of noncurrent versions).
            .enable_versioning(true)
            .disable_config_load();
        if let Some(e) = &c.endpoint {
            b = b.endpoint(e);
        }
        let endpoint = c
            .endpoint
            .clone()
            .unwrap_or_else(|| "https://s3.amazonaws.com".into());
        let region = c.region.as_deref().unwrap_or("us-east-1");
        let signed = LockClient::new(&endpoint, region, &c.bucket, "", key_id, secret, &location)?;
        let op = Operator::new(b)
            .map_err(|e| format!("configuring {location}: {e}"))?
            .finish();
        let op = crate::ObjectStorage::layered(op);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("starting the I/O runtime: {e}"))?;
        Ok(Bucket {
            op,
            rt,
            location,
            gets: AtomicU64::new(0),
            signed,
            tagging: AtomicU8::new(crate::tagging::UNKNOWN),
            with_tags: false,
        })
    }

    /// Also read each object's tags in [`Bucket::head`], [`Bucket::head_all`] and
    /// [`Bucket::fetch_all`] (one more request per object, where the store implements tagging).
    pub fn read_tags_too(&mut self, yes: bool) {
        self.with_tags = yes;
    }

    /// Whether [`Bucket::read_tags_too`] is on.
    pub fn reads_tags(&self) -> bool {
        self.with_tags
    }

    /// `s3://BUCKET`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// How many object reads (GETs) this connection made.
    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::Relaxed)
    }

    /// Every key under `prefix` (`""` for the whole bucket, else ending `/`), recursively (no
    /// delimiter), in the store's order (S3: ascending by key bytes), directory markers
    /// (keys ending `/`) included. Pulled page by page as the store pages it: memory holds one
    /// page, whatever the number of keys.
    pub fn list_all(&self, prefix: &str) -> Result<Listing<'_>, String> {
        let path = if prefix.is_empty() { "/" } else { prefix };
        let lister = self
            .rt
            .block_on(async {
                self.op
                    .lister_with(path)
                    .recursive(true)
                    .metakey(
                        Metakey::Mode
                            | Metakey::ContentLength
                            | Metakey::Etag
                            | Metakey::LastModified,
                    )
                    .await
            })
            .map_err(|e| format!("listing {}/{prefix}: {e}", self.location))?;
        Ok(Listing {
            bucket: self,
            lister,
            prefix: prefix.to_string(),
            failed: false,
        })
    }

    /// An object's metadata, or `None` when there is no such object.
    pub fn head(&self, key: &str) -> Result<Option<ObjectMeta>, String> {
        self.rt.block_on(self.stat_one(key))
    }

    /// HEAD, then (when asked for, [`Bucket::read_tags_too`]) the tags of the version seen;
    /// `None` when the object is gone.
    async fn stat_one(&self, key: &str) -> Result<Option<ObjectMeta>, String> {
        let mut meta = match self.op.stat(key).await {
            Ok(m) => meta_of(&m),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(format!(
                    "reading the metadata of {}/{key}: {e}",
                    self.location
                ))
            }
        };
        if self.with_tags {
            match self.read_tags(key, meta.version.as_deref()).await? {
                TagRead::Tags(t) => meta.tags = Some(t),
                TagRead::Gone => return Ok(None),
                TagRead::Unsupported => {}
            }
        }
        Ok(Some(meta))
    }

    /// A reader of the object as it was when `meta` was taken (ranges conditional on its ETag,
    /// and of its version when `meta` names one).
    pub fn reader<'a>(&'a self, key: &'a str, meta: &'a ObjectMeta) -> ObjectReader<'a> {
        ObjectReader {
            bucket: self,
            key,
            meta,
            pos: 0,
            buf: Vec::new(),
            at: 0,
        }
    }

    /// Read whole objects (a HEAD, then a GET conditional on its ETag), up to `parallel`
    /// requests at once; the results in the order of `keys`, `None` for an object deleted
    /// since it was listed. Meant for small objects: every body is held in memory, so the
    /// caller bounds the batch by bytes.
    pub fn fetch_all(&self, keys: &[String], parallel: usize) -> Vec<Result<Fetched, String>> {
        use futures_util::stream::{self, StreamExt};
        self.gets.fetch_add(keys.len() as u64, Ordering::Relaxed);
        self.rt.block_on(
            stream::iter(keys)
                .map(|key| self.fetch_one(key))
                .buffered(parallel.max(1))
                .collect(),
        )
    }

    /// [`Bucket::head`] of many keys, up to `parallel` at once, in the order of `keys`.
    pub fn head_all(
        &self,
        keys: &[String],
        parallel: usize,
    ) -> Vec<Result<Option<ObjectMeta>, String>> {
        use futures_util::stream::{self, StreamExt};
        self.rt.block_on(
            stream::iter(keys)
                .map(|key| self.stat_one(key))
                .buffered(parallel.max(1))
                .collect(),
        )
    }

    /// Write small objects whole (key, content type and user metadata, body, then their tags
    /// where they have any), up to `parallel` at once; a result per object, in order. Where
    /// the store does not implement tagging, tags are not set and [`Bucket::tagging`] says so.
    pub fn put_all(
        &self,
        objects: Vec<(String, ObjectMeta, Vec<u8>)>,
        parallel: usize,
    ) -> Vec<Result<(), String>> {
        use futures_util::stream::{self, StreamExt};
        self.rt.block_on(
            stream::iter(objects)
                .map(|(key, meta, body)| async move {
                    let mut w = self.op.write_with(&key, body);
                    if let Some(t) = &meta.content_type {
                        w = w.content_type(t);
                    }
                    if !meta.user.is_empty() {
                        w = w.user_metadata(meta.user.clone());
                    }
                    w.await
                        .map_err(|e| format!("writing {}/{key}: {e}", self.location))?;
                    if let Some(t) = meta.tags.as_ref().filter(|t| !t.is_empty()) {
                        self.write_tags(&key, t).await?;
                    }
                    Ok(())
                })
                .buffered(parallel.max(1))
                .collect(),
        )
    }

    async fn fetch_one(&self, key: &str) -> Result<Fetched, String> {
        let Some(meta) = self.stat_one(key).await? else {
            return Ok(None);
        };
        let mut r = self.op.read_with(key);
        if let Some(e) = &meta.etag {
            r = r.if_match(e);
        }
        let body = match r.await {
            Ok(b) => b.to_vec(),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("reading {}/{key}: {e}", self.location)),
        };
        if body.len() as u64 != meta.size {
            return Err(format!(
                "{}/{key}: the store returned {} bytes of a {}-byte object (the object changed while it was read?)",
                self.location,
                body.len(),
                meta.size
            ));
        }
        Ok(Some((meta, body)))
    }

    fn read_range(
        &self,
        key: &str,
        meta: &ObjectMeta,
        from: u64,
        to: u64,
    ) -> Result<Vec<u8>, String> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        let mut r = self.op.read_with(key).range(from..to);
        if let Some(e) = &meta.etag {
            r = r.if_match(e);
        }
        // In a versioned bucket every range comes from the version first seen.
        if let Some(v) = &meta.version {
            r = r.version(v);
        }
        let b = self
            .rt
            .block_on(async { r.await })
            .map_err(|e| format!("reading {}/{key}: {e}", self.location))?;
        Ok(b.to_vec())
    }

    /// Write an object with its content type and user metadata, then its tags where it has
    /// any (replacing any object there; see [`Bucket::put_all`] for stores without tagging).
    pub fn put(
        &self,
        key: &str,
        meta: &ObjectMeta,
        body: &mut dyn FnMut(&mut BodySink<'_>) -> Result<(), String>,
    ) -> Result<(), String> {
        let fail = |e: opendal::Error| format!("writing {}/{key}: {e}", self.location);
        let mut w = self.op.writer_with(key).chunk(RANGE as usize);
        if let Some(t) = &meta.content_type {
            w = w.content_type(t);
        }
        if !meta.user.is_empty() {
            w = w.user_metadata(meta.user.clone());
        }
        let mut w = self.rt.block_on(async { w.await }).map_err(fail)?;
        let mut send =
            |data: Vec<u8>| -> Result<(), String> { self.rt.block_on(w.write(data)).map_err(fail) };
        body(&mut send)?;
        self.rt.block_on(w.close()).map_err(fail)?;
        if let Some(t) = meta.tags.as_ref().filter(|t| !t.is_empty()) {
            self.put_tags(key, t)?;
        }
        Ok(())
    }
}

/// Reads one object in [`RANGE`]-sized requests.
pub struct ObjectReader<'a> {
    bucket: &'a Bucket,
    key: &'a str,
    meta: &'a ObjectMeta,
    pos: u64,
    buf: Vec<u8>,
    at: usize,
}

impl std::io::Read for ObjectReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            if self.pos >= self.meta.size {
                return Ok(0);
            }
            let to = (self.pos + RANGE).min(self.meta.size);
            self.buf = self
                .bucket
                .read_range(self.key, self.meta, self.pos, to)
                .map_err(std::io::Error::other)?;
            if self.buf.len() as u64 != to - self.pos {
                return Err(std::io::Error::other(format!(
                    "{}/{}: the store returned {} bytes of a {}-byte range (the object changed while it was read?)",
                    self.bucket.location,
                    self.key,
                    self.buf.len(),
                    to - self.pos
                )));
            }
            self.pos = to;
            self.at = 0;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Bucket {
    /// Delete an object (no error when it is not there).
    pub fn delete(&self, key: &str) -> Result<(), String> {
        self.rt
            .block_on(self.op.delete(key))
            .map_err(|e| format!("deleting {}/{key}: {e}", self.location))
    }
}

/// The keys under a prefix, in the store's order ([`Bucket::list_all`]); after an error, the
/// listing ends.
pub struct Listing<'a> {
    bucket: &'a Bucket,
    lister: opendal::Lister,
    prefix: String,
    failed: bool,
}

impl Iterator for Listing<'_> {
    type Item = Result<Listed, String>;

    fn next(&mut self) -> Option<Self::Item> {
        use futures_util::TryStreamExt;
        if self.failed {
            return None;
        }
        loop {
            match self.bucket.rt.block_on(self.lister.try_next()) {
                Ok(Some(e)) if e.path() == "/" => continue,
                Ok(Some(e)) => {
                    let m = e.metadata();
                    return Some(Ok(Listed {
                        key: e.path().to_string(),
                        dir: e.path().ends_with('/'),
                        size: m.content_length(),
                        etag: m.etag().map(str::to_string),
                        last_modified: m.last_modified(),
                    }));
                }
                Ok(None) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(format!(
                        "listing {}/{}: {e}",
                        self.bucket.location, self.prefix
                    )));
                }
            }
        }
    }
}
