//! Small files inline in tree nodes (repository format 3): what is inlined, that it restores
//! byte for byte, validates, diffs and copies, and that a format 2 repository never gets an
//! inline node (an older reader would restore it as an empty file).

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use common::{backup, check, open};
use holdfast_backend_local::LocalStorage;
use holdfast_core::blob::BlobType;
use holdfast_core::config::RepoConfig;
use holdfast_core::keys::KdfParams;
use holdfast_core::progress::NoProgress;
use holdfast_core::repo::InitOptions;
use holdfast_core::restore::{self, RestoreOptions};
use holdfast_core::tree::{NodeKind, Tree};
use holdfast_core::{browse, copy, snapshot, Repository};
use holdfast_storage::{ObjectKind, PutMode, Storage};

fn storage(dir: &Path) -> Arc<dyn Storage> {
    Arc::new(LocalStorage::new(dir))
}

fn init(s: Arc<dyn Storage>, inline_max: u32) -> Repository {
    let opts = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        pack_size: 1 << 20,
        inline_max,
        ..Default::default()
    };
    Repository::init(s, b"pw", &opts).unwrap()
}

/// What an older holdfast wrote: a format 2 config (authenticated, no inline limit).
fn as_format_2(s: &Arc<dyn Storage>, r: &Repository) {
    let mut c: RepoConfig = r.config().clone();
    c.version = 2;
    c.inline_max = None;
    c.seal(r.key());
    s.put(
        ObjectKind::Config,
        "config",
        &serde_json::to_vec_pretty(&c).unwrap(),
        PutMode::Overwrite,
    )
    .unwrap();
}

/// Files of every kind of small: text, binary, empty, exactly the limit, one byte over.
fn source(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("text.txt"), "hello \"inline\" world\n").unwrap();
    fs::write(src.join("binary"), [0xff, 0x00, 0xfe, 0x80, 0x01]).unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    fs::write(src.join("limit"), vec![b'L'; 512]).unwrap();
    fs::write(src.join("over"), vec![b'O'; 513]).unwrap();
    fs::write(src.join("sub/deep"), "deeper\n").unwrap();
    src
}

