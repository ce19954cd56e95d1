//! Store-enforced immutability: S3 Object Lock on every object a recovery point needs.
//!
//! A bucket created with Object Lock and a default retention rule (mode, days) locks every new
//! object version for that long: nobody can delete or overwrite it before then (in compliance
//! mode not even the account root). That alone does not protect a recovery point, because a new
//! snapshot reuses packs written long before it; their locks run out while the snapshot still
//! needs them. So after a backup holdfast *extends* the lock of every object the young recovery
//! points need (their snapshot objects, the packs holding their blobs, the index, keys and
//! config) to at least `snapshot time + window`, where the window is the bucket's default
//! retention.
//!
//! Extending every pack on every backup would cost one request per pack per backup. Instead each
//! extension goes `slack` beyond what is needed and is written down in a [`LockRecord`]; an
//! object is extended again only when a recovery point needs it past what the records say. So a
//! pack is touched about once per `slack`, and objects stay locked up to `window + slack`.
//!
//! The records only save requests; [`verify`] asks the store itself.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use holdfast_storage::{LockMode, ObjectKind};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::index::Index;
use crate::records::{self, Record};
use crate::repo::Repository;
use crate::snapshot::SnapshotEntry;
use crate::tree::NodeKind;
use crate::trees::Trees;

/// An object of the repository, as the store names it.
pub type ObjectRef = (ObjectKind, String);

pub use crate::records::LockRecord;

/// How long to lock: the window every recovery point must stay whole, and how far beyond what
/// is needed each extension goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockPolicy {
    /// The lock mode.
    pub mode: LockMode,
    /// Each recovery point stays whole for this many seconds after it was taken.
    pub window: i64,
    /// Extensions go this much further, so an object is extended at most once per slack.
    pub slack: i64,
}

impl LockPolicy {
    /// The policy for a bucket's default rule: window = the rule's days, slack = a quarter of
    /// it (at least a day), so extensions are rare and locks overshoot by at most 25%.
    pub fn from_rule(mode: LockMode, days: u32) -> LockPolicy {
        let window = days as i64 * 86_400;
        LockPolicy {
            mode,
            window,
            slack: (window / 4).max(86_400),
        }
    }
}

/// The lock policy of the repository's bucket: `None` if the store has no Object Lock or the
/// bucket does not enable it; an error if it is enabled without a default retention rule (then
/// neither the store nor holdfast knows how long recovery points must stay).
pub fn bucket_policy(repo: &Repository) -> Result<Option<LockPolicy>> {
    match repo.storage().object_lock()? {
        None => Ok(None),
        Some(b) if !b.enabled => Ok(None),
        Some(b) => match b.default_rule {
            Some((mode, days)) => Ok(Some(LockPolicy::from_rule(mode, days))),
            None => Err(Error::Refused(format!(
                "{} has Object Lock enabled but no default retention rule, so nothing says how long recovery points must stay locked: set one on the bucket (PutObjectLockConfiguration with a Rule of Mode and Days)",
                repo.storage().location()
            ))),
        },
    }
}

/// After a backup or copy: if the bucket enforces Object Lock, extend the locks of the young
/// recovery points. `Ok(None)` if there is no lock to extend.
pub fn extend_if_locked(repo: &Repository, now: DateTime<Utc>) -> Result<Option<ExtendReport>> {
    let Some(policy) = bucket_policy(repo)? else {
        return Ok(None);
    };
    let (snaps, _) = crate::snapshot::load_all(repo)?;
    extend(repo, &snaps, policy, now).map(Some)
}

/// What extending the store's Object Lock after a write did: the one answer `backup`, `copy`
/// and the workload jobs give (see [`after_write`]).
#[derive(Debug, Clone)]
pub enum AfterWrite {
    /// The store or bucket has no Object Lock.
    Unlocked,
    /// Extended over what the young recovery points need.
    Extended(ExtendReport),
    /// The recovery point was written, but its lock could not be extended (the whole cause).
    Failed(String),
}

impl AfterWrite {
    /// The warning to show when the extension failed: the point is stored either way, so
    /// this is a warning, not a failure; it names the fix.
    pub fn warning(&self) -> Option<String> {
        match self {
            AfterWrite::Failed(e) => Some(format!(
                "the recovery point is stored, but its object lock was not extended: {e}; fix the cause, then run `holdfast object-lock --extend`"
            )),
            _ => None,
        }
    }
}

