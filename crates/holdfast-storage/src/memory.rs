//! An in-memory [`Storage`] for tests: the whole contract of the trait, no disk, and a model of
//! what a crash keeps.
//!
//! [`MemoryStorage`] keeps the contract the local backend keeps, so engine and policy logic can
//! be unit-tested without a directory or the binary:
//!
//! - puts are atomic (an object is its whole bytes or absent), [`PutMode::CreateNew`] fails with
//!   [`StorageError::AlreadyExists`] when the name is taken, [`PutMode::Overwrite`] replaces;
//! - names are checked as on disk (lowercase hex up to 128 characters, or `config`), so a test
//!   cannot pass here with a name the local backend would refuse;
//! - ranged reads past the end are [`StorageError::ShortRead`];
//! - `list` is sorted by name, `exists_many` answers in order, deleting a missing object is not
//!   an error, `modified` says when an object was written;
//! - no temporaries (puts are atomic) and no object lock (the trait's defaults answer "none").
//!
//! **Durability.** Every put and delete is visible at once, but only [`Storage::flush`] makes it
//! durable. [`MemoryStorage::crash`] models a power loss: everything since the last flush is
//! lost. [`MemoryStorage::crash_keeping`] keeps any subset of those operations (applied in
//! order), which is what a file system may do, since it orders nothing between barriers. A test
//! can so check that a writer's barriers are where its crash-safety argument puts them.

use crate::{ObjectInfo, ObjectKind, PutMode, Result, Storage, StorageError};
use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// One stored object.
#[derive(Debug, Clone)]
struct Stored {
    data: Arc<[u8]>,
    modified: SystemTime,
}

type Key = (ObjectKind, String);

/// A put or delete made since the last flush: what a crash may lose.
#[derive(Debug, Clone)]
pub enum PendingOp {
    /// An object stored (created or replaced).
    Put {
        /// Its kind.
        kind: ObjectKind,
        /// Its name.
        name: String,
        /// Its bytes.
        data: Arc<[u8]>,
    },
    /// An object deleted.
    Delete {
        /// Its kind.
        kind: ObjectKind,
        /// Its name.
        name: String,
    },
}

impl PendingOp {
    /// The kind of the object the operation touched.
    pub fn kind(&self) -> ObjectKind {
        match self {
            PendingOp::Put { kind, .. } | PendingOp::Delete { kind, .. } => *kind,
        }
    }

    /// The name of the object the operation touched.
    pub fn name(&self) -> &str {
        match self {
            PendingOp::Put { name, .. } | PendingOp::Delete { name, .. } => name,
        }
    }

    /// Whether it is a put.
    pub fn is_put(&self) -> bool {
        matches!(self, PendingOp::Put { .. })
    }
}

#[derive(Debug, Default)]
struct State {
    created: bool,
    /// What readers see.
    live: BTreeMap<Key, Stored>,
    /// What survives a crash.
    durable: BTreeMap<Key, Stored>,
    /// Operations since the last flush, in order.
    pending: Vec<PendingOp>,
}

fn apply(map: &mut BTreeMap<Key, Stored>, op: &PendingOp, now: SystemTime) {
    match op {
        PendingOp::Put { kind, name, data } => {
            map.insert(
                (*kind, name.clone()),
                Stored {
                    data: data.clone(),
                    modified: now,
                },
            );
        }
        PendingOp::Delete { kind, name } => {
            map.remove(&(*kind, name.clone()));
        }
    }
}

/// A repository held in memory. Share it as `Arc<MemoryStorage>` (it coerces to
/// `Arc<dyn Storage>`) and keep a clone to crash it or look inside.
#[derive(Debug)]
pub struct MemoryStorage {
    location: String,
    state: Mutex<State>,
}

