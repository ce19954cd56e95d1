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
        log: None,
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

/// Restore the newest snapshot into `out` and return what the restore reported.
fn restore_newest(r: &Repository, out: &std::path::Path) -> holdfast_core::restore::RestoreOutcome {
    let (idx, _) = r.load_index().unwrap();
    let (all, _) = holdfast_core::snapshot::load_all(r).unwrap();
    let newest = all.iter().max_by_key(|s| s.snapshot.time).unwrap();
    holdfast_core::restore::restore(
        r,
        &idx,
        newest,
        &holdfast_core::restore::RestoreOptions {
            target: out.to_path_buf(),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap()
}

fn pack_file(r: &Repository, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let _ = r;
    dir.join("repo/data").join(&name[..2]).join(name)
}

#[test]
fn damaged_orphan_pack_is_not_adopted() {
    let d = tempfile::tempdir().unwrap();
    let r = repo(d.path());
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), data(7, 3_000_000)).unwrap();
    let opts = BackupOptions {
        paths: vec![src.clone()],
        ..Default::default()
    };
    backup::backup(&r, &opts, &NoProgress).unwrap();
    // Leave the packs as an interrupted backup would: stored, but named by no index file and
    // used by no snapshot (and recorded in no history entry).
    for kind in [ObjectKind::Index, ObjectKind::Snapshot, ObjectKind::History] {
        for o in r.storage().list(kind).unwrap() {
            r.storage().delete(kind, &o.name).unwrap();
        }
    }
    let orphans = r.storage().list(ObjectKind::Pack).unwrap();
    assert!(!orphans.is_empty());
    // Damage a byte inside the first blob of every orphan pack (the headers stay intact).
    for o in &orphans {
        let p = pack_file(&r, d.path(), &o.name);
        let mut bytes = fs::read(&p).unwrap();
        bytes[100] ^= 0x20;
        fs::write(&p, bytes).unwrap();
    }
    // The next backup must not deduplicate against the damaged blobs.
    let out = backup::backup(&r, &opts, &NoProgress).unwrap();
    assert!(out.snapshot.complete);
    let c = check::check(&r, ReadData::All, &NoProgress).unwrap();
    assert!(c.ok(), "check --read-data after the backup: {:?}", c.errors);
    let res = restore_newest(&r, &d.path().join("out"));
    assert!(res.errors.is_empty(), "{:?}", res.errors);
    assert_eq!(
        fs::read(d.path().join("out/src/a")).unwrap(),
        data(7, 3_000_000)
    );
    // The damaged orphans were reported, not adopted: no index names them...
    let (idx, _, _) = r.load_index_files().unwrap();
    for o in &orphans {
        let id = holdfast_core::id::Id::from_hex(&o.name).unwrap();
        assert!(!idx.has_pack(&id), "damaged pack {} was adopted", o.name);
    }
    // ...and prune removes them.
    let rep = prune::prune(&r, &PruneOptions::default(), &NoProgress).unwrap();
    let left: Vec<String> = r
        .storage()
        .list(ObjectKind::Pack)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    for o in &orphans {
        assert!(
            !left.contains(&o.name),
            "damaged orphan {} survived prune {rep:?}",
            o.name
        );
    }
    let c = check::check(&r, ReadData::All, &NoProgress).unwrap();
    assert!(c.ok(), "check after prune: {:?}", c.errors);
}

/// Seven files backed up once; the second backup of the same files deduplicates against all of
/// them, and while it is paused before recording its snapshot (past the staleness window), the
/// first snapshot is forgotten and a prune deletes everything no snapshot uses.
fn paused_backup_while_prune_runs(
    backdate: bool,
) -> (tempfile::TempDir, Repository, BackupOptions) {
    let d = tempfile::tempdir().unwrap();
    let r = repo(d.path());
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..7u8 {
        fs::write(
            src.join(format!("f{i}")),
            data(20 + i, 300_000 + i as usize * 1000),
        )
        .unwrap();
    }
    let opts = BackupOptions {
        paths: vec![src.clone()],
        ..Default::default()
    };
    backup::backup(&r, &opts, &NoProgress).unwrap();
    let (r2, r3) = (r.clone(), r.clone());
    let hook = move |s: &Session| {
        prune::forget(
            &r2,
            &KeepPolicy {
                last: Some(0),
                ..Default::default()
            },
            chrono::Utc::now(),
            false,
        )
        .unwrap();
        // The prune runs 16 minutes "later": the paused writer's heartbeat looks dead.
        let later = chrono::Utc::now() + chrono::Duration::minutes(16);
        let rep = prune::prune(
            &r2,
            &PruneOptions {
                now: Some(later),
                ..Default::default()
            },
            &NoProgress,
        )
        .unwrap();
        assert!(rep.packs_deleted > 0, "the prune deleted nothing: {rep:?}");
        if backdate {
            // The writer resumes: its clock shows the long gap, and its heartbeat thread
            // re-creates its record before the writer looks.
            s.backdate_heartbeat_for_tests(std::time::Duration::from_secs(16 * 60));
            s.refresh().unwrap();
        }
    };
    let _ = r3;
    let opts = BackupOptions {
        before_snapshot: Some(backup::BeforeSnapshot(Arc::new(hook))),
        ..opts
    };
    (d, r, opts)
}

