//! Restores of an `s3` source: into a directory (objects, their metadata file, and object
//! versions) or into a bucket (in parallel batches, never over a newer object unless
//! `--replace`).

use std::fs;
use std::io::Write;
use std::path::Path;

use holdfast_backend_opendal::bucket::{Bucket, ObjectMeta, RANGE};
use holdfast_backend_opendal::tagging::Tagging;
use holdfast_backend_opendal::S3Config;
use holdfast_core::blob::BlobType;
use holdfast_core::index::Index;
use holdfast_core::tree::{Node, NodeKind};
use holdfast_core::{Id, Repository};

use super::bucket::{objects_root, store, versions_root, BucketError, BucketSource, Stored};
use super::walk::{BATCH_BYTES, BATCH_OBJECTS, PARALLEL};
use crate::sources::SourceError;

/// Write a file node's content to `out`, authenticating every blob; BLAKE3 of the bytes.
fn copy_content(
    repo: &Repository,
    index: &Index,
    n: &Node,
    out: &mut dyn FnMut(Vec<u8>) -> Result<(), String>,
) -> Result<blake3::Hash, SourceError> {
    let mut h = blake3::Hasher::new();
    if let Some(data) = &n.inline {
        h.update(data);
        out(data.clone()).map_err(store)?;
    }
    for id in &n.content {
        let data = repo.read_blob(index, BlobType::Data, id)?;
        h.update(&data);
        out(data).map_err(store)?;
    }
    Ok(h.finalize())
}

/// Whether a restore writes `to` given what is there now: not when the same object is there
/// (counted unchanged) or a newer one (kept, named in the report), unless `--replace`.
fn should_write(
    there: Option<ObjectMeta>,
    n: &Node,
    meta: &Stored,
    to: &str,
    done: &mut Restored,
) -> bool {
    let Some(there) = there else { return true };
    if there.etag.is_some() && there.etag == meta.etag && there.size == n.size {
        done.unchanged += 1;
        return false;
    }
    let newer = match (there.last_modified, meta.last_modified) {
        (Some(t), Some(m)) => t >= m,
        _ => true,
    };
    if newer {
        done.kept_newer.push(to.to_string());
    }
    !newer
}

/// Restore a batch of small objects: their state in the target read in parallel, their
/// contents read from the repository, then written in parallel.
fn put_batch(
    b: &Bucket,
    repo: &Repository,
    index: &Index,
    replace: bool,
    done: &mut Restored,
    batch: Vec<(String, Node)>,
) -> Result<(), SourceError> {
    if batch.is_empty() {
        return Ok(());
    }
    let batch = if replace {
        batch
    } else {
        let keys: Vec<String> = batch.iter().map(|(k, _)| k.clone()).collect();
        let mut write = Vec::new();
        for ((to, n), there) in batch.into_iter().zip(b.head_all(&keys, PARALLEL)) {
            let meta = Stored::of(&n).unwrap_or_default();
            if should_write(there.map_err(store)?, &n, &meta, &to, done) {
                write.push((to, n));
            }
        }
        write
    };
    let mut objects = Vec::with_capacity(batch.len());
    for (to, n) in &batch {
        let mut body = Vec::with_capacity(n.size as usize);
        copy_content(repo, index, n, &mut |d| {
            body.extend_from_slice(&d);
            Ok(())
        })?;
        if body.len() as u64 != n.size {
            return Err(store(format!(
                "{to}: the recovery point's content is {} bytes, its file says {}: the snapshot is damaged (run `holdfast check`)",
                body.len(),
                n.size
            )));
        }
        let meta = Stored::of(n).unwrap_or_default();
        objects.push((to.clone(), meta.meta(n.size), body));
    }
    let tagged: Vec<bool> = objects.iter().map(|(_, m, _)| has_tags(m)).collect();
    for ((r, (to, n)), tagged) in b
        .put_all(objects, PARALLEL)
        .into_iter()
        .zip(&batch)
        .zip(tagged)
    {
        r.map_err(store)?;
        done.objects += 1;
        done.bytes += n.size;
        if tagged {
            done.tag_set(b, to);
        }
    }
    Ok(())
}