/// Every file node of the newest snapshot, by name: (size, inline?, blob count).
fn file_nodes(r: &Repository) -> Vec<(String, u64, bool, usize)> {
    let (idx, _) = r.load_index().unwrap();
    let root = newest(r).snapshot.tree;
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(t) = stack.pop() {
        let tree = Tree::decode(&t, &r.read_blob(&idx, BlobType::Tree, &t).unwrap()).unwrap();
        for n in tree.nodes {
            match n.kind {
                NodeKind::Dir => stack.extend(n.subtree),
                NodeKind::File => out.push((
                    n.name.display(),
                    n.size,
                    n.inline.is_some(),
                    n.content.len(),
                )),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

fn newest(r: &Repository) -> snapshot::SnapshotEntry {
    let (mut all, _) = snapshot::load_all(r).unwrap();
    all.sort_by_key(|s| s.snapshot.time);
    all.pop().unwrap()
}

/// Restore the newest snapshot into `to` and return the restored `src`.
fn restore_to(r: &Repository, to: &Path) -> std::path::PathBuf {
    let (idx, _) = r.load_index().unwrap();
    let res = restore::restore(
        r,
        &idx,
        &newest(r),
        &RestoreOptions {
            target: to.to_path_buf(),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert!(res.errors.is_empty(), "{:?}", res.errors);
    to.join("src")
}

fn same_tree(a: &Path, b: &Path) {
    for name in ["text.txt", "binary", "empty", "limit", "over", "sub/deep"] {
        assert_eq!(
            fs::read(a.join(name)).unwrap(),
            fs::read(b.join(name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn files_up_to_the_limit_are_inline_and_restore_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let r = init(storage(&dir.path().join("repo")), 512);
    assert_eq!(r.config().version, 3);
    assert_eq!(r.config().inline_max, Some(512));
    let out = backup(&r, &src).unwrap();
    let nodes = file_nodes(&r);
    let want = [
        ("binary", 5, true, 0),
        ("deep", 7, true, 0),
        ("empty", 0, false, 0),
        ("limit", 512, true, 0),
        ("over", 513, false, 1),
        ("text.txt", 21, true, 0),
    ];
    let got: Vec<_> = nodes
        .iter()
        .map(|(n, s, i, c)| (n.as_str(), *s, *i, *c))
        .collect();
    assert_eq!(got, want);

    // The same source with inlining off stores exactly one more blob per inlined file.
    let off = init(storage(&dir.path().join("off")), 0);
    let out_off = backup(&off, &src).unwrap();
    assert!(file_nodes(&off).iter().all(|(_, _, i, _)| !i));
    assert_eq!(
        out_off.snapshot.summary.blobs_added,
        out.snapshot.summary.blobs_added + 4
    );

    // The file-stream reader (dumps fed back to a database's restore tool) reads it too.
    let (idx, _) = r.load_index().unwrap();
    let root = newest(&r).snapshot.tree;
    let mut got = Vec::new();
    let at = "src/text.txt";
    let n = holdfast_core::stream::read_file(&r, &idx, &root, at, &mut got).unwrap();
    assert_eq!((n, got), (21, fs::read(src.join("text.txt")).unwrap()));

    let report = check(&open(storage(&dir.path().join("repo"))));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let restored = restore_to(&r, &dir.path().join("restored"));
    same_tree(&src, &restored);

    // A restored inline file whose bytes differ (same length) fails validation.
    let (idx, _) = r.load_index().unwrap();
    let tree = newest(&r).snapshot.tree;
    let top = dir.path().join("restored");
    let v = restore::validate(&r, &idx, &tree, &top).unwrap();
    assert!(v.errors.is_empty(), "{:?}", v.errors);
    assert_eq!(v.files, 6);
    fs::write(restored.join("limit"), vec![b'X'; 512]).unwrap();
    let v = restore::validate(&r, &idx, &tree, &top).unwrap();
    assert_eq!(v.errors.len(), 1, "{:?}", v.errors);
    assert!(
        v.errors[0].contains("limit: content differs"),
        "{:?}",
        v.errors
    );
}

#[test]
fn a_changed_inline_file_is_stored_again_and_an_unchanged_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let r = init(storage(&dir.path().join("repo")), 512);
    let first = backup(&r, &src).unwrap();
    // Same size, other bytes, and a later time: a new version of an inline file.
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(src.join("text.txt"), "HELLO \"inline\" WORLD\n").unwrap();
    let second = backup(&r, &src).unwrap();
    assert_eq!(second.snapshot.summary.files_changed, 1);
    assert_eq!(second.snapshot.summary.files_unmodified, 5);
    let restored = restore_to(&r, &dir.path().join("restored"));
    same_tree(&src, &restored);
    // The difference between the two points names the file, although no blob id changed.
    let (idx, _) = r.load_index().unwrap();
    let trees = holdfast_core::trees::Trees::lazy(&r, &idx);
    let mut changes = Vec::new();
    browse::diff(
        &trees,
        Some(&first.snapshot.tree),
        Some(&second.snapshot.tree),
        "",
        &mut changes,
    )
    .unwrap();
    let changed: Vec<_> = changes
        .iter()
        .filter(|c| c.change == 'M')
        .map(|c| c.path.clone())
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed[0].ends_with("/text.txt"), "{changed:?}");
}

#[test]
fn a_format_2_repository_gets_no_inline_nodes_until_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let s = storage(&dir.path().join("repo"));
    let r = init(s.clone(), 512);
    as_format_2(&s, &r);
    let mut r = open(s.clone());
    assert_eq!(r.config().version, 2);
    backup(&r, &src).unwrap();
    assert!(
        file_nodes(&r).iter().all(|(_, _, i, _)| !i),
        "format 2 got inline nodes"
    );
    let restored = restore_to(&r, &dir.path().join("before"));
    same_tree(&src, &restored);

    assert!(r.migrate_config().unwrap());
    assert!(!r.migrate_config().unwrap());
    let r = open(s);
    assert_eq!(r.config().version, 3);
    assert_eq!(r.config().inline_max, Some(512));
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(src.join("sub/deep"), "changed\n").unwrap();
    backup(&r, &src).unwrap();
    let nodes = file_nodes(&r);
    // The unchanged files keep their blobs; the changed one is inline now.
    assert!(
        nodes.iter().any(|(n, _, i, _)| n == "deep" && *i),
        "{nodes:?}"
    );
    assert!(
        nodes
            .iter()
            .any(|(n, _, i, c)| n == "text.txt" && !*i && *c == 1),
        "{nodes:?}"
    );
    let restored = restore_to(&r, &dir.path().join("after"));
    same_tree(&src, &restored);
    assert!(check(&r).errors.is_empty());
}

#[test]
fn a_copy_into_a_format_2_repository_stores_inline_content_as_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let r = init(storage(&dir.path().join("repo")), 512);
    backup(&r, &src).unwrap();
    let ds = storage(&dir.path().join("old"));
    let d = init(ds.clone(), 512);
    as_format_2(&ds, &d);
    let d = open(ds);
    let report = copy::copy(&r, &d, &|_| true, &NoProgress).unwrap();
    assert_eq!(report.copied.len(), 1);
    let nodes = file_nodes(&d);
    assert!(nodes.iter().all(|(_, _, i, _)| !i), "{nodes:?}");
    assert_eq!(
        nodes
            .iter()
            .filter(|(_, s, _, c)| *s > 0 && *c == 1)
            .count(),
        5,
        "{nodes:?}"
    );
    assert!(check(&d).errors.is_empty());
    let restored = restore_to(&d, &dir.path().join("restored"));
    same_tree(&src, &restored);

    // Into a format 3 repository the nodes stay inline.
    let n = init(storage(&dir.path().join("new")), 512);
    copy::copy(&r, &n, &|_| true, &NoProgress).unwrap();
    assert_eq!(file_nodes(&n), file_nodes(&r));
}

#[test]
fn an_inline_limit_out_of_bounds_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        inline_max: 16 * 1024 + 1,
        ..Default::default()
    };
    let err = Repository::init(storage(dir.path()), b"pw", &opts).unwrap_err();
    assert!(err.to_string().contains("inline limit"), "{err}");
}
