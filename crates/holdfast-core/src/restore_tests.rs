//! Unit tests of restore: include selection, and the bounds on what a restore holds at once.

use std::fs;
use std::sync::Arc;

use super::{restore, selected, RestoreOptions};
use crate::backup::{backup, BackupOptions};
use crate::keys::KdfParams;
use crate::progress::NoProgress;
use crate::repo::{InitOptions, Repository};
use crate::snapshot;
use crate::trees::Trees;

thread_local! {
    /// The most file-record bytes the last restore on this thread held in one round.
    pub(super) static PEAK_ROUND: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// A round budget for restores on this thread instead of `ROUND_BYTES`.
    pub(super) static ROUND_BUDGET: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

fn p(s: &str) -> Vec<Vec<u8>> {
    s.split('/').map(|c| c.as_bytes().to_vec()).collect()
}

#[test]
fn include_selection() {
    let inc = vec![p("src/lib")];
    assert_eq!(selected(&p("src"), &inc), Some(false));
    assert_eq!(selected(&p("src/lib"), &inc), Some(true));
    assert_eq!(selected(&p("src/lib/a.rs"), &inc), Some(true));
    assert_eq!(selected(&p("src/bin"), &inc), None);
    assert_eq!(selected(&p("docs"), &[]), Some(true));
}

/// A snapshot of `dirs` directories of `files` files each, in a fresh in-memory repository.
fn snapshot_of(dirs: usize, files: usize) -> (tempfile::TempDir, Repository) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for d in 0..dirs {
        let sub = src.join(format!("d{d:02}"));
        fs::create_dir_all(&sub).unwrap();
        for f in 0..files {
            fs::write(sub.join(format!("f{f:04}")), format!("{d} {f}")).unwrap();
        }
    }
    let storage = Arc::new(holdfast_storage::MemoryStorage::new());
    let init = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        ..Default::default()
    };
    let repo = Repository::init(storage, b"pw", &init).unwrap();
    let opts = BackupOptions {
        paths: vec![src],
        ..Default::default()
    };
    backup(&repo, &opts, &NoProgress).unwrap();
    (dir, repo)
}

/// Restore hands file contents to the workers in rounds while it walks: it never holds more
/// than one round of files, however many the snapshot has, and every file comes back.
#[test]
fn restore_holds_one_round_of_files() {
    // A small budget so that 8,000 files make a dozen rounds.
    let budget = 256 << 10;
    ROUND_BUDGET.with(|b| b.set(Some(budget)));
    let (dirs, files) = (3, 2735);
    let (dir, repo) = snapshot_of(dirs, files);
    let (index, _) = repo.load_index().unwrap();
    let (all, _) = snapshot::load_all(&repo).unwrap();
    let target = dir.path().join("restored");
    PEAK_ROUND.with(|p| p.set(usize::MAX));
    let r = restore(
        &repo,
        &index,
        &all[0],
        &RestoreOptions {
            target: target.clone(),
            threads: 2,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    ROUND_BUDGET.with(|b| b.set(None));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.files as usize, dirs * files);
    let peak = PEAK_ROUND.with(|p| p.get());
    assert!(
        peak <= budget && peak > budget / 2,
        "held {peak} bytes of file records at once (budget {budget}) of {} files",
        dirs * files
    );
    // Every file, with its own content: the small files are inline and go to the workers
    // many to a work item.
    for d in 0..dirs {
        for f in 0..files {
            let path = target.join(format!("src/d{d:02}/f{f:04}"));
            assert_eq!(fs::read_to_string(&path).unwrap(), format!("{d} {f}"));
        }
    }
    // An include that is not in the snapshot is refused before anything is written.
    let elsewhere = dir.path().join("other");
    let e = restore(
        &repo,
        &index,
        &all[0],
        &RestoreOptions {
            target: elsewhere.clone(),
            include: vec!["src/d01/f0000".into(), "src/nope".into()],
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("src/nope"), "{e}");
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
}

/// Trees read ahead are held as stored bytes within a budget; past it, they are read on
/// demand, and a walk that takes them leaves nothing held.
#[test]
fn trees_read_ahead_within_a_budget() {
    let (_dir, repo) = snapshot_of(20, 3);
    let (index, _) = repo.load_index().unwrap();
    let (all, _) = snapshot::load_all(&repo).unwrap();
    let root = all[0].snapshot.tree;
    let everything = Trees::prefetch(&repo, &index, &[root], &|_| true);
    assert_eq!(everything.prefetched(), 22, "root, src and 20 directories");
    let one = everything.held_bytes() / 22;
    let budget = 5 * one;
    let some = Trees::prefetch_within(&repo, &index, &[root], &|_| true, budget);
    assert!(
        some.held_bytes() <= budget,
        "{} > {budget}",
        some.held_bytes()
    );
    assert!(some.prefetched() < 22 && some.prefetched() > 0);
    // A walk sees every tree, read ahead or not, and holds nothing after taking them.
    let mut stack = vec![root];
    let mut seen = 0;
    while let Some(id) = stack.pop() {
        let t = some.take(&id).unwrap();
        seen += 1;
        stack.extend(t.nodes.iter().filter_map(|n| n.subtree));
    }
    assert_eq!(seen, 22);
    assert_eq!((some.prefetched(), some.held_bytes()), (0, 0));
}