fn assert_expired_backup_fails_and_recovers(
    d: &tempfile::TempDir,
    r: &Repository,
    opts: BackupOptions,
) {
    let err = backup::backup(r, &opts, &NoProgress).expect_err("a backup whose packs were deleted");
    assert!(
        matches!(err, holdfast_core::Error::SessionExpired { .. }),
        "unexpected error: {err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("no snapshot was recorded") && msg.contains("Run the backup again"),
        "{msg}"
    );
    assert!(
        r.storage().list(ObjectKind::Snapshot).unwrap().is_empty(),
        "a snapshot was recorded"
    );
    let c = check::check(r, ReadData::All, &NoProgress).unwrap();
    assert!(c.ok(), "{:?}", c.errors);
    // Running it again stores the data anew, and it restores.
    let opts = BackupOptions {
        before_snapshot: None,
        ..opts
    };
    backup::backup(r, &opts, &NoProgress).unwrap();
    let c = check::check(r, ReadData::All, &NoProgress).unwrap();
    assert!(c.ok(), "{:?}", c.errors);
    let res = restore_newest(r, &d.path().join("out"));
    assert!(res.errors.is_empty(), "{:?}", res.errors);
    for i in 0..7u8 {
        assert_eq!(
            fs::read(d.path().join(format!("out/src/f{i}"))).unwrap(),
            data(20 + i, 300_000 + i as usize * 1000)
        );
    }
}

#[test]
fn backup_whose_session_was_swept_fails_instead_of_recording() {
    let (d, r, opts) = paused_backup_while_prune_runs(false);
    assert_expired_backup_fails_and_recovers(&d, &r, opts);
}

#[test]
fn backup_whose_heartbeat_lapsed_fails_even_with_its_record_back() {
    let (d, r, opts) = paused_backup_while_prune_runs(true);
    assert_expired_backup_fails_and_recovers(&d, &r, opts);
}

#[test]
fn oversized_objects_are_refused_before_they_are_read() {
    let d = tempfile::tempdir().unwrap();
    let r = repo(d.path());
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), data(3, 10_000)).unwrap();
    let opts = BackupOptions {
        paths: vec![src.clone()],
        ..Default::default()
    };
    backup::backup(&r, &opts, &NoProgress).unwrap();
    // Sparse files: gigabytes listed, nothing on disk. Reading one would allocate it all.
    let sparse = |dir: &str, len: u64| {
        let f = fs::File::create(d.path().join("repo").join(dir).join("ef".repeat(32))).unwrap();
        f.set_len(len).unwrap();
    };
    sparse("snapshots", 3 << 30);
    sparse("gc", 3 << 30);
    sparse("index", 3 << 30);
    sparse("sessions", 3 << 30);
    sparse("keys", 3 << 30);
    let t = std::time::Instant::now();
    let (snaps, bad) = holdfast_core::snapshot::load_all(&r).unwrap();
    assert_eq!(snaps.len(), 1);
    assert!(bad[0].to_string().contains("was not read"), "{}", bad[0]);
    let (_, bad_plans) = session::load_plans_lenient(&r).unwrap();
    assert!(bad_plans[0].1.contains("more than a plan"), "{bad_plans:?}");
    let (_, _, damaged) = r.load_index_files().unwrap();
    assert!(damaged[0].contains("was not read"), "{damaged:?}");
    let s = session::sessions(&r, chrono::Utc::now()).unwrap();
    assert!(
        s[0].unreadable.as_ref().unwrap().contains("more than"),
        "{s:?}"
    );
    // The repository still opens (the oversized key slot is skipped) and checks.
    let again = Repository::open(r.storage().clone(), b"pw").unwrap();
    let c = check::check(&again, ReadData::All, &NoProgress).unwrap();
    assert!(
        c.errors.iter().any(|e| e.contains("was not read")),
        "{:?}",
        c.errors
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
}
