//! The `s3` source driver: configuration, incremental backup, restore into a directory or a
//! bucket, and drills that compare every object's bytes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use holdfast_backend_opendal::bucket::{Bucket, ObjectMeta};
use holdfast_backend_opendal::S3Config;
use holdfast_core::built::{backup_built, BuiltOptions, BuiltTree};
use holdfast_core::index::Index;
use holdfast_core::tree::{FileTime, FsName, Node, NodeKind, Xattr};
use holdfast_core::{Id, Repository};
use md5::Digest;
use serde::{Deserialize, Serialize};

use super::restore::VERSIONS_IN_DIR;
use super::versions::{store_versions, versions_dir};
use super::walk::{node, Backup, Walk};
use crate::found::Found;
use crate::sources::{
    Backed, BackupJob, DrillJob, DrillOutcome, RawSource, RestoreJob, Source, SourceError,
};

/// The attribute of each object's file that holds its metadata (JSON, [`Stored`]).
pub const META_XATTR: &str = "user.holdfast.s3";

/// Deleted keys named one by one in a snapshot's notes (the rest are counted).
pub(crate) const DELETED_SHOWN: usize = 20;

/// Configuration of an `s3` source.
#[derive(Debug, Clone)]
pub struct BucketSource {
    /// Endpoint, region, bucket, credentials.
    pub s3: S3Config,
    /// Key prefix ("" or ending `/`).
    pub prefix: String,
    /// Also keep every object version (`versions = true`).
    pub versions: bool,
    /// Also keep each object's tags (`object-tags`, default true).
    pub tags: bool,
}

/// Why an `s3` source failed.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// The store failed or refused.
    #[error("{0}")]
    Store(String),
    /// A restore needs a target.
    #[error("give --target DIRECTORY, or --target s3://BUCKET/PREFIX[?endpoint=URL&region=R&env=PREFIX] to restore into a bucket")]
    NoTarget,
    /// The target directory is not empty.
    #[error("{0} is not empty: restore into an empty directory, or pass --replace")]
    NotEmpty(PathBuf),
    /// A key cannot be a path of the snapshot.
    #[error("object {0:?}: its key has an empty, `.` or `..` part and cannot be stored as a path; nothing was recorded")]
    BadKey(String),
    /// An object's key is also the prefix of other keys (`a` and `a/b`).
    #[error("object {object:?} is also the prefix of {key:?}: a path cannot be both a file and a directory, so nothing was recorded; rename one of them, or back up the prefixes as separate sources")]
    ObjectAndPrefix {
        /// The object.
        object: String,
        /// A key under it.
        key: String,
    },
    /// The store listed keys out of order (or one twice).
    #[error("the store listed {key:?} after {prev:?}: a bucket's keys must be listed in strictly increasing order, so the tree would be wrong and nothing was recorded; the store is not S3-compatible in its listing order")]
    Unsorted {
        /// The key listed before.
        prev: String,
        /// The key out of order.
        key: String,
    },
    /// The store listed a key outside the prefix asked for.
    #[error(
        "the store listed {key:?} when asked for the keys under {prefix:?}; nothing was recorded"
    )]
    Outside {
        /// The key.
        key: String,
        /// The prefix listed.
        prefix: String,
    },
    /// Objects were restored into a bucket whose store does not implement tagging, so the
    /// tags they had are not set there.
    #[error("{done}; but the tags of {count} objects could not be set, because the store of {target} does not implement object tagging (for example {keys:?}): the tags are in the recovery point; restore into a store with tagging, or into a directory (tags in .holdfast-s3-metadata.jsonl)")]
    TagsLost {
        /// The target.
        target: String,
        /// How many objects lost their tags.
        count: usize,
        /// The first few.
        keys: Vec<String>,
        /// What was restored.
        done: String,
    },
    /// Local I/O.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl From<BucketError> for SourceError {
    fn from(e: BucketError) -> Self {
        SourceError::new("s3", e)
    }
}

pub(crate) fn store(e: String) -> SourceError {
    BucketError::Store(e).into()
}

/// An object's metadata as kept in the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// ETag.
    #[serde(default)]
    pub etag: Option<String>,
    /// Last modified.
    #[serde(default)]
    pub last_modified: Option<DateTime<Utc>>,
    /// Version id (versioned buckets).
    #[serde(default)]
    pub version: Option<String>,
    /// Content type.
    #[serde(default)]
    pub content_type: Option<String>,
    /// User metadata.
    #[serde(default)]
    pub user: BTreeMap<String, String>,
    /// Tags, when they were read (`None`: not read, because the source does not keep tags,
    /// the store does not implement tagging, or the point was made before tags were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

