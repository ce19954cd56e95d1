//! A compact index matches blob ids on their first 128 bits. These tests hold the other half of
//! that bargain through real files: an index entry that shares a blob's prefix but not its id
//! never makes a read return the other blob's bytes (the decrypted blob is checked against the
//! whole requested id), and `check` compares whole ids.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use holdfast_backend_local::LocalStorage;
use holdfast_core::backup::{self, BackupOptions};
use holdfast_core::blob::BlobType;
use holdfast_core::check::{self, ReadData};
use holdfast_core::index::{IdMode, IndexFile};
use holdfast_core::keys::KdfParams;
use holdfast_core::progress::NoProgress;
use holdfast_core::repo::InitOptions;
use holdfast_core::restore::{self, RestoreOptions};
use holdfast_core::{snapshot, Error, Id, Repository};
use holdfast_storage::{ObjectKind, Storage};

fn init(dir: &Path) -> Repository {
    let s: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir));
    // Small files as data blobs (not inline): the index is what this test is about.
    let opts = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        inline_max: 0,
        ..Default::default()
    };
    Repository::init(s, b"pw", &opts).unwrap()
}

/// Replace every index file by one where blob `a`'s entry is swapped for an entry whose id
/// has `a`'s first 16 bytes (and a different tail) and lies where blob `b` is.
fn forge_prefix_twin(repo: &Repository, a: Id, b: Id) -> Id {
    let (idx, files) = repo.load_index_as(IdMode::Full).unwrap();
    let (_, bl) = idx.get(&b).unwrap();
    let mut twin = b;
    twin.0[..16].copy_from_slice(&a.0[..16]);
    assert_ne!(twin, a);
    let mut by_pack: std::collections::BTreeMap<Id, Vec<holdfast_core::pack::PackEntry>> =
        Default::default();
    for (id, pack, l) in idx.iter_all() {
        let (id, l) = if id == a { (twin, bl) } else { (id, l) };
        by_pack
            .entry(pack)
            .or_default()
            .push(holdfast_core::pack::PackEntry {
                blob_type: l.blob_type,
                id,
                offset: l.offset,
                length: l.length,
                raw_len: l.raw_len,
            });
    }
    let f = IndexFile {
        packs: by_pack.into_iter().collect(),
        superseded: vec![],
    };
    let new = repo.write_index_file(&f).unwrap();
    for old in files.iter().filter(|f| **f != new) {
        repo.storage()
            .delete(ObjectKind::Index, &old.to_hex())
            .unwrap();
    }
    repo.storage().flush().unwrap();
    twin
}

#[test]
fn an_entry_sharing_a_prefix_never_returns_the_other_blobs_bytes() {
    let d = tempfile::tempdir().unwrap();
    let repo = init(&d.path().join("repo"));
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"the content of file a").unwrap();
    fs::write(src.join("b"), b"the content of file b, another blob").unwrap();
    backup::backup(
        &repo,
        &BackupOptions {
            paths: vec![src.clone()],
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    let a = repo.key().blob_id(b"the content of file a");
    let b = repo.key().blob_id(b"the content of file b, another blob");
    let twin = forge_prefix_twin(&repo, a, b);

    // Through real files: the compact index answers for `a` with the twin's entry...
    let repo = Repository::open(Arc::new(LocalStorage::new(d.path().join("repo"))), b"pw").unwrap();
    let (idx, _) = repo.load_index().unwrap();
    assert_eq!(idx.mode(), IdMode::Compact);
    assert_eq!(idx.get(&a).unwrap().1.offset, idx.get(&b).unwrap().1.offset);
    // ...and reading `a` through it is refused as damage, not answered with b's bytes.
    let err = repo.read_blob(&idx, BlobType::Data, &a).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert_eq!(
        repo.read_blob(&idx, BlobType::Data, &b).unwrap(),
        b"the content of file b, another blob"
    );

    // A restore names file a as damaged and restores b.
    let (all, _) = snapshot::load_all(&repo).unwrap();
    let out = d.path().join("out");
    let res = restore::restore(
        &repo,
        &idx,
        all.last().unwrap(),
        &RestoreOptions {
            target: out.clone(),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert_eq!(res.errors.len(), 1, "{:?}", res.errors);
    assert!(res.errors[0].contains("/a"), "{:?}", res.errors);
    assert_ne!(
        fs::read(out.join("src/a")).unwrap_or_default(),
        b"the content of file b, another blob"
    );
    assert_eq!(
        fs::read(out.join("src/b")).unwrap(),
        b"the content of file b, another blob"
    );

    // check compares whole ids: blob a is missing from the index (the twin is not it).
    let report = check::check(&repo, ReadData::None, &NoProgress).unwrap();
    assert!(!report.ok(), "{report:?}");
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains(&a.to_hex()) && e.contains("missing from the index")),
        "{:?}",
        report.errors
    );
    assert!(!report.errors.iter().any(|e| e.contains(&twin.to_hex())));
}
