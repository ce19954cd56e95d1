//! A fault-injecting [`Storage`] decorator for tests (after rustic_core's backend decorators).
//!
//! [`Faulty`] wraps any store and passes every call through, counting them, except where a
//! fault was asked for:
//!
//! | fault | models |
//! |---|---|
//! | [`Faults::fail_nth_put`], [`Faults::fail_nth_put_of`] | a refused write (disk full, a 500): nothing is stored, the put fails |
//! | [`Faults::lose_nth_put_ack`], [`Faults::lose_nth_put_ack_of`] | a lost response: the object *is* stored, but the put fails |
//! | [`Faults::fail_nth_get`], [`Faults::fail_nth_delete`], [`Faults::fail_nth_flush`] | a failed read, delete or barrier |
//! | [`Faults::lose_flushes`] | a store that lies about durability: `flush` returns `Ok` and does nothing (with [`crate::MemoryStorage::crash`], the writes are then lost) |
//! | [`Faults::lagging_list`] | an eventually consistent listing: a deleted object is still listed (and said to exist) for the next N lists of its kind, though reading it fails |
//! | [`Faults::list_hides_new`] | a new object is missing from the next N lists of its kind |
//! | [`Faults::die_at_op`] | a process killed at its Nth storage call: that call and every later one fail, nothing more reaches the store |
//!
//! "Nth" counts from 1, from when the faults were armed ([`Faulty::new`], or [`Faulty::arm`] on
//! a wrapper in use), over the calls of that operation made through the wrapper. [`Counts`]
//! says how many calls of each operation were made (failed ones included), how many faults were
//! injected and how many flushes were lost, so a test can assert on what its code asked of the
//! store. An injected failure is a [`StorageError`] whose message says it was injected; its
//! variant is chosen with [`Faults::error`].
//!
//! ```
//! use std::sync::Arc;
//! use holdfast_storage::{Faulty, MemoryStorage, ObjectKind, PutMode, Storage};
//!
//! let mem = Arc::new(MemoryStorage::new());
//! let store = Faulty::new(mem.clone()).fail_nth_put(2);
//! store.create().unwrap();
//! store.put(ObjectKind::Key, "aa", b"1", PutMode::CreateNew).unwrap();
//! assert!(store.put(ObjectKind::Key, "bb", b"2", PutMode::CreateNew).is_err());
//! assert_eq!(mem.names(ObjectKind::Key), vec!["aa"]);
//! assert_eq!((store.counts().puts, store.counts().injected), (2, 1));
//! ```

use crate::{BucketLock, LockMode, ObjectInfo, ObjectKind, PutMode, Result, Storage, StorageError};
use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// Which [`StorageError`] an injected failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Injected {
    /// [`StorageError::Io`] (an I/O error of kind `Other`): the default.
    #[default]
    Io,
    /// [`StorageError::NoSpace`]: the store is full.
    NoSpace,
    /// [`StorageError::Remote`] with `transient: true`: a network or service failure.
    Transient,
}

#[derive(Debug, Clone, Copy)]
struct PutFault {
    nth: u64,
    kind: Option<ObjectKind>,
    /// The object is stored before the failure is reported (a lost response).
    stored: bool,
}

/// A set of faults to inject, built with chained calls and armed with [`Faulty::arm`] (or
/// through the same methods on [`Faulty`] itself).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    puts: Vec<PutFault>,
    gets: Vec<u64>,
    deletes: Vec<u64>,
    flushes: Vec<u64>,
    lose_flushes: bool,
    lag_deletes: u32,
    hide_new: u32,
    die_at: Option<u64>,
    error: Injected,
}

impl Faults {
    /// No faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The `n`th put fails and stores nothing.
    pub fn fail_nth_put(mut self, n: u64) -> Self {
        self.puts.push(PutFault {
            nth: n,
            kind: None,
            stored: false,
        });
        self
    }

    /// The `n`th put of an object of `kind` fails and stores nothing.
    pub fn fail_nth_put_of(mut self, kind: ObjectKind, n: u64) -> Self {
        self.puts.push(PutFault {
            nth: n,
            kind: Some(kind),
            stored: false,
        });
        self
    }

    /// The `n`th put stores its object, then fails as if the response was lost.
    pub fn lose_nth_put_ack(mut self, n: u64) -> Self {
        self.puts.push(PutFault {
            nth: n,
            kind: None,
            stored: true,
        });
        self
    }

