//! The history: an append-only, authenticated record of what happened to recovery points and
//! retention locks, so that a snapshot (or a lock) that disappears outside `forget` is an alarm
//! instead of a silently older recovery point.
//!
//! Each event is one encrypted object `history/<seq:016x><blake3 of its bytes>`. Its plaintext
//! names the entries of the two highest sequence numbers the writer saw (`parents`), so entries
//! form a hash-linked DAG that tolerates concurrent writers without any lock: two writers that
//! append at once both write sequence `n + 1`, and the next writer references both. Appending
//! costs one listing and a few reads of the newest entries. Deleting an entry that a later one
//! references is seen by [`audit`]; deleting the newest entries (a rollback) is seen by this
//! host's high-water mark (`localstate`), as git and TUF keep the last known head on the client.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use holdfast_storage::{ObjectKind, PutMode};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::localstate::{self, RepoState};
use crate::repo::Repository;

/// Associated data of history entries.
pub const AAD: &[u8] = b"holdfast history";

/// Largest history entry read (a forget of 100,000 snapshots is about 7 MiB).
const MAX_ENTRY: usize = 32 << 20;

/// Entries whose authenticity [`append`] checks before it trusts a name as a parent, at most.
const MAX_TOP_READS: usize = 256;

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A snapshot was written.
    SnapshotAdded {
        /// Its id.
        id: Id,
        /// Its time.
        time: DateTime<Utc>,
        /// Its host.
        hostname: String,
        /// Its paths.
        paths: Vec<String>,
    },
    /// `forget` removed snapshots.
    SnapshotsForgotten {
        /// Their ids.
        ids: Vec<Id>,
    },
    /// A retention lock was set.
    RetentionLockSet {
        /// Its minimum age.
        min_age_seconds: i64,
        /// Compliance mode.
        compliance: bool,
    },
    /// A key slot was removed (`key remove`, `key passwd`).
    KeyRemoved {
        /// Its id.
        id: String,
    },
    /// The operator accepted that these history entries are lost (`holdfast history
    /// --accept-loss`), after looking into it.
    LossAccepted {
        /// Names of the entries no longer expected.
        names: Vec<String>,
    },
}

/// One history object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Sequence number: one more than the highest the writer saw.
    pub seq: u64,
    /// When it was written.
    pub time: DateTime<Utc>,
    /// Host that wrote it.
    pub host: String,
    /// Names of the entries at the two highest sequence numbers the writer saw.
    pub parents: Vec<String>,
    /// What happened.
    pub events: Vec<Event>,
}

/// The sequence number a history object's name claims, if the name has the history form.
pub fn seq_of(name: &str) -> Option<u64> {
    if name.len() != 80 || Id::from_hex(&name[16..]).is_none() {
        return None;
    }
    u64::from_str_radix(&name[..16], 16).ok()
}

/// Read and authenticate one entry of the listed `size` (bounded before it is read): its bytes
/// match its name, it decrypts, and its sequence number is the one its name claims.
pub fn read(repo: &Repository, name: &str, size: u64) -> Result<Entry> {
    let what = || format!("history entry {name}");
    let seq = seq_of(name).ok_or_else(|| Error::corrupt(what(), "not a history entry name"))?;
    if size > MAX_ENTRY as u64 {
        return Err(Error::corrupt(what(), format!("{size} bytes is too large")));
    }
    let raw = repo.storage().get(ObjectKind::History, name)?;
    if raw.len() > MAX_ENTRY {
        return Err(Error::corrupt(
            what(),
            format!("{} bytes is too large", raw.len()),
        ));
    }
    if Id::of_bytes(&raw).to_hex() != name[16..] {
        return Err(Error::corrupt(what(), "content does not match its name"));
    }
    let plain = repo
        .key()
        .decrypt(AAD, &raw)
        .map_err(|e| Error::corrupt(what(), e.to_string()))?;
    let e: Entry =
        serde_json::from_slice(&plain).map_err(|e| Error::corrupt(what(), e.to_string()))?;
    if e.seq != seq {
        return Err(Error::corrupt(
            what(),
            "its sequence number differs from its name's",
        ));
    }
    Ok(e)
}

