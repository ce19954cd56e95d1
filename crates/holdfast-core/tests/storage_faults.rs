//! The engine under injected storage faults (the storage crate's `Faulty` over `MemoryStorage`):
//! a refused write fails the backup and leaves a repository that checks clean; a backup or a
//! prune killed at any storage call, followed by a power loss keeping any subset of the writes
//! since the last flush, leaves a repository that checks clean and restores; a store that lies
//! about flushes is caught by `check`, never reported clean; a listing that lags a delete does
//! not break the next backup, check or restore.

mod common;

use std::fs;
use std::sync::Arc;

use common::{backup, check, data, init, open, restore_newest, source, Coin};
use holdfast_core::progress::NoProgress;
use holdfast_core::prune::{self, PruneOptions};
use holdfast_core::retention::KeepPolicy;
use holdfast_core::Repository;
use holdfast_storage::{Faults, Faulty, Injected, MemoryStorage, ObjectKind, Storage};

/// A repository in memory holding one backup of version 1 of the source, seen through a
/// fault wrapper with nothing armed.
fn setup(dir: &std::path::Path) -> (Arc<MemoryStorage>, Arc<Faulty>, std::path::PathBuf) {
    let mem = Arc::new(MemoryStorage::new());
    let r = init(mem.clone());
    let src = source(dir, 1);
    backup(&r, &src).unwrap();
    (mem.clone(), Arc::new(Faulty::new(mem)), src)
}

fn assert_clean(r: &Repository, what: &str) {
    let c = check(r);
    assert!(c.ok(), "{what}: check found {:?}", c.errors);
}

#[test]
fn a_refused_pack_put_fails_the_backup_and_check_stays_clean() {
    let d = tempfile::tempdir().unwrap();
    let (mem, faulty, src) = setup(d.path());
    let snaps = mem.names(ObjectKind::Snapshot);
    fs::write(src.join("a"), data(2, 2_300_000)).unwrap();
    faulty.arm(
        Faults::new()
            .fail_nth_put_of(ObjectKind::Pack, 2)
            .error(Injected::NoSpace),
    );
    let r = open(faulty.clone());
    let e = backup(&r, &src).unwrap_err();
    assert!(e.to_string().contains("no space"), "{e}");
    assert_eq!(faulty.counts().injected, 1);
    assert_eq!(
        mem.names(ObjectKind::Snapshot),
        snaps,
        "a failed backup records no snapshot"
    );
    let r = open(mem.clone());
    assert_clean(&r, "after the refused put");
    assert_eq!(restore_newest(&r, d.path()), data(1, 2_300_000));
    // Healed, the next backup stores the new version.
    faulty.heal();
    backup(&open(faulty.clone()), &src).unwrap();
    assert_clean(&r, "after the next backup");
    assert_eq!(restore_newest(&r, d.path()), data(2, 2_300_000));
}

#[test]
fn a_refused_snapshot_put_records_nothing() {
    let d = tempfile::tempdir().unwrap();
    let (mem, faulty, src) = setup(d.path());
    fs::write(src.join("a"), data(3, 2_300_000)).unwrap();
    faulty.arm(Faults::new().fail_nth_put_of(ObjectKind::Snapshot, 1));
    assert!(backup(&open(faulty.clone()), &src).is_err());
    assert_eq!(mem.names(ObjectKind::Snapshot).len(), 1);
    let r = open(mem.clone());
    assert_clean(&r, "after the refused snapshot");
    assert_eq!(restore_newest(&r, d.path()), data(1, 2_300_000));
}

/// A lost response to the snapshot's put: the backup fails (a false alarm, never a false
/// green), and the snapshot it did store is sound.
#[test]
fn a_lost_ack_of_the_snapshot_put_fails_the_backup_but_leaves_it_sound() {
    let d = tempfile::tempdir().unwrap();
    let (mem, faulty, src) = setup(d.path());
    fs::write(src.join("a"), data(4, 2_300_000)).unwrap();
    faulty.arm(Faults::new().lose_nth_put_ack_of(ObjectKind::Snapshot, 1));
    assert!(backup(&open(faulty.clone()), &src).is_err());
    assert_eq!(faulty.counts().injected, 1);
    assert_eq!(mem.names(ObjectKind::Snapshot).len(), 2);
    let r = open(mem.clone());
    assert_clean(&r, "after the lost ack");
    assert_eq!(restore_newest(&r, d.path()), data(4, 2_300_000));
}