    /// The `n`th put of an object of `kind` stores it, then fails as if the response was lost.
    pub fn lose_nth_put_ack_of(mut self, kind: ObjectKind, n: u64) -> Self {
        self.puts.push(PutFault {
            nth: n,
            kind: Some(kind),
            stored: true,
        });
        self
    }

    /// The `n`th read (`get` or `get_range`) fails.
    pub fn fail_nth_get(mut self, n: u64) -> Self {
        self.gets.push(n);
        self
    }

    /// The `n`th delete fails and deletes nothing.
    pub fn fail_nth_delete(mut self, n: u64) -> Self {
        self.deletes.push(n);
        self
    }

    /// The `n`th flush fails (the writes before it are not known to be durable).
    pub fn fail_nth_flush(mut self, n: u64) -> Self {
        self.flushes.push(n);
        self
    }

    /// Every flush returns `Ok` without reaching the store.
    pub fn lose_flushes(mut self) -> Self {
        self.lose_flushes = true;
        self
    }

    /// A deleted object stays in the next `lists` listings of its kind, and `exists_many` still
    /// says it exists, until then; reading it fails with "not found", as the store has it no
    /// more.
    pub fn lagging_list(mut self, lists: u32) -> Self {
        self.lag_deletes = lists;
        self
    }

    /// A newly put object is missing from the next `lists` listings of its kind (it can be
    /// read, and `exists_many` sees it).
    pub fn list_hides_new(mut self, lists: u32) -> Self {
        self.hide_new = lists;
        self
    }

    /// The `n`th storage call of any kind, and every call after it, fails: the process died
    /// there.
    pub fn die_at_op(mut self, n: u64) -> Self {
        self.die_at = Some(n);
        self
    }

    /// Which error the injected failures are.
    pub fn error(mut self, e: Injected) -> Self {
        self.error = e;
        self
    }
}

/// How many calls of each operation were made through a [`Faulty`], and what it injected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every call that reaches a store (all those below, and `modified`, `stale_temporaries`
    /// and the Object Lock calls).
    pub ops: u64,
    /// `create` calls.
    pub creates: u64,
    /// `put` calls.
    pub puts: u64,
    /// `get` calls.
    pub gets: u64,
    /// `get_range` calls.
    pub ranged_gets: u64,
    /// `list` calls.
    pub lists: u64,
    /// `exists_many` calls.
    pub exists_many: u64,
    /// `delete` calls.
    pub deletes: u64,
    /// `flush` calls (lost ones included).
    pub flushes: u64,
    /// Flushes answered `Ok` without reaching the store ([`Faults::lose_flushes`]).
    pub flushes_lost: u64,
    /// Calls that failed because a fault was injected.
    pub injected: u64,
    /// `put` calls by kind.
    pub puts_by_kind: BTreeMap<ObjectKind, u64>,
    /// `get` and `get_range` calls by kind.
    pub reads_by_kind: BTreeMap<ObjectKind, u64>,
    /// `delete` calls by kind.
    pub deletes_by_kind: BTreeMap<ObjectKind, u64>,
}

impl Counts {
    /// Reads of object content: `get` plus `get_range`.
    pub fn reads(&self) -> u64 {
        self.gets + self.ranged_gets
    }

    /// Requests an object store would be sent: every call except flushes (a no-op there).
    pub fn requests(&self) -> u64 {
        self.ops - self.flushes
    }
}

#[derive(Debug, Clone)]
struct Listed {
    kind: ObjectKind,
    info: ObjectInfo,
    lists_left: u32,
}

#[derive(Debug, Default)]
struct State {
    faults: Faults,
    counts: Counts,
    /// `counts` when the faults were armed: "nth" counts from there.
    base: Counts,
    /// Deleted objects still listed.
    ghosts: Vec<Listed>,
    /// New objects not listed yet.
    hidden: Vec<Listed>,
}

impl State {
    fn dead(&self) -> bool {
        self.faults
            .die_at
            .is_some_and(|n| self.counts.ops - self.base.ops >= n)
    }
}

fn by_kind(m: &BTreeMap<ObjectKind, u64>, kind: ObjectKind) -> u64 {
    m.get(&kind).copied().unwrap_or(0)
}

/// A [`Storage`] decorator that injects faults and counts calls; see the module documentation.
#[derive(Debug)]
pub struct Faulty {
    inner: Arc<dyn Storage>,
    state: Mutex<State>,
}

