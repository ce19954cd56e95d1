//! Object versions of a versioned bucket (`ListObjectVersions` and reads of one version), for
//! `s3` sources with `versions = true`.

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
}