/// Every flush of a backup, failing in turn, then a power loss that keeps nothing unflushed:
/// either the backup failed, or its snapshot survived and restores. The repository checks
/// clean either way.
#[test]
fn a_failed_flush_fails_the_backup_or_its_snapshot_is_durable() {
    let d = tempfile::tempdir().unwrap();
    let flushes = {
        let (_mem, faulty, src) = setup_small(d.path());
        fs::write(src.join("a"), data(5, SMALL)).unwrap();
        let r = open(faulty.clone());
        faulty.arm(Faults::new());
        backup(&r, &src).unwrap();
        faulty.counts().flushes
    };
    assert!(
        flushes >= 3,
        "a backup flushes after packs, index and snapshot"
    );
    for n in 1..=flushes {
        let d = tempfile::tempdir().unwrap();
        let (mem, faulty, src) = setup_small(d.path());
        fs::write(src.join("a"), data(5, SMALL)).unwrap();
        let r = open(faulty.clone());
        faulty.arm(Faults::new().fail_nth_flush(n));
        let res = backup(&r, &src);
        mem.crash();
        let r = open(mem.clone());
        assert_clean(&r, &format!("flush {n} of {flushes} failed"));
        let newest = restore_newest(&r, d.path());
        if res.is_ok() {
            assert_eq!(
                newest,
                data(5, SMALL),
                "flush {n} failed, the backup succeeded, and its snapshot was lost in a crash"
            );
        } else {
            assert!(newest == data(1, SMALL) || newest == data(5, SMALL));
        }
    }
}

/// What one test run of a crash at call `n` found.
struct Crashed {
    succeeded: bool,
    lost: usize,
}

/// A backup of version 2, killed at its `n`th storage call; with `power_loss`, a crash that
/// keeps a random part of what was not flushed. Then the repository must check clean, restore
/// version 2 if the backup said it succeeded (version 1 or 2 if not), and take the next backup.
fn backup_killed_at(n: u64, power_loss: bool) -> Crashed {
    let d = tempfile::tempdir().unwrap();
    let (mem, faulty, src) = setup_small(d.path());
    fs::write(src.join("a"), data(2, SMALL)).unwrap();
    let r = open(faulty.clone());
    faulty.arm(Faults::new().die_at_op(n));
    let res = backup(&r, &src);
    drop(r);
    let mut coin = Coin::new(n);
    let lost = if power_loss {
        mem.crash_keeping(|_| coin.flip())
    } else {
        0
    };
    let what = format!("backup killed at call {n}, power loss {power_loss}, {lost} writes lost");
    let r = open(mem.clone());
    assert_clean(&r, &what);
    let newest = restore_newest(&r, d.path());
    if res.is_ok() {
        assert_eq!(newest, data(2, SMALL), "{what}: the backup succeeded");
    } else {
        assert!(
            newest == data(1, SMALL) || newest == data(2, SMALL),
            "{what}: restored neither version"
        );
    }
    fs::write(src.join("a"), data(3, SMALL)).unwrap();
    backup(&r, &src).unwrap_or_else(|e| panic!("{what}: the next backup failed: {e}"));
    assert_clean(&r, &format!("{what}, then a backup"));
    assert_eq!(restore_newest(&r, d.path()), data(3, SMALL), "{what}");
    Crashed {
        succeeded: res.is_ok(),
        lost,
    }
}

/// Small enough that one backup is one data pack, so a crash loop stays fast.
const SMALL: usize = 300_000;

fn setup_small(dir: &std::path::Path) -> (Arc<MemoryStorage>, Arc<Faulty>, std::path::PathBuf) {
    let mem = Arc::new(MemoryStorage::new());
    let r = init(mem.clone());
    let src = common::source_sized(dir, 1, SMALL);
    backup(&r, &src).unwrap();
    (mem.clone(), Arc::new(Faulty::new(mem)), src)
}