impl Faulty {
    /// Wrap `inner`, with no faults armed.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        Faulty {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with(mut self, f: impl FnOnce(Faults) -> Faults) -> Self {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        st.faults = f(std::mem::take(&mut st.faults));
        self
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn Storage> {
        &self.inner
    }

    /// Replace the armed faults with `faults`; "nth" now counts from here.
    pub fn arm(&self, faults: Faults) {
        let mut st = self.state();
        st.base = st.counts.clone();
        st.faults = faults;
    }

    /// Disarm every fault, and list consistently from now on.
    pub fn heal(&self) {
        self.arm(Faults::default());
        let mut st = self.state();
        st.ghosts.clear();
        st.hidden.clear();
    }

    /// The calls made so far.
    pub fn counts(&self) -> Counts {
        self.state().counts.clone()
    }

    /// See [`Faults::fail_nth_put`].
    pub fn fail_nth_put(self, n: u64) -> Self {
        self.with(|f| f.fail_nth_put(n))
    }

    /// See [`Faults::fail_nth_put_of`].
    pub fn fail_nth_put_of(self, kind: ObjectKind, n: u64) -> Self {
        self.with(|f| f.fail_nth_put_of(kind, n))
    }

    /// See [`Faults::lose_nth_put_ack`].
    pub fn lose_nth_put_ack(self, n: u64) -> Self {
        self.with(|f| f.lose_nth_put_ack(n))
    }

    /// See [`Faults::lose_nth_put_ack_of`].
    pub fn lose_nth_put_ack_of(self, kind: ObjectKind, n: u64) -> Self {
        self.with(|f| f.lose_nth_put_ack_of(kind, n))
    }

    /// See [`Faults::fail_nth_get`].
    pub fn fail_nth_get(self, n: u64) -> Self {
        self.with(|f| f.fail_nth_get(n))
    }

    /// See [`Faults::fail_nth_delete`].
    pub fn fail_nth_delete(self, n: u64) -> Self {
        self.with(|f| f.fail_nth_delete(n))
    }

    /// See [`Faults::fail_nth_flush`].
    pub fn fail_nth_flush(self, n: u64) -> Self {
        self.with(|f| f.fail_nth_flush(n))
    }

    /// See [`Faults::lose_flushes`].
    pub fn lose_flushes(self) -> Self {
        self.with(Faults::lose_flushes)
    }

    /// See [`Faults::lagging_list`].
    pub fn lagging_list(self, lists: u32) -> Self {
        self.with(|f| f.lagging_list(lists))
    }

    /// See [`Faults::list_hides_new`].
    pub fn list_hides_new(self, lists: u32) -> Self {
        self.with(|f| f.list_hides_new(lists))
    }

    /// See [`Faults::die_at_op`].
    pub fn die_at_op(self, n: u64) -> Self {
        self.with(|f| f.die_at_op(n))
    }

    /// See [`Faults::error`].
    pub fn error(self, e: Injected) -> Self {
        self.with(|f| f.error(e))
    }

    fn injected(&self, st: &mut State, what: String) -> StorageError {
        st.counts.injected += 1;
        let location = self.inner.location();
        let op = format!("injected fault: {what}");
        match st.faults.error {
            Injected::Io => StorageError::Io {
                op,
                location,
                source: io::Error::other("fault injected by holdfast_storage::Faulty"),
            },
            Injected::NoSpace => StorageError::NoSpace { op, location },
            Injected::Transient => StorageError::Remote {
                op,
                location,
                message: "fault injected by holdfast_storage::Faulty".into(),
                transient: true,
            },
        }
    }

    /// Count a call; fail it if the process is dead.
    fn begin(&self, what: impl FnOnce() -> String, count: impl FnOnce(&mut Counts)) -> Result<()> {
        let mut st = self.state();
        st.counts.ops += 1;
        count(&mut st.counts);
        if st.dead() {
            let n = st.counts.ops - st.base.ops;
            return Err(self.injected(
                &mut st,
                format!("{} (call {n}, after the process died)", what()),
            ));
        }
        Ok(())
    }
}

