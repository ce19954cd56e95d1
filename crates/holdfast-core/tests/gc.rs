//! The garbage-collection protocol, driven step by step through the library: a plan waits for
//! sessions that started before it, backups never deduplicate against condemned packs, and a
//! plan spares packs that a snapshot written meanwhile needs.

use std::fs;
use std::sync::Arc;

use holdfast_backend_local::LocalStorage;
use holdfast_core::backup::{self, BackupOptions};
use holdfast_core::check::{self, ReadData};
use holdfast_core::keys::KdfParams;
use holdfast_core::progress::NoProgress;
use holdfast_core::prune::{self, PruneOptions};
use holdfast_core::repo::InitOptions;
use holdfast_core::retention::KeepPolicy;
use holdfast_core::session::{self, Session};
use holdfast_core::Repository;
use holdfast_storage::{ObjectKind, Storage};

fn repo(dir: &std::path::Path) -> Repository {
    let s: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.join("repo")));
    let opts = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        pack_size: 1 << 20,
        ..Default::default()
    };
    Repository::init(s, b"pw", &opts).unwrap()
}

fn data(seed: u8, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn packs(r: &Repository) -> usize {
    r.storage().list(ObjectKind::Pack).unwrap().len()
}

#[test]
fn plan_waits_for_older_sessions_then_deletes() {
    let d = tempfile::tempdir().unwrap();
    let r = repo(d.path());
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), data(1, 2_000_000)).unwrap();
    let opts = BackupOptions {
        paths: vec![src.clone()],
        ..Default::default()
    };
    backup::backup(&r, &opts, &NoProgress).unwrap();
    let before = packs(&r);
    assert!(before >= 1);
    prune::forget(
        &r,
        &KeepPolicy {
            last: Some(0),
            ..Default::default()
        },
        chrono::Utc::now(),
        false,
    )
    .unwrap();

    // A writer that started before the plan (it may hold index entries of those packs).
    let s = Session::start(&r, "backup").unwrap();
    let rep = prune::prune(&r, &PruneOptions::default(), &NoProgress).unwrap();
    assert!(rep.packs_condemned >= before, "{rep:?}");
    assert_eq!(
        rep.packs_deleted, 0,
        "nothing may be deleted while an older writer lives"
    );
    assert_eq!(rep.waiting.len(), 1);
    assert_eq!(packs(&r), before);
    // New writers see the plan and do not deduplicate against condemned packs.
    let condemned = session::condemned_packs(&r).unwrap();
    assert_eq!(condemned.len(), before);
    let idx = backup::writable_index(&r, true).unwrap();
    assert!(
        idx.is_empty(),
        "condemned blobs must be invisible to new writers"
    );
    drop(s);

    let rep = prune::prune(&r, &PruneOptions::default(), &NoProgress).unwrap();
    assert_eq!(rep.packs_deleted, before, "{rep:?}");
    assert_eq!(packs(&r), 0);
    assert!(session::load_plans(&r).unwrap().is_empty());
    assert!(check::check(&r, ReadData::All, &NoProgress).unwrap().ok());
}

#[test]
fn plan_spares_packs_a_newer_snapshot_uses() {
    let d = tempfile::tempdir().unwrap();
    let r = repo(d.path());
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), data(2, 1_500_000)).unwrap();
    let opts = BackupOptions {
        paths: vec![src.clone()],
        ..Default::default()
    };
    let first = backup::backup(&r, &opts, &NoProgress).unwrap();
    prune::forget(
        &r,
        &KeepPolicy {
            last: Some(0),
            ..Default::default()
        },
        chrono::Utc::now(),
        false,
    )
    .unwrap();

    // A writer loads the index (as a backup does) before prune writes its plan...
    let s = Session::start(&r, "backup").unwrap();
    let (old_index, _) = r.load_index().unwrap();
    prune::prune(&r, &PruneOptions::default(), &NoProgress).unwrap();
    assert_eq!(session::load_plans(&r).unwrap().len(), 1);
    // ...and, deduplicating against the condemned packs, writes a snapshot that uses them.
    assert!(!old_index.is_empty());
    let snap = holdfast_core::snapshot::Snapshot {
        time: chrono::Utc::now(),
        // Reuse the old root tree: all its blobs live in condemned packs.
        tree: first.snapshot.tree,
        paths: vec![src.display().to_string()],
        hostname: "h".into(),
        username: "u".into(),
        tags: vec![],
        source: None,
        copied_from: None,
        parent: None,
        complete: true,
        errors: vec![],
        warnings: vec![],
        changed_while_read: vec![],
        summary: Default::default(),
        program: "test".into(),
    };
    holdfast_core::snapshot::save(&r, &snap).unwrap();
    drop(s);
    let rep = prune::prune(&r, &PruneOptions::default(), &NoProgress).unwrap();
    let c = check::check(&r, ReadData::All, &NoProgress).unwrap();
    assert!(c.ok(), "check after prune: {:?} / prune {rep:?}", c.errors);
    let out = d.path().join("out");
    let (idx, _) = r.load_index().unwrap();
    let (all, _) = holdfast_core::snapshot::load_all(&r).unwrap();
    let res = holdfast_core::restore::restore(
        &r,
        &idx,
        &all[0],
        &holdfast_core::restore::RestoreOptions {
            target: out.clone(),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert!(res.errors.is_empty(), "{:?}", res.errors);
    assert_eq!(fs::read(out.join("src/a")).unwrap(), data(2, 1_500_000));
}

#[test]
fn prune_removes_dead_sessions_and_keeps_live_ones() {
    let d = tempfile::tempdir().unwrap();
    let r = repo(d.path());
    // A writer that ended without removing its record (killed, or no delete permission).
    std::mem::forget(Session::start(&r, "backup").unwrap());
    let live = Session::start(&r, "backup").unwrap();
    let sessions = |r: &Repository| r.storage().list(ObjectKind::Session).unwrap().len();
    assert_eq!(sessions(&r), 2);
    // Within the stale period both count as live, and nothing is removed.
    let rep = prune::prune(&r, &PruneOptions::default(), &NoProgress).unwrap();
    assert_eq!(rep.stale_sessions_removed, 0);
    assert_eq!(sessions(&r), 2);
    // After it, both heartbeats look dead from the future... but a dry run removes nothing.
    let later = chrono::Utc::now() + chrono::Duration::from_std(session::STALE_AFTER).unwrap();
    let dry = PruneOptions {
        dry_run: true,
        now: Some(later),
        ..Default::default()
    };
    prune::prune(&r, &dry, &NoProgress).unwrap();
    assert_eq!(sessions(&r), 2);
    let opts = PruneOptions {
        now: Some(later),
        ..Default::default()
    };
    let rep = prune::prune(&r, &opts, &NoProgress).unwrap();
    assert_eq!(rep.stale_sessions_removed, 2, "{rep:?}");
    assert_eq!(sessions(&r), 0);
    drop(live); // its record is already gone: ending is still clean
    assert_eq!(sessions(&r), 0);
    assert!(session::live_sessions(&r, chrono::Utc::now())
        .unwrap()
        .is_empty());
}