/// Append one entry holding `events`; returns its name. Needs put, get and list only.
pub fn append(repo: &Repository, events: Vec<Event>) -> Result<String> {
    let mut names: Vec<(u64, String, u64)> = repo
        .storage()
        .list(ObjectKind::History)?
        .into_iter()
        .filter_map(|o| seq_of(&o.name).map(|s| (s, o.name, o.size)))
        .collect();
    names.sort();
    // Trust a name as a parent only once its entry authenticates: forged names (which cannot
    // decrypt) must not push the sequence number up or break the chain.
    let mut top: Option<u64> = None;
    let mut parents = Vec::new();
    let mut reads = 0;
    while let Some((seq, name, size)) = names.pop() {
        if top.is_some_and(|t| seq + 1 < t) {
            break;
        }
        reads += 1;
        if reads > MAX_TOP_READS {
            return Err(Error::Refused(format!(
                "more than {MAX_TOP_READS} history entries at the top of the history fail to authenticate: someone is writing junk into history/; run `holdfast check`"
            )));
        }
        match read(repo, &name, size) {
            Ok(_) => {
                top.get_or_insert(seq);
                parents.push(name);
            }
            Err(Error::Corrupt { .. }) => {
                tracing::warn!("history entry {name} is damaged and is not used as a parent")
            }
            Err(Error::Storage(e)) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        }
    }
    parents.sort();
    // Never below what this host has seen: after a rollback the chain continues above it.
    let seen = localstate::load(&repo.config().id).history_seq;
    let seq = top.unwrap_or(0).max(seen) + 1;
    let entry = Entry {
        seq,
        time: Utc::now(),
        host: crate::util::hostname(),
        parents,
        events,
    };
    let sealed = repo
        .key()
        .encrypt(AAD, &serde_json::to_vec(&entry).expect("serializable"));
    let name = format!("{seq:016x}{}", Id::of_bytes(&sealed).to_hex());
    repo.storage()
        .put(ObjectKind::History, &name, &sealed, PutMode::CreateNew)?;
    repo.storage().flush()?;
    localstate::raise(
        &repo.config().id,
        &RepoState {
            history_seq: seq,
            history_heads: vec![name.clone()],
            ..Default::default()
        },
    );
    Ok(name)
}

/// A snapshot the history says was written and not forgotten, which is gone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vanished {
    /// Snapshot id.
    pub id: Id,
    /// Its time.
    pub time: DateTime<Utc>,
    /// Its host.
    pub hostname: String,
    /// Its paths.
    pub paths: Vec<String>,
}

/// The strongest retention lock the history says was set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LockEvent {
    /// Largest minimum age set.
    pub min_age_seconds: i64,
    /// Whether any lock was in compliance mode.
    pub compliance: bool,
    /// When the newest lock entry was written.
    pub set_at: DateTime<Utc>,
}

/// What [`audit`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Audit {
    /// Entries read.
    pub entries: usize,
    /// Highest sequence number in the repository.
    pub seq: u64,
    /// Snapshots that disappeared outside `forget`, oldest first.
    pub vanished: Vec<Vanished>,
    /// Entries that a later entry, or this host's high-water mark, says exist but are gone.
    pub missing: Vec<String>,
    /// Entries that do not authenticate (what is wrong with each).
    pub damaged: Vec<String>,
    /// Their names.
    #[serde(skip)]
    pub damaged_names: Vec<String>,
    /// This host has seen a newer history than the repository holds.
    pub rolled_back: Option<String>,
    /// Snapshots present that no entry records (written by format 1, or a backup interrupted
    /// between its snapshot and its history entry).
    pub unrecorded: Vec<Id>,
    /// Snapshots present that an entry says were forgotten (an interrupted forget, or an old
    /// copy put back).
    pub reappeared: Vec<Id>,
    /// Strongest retention lock the history records.
    pub retention_lock: Option<LockEvent>,
    /// Key slots that were removed and are present again (a revoked password's slot put back).
    pub revived_keys: Vec<String>,
}

impl Audit {
    /// Findings that mean recovery points or their protection were removed or changed.
    pub fn errors(&self) -> Vec<String> {
        let mut out = Vec::new();
        for v in &self.vanished {
            out.push(format!(
                "snapshot {} ({} {}:{}) vanished outside forget: the history records it and no forget removed it (deleted or rolled back on the store); restore it from a copy or the store's versions (`holdfast object-lock --undelete-since`)",
                v.id.short(),
                v.time.format("%Y-%m-%d %H:%M:%S"),
                v.hostname,
                v.paths.join(",")
            ));
        }
        for m in &self.missing {
            out.push(format!("history entry {m} is missing: the history was cut (entries deleted on the store); what it recorded cannot be verified. After investigating, `holdfast history --accept-loss` accepts it"));
        }
        for d in &self.damaged {
            out.push(format!(
                "{d}: after investigating, delete it and run `holdfast history --accept-loss`"
            ));
        }
        if let Some(r) = &self.rolled_back {
            out.push(r.clone());
        }
        for k in &self.revived_keys {
            out.push(format!("key slot {} was removed but is back (an old copy put back: its password opens the repository again); remove it again with `holdfast key remove {}`", &k[..8.min(k.len())], k));
        }
        out
    }

