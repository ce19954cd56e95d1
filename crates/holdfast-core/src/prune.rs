//! `forget` and `prune`: remove snapshots by policy, then reclaim the space nothing references.
//!
//! Both plan first and apply second. Prune is two-phase (see docs/DESIGN.md): phase one writes a
//! [`GcPlan`] condemning packs that no snapshot needs (after copying the live blobs of mostly
//! unused packs into new packs); phase two deletes a plan's packs once no writer session that
//! started before the plan is alive, re-checking that no snapshot written meanwhile needs them.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use holdfast_storage::ObjectKind;
use serde::Serialize;

use crate::blob::BlobType;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{IdMode, Index, IndexFile};
use crate::pack::PackEntry;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::retention::{self, KeepPolicy};
use crate::session::{self, GcPlan};
use crate::snapshot::{self, SnapshotEntry};
use crate::tree::Tree;
use crate::writer::BlobWriter;

/// One snapshot's fate under `forget`.
#[derive(Debug, Clone, Serialize)]
pub struct ForgetItem {
    /// Snapshot id.
    pub id: String,
    /// Time.
    pub time: DateTime<Utc>,
    /// Host.
    pub hostname: String,
    /// Paths.
    pub paths: Vec<String>,
    /// Rules that keep it (empty: removed).
    pub reasons: Vec<&'static str>,
}

/// Apply a keep-policy per group (host and paths). With `dry_run`, nothing is removed.
pub fn forget(
    repo: &Repository,
    policy: &KeepPolicy,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Vec<ForgetItem>> {
    // Log batches are pieces of a chain, not recovery points: a keep policy over them would
    // cut the chain. They are removed only by their source's retention (with its base
    // backups), through `forget_matching`.
    forget_matching(repo, policy, now, dry_run, &|s| s.log.is_none())
}

/// [`forget`] restricted to the snapshots `select` accepts (e.g. one workload source's).
pub fn forget_matching(
    repo: &Repository,
    policy: &KeepPolicy,
    now: DateTime<Utc>,
    dry_run: bool,
    select: &dyn Fn(&snapshot::Snapshot) -> bool,
) -> Result<Vec<ForgetItem>> {
    if policy.is_empty() {
        return Err(Error::Invalid(
            "no keep rule given: forget would remove every snapshot. Give at least one --keep-* option".into(),
        ));
    }
    let (all, _) = snapshot::load_all(repo)?;
    let mut groups: HashMap<(String, Vec<String>), Vec<&SnapshotEntry>> = HashMap::new();
    for s in all.iter().filter(|s| select(&s.snapshot)) {
        let mut p = s.snapshot.paths.clone();
        p.sort();
        groups
            .entry((s.snapshot.hostname.clone(), p))
            .or_default()
            .push(s);
    }
    let mut out = Vec::new();
    for (_, snaps) in groups {
        let times: Vec<_> = snaps.iter().map(|s| s.snapshot.time).collect();
        for d in retention::decide(&times, policy, now) {
            let s = snaps[d.index];
            out.push(ForgetItem {
                id: s.id.to_hex(),
                time: s.snapshot.time,
                hostname: s.snapshot.hostname.clone(),
                paths: s.snapshot.paths.clone(),
                reasons: d.reasons,
            });
        }
    }
    apply(repo, out, now, dry_run)
}

/// Forget these snapshots (log batches a source's retention no longer needs, chosen by the
/// caller), under the same rules as [`forget`]: the retention lock keeps the young ones, the
/// history records the removal before it happens. With `dry_run`, nothing is removed.
pub fn forget_chosen(
    repo: &Repository,
    chosen: &[&SnapshotEntry],
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Vec<ForgetItem>> {
    let out = chosen
        .iter()
        .map(|s| ForgetItem {
            id: s.id.to_hex(),
            time: s.snapshot.time,
            hostname: s.snapshot.hostname.clone(),
            paths: s.snapshot.paths.clone(),
            reasons: Vec::new(),
        })
        .collect();
    apply(repo, out, now, dry_run)
}

/// Apply the retention lock to what a keep policy chose and remove the rest.
fn apply(
    repo: &Repository,
    mut out: Vec<ForgetItem>,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Vec<ForgetItem>> {
    out.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
    let locks = crate::records::lock_state(repo)?;
    if let Some(detail) = locks.unverifiable() {
        return Err(Error::RetentionLockUnverifiable { detail });
    }
    // Snapshots an earlier forget removed that are back (an old copy put back, or that forget
    // was interrupted): they were already forgotten, so they go unless a lock keeps them.
    for item in out.iter_mut() {
        if Id::from_hex(&item.id).is_some_and(|id| locks.audit.reappeared.contains(&id)) {
            item.reasons.clear();
        }
    }
    if let Some(lock) = &locks.lock {
        let limit = now - chrono::Duration::seconds(lock.min_age_seconds);
        for item in out
            .iter_mut()
            .filter(|i| i.reasons.is_empty() && i.time > limit)
        {
            item.reasons.push(if lock.compliance {
                "retention lock (compliance)"
            } else {
                "retention lock"
            });
        }
    }
    if !dry_run {
        let ids: Vec<Id> = out
            .iter()
            .filter(|i| i.reasons.is_empty())
            .filter_map(|i| Id::from_hex(&i.id))
            .collect();
        if !ids.is_empty() {
            // Recorded before deleting: a crash in between leaves snapshots that the history
            // says are forgotten (a warning, and the next forget removes them), never an alarm.
            crate::history::append(
                repo,
                vec![crate::history::Event::SnapshotsForgotten { ids: ids.clone() }],
            )?;
        }
        for id in ids {
            repo.storage().delete(ObjectKind::Snapshot, &id.to_hex())?;
        }
        repo.storage().flush()?;
    }
    Ok(out)
}

/// Prune settings.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Compute and report, change nothing.
    pub dry_run: bool,
    /// Repack a pack when more than this share of its bytes is unused (0..=100).
    pub max_unused_percent: f64,
    /// The current time (injectable).
    pub now: Option<DateTime<Utc>>,
    /// Also remove session records that cannot be read, whatever their age (for a store that
    /// does not say when an object was written; see [`session::Verdict`]).
    pub remove_unreadable_sessions: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            max_unused_percent: 10.0,
            now: None,
            remove_unreadable_sessions: false,
        }
    }
}

