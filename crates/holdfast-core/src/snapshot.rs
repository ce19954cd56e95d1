//! Snapshots: one encrypted JSON object per recovery point (`snapshots/<id>`).

use holdfast_storage::ObjectKind;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::Repository;

/// Associated data of snapshot objects.
pub const AAD: &[u8] = b"holdfast snapshot";

/// What a backup did, stored with its snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Files that were new.
    pub files_new: u64,
    /// Files that changed since the parent snapshot.
    pub files_changed: u64,
    /// Files taken from the parent snapshot without reading them.
    pub files_unmodified: u64,
    /// Directories.
    pub dirs: u64,
    /// Other entries (symlinks, devices, fifos).
    pub others: u64,
    /// Bytes of file content in the snapshot.
    pub total_bytes: u64,
    /// Bytes of file content read.
    pub bytes_read: u64,
    /// Blobs added to the repository.
    pub blobs_added: u64,
    /// Stored (compressed, encrypted) bytes added to the repository.
    pub bytes_added: u64,
    /// Files stored although they changed during every read (see
    /// [`Snapshot::changed_while_read`]).
    #[serde(default)]
    pub files_changed_while_read: u64,
    /// Duration in seconds.
    pub seconds: f64,
}

/// A recovery point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the backup started (RFC 3339, UTC).
    pub time: chrono::DateTime<chrono::Utc>,
    /// Root tree: one entry per backed-up path, named by its last component.
    pub tree: Id,
    /// Absolute paths that were backed up.
    pub paths: Vec<String>,
    /// Host.
    pub hostname: String,
    /// User.
    pub username: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// For a copy: the id of the snapshot it was copied from (in the source repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_from: Option<Id>,
    /// The workload source this recovery point belongs to (set by `protect`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Snapshot this one was compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    /// False when something could not be read, or a file kept changing while it was read: the
    /// snapshot is not a complete recovery point.
    pub complete: bool,
    /// What could not be read, one line per path.
    #[serde(default)]
    pub errors: Vec<String>,
    /// Things that did not stop the backup (extended attributes that could not be read).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Files that changed during every read (they were read again): stored as last read, so
    /// their content may mix bytes from before and after a change. Each is marked
    /// `changed_while_read` in its tree, and the snapshot is not `complete`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_while_read: Vec<String>,
    /// What the backup did.
    pub summary: Summary,
    /// holdfast version that wrote it.
    pub program: String,
    /// For a batch of a continuous log (WAL segments, ...): what it holds and whose it is.
    /// Such a snapshot is never a recovery point by itself (its `source` is `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<crate::logs::LogBatch>,
}

/// A snapshot with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotEntry {
    /// Snapshot id.
    pub id: Id,
    /// Content.
    pub snapshot: Snapshot,
}

/// Load every snapshot, oldest first. Damaged snapshots are returned as errors in the second list.
pub fn load_all(repo: &Repository) -> Result<(Vec<SnapshotEntry>, Vec<Error>)> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for o in repo.storage().list(ObjectKind::Snapshot)? {
        let Some(id) = Id::from_hex(&o.name) else {
            continue;
        };
        match repo.load_json_listed::<Snapshot>(ObjectKind::Snapshot, &o.name, o.size, AAD) {
            Ok(snapshot) => out.push(SnapshotEntry { id, snapshot }),
            Err(e @ Error::Corrupt { .. }) => bad.push(e),
            // Listed, then removed by a concurrent forget (or a listing that lags a delete).
            Err(Error::Storage(e)) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.snapshot.time.cmp(&b.snapshot.time).then(a.id.cmp(&b.id)));
    Ok((out, bad))
}

/// Find a snapshot by `latest` or an id prefix.
pub fn find<'a>(all: &'a [SnapshotEntry], spec: &str) -> Result<&'a SnapshotEntry> {
    if spec == "latest" {
        return all
            .last()
            .ok_or_else(|| Error::SnapshotNotFound(spec.into()));
    }
    let spec_l = spec.to_ascii_lowercase();
    let m: Vec<_> = all
        .iter()
        .filter(|s| s.id.to_hex().starts_with(&spec_l))
        .collect();
    match m.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::SnapshotNotFound(spec.into())),
        _ => Err(Error::AmbiguousSnapshot(spec.into())),
    }
}

/// Store a snapshot and record it in the history (after it is durable: a crash in between
/// leaves a snapshot the history does not know, a warning, never a false alarm); returns its id.
pub fn save(repo: &Repository, s: &Snapshot) -> Result<Id> {
    let id = repo.save_json(ObjectKind::Snapshot, AAD, s)?;
    repo.storage().flush()?;
    crate::history::append(repo, vec![crate::history::added_event(id, s)])?;
    Ok(id)
}