impl Stored {
    pub(crate) fn of(node: &Node) -> Option<Stored> {
        let x = node
            .xattrs
            .iter()
            .find(|x| x.name.0 == META_XATTR.as_bytes())?;
        let raw = hex::decode(&x.value).ok()?;
        serde_json::from_slice(&raw).ok()
    }
    pub(crate) fn xattr(&self) -> Xattr {
        Xattr {
            name: FsName(META_XATTR.as_bytes().to_vec()),
            value: hex::encode(serde_json::to_vec(self).unwrap_or_default()),
        }
    }
    pub(crate) fn meta(&self, size: u64) -> ObjectMeta {
        ObjectMeta {
            size,
            etag: self.etag.clone(),
            last_modified: self.last_modified,
            version: self.version.clone(),
            content_type: self.content_type.clone(),
            user: self.user.clone(),
            tags: self.tags.clone(),
        }
    }
}

/// Read an environment variable, or the file its `_FILE` form names.
fn env_or_file(name: &str) -> Option<String> {
    if let Ok(v) = std::env::var(name) {
        return Some(v);
    }
    let f = std::env::var(format!("{name}_FILE")).ok()?;
    fs::read_to_string(f).ok().map(|s| s.trim().to_string())
}

/// Build from the workload file.
pub fn build(r: &RawSource) -> Result<Arc<dyn Source>, String> {
    r.no_mode()?;
    let n = r.name();
    let bucket = r
        .bucket
        .clone()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| format!("source {n:?} of kind s3 needs bucket = \"...\""))?;
    let mut prefix = r.prefix.clone().unwrap_or_default();
    prefix = prefix.trim_start_matches('/').to_string();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    let p = r.credentials_env.clone().unwrap_or_else(|| "AWS".into());
    let env = |k: &str| env_or_file(&format!("{p}_{k}"));
    let s3 = S3Config {
        bucket,
        prefix: prefix.clone(),
        endpoint: r.endpoint.clone().or_else(|| env("ENDPOINT_URL")),
        region: r
            .region
            .clone()
            .or_else(|| env("REGION"))
            .or_else(|| env("DEFAULT_REGION")),
        access_key_id: env("ACCESS_KEY_ID"),
        secret_access_key: env("SECRET_ACCESS_KEY"),
        env_prefix: p,
    };
    Ok(Arc::new(BucketSource {
        s3,
        prefix,
        versions: r.versions,
        tags: r.object_tags.unwrap_or(true),
    }))
}

impl BucketSource {
    fn label(&self) -> String {
        format!("s3://{}/{}", self.s3.bucket, self.prefix)
    }
    fn connect(&self) -> Result<Bucket, SourceError> {
        let mut b = Bucket::connect(&self.s3).map_err(store)?;
        b.read_tags_too(self.tags);
        Ok(b)
    }
}

/// The MD5 an ETag states, when it is a single-part upload's (32 hex digits, quoted or not);
/// a multipart ETag (`...-N`) or any other form states none.
fn plain_md5(etag: &str) -> Option<Vec<u8>> {
    let e = etag.trim_matches('"');
    (e.len() == 32).then(|| hex::decode(e).ok()).flatten()
}

/// The tree of the source's objects in a snapshot (`NAME/` at its root).
pub(crate) fn objects_root(
    repo: &Repository,
    index: &Index,
    root: &Id,
) -> Result<Option<Id>, SourceError> {
    let top = holdfast_core::browse::load_tree(repo, index, root)?;
    // `NAME` sorts before `NAME.versions`.
    Ok(top.nodes.into_iter().next().and_then(|n| n.subtree))
}

/// The tree of the source's object versions in a snapshot (`NAME.versions/`), if it has one.
pub(crate) fn versions_root(
    repo: &Repository,
    index: &Index,
    root: &Id,
) -> Result<Option<Id>, SourceError> {
    let top = holdfast_core::browse::load_tree(repo, index, root)?;
    let name = top.nodes.first().map(|n| versions_dir(&n.name.display()));
    Ok(top
        .nodes
        .into_iter()
        .skip(1)
        .find(|n| Some(n.name.display()) == name)
        .and_then(|n| n.subtree))
}

