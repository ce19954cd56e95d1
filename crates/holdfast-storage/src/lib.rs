//! The storage trait of holdfast.
//!
//! A repository is a set of immutable objects, each addressed by an [`ObjectKind`] and a name
//! (lowercase hex, content-derived or random, so two writers never pick the same name for
//! different bytes). A backend stores and returns those objects; it knows nothing of encryption,
//! chunking or snapshots. The engine relies on four properties, which every backend must keep:
//!
//! 1. **Atomic puts.** After `put` returns, a reader sees either the whole object or nothing;
//!    never a prefix. A crash during `put` leaves no object under the final name.
//! 2. **Put-if-absent.** [`PutMode::CreateNew`] fails with [`StorageError::AlreadyExists`] if the
//!    object exists, so two writers cannot both believe they created it.
//! 3. **Durability barrier.** After [`Storage::flush`] returns, every put and delete that returned
//!    before the call survives a crash (power loss) of this host.
//! 4. **Batched existence.** [`Storage::exists_many`] answers for many names at once, so that
//!    object stores can answer from one listing instead of one request per name.
//! 5. **Listings show what returned.** A `list` that starts after a put returned includes the
//!    object (prune relies on it to see every snapshot). A deleted object may still be listed
//!    for a while: readers take "listed, then not found" as deleted, never as damage.

//!
//! Test seams: [`MemoryStorage`] keeps this contract in memory (with a model of what a crash
//! keeps), [`Faulty`] wraps any store to inject faults and count calls, and [`contract::check`]
//! runs the contract against any backend.

#![warn(missing_docs)]

pub mod contract;
mod faulty;
mod memory;

pub use faulty::{Counts, Faults, Faulty, Injected};
pub use memory::{MemoryStorage, PendingOp};

use std::fmt;
use std::io;

/// The kinds of object a repository holds. Each kind has its own namespace (a directory on a
/// file system, a key prefix on an object store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// The repository's plaintext description (format version, id). Exactly one, named `config`.
    Config,
    /// Key slots: the master key wrapped by a passphrase-derived key.
    Key,
    /// Pack files: many encrypted blobs and an encrypted header.
    Pack,
    /// Index files: which blob is in which pack, at which offset.
    Index,
    /// Snapshots: one per recovery point.
    Snapshot,
    /// Live writer sessions (heartbeats), read by garbage collection.
    Session,
    /// Garbage-collection plans: packs condemned by a prune, deleted by a later one.
    Gc,
    /// Records of jobs and restore drills.
    Record,
    /// The append-only history of recovery points and retention locks (one object per event).
    History,
}

impl ObjectKind {
    /// Every kind, in a stable order.
    pub const ALL: [ObjectKind; 9] = [
        ObjectKind::Config,
        ObjectKind::Key,
        ObjectKind::Pack,
        ObjectKind::Index,
        ObjectKind::Snapshot,
        ObjectKind::Session,
        ObjectKind::Gc,
        ObjectKind::Record,
        ObjectKind::History,
    ];

    /// The directory (or key prefix) that holds objects of this kind.
    pub fn dir(self) -> &'static str {
        match self {
            ObjectKind::Config => "",
            ObjectKind::Key => "keys",
            ObjectKind::Pack => "data",
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshots",
            ObjectKind::Session => "sessions",
            ObjectKind::Gc => "gc",
            ObjectKind::Record => "records",
            ObjectKind::History => "history",
        }
    }

    /// Whether objects of this kind are fanned out into 256 sub-directories by the first two
    /// hex digits of their name (only packs: there are many of them).
    pub fn fanned_out(self) -> bool {
        matches!(self, ObjectKind::Pack)
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ObjectKind::Config => "config",
            ObjectKind::Key => "key",
            ObjectKind::Pack => "pack",
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshot",
            ObjectKind::Session => "session",
            ObjectKind::Gc => "gc plan",
            ObjectKind::Record => "record",
            ObjectKind::History => "history entry",
        };
        f.write_str(s)
    }
}

/// How [`Storage::put`] treats an existing object of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Fail with [`StorageError::AlreadyExists`] if the object exists.
    CreateNew,
    /// Replace an existing object atomically. Only used for content-addressed objects (where
    /// the same name means the same bytes) and for session heartbeats.
    Overwrite,
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's name within its kind.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// An S3 Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// Principals with `s3:BypassGovernanceRetention` may still delete or shorten.
    Governance,
    /// Nobody, not even the account root, can delete the object or shorten the lock.
    Compliance,
}

impl LockMode {
    /// The S3 wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }

