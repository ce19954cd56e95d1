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
    /// How many directories the last backup on this thread sent to the assembler (the others
    /// kept their parent snapshot's tree).
    pub(super) static ASSEMBLED: Cell<usize> = const { Cell::new(usize::MAX) };
    /// The packs the last backup on this thread confirmed before recording its snapshot.
    pub(super) static NEEDED: std::cell::RefCell<std::collections::HashSet<crate::id::Id>> =
        std::cell::RefCell::new(std::collections::HashSet::new());
}

/// Every tree id of a snapshot, from its root.
fn tree_ids(repo: &Repository, root: crate::id::Id) -> Vec<crate::id::Id> {
    let (index, _) = repo.load_index().unwrap();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let data = repo
            .read_blob(&index, crate::blob::BlobType::Tree, &out[i])
            .unwrap();
        let t = crate::tree::Tree::decode(&out[i], &data).unwrap();
        out.extend(t.nodes.iter().filter_map(|n| n.subtree));
        i += 1;
    }
    out
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

fn test_repo() -> Repository {
    let storage = Arc::new(holdfast_storage::MemoryStorage::new());
    let init = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        ..Default::default()
    };
    Repository::init(storage, b"pw", &init).unwrap()
}

/// Back up `src` (parent found automatically, two walkers) and return the outcome and how
/// many directories were assembled.
fn backup_counted(repo: &Repository, src: &std::path::Path) -> (super::BackupOutcome, usize) {
    let opts = BackupOptions {
        paths: vec![src.to_path_buf()],
        threads: 2,
        ..Default::default()
    };
    ASSEMBLED.with(|a| a.set(usize::MAX));
    let out = backup(repo, &opts, &NoProgress).unwrap();
    (out, ASSEMBLED.with(|a| a.get()))
}

/// The node at `rel` (names below the backed-up directory) in a snapshot's tree.
fn node_at(repo: &Repository, snap: &snapshot::Snapshot, rel: &[&str]) -> crate::tree::Node {
    let (index, _) = repo.load_index().unwrap();
    let tree = |id: &crate::id::Id| {
        let data = repo
            .read_blob(&index, crate::blob::BlobType::Tree, id)
            .unwrap();
        crate::tree::Tree::decode(id, &data).unwrap()
    };
    let mut t = tree(&snap.tree);
    let mut node = t.nodes[0].clone(); // the backed-up directory
    for name in rel {
        t = tree(&node.subtree.expect("a directory"));
        node = t.get(name.as_bytes()).expect("in the tree").clone();
    }
    node
}

fn restored(repo: &Repository, out: &super::BackupOutcome, target: &std::path::Path) {
    let (index, _) = repo.load_index().unwrap();
    let (all, _) = snapshot::load_all(repo).unwrap();
    let snap = all.iter().find(|s| Some(s.id) == out.id).unwrap();
    let r = restore(
        repo,
        &index,
        snap,
        &RestoreOptions {
            target: target.to_path_buf(),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

/// A directory whose every entry equals the parent snapshot's keeps the parent's tree (nothing
/// is encoded, hashed or stored for it); a change anywhere below a directory makes it, and
/// only the directories on the path to the change, be stored again, and the restore has it.
#[test]
fn unchanged_directories_keep_their_parent_tree_and_changes_store_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let dirs = grow(&src, 3, 3, 2); // 3 + 9 + 27 directories below src
    let repo = test_repo();
    let (first, n) = backup_counted(&repo, &src);
    assert_eq!(n, dirs + 1);
    assert_eq!(first.snapshot.summary.files_new, 27 * 2);

    // Nothing changed: no directory is assembled, the root tree is the parent's.
    let (same, n) = backup_counted(&repo, &src);
    assert_eq!(n, 0, "no-change backup assembled {n} directories");
    assert_eq!(same.snapshot.tree, first.snapshot.tree);
    assert_eq!(same.snapshot.summary.files_unmodified, 27 * 2);
    assert_eq!(same.snapshot.summary.dirs as usize, dirs + 1);

    // One file changed three levels down: src, d1, d1/d2 and d1/d2/d0 are stored again.
    fs::write(src.join("d1/d2/d0/f1"), b"changed, and longer than before").unwrap();
    let (changed, n) = backup_counted(&repo, &src);
    assert_eq!(n, 4);
    assert_eq!(changed.snapshot.summary.files_changed, 1);
    assert_ne!(changed.snapshot.tree, first.snapshot.tree);
    // A sibling directory keeps its tree id from the first snapshot.
    assert_eq!(
        node_at(&repo, &changed.snapshot, &["d1", "d0"]).subtree,
        node_at(&repo, &first.snapshot, &["d1", "d0"]).subtree
    );

    // A new entry, a removed entry and a directory's own mode each change their parent.
    fs::write(src.join("d0/new"), b"new file").unwrap();
    fs::remove_file(src.join("d2/d2/d2/f0")).unwrap();
    let mut p = fs::metadata(src.join("d2/d0")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o700);
    fs::set_permissions(src.join("d2/d0"), p).unwrap();
    let (more, n) = backup_counted(&repo, &src);
    // src, d0 (new file); d2, d2/d2, d2/d2/d2 (removal); d2/d0's own tree is unchanged (its
    // mode is in d2's tree, which is stored anyway).
    assert_eq!(n, 5);
    assert_eq!(more.snapshot.summary.files_new, 1);
    assert_eq!(node_at(&repo, &more.snapshot, &["d2", "d0"]).mode, 0o700);
    let target = dir.path().join("restored");
    restored(&repo, &more, &target);
    assert_eq!(
        fs::read(target.join("src/d1/d2/d0/f1")).unwrap(),
        b"changed, and longer than before"
    );
    assert_eq!(fs::read(target.join("src/d0/new")).unwrap(), b"new file");
    assert!(!target.join("src/d2/d2/d2/f0").exists());
    assert!(target.join("src/d2/d2/d2/f1").exists());
    assert_eq!(
        fs::read_to_string(target.join("src/d0/d1/d2/f1")).unwrap(),
        format!("{} 1", src.join("d0/d1/d2").display())
    );
}

/// Extended attributes are reused from the parent only while the ctime is unchanged; setting
/// one changes the ctime (not the size or mtime), so the next backup lists them again and
/// stores the new value, and the directory holding the file is stored again.
#[test]
fn a_changed_extended_attribute_is_backed_up_with_its_new_value() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    let f = src.join("sub/f");
    fs::write(&f, b"content stays").unwrap();
    xattr::set(&f, "user.holdfast", b"one").expect("user xattrs on the test file system");
    let repo = test_repo();
    let (first, _) = backup_counted(&repo, &src);
    let before = fs::symlink_metadata(&f).unwrap();
    // Past the file system's timestamp granularity, so the ctime moves.
    std::thread::sleep(std::time::Duration::from_millis(30));
    xattr::set(&f, "user.holdfast", b"two").unwrap();
    only_the_ctime_moved(&before, &fs::symlink_metadata(&f).unwrap());
    let (second, n) = backup_counted(&repo, &src);
    assert_eq!(n, 2, "src and sub are stored again");
    // The ctime moved, so the content is read again too (a file is taken from the parent only
    // when size, mtime, ctime and inode are all unchanged).
    assert_eq!(second.snapshot.summary.files_changed, 1);
    let x = node_at(&repo, &second.snapshot, &["sub", "f"]).xattrs;
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].value, hex::encode(b"two"));
    assert_eq!(
        node_at(&repo, &first.snapshot, &["sub", "f"]).xattrs[0].value,
        hex::encode(b"one")
    );
    let target = dir.path().join("restored");
    restored(&repo, &second, &target);
    assert_eq!(
        xattr::get(target.join("src/sub/f"), "user.holdfast")
            .unwrap()
            .as_deref(),
        Some(&b"two"[..])
    );
}

