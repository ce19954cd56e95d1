//! Object versions of a versioned bucket (`ListObjectVersions` and reads of one version), for
//! `s3` sources with `versions = true`.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use opendal::Metakey;

use crate::bucket::Bucket;

/// One version of an object, as the version listing gives it (delete markers are not listed).
#[derive(Debug, Clone)]
pub struct ListedVersion {
    /// The key, relative to the bucket's root.
    pub key: String,
    /// The version id.
    pub version: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag.
    pub etag: Option<String>,
    /// Last modified.
    pub last_modified: Option<DateTime<Utc>>,
}

impl Bucket {
    /// Every version of every object under `prefix` (no delimiter), in the store's order: by
    /// key, newest version first. Directory markers are left out.
    pub fn list_versions(&self, prefix: &str) -> Result<Vec<ListedVersion>, String> {
        let path = if prefix.is_empty() { "/" } else { prefix };
        let entries = self
            .rt
            .block_on(async {
                self.op
                    .list_with(path)
                    .recursive(true)
                    .version(true)
                    .metakey(
                        Metakey::Mode
                            | Metakey::ContentLength
                            | Metakey::Etag
                            | Metakey::LastModified
                            | Metakey::Version,
                    )
                    .await
            })
            .map_err(|e| {
                format!(
                    "listing the object versions of {}/{prefix}: {e} (does the store keep versions? set versions = false otherwise)",
                    self.location
                )
            })?;
        Ok(entries
            .into_iter()
            .filter(|e| !e.path().ends_with('/'))
            .filter_map(|e| {
                let m = e.metadata();
                Some(ListedVersion {
                    key: e.path().to_string(),
                    version: m.version()?.to_string(),
                    size: m.content_length(),
                    etag: m.etag().map(str::to_string),
                    last_modified: m.last_modified(),
                })
            })
            .collect())
    }

    /// The bytes of one version of an object (held in memory: the caller reads large
    /// versions with [`Bucket::read_version_range`]).
    pub fn read_version_range(
        &self,
        key: &str,
        version: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<u8>, String> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.rt
            .block_on(async {
                self.op
                    .read_with(key)
                    .version(version)
                    .range(from..to)
                    .await
            })
            .map(|b| b.to_vec())
            .map_err(|e| format!("reading {}/{key} version {version}: {e}", self.location))
    }
}

/// Reads one version of an object in 8 MiB requests.
pub struct VersionReader<'a> {
    bucket: &'a Bucket,
    key: &'a str,
    version: &'a str,
    size: u64,
    pos: u64,
    buf: Vec<u8>,
    at: usize,
}

impl<'a> VersionReader<'a> {
    /// A reader of `size` bytes of `key` at `version`.
    pub fn new(bucket: &'a Bucket, key: &'a str, version: &'a str, size: u64) -> Self {
        VersionReader {
            bucket,
            key,
            version,
            size,
            pos: 0,
            buf: Vec::new(),
            at: 0,
        }
    }
}

impl std::io::Read for VersionReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            if self.pos >= self.size {
                return Ok(0);
            }
            let to = (self.pos + crate::bucket::RANGE).min(self.size);
            self.buf = self
                .bucket
                .read_version_range(self.key, self.version, self.pos, to)
                .map_err(std::io::Error::other)?;
            if self.buf.len() as u64 != to - self.pos {
                return Err(std::io::Error::other(format!(
                    "{}/{} version {}: the store returned {} bytes of a {}-byte range",
                    self.bucket.location,
                    self.key,
                    self.version,
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
