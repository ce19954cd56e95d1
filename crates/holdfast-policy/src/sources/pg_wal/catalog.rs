//! What a source has archived, as read from the repository's snapshots and remembered in the
//! state directory (`catalog.json`), so that a push lists the snapshots (one request) and
//! reads only the ones it has not read before, instead of every batch ever written.
//!
//! The catalog only caches what authenticated snapshots said: an entry per snapshot id of
//! the repository (a log batch of the source, as seen from this host, with its pieces; any
//! other snapshot with none). Snapshots no longer listed are dropped; a catalog of another
//! repository (by its id) is discarded; an unreadable one is rebuilt.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use holdfast_core::logs::LogKind;
use holdfast_core::snapshot::{Snapshot, AAD};
use holdfast_core::{Id, Repository};
use holdfast_storage::ObjectKind;
use serde::{Deserialize, Serialize};

use super::{spool, WalError};

/// One archived piece.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// Its BLAKE3.
    pub blake3: String,
}

/// The cache.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// The repository's id.
    pub repository: String,
    /// Snapshot id (hex) → the source's pieces in it (empty: not one of its batches).
    pub snapshots: BTreeMap<String, Vec<Entry>>,
}

/// Archived names → (BLAKE3, short id of a batch holding it).
pub type Archived = HashMap<String, (String, String)>;

/// The source's archived names → (BLAKE3, batch short id), the newest batch winning; the
/// catalog in `dir` is brought up to date with the repository first. Returns also how many
/// snapshots were read.
pub fn archived(
    repo: &Repository,
    dir: &Path,
    source: &str,
    owns: &dyn Fn(&Snapshot) -> bool,
) -> Result<(Archived, usize), WalError> {
    let repo_err = |e: holdfast_core::Error| WalError::Repository(e.to_string());
    let path = dir.join("catalog.json");
    let mut cat: Catalog = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|c: &Catalog| c.repository == repo.config().id)
        .unwrap_or_else(|| Catalog {
            repository: repo.config().id.clone(),
            ..Default::default()
        });
    let listed = repo
        .storage()
        .list(ObjectKind::Snapshot)
        .map_err(|e| repo_err(e.into()))?;
    let mut fresh = BTreeMap::new();
    let mut read = 0;
    for o in &listed {
        if Id::from_hex(&o.name).is_none() {
            continue;
        }
        if let Some(e) = cat.snapshots.remove(&o.name) {
            fresh.insert(o.name.clone(), e);
            continue;
        }
        let s = match repo.load_json_listed::<Snapshot>(ObjectKind::Snapshot, &o.name, o.size, AAD)
        {
            Ok(s) => s,
            // Removed meanwhile (a concurrent forget): not ours to count.
            Err(holdfast_core::Error::Storage(e)) if e.is_not_found() => continue,
            Err(e) => return Err(repo_err(e)),
        };
        read += 1;
        let pieces = match &s.log {
            Some(l) if l.source == source && l.kind == LogKind::PgWal && owns(&s) => l
                .pieces
                .iter()
                .map(|p| Entry {
                    name: p.name.clone(),
                    blake3: p.blake3.clone(),
                })
                .collect(),
            _ => Vec::new(),
        };
        fresh.insert(o.name.clone(), pieces);
    }
    cat.snapshots = fresh;
    if read > 0 || !cat.snapshots.is_empty() {
        let b = serde_json::to_vec(&cat).map_err(|e| WalError::Io {
            what: "encoding catalog.json".into(),
            source: std::io::Error::other(e),
        })?;
        spool::write_atomic(&path, &b)?;
    }
    let mut out = HashMap::new();
    // A name in two batches (which push never writes): any of them has the bytes; a
    // conflict is reported by the restore side's chain analysis.
    for (id, pieces) in &cat.snapshots {
        for p in pieces {
            out.insert(
                p.name.clone(),
                (p.blake3.clone(), id[..8.min(id.len())].to_string()),
            );
        }
    }
    Ok((out, read))
}