    /// Parse the S3 wire name.
    pub fn parse(s: &str) -> Option<LockMode> {
        match s {
            "GOVERNANCE" => Some(LockMode::Governance),
            "COMPLIANCE" => Some(LockMode::Compliance),
            _ => None,
        }
    }
}

/// A bucket's Object Lock configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketLock {
    /// Object Lock is enabled on the bucket (it then also keeps every object version).
    pub enabled: bool,
    /// The default retention the store gives each new object: mode and days.
    pub default_rule: Option<(LockMode, u32)>,
}

/// What went wrong in a backend, with enough context to name the cause and the fix.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object does not exist.
    #[error("{kind} {name} does not exist in {location}")]
    NotFound {
        /// Kind of the missing object.
        kind: ObjectKind,
        /// Name of the missing object.
        name: String,
        /// Where the backend looked.
        location: String,
    },
    /// A put with [`PutMode::CreateNew`] found the object already there.
    #[error("{kind} {name} already exists in {location}")]
    AlreadyExists {
        /// Kind of the object.
        kind: ObjectKind,
        /// Name of the object.
        name: String,
        /// Where.
        location: String,
    },
    /// The store has no space left. Nothing was left half-written.
    #[error("no space left on {location} while {op}: free space or move the repository, then run the command again")]
    NoSpace {
        /// What was being done.
        op: String,
        /// Where.
        location: String,
    },
    /// The store refused access.
    #[error("permission denied on {location} while {op}: {fix}")]
    PermissionDenied {
        /// What was being done.
        op: String,
        /// Where.
        location: String,
        /// What to do about it (it differs between a disk and an object store).
        fix: String,
    },
    /// The store is read-only.
    #[error("{location} is read-only (while {op}): this command writes to the repository; remount it read-write or use a writable copy")]
    ReadOnly {
        /// What was being done.
        op: String,
        /// Where.
        location: String,
    },
    /// A read asked for bytes past the object's end.
    #[error(
        "{kind} {name} is shorter than expected: wanted bytes {offset}..{end}, object has {size}"
    )]
    ShortRead {
        /// Kind of the object.
        kind: ObjectKind,
        /// Name of the object.
        name: String,
        /// Requested start.
        offset: u64,
        /// Requested end.
        end: u64,
        /// Actual size.
        size: u64,
    },
    /// Any other I/O failure.
    #[error("{op} {location}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// Where.
        location: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The store cannot do this at all.
    #[error("{location} does not support {what}")]
    Unsupported {
        /// What was asked.
        what: String,
        /// Repository location.
        location: String,
    },
    /// A failure of a remote store (network, service).
    #[error("{op} {location}: {message}")]
    Remote {
        /// What was being done.
        op: String,
        /// Where.
        location: String,
        /// The service's message.
        message: String,
        /// Whether retrying may succeed.
        transient: bool,
    },
}

impl StorageError {
    /// Classify an I/O error, keeping the context.
    pub fn from_io(op: impl Into<String>, location: impl Into<String>, e: io::Error) -> Self {
        let op = op.into();
        let location = location.into();
        // ENOSPC and EDQUOT are "storage full"; EROFS is read-only.
        match e.raw_os_error() {
            Some(28) | Some(122) => return StorageError::NoSpace { op, location },
            Some(30) => return StorageError::ReadOnly { op, location },
            _ => {}
        }
        match e.kind() {
            io::ErrorKind::PermissionDenied => StorageError::PermissionDenied {
                op,
                location,
                fix: "check the owner and mode of the repository, or that it is not mounted read-only"
                    .into(),
            },
            _ => StorageError::Io {
                op,
                location,
                source: e,
            },
        }
    }

