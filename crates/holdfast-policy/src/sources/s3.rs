//! `kind = "s3"`: a bucket, or a prefix of one, on any S3-compatible store. Each object is a
//! file of the snapshot (`NAME/KEY`), its metadata (ETag, last-modified, version, content type,
//! user metadata) in the file's `user.holdfast.s3` attribute; an incremental run lists the
//! bucket flat, in key order, beside the previous recovery point's trees and reads only
//! objects whose size or ETag changed. See docs/DESIGN.md, "Buckets as data sources".

use std::path::Path;
use std::sync::Arc;

use super::{RawSource, Source};

#[cfg(feature = "s3")]
#[path = "s3_bucket.rs"]
mod bucket;
#[cfg(feature = "s3")]
#[path = "s3_discover.rs"]
mod discover;
#[cfg(feature = "s3")]
#[path = "s3_keys.rs"]
mod keys;
#[cfg(feature = "s3")]
#[path = "s3_restore.rs"]
mod restore;
#[cfg(feature = "s3")]
#[path = "s3_versions.rs"]
mod versions;
#[cfg(feature = "s3")]
#[path = "s3_walk.rs"]
mod walk;

/// Build from the workload file.
#[cfg(feature = "s3")]
pub fn build(r: &RawSource, _base: &Path) -> Result<Arc<dyn Source>, String> {
    bucket::build(r)
}

/// Refuse the source: this binary was built without object storage.
#[cfg(not(feature = "s3"))]
pub fn build(r: &RawSource, _base: &Path) -> Result<Arc<dyn Source>, String> {
    Err(format!("source {:?}: kind \"s3\" needs a holdfast built with the \"s3\" feature: nothing would be backed up", r.name()))
}