/// What prune did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Blobs referenced by snapshots.
    pub used_blobs: usize,
    /// Packs condemned by this run's new plan.
    pub packs_condemned: usize,
    /// Packs whose live blobs were copied into new packs.
    pub packs_repacked: usize,
    /// Packs deleted.
    pub packs_deleted: usize,
    /// Bytes freed by deleting packs.
    pub bytes_freed: u64,
    /// Plans left for a later prune, and why.
    pub waiting: Vec<String>,
    /// Records of dead writer sessions removed.
    pub stale_sessions_removed: usize,
    /// Session records that could not be read and were removed (names).
    pub unreadable_sessions_removed: Vec<String>,
    /// Plans that could not be read and were removed (names): they condemned nothing anyone
    /// could read.
    pub unreadable_plans_removed: Vec<String>,
    /// Temporary files of interrupted writes removed (older than the staleness window; a dry
    /// run counts them).
    pub tmp_files_removed: usize,
    /// Their bytes.
    pub tmp_bytes_removed: u64,
}

/// Every blob any snapshot references. Refuses on a damaged tree: pruning a repository whose
/// references cannot all be read could delete data.
fn used_blobs(repo: &Repository, index: &Index, snaps: &[SnapshotEntry]) -> Result<HashSet<Id>> {
    let mut used = HashSet::new();
    let mut stack: Vec<Id> = snaps.iter().map(|s| s.snapshot.tree).collect();
    while let Some(t) = stack.pop() {
        if !used.insert(t) {
            continue;
        }
        let tree = repo
            .read_blob(index, BlobType::Tree, &t)
            .and_then(|d| Tree::decode(&t, &d))
            .map_err(|e| Error::Refused(format!("prune stopped, nothing was deleted: {e}. Run `holdfast check --read-data` first")))?;
        for n in tree.nodes {
            used.extend(n.content);
            if let Some(s) = n.subtree {
                stack.push(s);
            }
        }
    }
    Ok(used)
}

/// Group an index by pack.
fn by_pack(index: &Index) -> HashMap<Id, Vec<PackEntry>> {
    let mut m: HashMap<Id, Vec<PackEntry>> = HashMap::new();
    for (id, pack, l) in index.iter_all() {
        m.entry(pack).or_default().push(PackEntry {
            blob_type: l.blob_type,
            id,
            offset: l.offset,
            length: l.length,
            raw_len: l.raw_len,
        });
    }
    m
}