/// The number of storage calls a backup of version 2 makes.
fn calls_of_a_backup() -> u64 {
    let d = tempfile::tempdir().unwrap();
    let (_mem, faulty, src) = setup_small(d.path());
    fs::write(src.join("a"), data(2, SMALL)).unwrap();
    let r = open(faulty.clone());
    faulty.arm(Faults::new());
    backup(&r, &src).unwrap();
    faulty.counts().ops
}

#[test]
fn a_backup_killed_at_any_call_leaves_a_clean_repository() {
    let total = calls_of_a_backup();
    assert!(total > 10, "{total}");
    let succeeded: Vec<bool> = (1..=total + 1)
        .map(|n| backup_killed_at(n, false).succeeded)
        .collect();
    assert!(!succeeded[0], "a backup killed at its first call must fail");
    assert!(
        succeeded[total as usize],
        "a backup that is not killed succeeds"
    );
}

#[test]
fn a_backup_killed_at_any_call_then_a_power_loss_leaves_a_clean_repository() {
    let total = calls_of_a_backup();
    let mut lost = 0;
    for n in 1..=total + 1 {
        lost += backup_killed_at(n, true).lost;
    }
    assert!(
        lost > 0,
        "the power losses lost no write: the test tests nothing"
    );
}

/// A repository with versions 1 and 2 backed up and version 1 forgotten: a prune has work.
fn setup_prune(dir: &std::path::Path) -> (Arc<MemoryStorage>, Arc<Faulty>, std::path::PathBuf) {
    let (mem, faulty, src) = setup_small(dir);
    let r = open(mem.clone());
    fs::write(src.join("a"), data(2, SMALL)).unwrap();
    backup(&r, &src).unwrap();
    let keep_newest = KeepPolicy {
        last: Some(1),
        ..Default::default()
    };
    prune::forget(&r, &keep_newest, chrono::Utc::now(), false).unwrap();
    assert_eq!(mem.names(ObjectKind::Snapshot).len(), 1);
    (mem, faulty, src)
}

/// A prune killed at its `n`th call, then (with `power_loss`) a crash keeping a random part of
/// what was not flushed: the kept snapshot still restores, check is clean, and the next prune
/// finishes the job. Returns whether the killed prune succeeded.
fn prune_killed_at(base: &MemoryStorage, n: u64, power_loss: bool) -> bool {
    let d = tempfile::tempdir().unwrap();
    // A prune appends no history, so forks of one repository do not disturb each other.
    let mem = Arc::new(base.fork());
    let faulty = Arc::new(Faulty::new(mem.clone()));
    let r = open(faulty.clone());
    faulty.arm(Faults::new().die_at_op(n));
    let res = prune::prune(&r, &PruneOptions::default(), &NoProgress);
    drop(r);
    let mut coin = Coin::new(n * 7 + 1);
    let lost = if power_loss {
        mem.crash_keeping(|_| coin.flip())
    } else {
        0
    };
    let what = format!("prune killed at call {n}, power loss {power_loss}, {lost} writes lost");
    let r = open(mem.clone());
    assert_clean(&r, &what);
    assert_eq!(restore_newest(&r, d.path()), data(2, SMALL), "{what}");
    let rep = prune::prune(&r, &PruneOptions::default(), &NoProgress)
        .unwrap_or_else(|e| panic!("{what}: the next prune failed: {e}"));
    assert_clean(&r, &format!("{what}, then a prune"));
    assert_eq!(restore_newest(&r, d.path()), data(2, SMALL), "{what}");
    // Version 1's data is gone now (the two prunes together deleted its pack).
    let again = prune::prune(&r, &PruneOptions::default(), &NoProgress).unwrap();
    assert_eq!(
        again.packs_condemned, 0,
        "{what}: {rep:?} left work: {again:?}"
    );
    res.is_ok()
}

#[test]
fn a_prune_killed_at_any_call_leaves_a_clean_repository() {
    let d = tempfile::tempdir().unwrap();
    let (base, _, _src) = setup_prune(d.path());
    let total = {
        let faulty = Arc::new(Faulty::new(Arc::new(base.fork())));
        let r = open(faulty.clone());
        faulty.arm(Faults::new());
        let rep = prune::prune(&r, &PruneOptions::default(), &NoProgress).unwrap();
        assert!(rep.packs_deleted >= 1, "{rep:?}");
        faulty.counts().ops
    };
    assert!(total > 10, "{total}");
    for n in 1..=total + 1 {
        let ok = prune_killed_at(&base, n, false);
        assert!(ok || n <= total, "an unharmed prune succeeds");
        prune_killed_at(&base, n, true);
    }
}

