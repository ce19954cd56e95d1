//! Unit tests of the backup walk: [`super::BackupOptions::read_from`].

use std::fs;
use std::sync::Arc;

use super::{backup, BackupOptions};
use crate::keys::KdfParams;
use crate::progress::NoProgress;
use crate::repo::{InitOptions, Repository};
use crate::restore::{restore, RestoreOptions};
use crate::snapshot;

/// A path read from elsewhere (a file-system snapshot) is recorded under its own path:
/// the snapshot's paths, the tree's root name, excludes and the next run's parent match.
#[test]
fn read_from_records_the_original_path() {
    let dir = tempfile::tempdir().unwrap();
    let orig = dir.path().join("srv/data");
    fs::create_dir_all(&orig).unwrap();
    fs::write(orig.join("a"), b"live, changed since").unwrap();
    let snap = dir.path().join("srv/.snap-x");
    fs::create_dir_all(snap.join("sub")).unwrap();
    fs::write(snap.join("a"), b"as of the snapshot").unwrap();
    fs::write(snap.join("sub/skip.log"), b"excluded by its recorded path").unwrap();
    let storage = Arc::new(holdfast_storage::MemoryStorage::new());
    let opts = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        ..Default::default()
    };
    let repo = Repository::init(storage, b"pw", &opts).unwrap();
    let opts = BackupOptions {
        paths: vec![orig.clone()],
        read_from: vec![(orig.clone(), snap.clone())],
        excludes: vec![format!("{}/sub/*.log", orig.display())],
        ..Default::default()
    };
    let out = backup(&repo, &opts, &NoProgress).unwrap();
    assert_eq!(out.snapshot.paths, vec![orig.display().to_string()]);
    assert_eq!(
        out.snapshot.summary.files_new, 1,
        "{:?}",
        out.snapshot.summary
    );
    let (index, _) = repo.load_index().unwrap();
    let (all, _) = snapshot::load_all(&repo).unwrap();
    let target = dir.path().join("restored");
    let r = restore(
        &repo,
        &index,
        &all[0],
        &RestoreOptions {
            target: target.clone(),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        fs::read(target.join("data/a")).unwrap(),
        b"as of the snapshot"
    );
    assert!(target.join("data/sub").is_dir());
    assert!(!target.join("data/sub/skip.log").exists());
    assert!(!target.join(".snap-x").exists());
    // The next run finds the first as its parent (same recorded paths): nothing re-read.
    let again = backup(&repo, &opts, &NoProgress).unwrap();
    assert_eq!(again.snapshot.parent, out.id);
    assert_eq!(again.snapshot.summary.files_unmodified, 1);
    // A read_from entry must name a path that is backed up.
    let bad = BackupOptions {
        paths: vec![orig.clone()],
        read_from: vec![(dir.path().join("other"), snap)],
        ..Default::default()
    };
    let e = backup(&repo, &bad, &NoProgress).unwrap_err().to_string();
    assert!(e.contains("not one of the paths backed up"), "{e}");
}