/// Extend the store's Object Lock after a backup or copy wrote a recovery point. A failure
/// does not undo the write: it is returned as [`AfterWrite::Failed`] with its whole cause.
pub fn after_write(repo: &Repository, now: DateTime<Utc>) -> AfterWrite {
    match extend_if_locked(repo, now) {
        Ok(None) => AfterWrite::Unlocked,
        Ok(Some(r)) => AfterWrite::Extended(r),
        Err(e) => {
            let mut msg = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                msg.push_str(": ");
                msg.push_str(&c.to_string());
                cause = c.source();
            }
            AfterWrite::Failed(msg)
        }
    }
}

/// Which objects need a longer lock, and until when. `needed`: each object and the time it must
/// stay locked to; `known`: how long each is already locked. An object is extended when
/// `known < needed`, to `needed + slack`. Pure, so it is tested with a table.
pub fn plan_extension(
    needed: &HashMap<ObjectRef, i64>,
    known: &HashMap<ObjectRef, i64>,
    slack: i64,
) -> Vec<(ObjectRef, i64)> {
    let mut out: Vec<(ObjectRef, i64)> = needed
        .iter()
        .filter(|(o, until)| known.get(*o).is_none_or(|k| k < until))
        .map(|(o, until)| (o.clone(), until + slack))
        .collect();
    out.sort();
    out
}

/// Every object each of `snaps` needs, with the time it must stay locked to (`snapshot time +
/// window`, the latest over the snapshots that share it).
pub fn needed_objects(
    repo: &Repository,
    index: &Index,
    index_files: &[String],
    snaps: &[&SnapshotEntry],
    window: i64,
) -> Result<HashMap<ObjectRef, i64>> {
    let mut needed: HashMap<ObjectRef, i64> = HashMap::new();
    let mut need = |o: ObjectRef, until: i64| {
        let e = needed.entry(o).or_insert(until);
        *e = (*e).max(until);
    };
    let roots: Vec<_> = snaps.iter().map(|s| s.snapshot.tree).collect();
    let trees = Trees::prefetch(repo, index, &roots, &|_| true);
    let shared: Vec<ObjectRef> = std::iter::once((ObjectKind::Config, "config".to_string()))
        .chain(
            repo.storage()
                .list(ObjectKind::Key)?
                .into_iter()
                .map(|k| (ObjectKind::Key, k.name)),
        )
        .chain(index_files.iter().map(|n| (ObjectKind::Index, n.clone())))
        .collect();
    // Newest first: a tree already visited was visited for a later (or equal) lock time, so
    // neither it nor anything below it needs visiting again.
    let mut order: Vec<&&SnapshotEntry> = snaps.iter().collect();
    order.sort_by_key(|s| std::cmp::Reverse(s.snapshot.time));
    let mut visited: HashSet<crate::id::Id> = HashSet::new();
    for s in order {
        let until = s.snapshot.time.timestamp() + window;
        need((ObjectKind::Snapshot, s.id.to_hex()), until);
        for o in &shared {
            need(o.clone(), until);
        }
        let mut stack = vec![s.snapshot.tree];
        while let Some(t) = stack.pop() {
            if !visited.insert(t) {
                continue;
            }
            let mut blobs = vec![t];
            for n in &trees.get(&t)?.nodes {
                if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
                    stack.push(sub);
                }
                blobs.extend(n.content.iter().copied());
            }
            for b in blobs {
                match index.get(&b) {
                    Some((pack, _)) => need((ObjectKind::Pack, pack.to_hex()), until),
                    None => {
                        return Err(Error::MissingBlob {
                            id: b.to_hex(),
                            by: format!("snapshot {}", s.id.short()),
                        })
                    }
                }
            }
        }
    }
    Ok(needed)
}

/// How long each object is locked, by the lock records.
pub fn known_locks(repo: &Repository) -> Result<HashMap<ObjectRef, i64>> {
    let mut known: HashMap<ObjectRef, i64> = HashMap::new();
    for r in records::load_all(repo)? {
        if let Record::ObjectLocks(l) = r {
            for (kind, name, until) in l.objects {
                if let Some(k) = kind_of(&kind) {
                    let e = known.entry((k, name)).or_insert(until);
                    *e = (*e).max(until);
                }
            }
        }
    }
    Ok(known)
}

fn kind_of(s: &str) -> Option<ObjectKind> {
    ObjectKind::ALL.into_iter().find(|k| k.to_string() == s)
}

/// What an extension did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExtendReport {
    /// Objects the young recovery points need.
    pub needed: usize,
    /// Objects whose lock was extended now.
    pub extended: usize,
    /// The latest time any object is now locked to (Unix seconds).
    pub locked_until: Option<i64>,
}

