//! The engine on the in-memory store: backup, restore, check, forget and prune work there as
//! on a disk, and the fault-injecting wrapper counts what each step asks of the store.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use holdfast_core::backup::{self, BackupOptions};
use holdfast_core::check::{self, ReadData};
use holdfast_core::keys::KdfParams;
use holdfast_core::progress::NoProgress;
use holdfast_core::prune::{self, PruneOptions};
use holdfast_core::repo::InitOptions;
use holdfast_core::restore::{self, RestoreOptions};
use holdfast_core::retention::KeepPolicy;
use holdfast_core::{snapshot, Repository};
use holdfast_storage::{Faulty, MemoryStorage, ObjectKind, Storage};

fn init(s: Arc<dyn Storage>) -> Repository {
    let opts = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        pack_size: 1 << 20,
        ..Default::default()
    };
    Repository::init(s, b"pw", &opts).unwrap()
}

/// `n` incompressible bytes (xorshift), different for each seed.
fn data(seed: u8, n: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(seed);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn backup(r: &Repository, src: &Path) -> holdfast_core::Id {
    let opts = BackupOptions {
        paths: vec![src.to_path_buf()],
        ..Default::default()
    };
    backup::backup(r, &opts, &NoProgress).unwrap().id.unwrap()
}

/// Restore the newest snapshot into `out` and return the bytes of `src/NAME`.
fn restore_newest(r: &Repository, out: &Path, name: &str) -> Vec<u8> {
    let (idx, _) = r.load_index().unwrap();
    let (mut all, bad) = snapshot::load_all(r).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    all.sort_by_key(|s| s.snapshot.time);
    let res = restore::restore(
        r,
        &idx,
        all.last().unwrap(),
        &RestoreOptions {
            target: out.to_path_buf(),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert!(res.errors.is_empty(), "{:?}", res.errors);
    fs::read(out.join("src").join(name)).unwrap()
}

#[test]
fn backup_restore_check_prune_in_memory() {
    let d = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemoryStorage::new());
    let r = init(mem.clone());
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), data(1, 2_500_000)).unwrap();
    fs::write(src.join("small"), b"small file").unwrap();
    backup(&r, &src);
    assert!(!mem.names(ObjectKind::Pack).is_empty());
    assert_eq!(mem.names(ObjectKind::Snapshot).len(), 1);
    assert!(
        mem.pending().is_empty(),
        "a finished backup leaves nothing that a crash could lose: {:?}",
        mem.pending()
    );

    // A new version of the big file, then keep only the newest snapshot.
    fs::write(src.join("a"), data(2, 1_500_000)).unwrap();
    backup(&r, &src);
    let pack_bytes = |s: &MemoryStorage| -> u64 {
        s.list(ObjectKind::Pack)
            .unwrap()
            .iter()
            .map(|o| o.size)
            .sum()
    };
    let bytes_before = pack_bytes(&mem);
    let forgotten = prune::forget(
        &r,
        &KeepPolicy {
            last: Some(1),
            ..Default::default()
        },
        chrono::Utc::now(),
        false,
    )
    .unwrap();
    assert_eq!(
        forgotten.iter().filter(|f| f.reasons.is_empty()).count(),
        1,
        "{forgotten:?}"
    );
    assert_eq!(mem.names(ObjectKind::Snapshot).len(), 1);
    let rep = prune::prune(&r, &PruneOptions::default(), &NoProgress).unwrap();
    assert!(rep.packs_deleted >= 1, "{rep:?}");
    assert!(
        pack_bytes(&mem) + 1_000_000 < bytes_before,
        "the first version's data is gone: {} of {bytes_before} bytes left",
        pack_bytes(&mem)
    );
    let c = check::check(&r, ReadData::All, &NoProgress).unwrap();
    assert!(c.ok(), "{:?}", c.errors);
    assert_eq!(c.snapshots, 1);

    // A fresh open of the same store (as a second process would) restores the newest data.
    let r2 = Repository::open(mem.clone(), b"pw").unwrap();
    let out = d.path().join("out");
    assert_eq!(restore_newest(&r2, &out, "a"), data(2, 1_500_000));
    assert_eq!(fs::read(out.join("src/small")).unwrap(), b"small file");
    assert!(Repository::open(mem, b"wrong").is_err());
}

/// The wrapper sees every call: opening costs a handful of requests and a second backup of
/// unchanged files stores no pack.
#[test]
fn counted_calls_of_open_and_an_unchanged_backup() {
    let d = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemoryStorage::new());
    let r = init(mem.clone());
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), data(3, 1_200_000)).unwrap();
    backup(&r, &src);

    let counted = Arc::new(Faulty::new(mem.clone()));
    let r = Repository::open(counted.clone(), b"pw").unwrap();
    let c = counted.counts();
    // config, the key slot listing, the key slot.
    assert_eq!(c.reads(), 2, "{c:?}");
    assert_eq!(c.lists, 1, "{c:?}");
    assert_eq!(c.puts, 0, "opening writes nothing: {c:?}");

    let before = counted.counts();
    backup(&r, &src);
    let c = counted.counts();
    let new_packs =
        by(&c.puts_by_kind, ObjectKind::Pack) - by(&before.puts_by_kind, ObjectKind::Pack);
    assert_eq!(new_packs, 0, "an unchanged file is not stored again: {c:?}");
    assert_eq!(
        by(&c.puts_by_kind, ObjectKind::Snapshot) - by(&before.puts_by_kind, ObjectKind::Snapshot),
        1
    );
    assert!(c.flushes > before.flushes, "a backup flushes: {c:?}");
    assert_eq!(c.injected, 0);
}

fn by(m: &std::collections::BTreeMap<ObjectKind, u64>, k: ObjectKind) -> u64 {
    m.get(&k).copied().unwrap_or(0)
}
