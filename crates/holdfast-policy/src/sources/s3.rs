//! `kind = "s3"`: a bucket as a source. Not supported by this version: the workload file is
//! refused, so nothing is silently left unprotected.

use std::path::Path;
use std::sync::Arc;

use super::{RawSource, Source};

/// Refuse the source, naming what to use instead.
pub fn build(r: &RawSource, _base: &Path) -> Result<Arc<dyn Source>, String> {
    Err(format!("source {:?}: kind \"s3\" (a bucket as a source) is not supported by this version: nothing would be backed up; back the bucket up with a command source (e.g. command = \"rclone cat ...\") or a path source over a synced copy", r.name()))
}