    /// The bytes of a ranged read if it returned all `len` of them, else a
    /// [`StorageError::ShortRead`] (for backends whose reads stop at the end of the object).
    pub fn whole_range(
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u64,
        bytes: Vec<u8>,
    ) -> Result<Vec<u8>> {
        if (bytes.len() as u64) < len {
            return Err(StorageError::ShortRead {
                kind,
                name: name.into(),
                offset,
                end: offset + len,
                size: offset + bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    /// Whether this error says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }
}

/// Result type of storage operations.
pub type Result<T> = std::result::Result<T, StorageError>;

/// A place that stores repository objects. Object-safe: the engine holds a `dyn Storage`.
pub trait Storage: Send + Sync + fmt::Debug {
    /// A human-readable location (a path or URL) for messages.
    fn location(&self) -> String;

    /// Create the layout of an empty repository. Fails if a repository already exists there.
    fn create(&self) -> Result<()>;

    /// Store an object atomically.
    fn put(&self, kind: ObjectKind, name: &str, data: &[u8], mode: PutMode) -> Result<()>;

    /// [`Storage::put`], handing the bytes over: a backend whose client must own the body (an
    /// object store) takes them without a copy. The default stores them with `put`.
    fn put_owned(&self, kind: ObjectKind, name: &str, data: Vec<u8>, mode: PutMode) -> Result<()> {
        self.put(kind, name, &data, mode)
    }

    /// Read a whole object.
    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>>;

    /// Read `len` bytes of an object from `offset`.
    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;

    /// List every object of a kind.
    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>>;

    /// Which of `names` exist, in the same order. The default answers from one listing, which
    /// suits remote stores (one request for any number of names).
    fn exists_many(&self, kind: ObjectKind, names: &[String]) -> Result<Vec<bool>> {
        let have: std::collections::HashSet<String> =
            self.list(kind)?.into_iter().map(|o| o.name).collect();
        Ok(names.iter().map(|n| have.contains(n)).collect())
    }

    /// Delete an object. Deleting a missing object is not an error.
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()>;

    /// Durability barrier: every put and delete that returned before this call is durable when it
    /// returns.
    fn flush(&self) -> Result<()>;

    /// When an object was last written, if the store can say (`Ok(None)` if it cannot). Used to
    /// age records that cannot be read, so one damaged record cannot block garbage collection.
    fn modified(&self, kind: ObjectKind, name: &str) -> Result<Option<std::time::SystemTime>> {
        let _ = (kind, name);
        Ok(None)
    }

    /// Temporary files of interrupted writes (a local `tmp/`) last written more than `max_age`
    /// ago: how many and how many bytes; with `remove`, they are deleted (a store whose puts
    /// are atomic has none). A put in progress touches its file, so a live writer's is younger.
    fn stale_temporaries(
        &self,
        max_age: std::time::Duration,
        remove: bool,
    ) -> Result<(usize, u64)> {
        let _ = (max_age, remove);
        Ok((0, 0))
    }

    /// How many large puts to keep in flight (1 for a local disk; more for object stores,
    /// whose throughput per request is bounded by latency). Each costs one pack of memory.
    fn write_concurrency(&self) -> usize {
        1
    }

    /// The store's own immutability (S3 Object Lock) for this repository's bucket: `Ok(None)`
    /// if the store has none (a local disk), else whether it is enabled and its default rule.
    fn object_lock(&self) -> Result<Option<BucketLock>> {
        Ok(None)
    }

    /// Lock one object until `until` (Unix seconds): it can be neither deleted nor overwritten
    /// before then, by anyone in compliance mode. Stores without object lock refuse.
    fn retain(&self, kind: ObjectKind, name: &str, mode: LockMode, until: i64) -> Result<()> {
        let _ = (kind, name, mode, until);
        Err(StorageError::Unsupported {
            what: "object lock".into(),
            location: self.location(),
        })
    }

    /// On a store that keeps object versions: bring back every object of the repository deleted
    /// at or after `since` (Unix seconds) that still has its data as an older version, by
    /// removing the delete markers made since. Returns the objects (as paths in the repository).
    /// With `dry_run`, only says which. Stores without versions refuse.
    fn undelete(&self, since: i64, dry_run: bool) -> Result<Vec<String>> {
        let _ = (since, dry_run);
        Err(StorageError::Unsupported {
            what: "undeleting object versions".into(),
            location: self.location(),
        })
    }

    /// The lock on one object: its mode and until when (Unix seconds), or `None` if unlocked.
    fn retention(&self, kind: ObjectKind, name: &str) -> Result<Option<(LockMode, i64)>> {
        let _ = (kind, name);
        Ok(None)
    }

    /// How many reads to keep in flight when a task needs many (restore, loading trees). The
    /// default suits a local disk: twice the cores, at least 4. Object stores want more, because
    /// each request waits a round trip while moving few bytes.
    fn read_concurrency(&self) -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get() * 2)
            .unwrap_or(4)
            .max(4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_enospc_and_erofs() {
        let e = StorageError::from_io("writing", "/r", io::Error::from_raw_os_error(28));
        assert!(matches!(e, StorageError::NoSpace { .. }));
        assert!(e.to_string().contains("free space"));
        let e = StorageError::from_io("writing", "/r", io::Error::from_raw_os_error(30));
        assert!(matches!(e, StorageError::ReadOnly { .. }));
        let e = StorageError::from_io(
            "writing",
            "/r",
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert!(matches!(e, StorageError::PermissionDenied { .. }));
    }

    #[test]
    fn kinds_have_distinct_dirs() {
        let mut dirs: Vec<_> = ObjectKind::ALL.iter().map(|k| k.dir()).collect();
        dirs.sort();
        dirs.dedup();
        assert_eq!(dirs.len(), ObjectKind::ALL.len());
    }
}