/// Write a file node's content to `path` (parents created, synced); BLAKE3 of the bytes.
fn write_file(
    repo: &Repository,
    index: &Index,
    n: &Node,
    path: &Path,
) -> Result<blake3::Hash, SourceError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| BucketError::Io { what, path, source }
    };
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).map_err(io("creating", d))?;
    }
    let mut f = fs::File::create(path).map_err(io("creating", path))?;
    let h = copy_content(repo, index, n, &mut |data| {
        f.write_all(&data)
            .map_err(|e| format!("writing {}: {e}", path.display()))
    })?;
    f.sync_all().map_err(io("writing", path))?;
    Ok(h)
}

/// Every object of a snapshot's tree, depth first, as (key, node).
fn each_object(
    repo: &Repository,
    index: &Index,
    tree: &Id,
    prefix: &str,
    f: &mut dyn FnMut(&str, &Node) -> Result<(), SourceError>,
) -> Result<(), SourceError> {
    for n in holdfast_core::browse::load_tree(repo, index, tree)?.nodes {
        let name = n.name.display();
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(BucketError::BadKey(format!("{prefix}{name}")).into());
        }
        match (n.kind, n.subtree) {
            (NodeKind::Dir, Some(sub)) => {
                each_object(repo, index, &sub, &format!("{prefix}{name}/"), f)?
            }
            (NodeKind::File, _) => f(&format!("{prefix}{name}"), &n)?,
            _ => {}
        }
    }
    Ok(())
}

/// Where a directory restore puts object versions.
pub(crate) const VERSIONS_IN_DIR: &str = ".holdfast-s3-versions";

/// What a restore did.
#[derive(Debug, Default)]
pub(crate) struct Restored {
    pub(crate) objects: u64,
    pub(crate) bytes: u64,
    pub(crate) kept_newer: Vec<String>,
    pub(crate) unchanged: u64,
    /// Object versions restored (into a directory).
    pub(crate) versions: u64,
    /// Objects restored into a bucket without the tags they had (the store has no tagging).
    pub(crate) tags_lost: Vec<String>,
    /// Key, BLAKE3 of the content read from the repository, size, ETag recorded.
    pub(crate) hashes: Vec<(String, blake3::Hash, u64, Option<String>)>,
}

/// Whether an object to write has tags.
fn has_tags(m: &ObjectMeta) -> bool {
    m.tags.as_ref().is_some_and(|t| !t.is_empty())
}

impl Restored {
    /// After writing a tagged object: note it when the store could not take its tags.
    fn tag_set(&mut self, b: &Bucket, key: &str) {
        if b.tagging() == Tagging::Unsupported {
            self.tags_lost.push(key.to_string());
        }
    }
}