impl Default for MemoryStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStorage {
    /// An empty store, not yet created (as a directory that does not exist yet). Each has its
    /// own location (`memory:N`), so messages tell two stores apart.
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        MemoryStorage {
            location: format!("memory:{}", NEXT.fetch_add(1, Ordering::Relaxed)),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A power loss: every put and delete since the last flush is undone.
    pub fn crash(&self) {
        self.crash_keeping(|_| false);
    }

    /// A power loss that keeps the operations since the last flush for which `keep` answers
    /// true (applied in their order) and loses the others. Returns how many were lost.
    pub fn crash_keeping(&self, mut keep: impl FnMut(&PendingOp) -> bool) -> usize {
        let mut st = self.state();
        let now = SystemTime::now();
        let pending = std::mem::take(&mut st.pending);
        let mut lost = 0;
        for op in &pending {
            if keep(op) {
                // A kept put is as new as when it was made; `now` is close enough for tests.
                let modified = st
                    .live
                    .get(&(op.kind(), op.name().to_string()))
                    .map_or(now, |s| s.modified);
                apply(&mut st.durable, op, modified);
            } else {
                lost += 1;
            }
        }
        st.live = st.durable.clone();
        lost
    }

    /// A second store holding what this one holds now, flushed or not, with its own
    /// location; what happens to one does not touch the other. (A repository's local state is
    /// kept by its id, which a fork shares: a test that forks and then appends history on both
    /// sides sees the second as a rollback.)
    pub fn fork(&self) -> MemoryStorage {
        let st = self.state();
        let fork = MemoryStorage::new();
        *fork.state() = State {
            created: st.created,
            live: st.live.clone(),
            durable: st.durable.clone(),
            pending: st.pending.clone(),
        };
        fork
    }

    /// The puts and deletes made since the last flush, in order.
    pub fn pending(&self) -> Vec<PendingOp> {
        self.state().pending.clone()
    }

    /// The names of every object of a kind, sorted (what `list` would answer, without sizes).
    pub fn names(&self, kind: ObjectKind) -> Vec<String> {
        self.state()
            .live
            .keys()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// How many objects the store holds, of every kind.
    pub fn len(&self) -> usize {
        self.state().live.len()
    }

    /// Whether the store holds no object at all.
    pub fn is_empty(&self) -> bool {
        self.state().live.is_empty()
    }

    /// Pretend an object was written at `when` (to age sessions or records in a test). Fails
    /// with [`StorageError::NotFound`] if it does not exist.
    pub fn set_modified(&self, kind: ObjectKind, name: &str, when: SystemTime) -> Result<()> {
        let mut st = self.state();
        let key = (kind, name.to_string());
        let found = match st.live.get_mut(&key) {
            Some(s) => {
                s.modified = when;
                true
            }
            None => false,
        };
        if !found {
            return Err(self.not_found(kind, name));
        }
        if let Some(s) = st.durable.get_mut(&key) {
            s.modified = when;
        }
        Ok(())
    }

    fn not_found(&self, kind: ObjectKind, name: &str) -> StorageError {
        StorageError::NotFound {
            kind,
            name: name.to_string(),
            location: self.location.clone(),
        }
    }

    fn validate(&self, kind: ObjectKind, name: &str) -> Result<()> {
        if valid_name(kind, name) {
            return Ok(());
        }
        Err(StorageError::Io {
            op: format!("naming {kind} object {name:?}"),
            location: self.location.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a valid object name"),
        })
    }

    fn read(&self, kind: ObjectKind, name: &str) -> Result<Arc<[u8]>> {
        self.validate(kind, name)?;
        self.state()
            .live
            .get(&(kind, name.to_string()))
            .map(|s| s.data.clone())
            .ok_or_else(|| self.not_found(kind, name))
    }
}

/// The names the local backend accepts: `config` for the config, else 1 to 128 lowercase hex
/// digits (nothing that could escape a directory).
fn valid_name(kind: ObjectKind, name: &str) -> bool {
    if kind == ObjectKind::Config {
        return name == "config";
    }
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Storage for MemoryStorage {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn create(&self) -> Result<()> {
        let mut st = self.state();
        if st
            .live
            .contains_key(&(ObjectKind::Config, "config".to_string()))
        {
            return Err(StorageError::AlreadyExists {
                kind: ObjectKind::Config,
                name: "config".into(),
                location: self.location.clone(),
            });
        }
        if st.created || !st.live.is_empty() {
            return Err(StorageError::Io {
                op: "creating a repository in".into(),
                location: self.location.clone(),
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "the store is not empty and holds no holdfast repository; use a new store",
                ),
            });
        }
        st.created = true;
        Ok(())
    }

    fn put(&self, kind: ObjectKind, name: &str, data: &[u8], mode: PutMode) -> Result<()> {
        self.validate(kind, name)?;
        let mut st = self.state();
        if !st.created {
            // As on disk: there is no repository to write into.
            return Err(self.not_found(ObjectKind::Config, "config"));
        }
        let key = (kind, name.to_string());
        if mode == PutMode::CreateNew && st.live.contains_key(&key) {
            return Err(StorageError::AlreadyExists {
                kind,
                name: name.to_string(),
                location: self.location.clone(),
            });
        }
        let op = PendingOp::Put {
            kind,
            name: name.to_string(),
            data: Arc::from(data),
        };
        apply(&mut st.live, &op, SystemTime::now());
        st.pending.push(op);
        Ok(())
    }

    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        Ok(self.read(kind, name)?.to_vec())
    }

    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let data = self.read(kind, name)?;
        let size = data.len() as u64;
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(data[offset as usize..end as usize].to_vec()),
            _ => Err(StorageError::ShortRead {
                kind,
                name: name.to_string(),
                offset,
                end: offset.saturating_add(len),
                size,
            }),
        }
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        // BTreeMap order is (kind, name): each kind's names come out sorted.
        Ok(self
            .state()
            .live
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, name), s)| ObjectInfo {
                name: name.clone(),
                size: s.data.len() as u64,
            })
            .collect())
    }

    fn exists_many(&self, kind: ObjectKind, names: &[String]) -> Result<Vec<bool>> {
        for n in names {
            self.validate(kind, n)?;
        }
        let st = self.state();
        Ok(names
            .iter()
            .map(|n| st.live.contains_key(&(kind, n.clone())))
            .collect())
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        self.validate(kind, name)?;
        let mut st = self.state();
        if !st.live.contains_key(&(kind, name.to_string())) {
            return Ok(());
        }
        let op = PendingOp::Delete {
            kind,
            name: name.to_string(),
        };
        apply(&mut st.live, &op, SystemTime::now());
        st.pending.push(op);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let mut st = self.state();
        st.pending.clear();
        st.durable = st.live.clone();
        Ok(())
    }

    fn modified(&self, kind: ObjectKind, name: &str) -> Result<Option<SystemTime>> {
        self.validate(kind, name)?;
        self.state()
            .live
            .get(&(kind, name.to_string()))
            .map(|s| Some(s.modified))
            .ok_or_else(|| self.not_found(kind, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> MemoryStorage {
        let s = MemoryStorage::new();
        s.create().unwrap();
        s
    }

    #[test]
    fn refuses_puts_before_create_and_a_second_create() {
        let s = MemoryStorage::new();
        let e = s
            .put(ObjectKind::Key, "aa", b"x", PutMode::CreateNew)
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");
        s.create().unwrap();
        assert!(s.create().is_err());
        s.put(ObjectKind::Config, "config", b"{}", PutMode::CreateNew)
            .unwrap();
        assert!(matches!(
            s.create().unwrap_err(),
            StorageError::AlreadyExists { .. }
        ));
    }

    #[test]
    fn crash_loses_what_was_not_flushed() {
        let s = store();
        s.put(ObjectKind::Pack, "aa", b"one", PutMode::CreateNew)
            .unwrap();
        s.flush().unwrap();
        s.put(ObjectKind::Pack, "bb", b"two", PutMode::CreateNew)
            .unwrap();
        s.delete(ObjectKind::Pack, "aa").unwrap();
        assert_eq!(s.names(ObjectKind::Pack), vec!["bb"]);
        assert_eq!(s.pending().len(), 2);
        s.crash();
        assert_eq!(s.names(ObjectKind::Pack), vec!["aa"]);
        assert_eq!(s.get(ObjectKind::Pack, "aa").unwrap(), b"one");
        assert!(s.pending().is_empty());
    }

    #[test]
    fn crash_keeping_applies_a_subset_in_order() {
        let s = store();
        s.put(ObjectKind::Session, "01", b"v1", PutMode::Overwrite)
            .unwrap();
        s.put(ObjectKind::Session, "01", b"v2", PutMode::Overwrite)
            .unwrap();
        s.put(ObjectKind::Index, "02", b"i", PutMode::CreateNew)
            .unwrap();
        let mut i = 0;
        // Keep the first heartbeat and the index, lose the second heartbeat.
        let lost = s.crash_keeping(|_| {
            i += 1;
            i != 2
        });
        assert_eq!(lost, 1);
        assert_eq!(s.get(ObjectKind::Session, "01").unwrap(), b"v1");
        assert_eq!(s.names(ObjectKind::Index), vec!["02"]);
        // What a crash kept is durable now.
        s.crash();
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn a_fork_is_independent_and_keeps_what_is_unflushed() {
        let s = store();
        s.put(ObjectKind::Pack, "aa", b"1", PutMode::CreateNew)
            .unwrap();
        s.flush().unwrap();
        s.put(ObjectKind::Pack, "bb", b"2", PutMode::CreateNew)
            .unwrap();
        let f = s.fork();
        assert_ne!(f.location(), s.location());
        f.delete(ObjectKind::Pack, "aa").unwrap();
        assert_eq!(s.names(ObjectKind::Pack), vec!["aa", "bb"]);
        f.crash();
        assert_eq!(f.names(ObjectKind::Pack), vec!["aa"]);
        assert_eq!(s.names(ObjectKind::Pack), vec!["aa", "bb"]);
    }

    #[test]
    fn set_modified_ages_an_object() {
        let s = store();
        s.put(ObjectKind::Session, "ab", b"x", PutMode::Overwrite)
            .unwrap();
        let then = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        s.set_modified(ObjectKind::Session, "ab", then).unwrap();
        assert_eq!(s.modified(ObjectKind::Session, "ab").unwrap(), Some(then));
        assert!(s
            .set_modified(ObjectKind::Session, "cd", then)
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn keeps_the_storage_contract() {
        crate::contract::check(&MemoryStorage::new());
    }
}