/// Run prune.
pub fn prune(
    repo: &Repository,
    opts: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    let now = opts.now.unwrap_or_else(Utc::now);
    let mut report = PruneReport::default();
    progress.phase("prune: finding used data");
    // Snapshots before the index: a snapshot is written after its index entries, so every
    // snapshot seen here has its blobs in the index read next (a backup finishing meanwhile
    // cannot make a referenced blob look unindexed).
    let (snaps, bad) = snapshot::load_all(repo)?;
    let (index, _) = repo.load_index()?;
    if let Some(e) = bad.into_iter().next() {
        return Err(Error::Refused(format!(
            "prune stopped, nothing was deleted: {e}"
        )));
    }
    let used = used_blobs(repo, &index, &snaps)?;
    report.used_blobs = used.len();
    for u in &used {
        if !index.contains(u) {
            return Err(Error::Refused(format!(
                "prune stopped, nothing was deleted: blob {u} is referenced but not indexed. Run `holdfast check`"
            )));
        }
    }
    drop(index);

    if !opts.dry_run {
        let swept = session::sweep_dead_sessions(repo, now, opts.remove_unreadable_sessions)?;
        report.stale_sessions_removed = swept.dead;
        report.unreadable_sessions_removed = swept.unreadable;
        report.unreadable_plans_removed = session::remove_unreadable_plans(repo)?;
    }
    // A put in progress writes its temporary file within one call; one older than the
    // staleness window belongs to no live writer.
    (report.tmp_files_removed, report.tmp_bytes_removed) = repo
        .storage()
        .stale_temporaries(session::STALE_AFTER, !opts.dry_run)?;

    // Phase two for earlier plans.
    let plans = session::load_plans(repo)?;
    for (plan_id, plan) in &plans {
        // A writer that registered up to a minute after the plan's time also waits: it may
        // have read the index just before the plan became visible (and clocks differ).
        let live = session::live_sessions(repo, now)?;
        if let Some(s) = live
            .iter()
            .find(|s| s.started() < plan.created + chrono::Duration::seconds(60))
        {
            report.waiting.push(format!(
                "plan {} waits for {}",
                plan_id.short(),
                s.describe()
            ));
            continue;
        }
        if !opts.dry_run {
            execute(repo, plan_id, plan, &mut report)?;
        }
    }

    // Phase one: a new plan.
    let plans = session::load_plans(repo)?;
    let already: HashSet<Id> = plans
        .iter()
        .flat_map(|(_, p)| p.condemned.iter().copied())
        .collect();
    let (index, _, gone) = repo.load_index_and_gone_as(IdMode::Full)?;
    let live_index = index.without_packs(&already);
    let packs = by_pack(&live_index);
    let sizes: HashMap<Id, u64> = repo
        .storage()
        .list(ObjectKind::Pack)?
        .into_iter()
        .filter_map(|o| Id::from_hex(&o.name).map(|id| (id, o.size)))
        .collect();
    let mut condemn = Vec::new();
    let mut repack = Vec::new();
    for (pack, entries) in &packs {
        let total: u64 = entries.iter().map(|e| e.length as u64).sum();
        // A blob is live here only if this pack is where the index finds it.
        let live: u64 = entries
            .iter()
            .filter(|e| {
                used.contains(&e.id) && live_index.get(&e.id).map(|(p, _)| p) == Some(*pack)
            })
            .map(|e| e.length as u64)
            .sum();
        if live == 0 {
            condemn.push(*pack);
        } else if total > 0
            && (total - live) as f64 * 100.0 / total as f64 > opts.max_unused_percent
        {
            repack.push(*pack);
        }
    }
    // Packs no index names: an interrupted writer's. Condemn them too; the plan's re-check spares
    // any that a writer adopts and uses before the plan executes.
    for p in sizes.keys() {
        if !index.has_pack(p) && !already.contains(p) {
            condemn.push(*p);
        }
    }
    // Packs the index names that are gone: condemned, so that executing the plan writes an
    // index without their entries (there is nothing to delete).
    condemn.extend(gone.iter().filter(|p| !already.contains(p)));
    report.packs_repacked = repack.len();
    if opts.dry_run || (condemn.is_empty() && repack.is_empty()) {
        report.packs_condemned = condemn.len() + repack.len();
        return Ok(report);
    }
    if !repack.is_empty() {
        progress.phase("prune: repacking");
        let w = BlobWriter::new(repo, false);
        let mut copied = HashSet::new();
        for pack in &repack {
            for e in &packs[pack] {
                if !used.contains(&e.id) || !copied.insert(e.id) {
                    continue;
                }
                // Stored bytes are position independent: copy them without re-encrypting.
                let stored = repo.storage().get_range(
                    ObjectKind::Pack,
                    &pack.to_hex(),
                    e.offset as u64,
                    e.length as u64,
                )?;
                crate::blob::open(repo.key(), e.blob_type, &e.id, &stored, e.raw_len).map_err(
                    |err| Error::Refused(format!("prune stopped before deleting anything: {err}")),
                )?;
                w.add(e.blob_type, e.id, &stored, e.raw_len)?;
            }
        }
        w.finish()?;
    }
    condemn.extend(repack);
    condemn.sort();
    condemn.dedup();
    report.packs_condemned = condemn.len();
    let plan = GcPlan {
        // The plan's time is when it is written, not when this prune started: a writer that
        // registered in between may have read the index before the plan existed, and must
        // count as older than the plan.
        created: Utc::now().max(now),
        condemned: condemn,
    };
    let plan_id = session::save_plan(repo, &plan)?;
    // Phase two at once if no writer could have read the index before the plan existed.
    let live = session::live_sessions(repo, now)?;
    if live.is_empty() {
        execute(repo, &plan_id, &plan, &mut report)?;
    } else {
        let who: Vec<String> = live.iter().map(|s| s.describe()).collect();
        report.waiting.push(format!(
            "plan {} waits for {} running writer(s), the next prune completes it: {}",
            plan_id.short(),
            live.len(),
            who.join("; ")
        ));
    }
    progress.finish();
    Ok(report)
}