/// A file rewritten with content of the same size and its mtime put back has a new ctime:
/// it is read again (not taken from the parent), and so is one whose size changed.
#[test]
fn a_file_rewritten_with_the_same_mtime_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let (same_size, longer) = (src.join("same-size"), src.join("longer"));
    fs::write(&same_size, b"aaaa").unwrap();
    fs::write(&longer, b"aaaa").unwrap();
    let repo = test_repo();
    backup_counted(&repo, &src);
    let before = fs::symlink_metadata(&same_size).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(30));
    for (p, data) in [(&same_size, &b"bbbb"[..]), (&longer, &b"bbbbbbbb"[..])] {
        let mtime = fs::metadata(p).unwrap().modified().unwrap();
        fs::write(p, data).unwrap();
        fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }
    only_the_ctime_moved(&before, &fs::symlink_metadata(&same_size).unwrap());
    let (second, _) = backup_counted(&repo, &src);
    assert_eq!(
        second.snapshot.summary.files_changed, 2,
        "{:?}",
        second.snapshot.summary
    );
    assert_eq!(second.snapshot.summary.files_unmodified, 0);
    let target = dir.path().join("restored");
    restored(&repo, &second, &target);
    assert_eq!(fs::read(target.join("src/same-size")).unwrap(), b"bbbb");
    assert_eq!(fs::read(target.join("src/longer")).unwrap(), b"bbbbbbbb");
}

/// A reused tree counts as referenced by the new snapshot like a stored one: its pack is among
/// those confirmed before the snapshot is recorded (so garbage collection cannot take it while
/// the backup runs). Here the reused tree's pack holds nothing else the new snapshot uses.
#[test]
fn a_reused_tree_pack_is_confirmed_before_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("e/deeper")).unwrap();
    fs::write(src.join("a"), b"first").unwrap();
    fs::write(src.join("e/empty"), b"").unwrap();
    std::os::unix::fs::symlink("empty", src.join("e/link")).unwrap();
    let repo = test_repo();
    let (first, _) = backup_counted(&repo, &src);
    fs::write(src.join("a"), b"second, longer").unwrap();
    let (second, n) = backup_counted(&repo, &src);
    assert_eq!(n, 1, "only src is stored again");
    let reused = node_at(&repo, &second.snapshot, &["e"]).subtree.unwrap();
    assert_eq!(
        Some(reused),
        node_at(&repo, &first.snapshot, &["e"]).subtree
    );
    let (index, _) = repo.load_index().unwrap();
    let needed = NEEDED.with(|n| n.borrow().clone());
    for id in tree_ids(&repo, second.snapshot.tree) {
        let (pack, _) = index.get(&id).unwrap();
        assert!(
            needed.contains(&pack),
            "tree {id} in pack {pack} not confirmed"
        );
    }
    let (old_pack, _) = index.get(&reused).unwrap();
    let (new_pack, _) = index.get(&second.snapshot.tree).unwrap();
    assert_ne!(
        old_pack, new_pack,
        "the reused tree is in the first backup's pack"
    );
}

/// Size, mtime and inode are as `before`; the ctime moved (so a test of the ctime shortcut
/// cannot pass by accident).
fn only_the_ctime_moved(before: &fs::Metadata, after: &fs::Metadata) {
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (after.size(), after.mtime(), after.mtime_nsec(), after.ino()),
        (
            before.size(),
            before.mtime(),
            before.mtime_nsec(),
            before.ino()
        )
    );
    assert_ne!(
        (after.ctime(), after.ctime_nsec()),
        (before.ctime(), before.ctime_nsec())
    );
}