/// A store that acknowledges flushes it never made durable: after a power loss that keeps the
/// snapshot but loses the data, `check` reports the damage (never a false green).
#[test]
fn check_catches_what_a_lying_flush_lost() {
    let d = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemoryStorage::new());
    init(mem.clone());
    let liar = Arc::new(Faulty::new(mem.clone()).lose_flushes());
    let src = common::source_sized(d.path(), 1, SMALL);
    backup(&open(liar.clone()), &src).unwrap();
    assert!(liar.counts().flushes_lost >= 3);
    let lost = mem.crash_keeping(|op| !matches!(op.kind(), ObjectKind::Pack | ObjectKind::Index));
    assert!(lost >= 2, "{lost}");
    let c = check(&open(mem.clone()));
    assert!(!c.ok(), "check passed a snapshot whose data is gone: {c:?}");
    assert_eq!(c.snapshots, 1);
}

/// A listing that still shows deleted packs for a while (an eventually consistent store):
/// after a prune, the next backup, check and restore work through it.
#[test]
fn a_listing_that_lags_deletes_does_not_break_backup_check_or_restore() {
    let d = tempfile::tempdir().unwrap();
    let (mem, faulty, src) = setup_prune(d.path());
    faulty.arm(Faults::new().lagging_list(4));
    let r = open(faulty.clone());
    let packs_before = mem.names(ObjectKind::Pack);
    let rep = prune::prune(&r, &PruneOptions::default(), &NoProgress).unwrap();
    assert!(rep.packs_deleted >= 1, "{rep:?}");
    let now = mem.names(ObjectKind::Pack);
    let deleted: Vec<&String> = packs_before.iter().filter(|p| !now.contains(p)).collect();
    assert!(!deleted.is_empty());
    let listed: Vec<String> = faulty
        .list(ObjectKind::Pack)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert!(
        deleted.iter().all(|p| listed.contains(p)),
        "the listing still shows the deleted packs"
    );
    let c = check(&r);
    assert!(c.ok(), "check through the lagging listing: {:?}", c.errors);
    fs::write(src.join("a"), data(3, SMALL)).unwrap();
    backup(&r, &src).unwrap();
    let c = check(&r);
    assert!(c.ok(), "check after a backup: {:?}", c.errors);
    assert_eq!(restore_newest(&r, d.path()), data(3, SMALL));
    // Consistent again, the store is clean too.
    faulty.heal();
    assert_clean(&open(mem.clone()), "once the listing caught up");
}

/// Forget and prune through a listing that lags deletes: the forgotten snapshot, still listed
/// but gone, is neither damage for check nor a reason for prune to keep or refuse anything.
#[test]
fn forget_then_prune_through_a_listing_that_lags_deletes() {
    let d = tempfile::tempdir().unwrap();
    let (mem, faulty, src) = setup_small(d.path());
    faulty.arm(Faults::new().lagging_list(6));
    let r = open(faulty.clone());
    fs::write(src.join("a"), data(2, SMALL)).unwrap();
    backup(&r, &src).unwrap();
    let keep_newest = KeepPolicy {
        last: Some(1),
        ..Default::default()
    };
    prune::forget(&r, &keep_newest, chrono::Utc::now(), false).unwrap();
    assert_eq!(mem.names(ObjectKind::Snapshot).len(), 1);
    assert_eq!(faulty.list(ObjectKind::Snapshot).unwrap().len(), 2);
    let c = check(&r);
    assert!(
        c.ok(),
        "check with a forgotten snapshot still listed: {:?}",
        c.errors
    );
    let rep = prune::prune(&r, &PruneOptions::default(), &NoProgress).unwrap();
    assert!(rep.packs_deleted + rep.packs_condemned >= 1, "{rep:?}");
    assert_eq!(restore_newest(&r, d.path()), data(2, SMALL));
    faulty.heal();
    let r = open(mem.clone());
    assert_clean(&r, "once the listing caught up");
    assert_eq!(restore_newest(&r, d.path()), data(2, SMALL));
}