impl Storage for Faulty {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self) -> Result<()> {
        self.begin(|| "create".into(), |c| c.creates += 1)?;
        self.inner.create()
    }

    fn put(&self, kind: ObjectKind, name: &str, data: &[u8], mode: PutMode) -> Result<()> {
        let fault = {
            let mut st = self.state();
            st.counts.ops += 1;
            st.counts.puts += 1;
            *st.counts.puts_by_kind.entry(kind).or_default() += 1;
            let nth = st.counts.puts - st.base.puts;
            let nth_kind =
                by_kind(&st.counts.puts_by_kind, kind) - by_kind(&st.base.puts_by_kind, kind);
            if st.dead() {
                return Err(self.injected(&mut st, format!("put of {kind} {name} (process died)")));
            }
            st.faults
                .puts
                .iter()
                .find(|f| match f.kind {
                    None => f.nth == nth,
                    Some(k) => k == kind && f.nth == nth_kind,
                })
                .copied()
        };
        match fault {
            None => {
                self.inner.put(kind, name, data, mode)?;
                let mut st = self.state();
                let lists_left = st.faults.hide_new;
                if lists_left > 0 {
                    st.hidden.push(Listed {
                        kind,
                        info: ObjectInfo {
                            name: name.to_string(),
                            size: data.len() as u64,
                        },
                        lists_left,
                    });
                }
                Ok(())
            }
            Some(f) => {
                if f.stored {
                    self.inner.put(kind, name, data, mode)?;
                }
                let what = if f.stored {
                    format!("response to the put of {kind} {name} lost (it was stored)")
                } else {
                    format!("put of {kind} {name} refused")
                };
                Err(self.injected(&mut self.state(), what))
            }
        }
    }

    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        self.read_fault(kind, name, |c| c.gets += 1)?;
        self.inner.get(kind, name)
    }

    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.read_fault(kind, name, |c| c.ranged_gets += 1)?;
        self.inner.get_range(kind, name, offset, len)
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        self.begin(|| format!("list of {kind}s"), |c| c.lists += 1)?;
        let mut out = self.inner.list(kind)?;
        let mut st = self.state();
        let hidden: Vec<String> = st
            .hidden
            .iter()
            .filter(|h| h.kind == kind)
            .map(|h| h.info.name.clone())
            .collect();
        out.retain(|o| !hidden.contains(&o.name));
        for g in st.ghosts.iter().filter(|g| g.kind == kind) {
            if !out.iter().any(|o| o.name == g.info.name) {
                out.push(g.info.clone());
            }
        }
        let st = &mut *st;
        for l in st.ghosts.iter_mut().chain(st.hidden.iter_mut()) {
            if l.kind == kind {
                l.lists_left -= 1;
            }
        }
        st.ghosts.retain(|g| g.lists_left > 0);
        st.hidden.retain(|h| h.lists_left > 0);
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn exists_many(&self, kind: ObjectKind, names: &[String]) -> Result<Vec<bool>> {
        self.begin(
            || format!("existence check of {} {kind}s", names.len()),
            |c| c.exists_many += 1,
        )?;
        let mut out = self.inner.exists_many(kind, names)?;
        let st = self.state();
        for (n, e) in names.iter().zip(out.iter_mut()) {
            if st
                .ghosts
                .iter()
                .any(|g| g.kind == kind && &g.info.name == n)
            {
                *e = true;
            }
        }
        Ok(out)
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        let lag = {
            let mut st = self.state();
            st.counts.ops += 1;
            st.counts.deletes += 1;
            *st.counts.deletes_by_kind.entry(kind).or_default() += 1;
            let nth = st.counts.deletes - st.base.deletes;
            if st.dead() || st.faults.deletes.contains(&nth) {
                return Err(self.injected(&mut st, format!("delete of {kind} {name}")));
            }
            st.faults.lag_deletes
        };
        // The size a lagging listing keeps showing.
        let size = if lag > 0 {
            self.inner
                .list(kind)?
                .into_iter()
                .find(|o| o.name == name)
                .map(|o| o.size)
        } else {
            None
        };
        self.inner.delete(kind, name)?;
        if let Some(size) = size {
            self.state().ghosts.push(Listed {
                kind,
                info: ObjectInfo {
                    name: name.to_string(),
                    size,
                },
                lists_left: lag,
            });
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        {
            let mut st = self.state();
            st.counts.ops += 1;
            st.counts.flushes += 1;
            let nth = st.counts.flushes - st.base.flushes;
            if st.dead() || st.faults.flushes.contains(&nth) {
                return Err(self.injected(&mut st, format!("flush #{nth}")));
            }
            if st.faults.lose_flushes {
                st.counts.flushes_lost += 1;
                return Ok(());
            }
        }
        self.inner.flush()
    }

    fn modified(&self, kind: ObjectKind, name: &str) -> Result<Option<SystemTime>> {
        self.begin(|| format!("modification time of {kind} {name}"), |_| {})?;
        self.inner.modified(kind, name)
    }

    fn stale_temporaries(&self, max_age: Duration, remove: bool) -> Result<(usize, u64)> {
        self.begin(|| "sweep of temporaries".into(), |_| {})?;
        self.inner.stale_temporaries(max_age, remove)
    }

    fn write_concurrency(&self) -> usize {
        self.inner.write_concurrency()
    }

    fn read_concurrency(&self) -> usize {
        self.inner.read_concurrency()
    }

    fn object_lock(&self) -> Result<Option<BucketLock>> {
        self.begin(|| "object lock configuration".into(), |_| {})?;
        self.inner.object_lock()
    }

    fn retain(&self, kind: ObjectKind, name: &str, mode: LockMode, until: i64) -> Result<()> {
        self.begin(|| format!("retention of {kind} {name}"), |_| {})?;
        self.inner.retain(kind, name, mode, until)
    }

    fn undelete(&self, since: i64, dry_run: bool) -> Result<Vec<String>> {
        self.begin(|| "undelete".into(), |_| {})?;
        self.inner.undelete(since, dry_run)
    }

    fn retention(&self, kind: ObjectKind, name: &str) -> Result<Option<(LockMode, i64)>> {
        self.begin(|| format!("retention of {kind} {name}"), |_| {})?;
        self.inner.retention(kind, name)
    }
}