    /// Findings that lose nothing.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.unrecorded.is_empty() {
            out.push(format!(
                "{} snapshot(s) are not in the history (written by an older holdfast, or a backup interrupted before recording them), so their deletion would go unnoticed: run `holdfast migrate` to record them{}",
                self.unrecorded.len(),
                short_list(&self.unrecorded)
            ));
        }
        if !self.reappeared.is_empty() {
            out.push(format!(
                "{} snapshot(s) were forgotten but are present again (an interrupted forget, or an old copy put back); the next forget removes them{}",
                self.reappeared.len(),
                short_list(&self.reappeared)
            ));
        }
        out
    }

    /// Whether nothing was lost.
    pub fn ok(&self) -> bool {
        self.errors().is_empty()
    }
}

fn short_list(ids: &[Id]) -> String {
    let v: Vec<String> = ids.iter().take(5).map(Id::short).collect();
    format!(
        ": {}{}",
        v.join(", "),
        if ids.len() > 5 { ", ..." } else { "" }
    )
}

/// Compare the snapshots present with the history, and the history with this host's high-water
/// mark. Reads every history entry. Raises the high-water mark to what it saw.
pub fn audit(repo: &Repository) -> Result<Audit> {
    let mut a = Audit::default();
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut present: BTreeSet<String> = BTreeSet::new();
    for o in repo.storage().list(ObjectKind::History)? {
        match read(repo, &o.name, o.size) {
            Ok(e) => {
                present.insert(o.name.clone());
                entries.insert(o.name, e);
            }
            Err(e @ Error::Corrupt { .. }) => {
                present.insert(o.name.clone());
                a.damaged.push(e.to_string());
                a.damaged_names.push(o.name);
            }
            Err(Error::Storage(e)) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        }
    }
    a.entries = entries.len();
    a.seq = entries.values().map(|e| e.seq).max().unwrap_or(0);
    let mut accepted: BTreeSet<&str> = BTreeSet::new();
    let mut added: HashMap<Id, Vanished> = HashMap::new();
    let mut forgotten: BTreeSet<Id> = BTreeSet::new();
    let mut removed_keys: BTreeSet<String> = BTreeSet::new();
    for e in entries.values() {
        for ev in &e.events {
            match ev {
                Event::SnapshotAdded {
                    id,
                    time,
                    hostname,
                    paths,
                } => {
                    added.insert(
                        *id,
                        Vanished {
                            id: *id,
                            time: *time,
                            hostname: hostname.clone(),
                            paths: paths.clone(),
                        },
                    );
                }
                Event::SnapshotsForgotten { ids } => forgotten.extend(ids.iter().copied()),
                Event::RetentionLockSet {
                    min_age_seconds,
                    compliance,
                } => {
                    let l = a.retention_lock.get_or_insert(LockEvent {
                        min_age_seconds: *min_age_seconds,
                        compliance: *compliance,
                        set_at: e.time,
                    });
                    l.min_age_seconds = l.min_age_seconds.max(*min_age_seconds);
                    l.compliance |= *compliance;
                    l.set_at = l.set_at.max(e.time);
                }
                Event::LossAccepted { names } => accepted.extend(names.iter().map(String::as_str)),
                Event::KeyRemoved { id } => {
                    removed_keys.insert(id.clone());
                }
            }
        }
    }
    let keep: Vec<bool> = a
        .damaged_names
        .iter()
        .map(|n| !accepted.contains(n.as_str()))
        .collect();
    let mut k = keep.iter();
    a.damaged.retain(|_| *k.next().expect("same length"));
    let mut k = keep.iter();
    a.damaged_names.retain(|_| *k.next().expect("same length"));
    let mut missing: BTreeSet<String> = BTreeSet::new();
    for (name, e) in &entries {
        for p in &e.parents {
            if !present.contains(p) && !accepted.contains(p.as_str()) {
                tracing::debug!("{p} is a parent of {name}");
                missing.insert(p.clone());
            }
        }
    }
    let seen = localstate::load(&repo.config().id);
    for h in &seen.history_heads {
        if !present.contains(h) && !accepted.contains(h.as_str()) {
            missing.insert(h.clone());
        }
    }
    if seen.history_seq > a.seq {
        a.rolled_back = Some(format!(
            "the history was rolled back: this host has seen entry number {} but the repository's newest is number {} (entries or whole recovery points were deleted on the store); if that was deliberate, `holdfast history --accept-loss` accepts it",
            seen.history_seq, a.seq
        ));
    }
    a.missing = missing.into_iter().collect();

    let snaps: BTreeSet<Id> = repo
        .storage()
        .list(ObjectKind::Snapshot)?
        .into_iter()
        .filter_map(|o| Id::from_hex(&o.name))
        .collect();
    // A forget that ran meanwhile recorded its removals before deleting: read entries written
    // since the first listing, so a snapshot it deleted is not taken for one that vanished.
    // (A backup meanwhile is no problem: its snapshot is durable before its entry.)
    for o in repo.storage().list(ObjectKind::History)? {
        if present.contains(&o.name) {
            continue;
        }
        if let Ok(e) = read(repo, &o.name, o.size) {
            for ev in e.events {
                if let Event::SnapshotsForgotten { ids } = ev {
                    forgotten.extend(ids);
                }
            }
        }
    }
    let mut vanished: Vec<Vanished> = added
        .values()
        .filter(|v| !snaps.contains(&v.id) && !forgotten.contains(&v.id))
        .cloned()
        .collect();
    vanished.sort_by(|x, y| x.time.cmp(&y.time).then(x.id.cmp(&y.id)));
    a.vanished = vanished;
    a.unrecorded = snaps
        .iter()
        .filter(|s| !added.contains_key(s) && !forgotten.contains(s))
        .copied()
        .collect();
    a.reappeared = snaps
        .iter()
        .filter(|s| forgotten.contains(s))
        .copied()
        .collect();

    a.revived_keys = repo
        .storage()
        .list(ObjectKind::Key)?
        .into_iter()
        .filter(|k| removed_keys.contains(&k.name))
        .map(|k| k.name)
        .collect();

    let heads: Vec<String> = entries
        .iter()
        .filter(|(_, e)| e.seq == a.seq)
        .map(|(n, _)| n.clone())
        .collect();
    localstate::raise(
        &repo.config().id,
        &RepoState {
            history_seq: a.seq,
            history_heads: heads,
            ..Default::default()
        },
    );
    Ok(a)
}