/// Extend the locks of every object the recovery points younger than the window need.
pub fn extend(
    repo: &Repository,
    snaps: &[SnapshotEntry],
    policy: LockPolicy,
    now: DateTime<Utc>,
) -> Result<ExtendReport> {
    let young: Vec<&SnapshotEntry> = snaps
        .iter()
        .filter(|s| s.snapshot.time.timestamp() + policy.window > now.timestamp())
        .collect();
    let (index, _, index_files) = repo.load_index_files()?;
    let needed = needed_objects(repo, &index, &index_files, &young, policy.window)?;
    let known = known_locks(repo)?;
    let plan = plan_extension(&needed, &known, policy.slack);
    let mut done = Vec::with_capacity(plan.len());
    let mut first_err = None;
    for ((kind, name), until) in &plan {
        match repo.storage().retain(*kind, name, policy.mode, *until) {
            Ok(()) => done.push((kind.to_string(), name.clone(), *until)),
            // Removed since it was listed (a prune), so nothing needs it any more.
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                first_err = Some(e);
                break;
            }
        }
    }
    let report = ExtendReport {
        needed: needed.len(),
        extended: done.len(),
        locked_until: needed.values().max().map(|m| m + policy.slack),
    };
    if !done.is_empty() {
        records::save(
            repo,
            &Record::ObjectLocks(LockRecord {
                at: now,
                mode: policy.mode.as_str().into(),
                objects: done,
            }),
        )?;
    }
    match first_err {
        Some(e) => Err(e.into()),
        None => Ok(report),
    }
}

/// One object whose lock, read from the store, is shorter than a recovery point needs.
#[derive(Debug, Clone, Serialize)]
pub struct ShortLock {
    /// Kind of object.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Until when it must be locked (Unix seconds).
    pub needed: i64,
    /// Until when it is locked (None: not at all).
    pub locked_until: Option<i64>,
}

/// Ask the store, object by object, whether everything `snaps` need is locked long enough.
pub fn verify(repo: &Repository, snaps: &[&SnapshotEntry], window: i64) -> Result<Vec<ShortLock>> {
    let (index, _, index_files) = repo.load_index_files()?;
    let needed = needed_objects(repo, &index, &index_files, snaps, window)?;
    let mut short = Vec::new();
    let mut objs: Vec<_> = needed.into_iter().collect();
    objs.sort();
    for ((kind, name), until) in objs {
        let have = repo.storage().retention(kind, &name)?.map(|(_, u)| u);
        if have.is_none_or(|h| h < until) {
            short.push(ShortLock {
                kind: kind.to_string(),
                name,
                needed: until,
                locked_until: have,
            });
        }
    }
    Ok(short)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(n: &str) -> ObjectRef {
        (ObjectKind::Pack, n.to_string())
    }

    #[test]
    fn extension_table() {
        let slack = 100;
        // (needed until, known until) -> extended to
        let cases: &[(i64, Option<i64>, Option<i64>)] = &[
            (1000, None, Some(1100)),      // never locked by holdfast: extend
            (1000, Some(999), Some(1100)), // one second short: extend
            (1000, Some(1000), None),      // exactly enough: leave
            (1000, Some(1050), None),      // locked past it by an earlier extension's slack
            (1000, Some(5000), None),      // far past it
        ];
        for (i, (need, known, want)) in cases.iter().enumerate() {
            let needed = HashMap::from([(o("p"), *need)]);
            let known: HashMap<_, _> = known.map(|k| (o("p"), k)).into_iter().collect();
            let plan = plan_extension(&needed, &known, slack);
            let got = plan.first().map(|(_, u)| *u);
            assert_eq!(got, *want, "case {i}");
        }
        // Objects only known (no longer needed) are never touched; output is sorted.
        let needed = HashMap::from([(o("b"), 10), (o("a"), 10)]);
        let known = HashMap::from([(o("z"), 1)]);
        let plan = plan_extension(&needed, &known, 5);
        assert_eq!(plan, vec![(o("a"), 15), (o("b"), 15)]);
    }

    #[test]
    fn policy_from_rule() {
        let p = LockPolicy::from_rule(LockMode::Compliance, 30);
        assert_eq!((p.window, p.slack), (30 * 86_400, 30 * 86_400 / 4));
        let p = LockPolicy::from_rule(LockMode::Governance, 1);
        assert_eq!((p.window, p.slack), (86_400, 86_400));
    }
}