impl BucketSource {
    pub(crate) fn restore_dir(
        &self,
        repo: &Repository,
        root: &Id,
        target: &Path,
        replace: bool,
        keep_hashes: bool,
    ) -> Result<Restored, SourceError> {
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| BucketError::Io { what, path, source }
        };
        if !replace && fs::read_dir(target).is_ok_and(|mut d| d.next().is_some()) {
            return Err(BucketError::NotEmpty(target.into()).into());
        }
        fs::create_dir_all(target).map_err(io("creating", target))?;
        let (index, _) = repo.load_index()?;
        let mut done = Restored::default();
        let sidecar_path = target.join(".holdfast-s3-metadata.jsonl");
        let mut sidecar = fs::File::create(&sidecar_path).map_err(io("creating", &sidecar_path))?;
        let Some(objects) = objects_root(repo, &index, root)? else {
            return Ok(done);
        };
        each_object(repo, &index, &objects, "", &mut |key, n| {
            let h = write_file(repo, &index, n, &target.join(key))?;
            let meta = Stored::of(n).unwrap_or_default();
            if keep_hashes {
                done.hashes
                    .push((key.to_string(), h, n.size, meta.etag.clone()));
            }
            let line = serde_json::json!({"key": key, "size": n.size, "meta": meta});
            writeln!(sidecar, "{line}").map_err(io("writing", &sidecar_path))?;
            done.objects += 1;
            done.bytes += n.size;
            Ok(())
        })?;
        if let Some(vroot) = versions_root(repo, &index, root)? {
            let vdir = target.join(VERSIONS_IN_DIR);
            each_object(repo, &index, &vroot, "", &mut |key, n| {
                let h = write_file(repo, &index, n, &vdir.join(key))?;
                let meta = Stored::of(n).unwrap_or_default();
                if keep_hashes {
                    done.hashes.push((
                        format!("{VERSIONS_IN_DIR}/{key}"),
                        h,
                        n.size,
                        meta.etag.clone(),
                    ));
                }
                let object = key.rsplit_once('/').map_or(key, |(k, _)| k);
                let line = serde_json::json!({"key": object, "size": n.size, "meta": meta, "file": format!("{VERSIONS_IN_DIR}/{key}")});
                writeln!(sidecar, "{line}").map_err(io("writing", &sidecar_path))?;
                done.versions += 1;
                Ok(())
            })?;
        }
        sidecar.sync_all().map_err(io("writing", &sidecar_path))?;
        Ok(done)
    }

    /// The bucket a `s3://BUCKET/PREFIX?...` target names, with this source's endpoint,
    /// region and credentials where the target gives none.
    fn target_bucket(&self, url: &str) -> Result<S3Config, SourceError> {
        let mut c = S3Config::from_url(url).map_err(store)?;
        let own_env = !url.contains("env=");
        if c.endpoint.is_none() {
            c.endpoint = self.s3.endpoint.clone();
        }
        if c.region.is_none() {
            c.region = self.s3.region.clone();
        }
        if own_env || c.access_key_id.is_none() {
            c.access_key_id = self.s3.access_key_id.clone();
            c.secret_access_key = self.s3.secret_access_key.clone();
        }
        if !c.prefix.is_empty() && !c.prefix.ends_with('/') {
            c.prefix.push('/');
        }
        Ok(c)
    }

    pub(crate) fn restore_bucket(
        &self,
        repo: &Repository,
        root: &Id,
        url: &str,
        replace: bool,
    ) -> Result<Restored, SourceError> {
        let c = self.target_bucket(url)?;
        let b = Bucket::connect(&c).map_err(store)?;
        let (index, _) = repo.load_index()?;
        let mut done = Restored::default();
        let Some(objects) = objects_root(repo, &index, root)? else {
            return Ok(done);
        };
        let mut batch: Vec<(String, Node)> = Vec::new();
        let mut batch_bytes = 0u64;
        each_object(repo, &index, &objects, "", &mut |key, n| {
            // Keys in the snapshot are relative to the source's prefix.
            let to = format!("{}{key}", c.prefix);
            if n.size <= RANGE {
                batch_bytes += n.size;
                batch.push((to, n.clone()));
                if batch.len() >= BATCH_OBJECTS || batch_bytes >= BATCH_BYTES {
                    put_batch(
                        &b,
                        repo,
                        &index,
                        replace,
                        &mut done,
                        std::mem::take(&mut batch),
                    )?;
                    batch_bytes = 0;
                }
                return Ok(());
            }
            // Large: streamed, one at a time.
            let meta = Stored::of(n).unwrap_or_default();
            if !replace {
                let there = b.head(&to).map_err(store)?;
                if !should_write(there, n, &meta, &to, &mut done) {
                    return Ok(());
                }
            }
            let mut err = None;
            b.put(
                &to,
                &meta.meta(n.size),
                &mut |send| match copy_content(repo, &index, n, send) {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let m = e.to_string();
                        err = Some(e);
                        Err(m)
                    }
                },
            )
            .map_err(|m| err.take().unwrap_or_else(|| store(m)))?;
            done.objects += 1;
            done.bytes += n.size;
            if meta.tags.as_ref().is_some_and(|t| !t.is_empty()) {
                done.tag_set(&b, &to);
            }
            Ok(())
        })?;
        put_batch(&b, repo, &index, replace, &mut done, batch)?;
        Ok(done)
    }
}