/// Phase two: delete a plan's packs that no used blob depends on.
fn execute(repo: &Repository, plan_id: &Id, plan: &GcPlan, report: &mut PruneReport) -> Result<()> {
    // What is referenced is read now, after the caller saw no writer older than the plan: a
    // writer that ended meanwhile wrote its snapshot before removing its session, so it is seen
    // here (a set computed earlier would miss it and delete what it references).
    let snaps = snapshot::load_all(repo)?.0;
    let (index, files) = repo.load_index_as(IdMode::Full)?;
    let used = &used_blobs(repo, &index, &snaps)?;
    let condemned: HashSet<Id> = plan.condemned.iter().copied().collect();
    let survivors = index.without_packs(&condemned);
    // Spare a condemned pack if a used blob is only there (a snapshot written meanwhile).
    let mut spare = HashSet::new();
    for u in used {
        if !survivors.contains(u) {
            if let Some((p, _)) = index.get(u) {
                spare.insert(p);
            }
        }
    }
    let delete: HashSet<Id> = condemned.difference(&spare).copied().collect();
    // 1. One index without the deleted packs, 2. remove the index files it replaces,
    // 3. delete the packs, 4. remove the plan. A crash between steps leaves duplicates or
    // unindexed packs, never an index entry that points at a deleted pack.
    let keep = index.without_packs(&delete);
    let mut f = IndexFile {
        packs: by_pack(&keep).into_iter().collect(),
        superseded: files.clone(),
    };
    f.packs.sort_by_key(|(p, _)| *p);
    let new_id = repo.write_index_file(&f)?;
    repo.storage().flush()?;
    for old in files.iter().filter(|f| **f != new_id) {
        repo.storage().delete(ObjectKind::Index, &old.to_hex())?;
    }
    repo.storage().flush()?;
    let sizes: HashMap<String, u64> = repo
        .storage()
        .list(ObjectKind::Pack)?
        .into_iter()
        .map(|o| (o.name, o.size))
        .collect();
    for p in &delete {
        let name = p.to_hex();
        if let Some(sz) = sizes.get(&name) {
            repo.storage().delete(ObjectKind::Pack, &name)?;
            report.packs_deleted += 1;
            report.bytes_freed += sz;
        }
    }
    repo.storage().flush()?;
    repo.storage().delete(ObjectKind::Gc, &plan_id.to_hex())?;
    repo.storage().flush()?;
    Ok(())
}
