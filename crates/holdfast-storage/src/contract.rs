//! The [`Storage`] contract as an executable check, for backend tests.
//!
//! [`check`] drives a fresh store through every property the engine relies on and panics with
//! a message naming the first one it breaks. The in-memory store and the local backend both run
//! it, so a test that passes on [`crate::MemoryStorage`] does so under the rules a real disk
//! keeps.

use crate::{ObjectInfo, ObjectKind, PutMode, Storage, StorageError};

/// Check the contract on `s`, which must be a store nothing was created in yet. Panics naming
/// the property that does not hold.
pub fn check(s: &dyn Storage) {
    s.create().expect("create on an empty store");
    assert!(
        s.create().is_err(),
        "create must refuse a store that is already created"
    );

    // Atomic put, get, ranged get.
    s.put(ObjectKind::Pack, "abcd", b"hello", PutMode::CreateNew)
        .expect("put");
    assert_eq!(s.get(ObjectKind::Pack, "abcd").expect("get"), b"hello");
    assert_eq!(
        s.get_range(ObjectKind::Pack, "abcd", 1, 3)
            .expect("ranged get"),
        b"ell"
    );
    assert_eq!(
        s.get_range(ObjectKind::Pack, "abcd", 5, 0)
            .expect("empty ranged get at the end"),
        b""
    );
    match s.get_range(ObjectKind::Pack, "abcd", 2, 5) {
        Err(StorageError::ShortRead { size: 5, .. }) => {}
        other => panic!("a read past the end must be ShortRead with the size: {other:?}"),
    }
    match s.get_range(ObjectKind::Pack, "abcd", 1 << 40, 2) {
        Err(StorageError::ShortRead { .. }) => {}
        other => panic!("a read at an absurd offset must be ShortRead: {other:?}"),
    }

    // Put-if-absent and overwrite.
    match s.put(ObjectKind::Pack, "abcd", b"other", PutMode::CreateNew) {
        Err(StorageError::AlreadyExists { .. }) => {}
        other => panic!("CreateNew over an existing object must be AlreadyExists: {other:?}"),
    }
    assert_eq!(
        s.get(ObjectKind::Pack, "abcd").expect("get"),
        b"hello",
        "a refused CreateNew must leave the object as it was"
    );
    s.put(ObjectKind::Session, "01", b"v1", PutMode::Overwrite)
        .expect("overwrite of a new name");
    s.put(ObjectKind::Session, "01", b"v2", PutMode::Overwrite)
        .expect("overwrite");
    assert_eq!(s.get(ObjectKind::Session, "01").expect("get"), b"v2");

    // Kinds are separate namespaces.
    assert!(
        s.get(ObjectKind::Index, "abcd")
            .expect_err("another kind's name")
            .is_not_found(),
        "a name of one kind must not be found under another"
    );

    // List: sorted, with sizes, per kind; config listed as `config`.
    s.put(ObjectKind::Pack, "0123", b"xy", PutMode::CreateNew)
        .expect("put");
    assert_eq!(
        s.list(ObjectKind::Pack).expect("list"),
        vec![
            ObjectInfo {
                name: "0123".into(),
                size: 2
            },
            ObjectInfo {
                name: "abcd".into(),
                size: 5
            },
        ]
    );
    assert!(s.list(ObjectKind::Config).expect("list config").is_empty());
    s.put(ObjectKind::Config, "config", b"{}", PutMode::CreateNew)
        .expect("put config");
    assert_eq!(
        s.list(ObjectKind::Config).expect("list config"),
        vec![ObjectInfo {
            name: "config".into(),
            size: 2
        }]
    );

    // Batched existence, in order.
    assert_eq!(
        s.exists_many(
            ObjectKind::Pack,
            &["abcd".into(), "ef".into(), "0123".into()]
        )
        .expect("exists_many"),
        vec![true, false, true]
    );

    // Names that could escape a directory are refused everywhere.
    for bad in ["../config", "AB", "", "ab/cd", "config"] {
        assert!(
            s.put(ObjectKind::Key, bad, b"x", PutMode::CreateNew)
                .is_err(),
            "put must refuse the name {bad:?}"
        );
        assert!(
            s.get(ObjectKind::Key, bad).is_err(),
            "get must refuse {bad:?}"
        );
    }
    assert!(
        s.put(ObjectKind::Key, &"a".repeat(129), b"x", PutMode::CreateNew)
            .is_err(),
        "names longer than 128 characters must be refused"
    );

    // When it was written, if the store can say.
    match s.modified(ObjectKind::Pack, "abcd") {
        Ok(Some(t)) => assert!(
            t <= std::time::SystemTime::now() + std::time::Duration::from_secs(5),
            "modified must not be in the future"
        ),
        Ok(None) => {}
        Err(e) => panic!("modified of an existing object: {e}"),
    }

    // Delete: idempotent; gone from get, list and exists.
    s.flush().expect("flush");
    s.delete(ObjectKind::Pack, "abcd").expect("delete");
    s.delete(ObjectKind::Pack, "abcd")
        .expect("deleting a missing object is not an error");
    assert!(s
        .get(ObjectKind::Pack, "abcd")
        .expect_err("deleted")
        .is_not_found());
    assert_eq!(
        s.list(ObjectKind::Pack)
            .expect("list")
            .into_iter()
            .map(|o| o.name)
            .collect::<Vec<_>>(),
        vec!["0123"]
    );
    assert_eq!(
        s.exists_many(ObjectKind::Pack, &["abcd".into()])
            .expect("exists_many"),
        vec![false]
    );
    s.flush().expect("flush");

    // Atomic puts leave no temporaries; object lock calls answer "none" where there is none.
    let (n, _) = s
        .stale_temporaries(std::time::Duration::ZERO, false)
        .expect("stale_temporaries");
    assert_eq!(n, 0, "a finished put must leave no temporary behind");
    if s.object_lock().expect("object_lock").is_none() {
        assert!(
            s.retain(ObjectKind::Pack, "0123", crate::LockMode::Compliance, 0)
                .is_err(),
            "a store without object lock must refuse to retain"
        );
        assert_eq!(
            s.retention(ObjectKind::Pack, "0123").expect("retention"),
            None
        );
    }
    assert!(s.write_concurrency() >= 1 && s.read_concurrency() >= 1);
}