impl Source for BucketSource {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn backup(&self, job: &BackupJob) -> Result<Backed, SourceError> {
        let b = self.connect()?;
        let label = self.label();
        let prev = holdfast_core::built::previous_root(job.repo, job.name, &label)?;
        let time_ns = job.time.timestamp_nanos_opt().unwrap_or(0);
        let opts = BuiltOptions {
            label,
            source: Some(job.name.to_string()),
            tags: job.tags.to_vec(),
            time: Some(job.time),
        };
        let mut failed: Option<SourceError> = None;
        let built = backup_built(job.repo, &opts, job.progress, |w| {
            let prev_objects = match prev {
                Some(p) => match objects_root(job.repo, w.index(), &p) {
                    Ok(o) => o,
                    Err(e) => {
                        failed = Some(e);
                        return Err(holdfast_core::Error::Refused(
                            "reading the previous recovery point".into(),
                        ));
                    }
                },
                None => None,
            };
            let mut walk = Backup {
                b: &b,
                w,
                progress: job.progress,
                walk: Walk::default(),
                time_ns,
            };
            let objects = match walk.run(&self.prefix, prev_objects) {
                Ok(id) => id,
                Err(e) => {
                    let m = e.to_string();
                    failed = Some(e);
                    return Err(holdfast_core::Error::Refused(m));
                }
            };
            let Walk {
                mut summary,
                deleted,
                deleted_count,
            } = walk.walk;
            let mut top = node(job.name, NodeKind::Dir, FileTime::from_nanos(time_ns));
            top.subtree = Some(objects);
            summary.dirs += 1;
            let mut notes = Vec::new();
            let mut tops = vec![top];
            if self.versions {
                let prev_versions = match prev {
                    Some(p) => match versions_root(job.repo, w.index(), &p) {
                        Ok(v) => v,
                        Err(e) => {
                            failed = Some(e);
                            return Err(holdfast_core::Error::Refused(
                                "reading the previous recovery point".into(),
                            ));
                        }
                    },
                    None => None,
                };
                let (vid, counts) =
                    match store_versions(&b, w, job.progress, &self.prefix, prev_versions, time_ns)
                    {
                        Ok(v) => v,
                        Err(e) => {
                            let m = e.to_string();
                            failed = Some(e);
                            return Err(holdfast_core::Error::Refused(m));
                        }
                    };
                let mut vtop = node(
                    &versions_dir(job.name),
                    NodeKind::Dir,
                    FileTime::from_nanos(time_ns),
                );
                vtop.subtree = Some(vid);
                tops.push(vtop);
                summary.bytes_read += counts.bytes_read;
                notes.push(format!(
                    "{} object versions kept ({} read now, {} bytes)",
                    counts.versions, counts.read, counts.bytes_read
                ));
            }
            let root = w.store_tree(tops)?;
            if deleted_count > 0 {
                let more = deleted_count.saturating_sub(deleted.len() as u64);
                notes.push(format!(
                    "{deleted_count} objects deleted since the previous recovery point: {}{}",
                    deleted.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                ));
            }
            Ok(BuiltTree {
                root,
                summary,
                notes,
            })
        });
        let (id, _snap) = match built {
            Ok(v) => v,
            Err(e) => return Err(failed.unwrap_or(SourceError::from(e))),
        };
        tracing::info!(gets = b.gets(), "s3 source {}: backup done", job.name);
        Ok(Backed {
            snapshot: Some(id),
            skipped: Vec::new(),
        })
    }

