//! Unit tests of the backup walk: [`super::BackupOptions::read_from`], and the bound on what a
//! walk holds at once.

use std::cell::Cell;
use std::fs;
use std::sync::Arc;

use super::{backup, BackupOptions};
use crate::keys::KdfParams;
use crate::progress::NoProgress;
use crate::repo::{InitOptions, Repository};
use crate::restore::{restore, RestoreOptions};
use crate::snapshot;

thread_local! {
    /// What the last backup on this thread held at most: tree ids of finished directories whose
    /// parent was not stored yet, and file results that came before their directory.
    pub(super) static PEAKS: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// Directories `width` wide and `depth` deep below `root`, each leaf with `files` files.
fn grow(root: &std::path::Path, width: usize, depth: usize, files: usize) -> usize {
    if depth == 0 {
        for f in 0..files {
            fs::write(
                root.join(format!("f{f}")),
                format!("{} {f}", root.display()),
            )
            .unwrap();
        }
        return 0;
    }
    let mut dirs = 0;
    for d in 0..width {
        let sub = root.join(format!("d{d}"));
        fs::create_dir(&sub).unwrap();
        dirs += 1 + grow(&sub, width, depth - 1, files);
    }
    dirs
}

/// A backup stores each directory's tree as soon as its subtree is finished, so the trees it
/// holds at once are bounded by the open path (depth × width), not by the number of
/// directories; and a no-change backup (parent trees read per directory) and the restore see
/// the same tree.
#[test]
fn walk_holds_only_the_open_path() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let (width, depth) = (6, 3);
    let dirs = grow(&src, width, depth, 3);
    assert_eq!(dirs, 6 + 36 + 216);
    let storage = Arc::new(holdfast_storage::MemoryStorage::new());
    let init = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        ..Default::default()
    };
    let repo = Repository::init(storage, b"pw", &init).unwrap();
    for threads in [1, 2] {
        let opts = BackupOptions {
            paths: vec![src.clone()],
            threads,
            parent: super::ParentChoice::None,
            ..Default::default()
        };
        PEAKS.with(|p| p.set((usize::MAX, usize::MAX)));
        let out = backup(&repo, &opts, &NoProgress).unwrap();
        assert_eq!(out.snapshot.summary.dirs as usize, dirs + 1);
        let (trees, early) = PEAKS.with(|p| p.get());
        // One walker: the finished children of each open directory. Two walkers (the top two
        // levels are walked in parallel): each open path, plus the finished top levels.
        let bound = if threads == 1 {
            depth * width
        } else {
            threads * depth * width + width * width
        };
        assert!(
            trees <= bound && trees > 0,
            "{threads} walker(s) held {trees} trees at once (bound {bound}, {dirs} directories)"
        );
        assert!(early <= 3 * dirs, "{early}");
    }
    // The no-change backup compares with the parent directory by directory.
    let opts = BackupOptions {
        paths: vec![src.clone()],
        threads: 1,
        ..Default::default()
    };
    let again = backup(&repo, &opts, &NoProgress).unwrap();
    assert_eq!(again.snapshot.summary.files_unmodified as usize, 216 * 3);
    assert_eq!(again.snapshot.summary.files_new, 0);
    assert!(PEAKS.with(|p| p.get()).0 <= depth * width);
    let (index, _) = repo.load_index().unwrap();
    let (all, _) = snapshot::load_all(&repo).unwrap();
    let target = dir.path().join("restored");
    let r = restore(
        &repo,
        &index,
        all.last().unwrap(),
        &RestoreOptions {
            target: target.clone(),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.files as usize, 216 * 3);
    assert_eq!(
        fs::read_to_string(target.join("src/d5/d0/d3/f2")).unwrap(),
        format!("{} 2", src.join("d5/d0/d3").display())
    );
}

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