/// Accept the losses [`audit`] reports (after the operator looked into them): one entry that
/// lists the missing and damaged entries, so they are no longer expected, and resets nothing
/// else. Returns the names accepted. Vanished snapshots stay reported until recorded forgotten.
pub fn accept_loss(repo: &Repository, a: &Audit) -> Result<Vec<String>> {
    let mut names = a.missing.clone();
    names.extend(a.damaged_names.iter().cloned());
    let mut events = vec![Event::LossAccepted {
        names: names.clone(),
    }];
    if !a.vanished.is_empty() {
        events.push(Event::SnapshotsForgotten {
            ids: a.vanished.iter().map(|v| v.id).collect(),
        });
    }
    append(repo, events)?;
    // Record rollups lost with the rest: the highest the store holds now is what is expected.
    let rollups = repo.storage().list(ObjectKind::Record)?;
    localstate::accept_rollups(&repo.config().id, crate::rollup::highest_seq(&rollups));
    Ok(names)
}

/// Record snapshots present but not in the history (format 1 repositories; `holdfast migrate`).
pub fn record_unrecorded(repo: &Repository) -> Result<usize> {
    let a = audit(repo)?;
    if a.unrecorded.is_empty() {
        return Ok(0);
    }
    let (snaps, _) = crate::snapshot::load_all(repo)?;
    let events: Vec<Event> = snaps
        .iter()
        .filter(|s| a.unrecorded.contains(&s.id))
        .map(|s| added_event(s.id, &s.snapshot))
        .collect();
    let n = events.len();
    if n > 0 {
        append(repo, events)?;
    }
    Ok(n)
}

/// The event recording snapshot `id`.
pub fn added_event(id: Id, s: &crate::snapshot::Snapshot) -> Event {
    Event::SnapshotAdded {
        id,
        time: s.time,
        hostname: s.hostname.clone(),
        paths: s.paths.clone(),
    }
}