    fn restore(&self, job: &RestoreJob) -> Result<Vec<String>, SourceError> {
        let target = job.into.ok_or(BucketError::NoTarget)?;
        let root = job.snap.snapshot.tree;
        if target.starts_with("s3://") {
            let r = self.restore_bucket(job.repo, &root, target, job.replace)?;
            let mut out = vec![format!(
                "restored {} objects ({} bytes) into {target}; {} already there unchanged",
                r.objects, r.bytes, r.unchanged
            )];
            if !r.kept_newer.is_empty() {
                out.push(format!(
                    "kept {} newer objects in the target (pass --replace to overwrite them): {}",
                    r.kept_newer.len(),
                    r.kept_newer
                        .iter()
                        .take(DELETED_SHOWN)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if !r.tags_lost.is_empty() {
                return Err(BucketError::TagsLost {
                    target: target.to_string(),
                    count: r.tags_lost.len(),
                    keys: r.tags_lost.iter().take(DELETED_SHOWN).cloned().collect(),
                    done: out.join("; "),
                }
                .into());
            }
            let (index, _) = job.repo.load_index()?;
            if versions_root(job.repo, &index, &root)?.is_some() {
                out.push(format!(
                    "the recovery point also holds every object version; a bucket restore writes the current objects only: restore into a directory for the versions (in {VERSIONS_IN_DIR}/KEY/VERSION)"
                ));
            }
            return Ok(out);
        }
        let r = self.restore_dir(job.repo, &root, Path::new(target), job.replace, false)?;
        let mut out = vec![format!(
            "restored {} objects ({} bytes) into {target} (metadata in .holdfast-s3-metadata.jsonl)",
            r.objects, r.bytes
        )];
        if r.versions > 0 {
            out.push(format!(
                "restored {} object versions into {target}/{VERSIONS_IN_DIR}/KEY/VERSION",
                r.versions
            ));
        }
        Ok(out)
    }

    fn drill(&self, job: &DrillJob) -> Result<DrillOutcome, SourceError> {
        let target = job.scratch.join("restore");
        let r = self.restore_dir(job.repo, &job.snap.snapshot.tree, &target, false, true)?;
        let mut messages = Vec::new();
        let mut passed = true;
        let mut etags_matched = 0u64;
        for (key, want, size, etag) in &r.hashes {
            let path = target.join(key);
            let got = fs::read(&path).map(|d| (blake3::hash(&d), d.len() as u64, d));
            match got {
                Ok((h, n, data)) if h == *want && n == *size => {
                    // A single-part upload's ETag is the MD5 of its bytes: the store's own
                    // checksum, taken when the object was written, checks the round trip.
                    if let Some(md5) = etag.as_deref().and_then(plain_md5) {
                        if md5::Md5::digest(&data).as_slice() == md5.as_slice() {
                            etags_matched += 1;
                        } else {
                            passed = false;
                            messages.push(format!(
                                "{key}: restored bytes do not match the object's ETag (MD5) recorded at backup"
                            ));
                        }
                    }
                }
                Ok(_) => {
                    passed = false;
                    messages.push(format!(
                        "{key}: restored bytes differ from the recovery point"
                    ));
                }
                Err(e) => {
                    passed = false;
                    messages.push(format!("{key}: {e}"));
                }
            }
        }
        if r.objects
            != job.snap.snapshot.summary.files_new
                + job.snap.snapshot.summary.files_changed
                + job.snap.snapshot.summary.files_unmodified
        {
            passed = false;
            messages.push(format!(
                "restored {} objects, the recovery point records {}",
                r.objects,
                job.snap.snapshot.summary.files_new
                    + job.snap.snapshot.summary.files_changed
                    + job.snap.snapshot.summary.files_unmodified
            ));
        }
        let versions = if r.versions > 0 {
            format!(" and {} object versions", r.versions)
        } else {
            String::new()
        };
        messages.push(format!(
            "compared {} objects{versions} ({} bytes, BLAKE3) with snapshot {}; {etags_matched} of them also match their ETag (MD5 of a single-part upload)",
            r.objects,
            r.bytes,
            job.snap.id.short()
        ));
        Ok(DrillOutcome {
            passed,
            messages,
            files: r.objects,
            bytes: r.bytes,
        })
    }

    fn preflight(&self) -> Vec<String> {
        if self.s3.access_key_id.is_none() || self.s3.secret_access_key.is_none() {
            return vec![format!(
                "{}: no credentials: set {p}_ACCESS_KEY_ID and {p}_SECRET_ACCESS_KEY (or their _FILE forms)",
                self.label(),
                p = self.s3.env_prefix
            )];
        }
        Vec::new()
    }

    fn covers(&self, f: &Found) -> bool {
        self.covers_bucket(f)
    }

    fn neighbours(&self) -> Vec<Found> {
        self.buckets_beside()
    }

    fn describe(&self) -> String {
        format!(
            "objects of {} at {} (incremental by ETag and size{})",
            self.label(),
            self.s3.endpoint.as_deref().unwrap_or("AWS"),
            if self.versions {
                "; every object version kept"
            } else {
                ""
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_single_part_etag_states_an_md5() {
        let md5 = "9e107d9d372bb6826bd81d3542a419d6";
        for (etag, states) in [
            (format!("\"{md5}\""), true),
            (md5.to_string(), true),
            (format!("\"{md5}-3\""), false),
            ("\"abc\"".to_string(), false),
            (format!("\"{}\"", "z".repeat(32)), false),
            (String::new(), false),
        ] {
            assert_eq!(plain_md5(&etag).is_some(), states, "{etag}");
        }
        assert_eq!(
            plain_md5(md5).unwrap(),
            md5::Md5::digest(b"The quick brown fox jumps over the lazy dog").to_vec()
        );
    }

    #[test]
    fn metadata_round_trips_through_the_attribute_and_prefix_is_a_directory() {
        let s = Stored {
            etag: Some("\"abc\"".into()),
            last_modified: Some(Utc::now()),
            version: Some("v1".into()),
            content_type: Some("text/plain".into()),
            user: [("owner".to_string(), "shop".to_string())].into(),
            tags: Some([("class".to_string(), "gold".to_string())].into()),
        };
        let mut n = node("k", NodeKind::File, FileTime::from_nanos(0));
        assert_eq!(Stored::of(&n), None);
        n.xattrs = vec![s.xattr()];
        assert_eq!(Stored::of(&n), Some(s));
        let w = crate::config::Workload::parse(
            Path::new("/w.toml"),
            "[[source]]\nname = \"b\"\nkind = \"s3\"\nbucket = \"x\"\nprefix = \"/media\"\n",
        )
        .unwrap();
        assert!(w.sources[0].driver().describe().contains("s3://x/media/"));
        let e = crate::config::Workload::parse(
            Path::new("/w.toml"),
            "[[source]]\nname = \"b\"\nkind = \"s3\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("needs bucket"), "{e}");
    }
}