impl Faulty {
    fn read_fault(
        &self,
        kind: ObjectKind,
        name: &str,
        count: impl FnOnce(&mut Counts),
    ) -> Result<()> {
        let mut st = self.state();
        st.counts.ops += 1;
        count(&mut st.counts);
        *st.counts.reads_by_kind.entry(kind).or_default() += 1;
        let nth = st.counts.reads() - st.base.reads();
        if st.dead() || st.faults.gets.contains(&nth) {
            return Err(self.injected(&mut st, format!("read of {kind} {name}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStorage;

    fn wrap(f: impl FnOnce(Faulty) -> Faulty) -> (Arc<MemoryStorage>, Faulty) {
        let mem = Arc::new(MemoryStorage::new());
        mem.create().unwrap();
        let f = f(Faulty::new(mem.clone()));
        (mem, f)
    }

    fn put(s: &dyn Storage, kind: ObjectKind, name: &str) -> Result<()> {
        s.put(kind, name, name.as_bytes(), PutMode::CreateNew)
    }

    #[test]
    fn passes_the_contract_through() {
        crate::contract::check(&Faulty::new(Arc::new(MemoryStorage::new())));
    }

    #[test]
    fn fails_the_nth_put_and_stores_nothing() {
        let (mem, f) = wrap(|f| f.fail_nth_put(2).error(Injected::NoSpace));
        put(&f, ObjectKind::Pack, "aa").unwrap();
        let e = put(&f, ObjectKind::Pack, "bb").unwrap_err();
        assert!(matches!(e, StorageError::NoSpace { .. }), "{e}");
        assert!(e.to_string().contains("injected"), "{e}");
        put(&f, ObjectKind::Pack, "cc").unwrap();
        assert_eq!(mem.names(ObjectKind::Pack), vec!["aa", "cc"]);
        let c = f.counts();
        assert_eq!((c.puts, c.injected), (3, 1));
    }

    #[test]
    fn fails_the_nth_put_of_a_kind() {
        let (mem, f) = wrap(|f| f.fail_nth_put_of(ObjectKind::Snapshot, 1));
        put(&f, ObjectKind::Pack, "aa").unwrap();
        assert!(put(&f, ObjectKind::Snapshot, "bb").is_err());
        put(&f, ObjectKind::Snapshot, "cc").unwrap();
        assert_eq!(mem.names(ObjectKind::Snapshot), vec!["cc"]);
        assert_eq!(f.counts().puts_by_kind[&ObjectKind::Snapshot], 2);
    }

    #[test]
    fn a_lost_ack_stores_the_object() {
        let (mem, f) = wrap(|f| f.lose_nth_put_ack(1).error(Injected::Transient));
        let e = put(&f, ObjectKind::Index, "aa").unwrap_err();
        assert!(matches!(
            e,
            StorageError::Remote {
                transient: true,
                ..
            }
        ));
        assert_eq!(mem.names(ObjectKind::Index), vec!["aa"]);
        // A retry of the CreateNew then finds it there.
        assert!(matches!(
            put(&f, ObjectKind::Index, "aa").unwrap_err(),
            StorageError::AlreadyExists { .. }
        ));
    }

    #[test]
    fn lost_flushes_lose_the_writes_in_a_crash() {
        let (mem, f) = wrap(Faulty::lose_flushes);
        put(&f, ObjectKind::Pack, "aa").unwrap();
        f.flush().unwrap();
        assert_eq!(f.counts().flushes_lost, 1);
        mem.crash();
        assert!(mem.names(ObjectKind::Pack).is_empty());
        // Healed, a flush reaches the store and the write survives.
        f.heal();
        put(&f, ObjectKind::Pack, "bb").unwrap();
        f.flush().unwrap();
        mem.crash();
        assert_eq!(mem.names(ObjectKind::Pack), vec!["bb"]);
        assert_eq!(f.counts().flushes_lost, 1);
    }

    #[test]
    fn fails_the_nth_flush_get_and_delete() {
        let (mem, f) = wrap(|f| f.fail_nth_flush(1).fail_nth_get(2).fail_nth_delete(1));
        put(&f, ObjectKind::Pack, "aa").unwrap();
        assert!(f.flush().is_err());
        f.flush().unwrap();
        f.get(ObjectKind::Pack, "aa").unwrap();
        assert!(f.get_range(ObjectKind::Pack, "aa", 0, 1).is_err());
        f.get(ObjectKind::Pack, "aa").unwrap();
        assert!(f.delete(ObjectKind::Pack, "aa").is_err());
        assert_eq!(mem.names(ObjectKind::Pack), vec!["aa"]);
        f.delete(ObjectKind::Pack, "aa").unwrap();
        assert!(mem.is_empty());
        let c = f.counts();
        assert_eq!((c.injected, c.reads(), c.flushes, c.deletes), (3, 3, 2, 2));
    }

    #[test]
    fn a_lagging_list_still_shows_deleted_objects() {
        let (_mem, f) = wrap(|f| f.lagging_list(2));
        put(&f, ObjectKind::Pack, "aa").unwrap();
        put(&f, ObjectKind::Pack, "bb").unwrap();
        f.delete(ObjectKind::Pack, "aa").unwrap();
        let names = |f: &Faulty| -> Vec<String> {
            f.list(ObjectKind::Pack)
                .unwrap()
                .into_iter()
                .map(|o| o.name)
                .collect()
        };
        assert_eq!(
            f.exists_many(ObjectKind::Pack, &["aa".into()]).unwrap(),
            vec![true]
        );
        assert!(f.get(ObjectKind::Pack, "aa").unwrap_err().is_not_found());
        // Other kinds' lists do not use up the lag.
        f.list(ObjectKind::Index).unwrap();
        assert_eq!(names(&f), vec!["aa", "bb"]);
        assert_eq!(names(&f), vec!["aa", "bb"]);
        assert_eq!(names(&f), vec!["bb"]);
        assert_eq!(
            f.exists_many(ObjectKind::Pack, &["aa".into()]).unwrap(),
            vec![false]
        );
    }

    #[test]
    fn a_list_can_hide_new_objects() {
        let (_mem, f) = wrap(|f| f.list_hides_new(1));
        put(&f, ObjectKind::Snapshot, "aa").unwrap();
        assert!(f.list(ObjectKind::Snapshot).unwrap().is_empty());
        assert_eq!(f.get(ObjectKind::Snapshot, "aa").unwrap(), b"aa");
        assert_eq!(f.list(ObjectKind::Snapshot).unwrap().len(), 1);
    }

    #[test]
    fn dies_at_an_op_and_stays_dead() {
        let (mem, f) = wrap(|f| f.die_at_op(3));
        put(&f, ObjectKind::Pack, "aa").unwrap();
        f.flush().unwrap();
        assert!(put(&f, ObjectKind::Pack, "bb").is_err());
        assert!(f.list(ObjectKind::Pack).is_err());
        assert!(f.flush().is_err());
        assert_eq!(mem.names(ObjectKind::Pack), vec!["aa"]);
        // Re-armed, it counts from there.
        f.arm(Faults::new().die_at_op(2));
        f.list(ObjectKind::Pack).unwrap();
        assert!(f.list(ObjectKind::Pack).is_err());
        assert_eq!(f.counts().injected, 4);
    }
}
