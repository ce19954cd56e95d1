//! Log batches (continuous protection): stored as snapshots that are never a source's recovery
//! point, read back only when their bytes match what the batch says, and never removed by a
//! repository-wide keep policy.

use std::sync::Arc;

use chrono::Utc;
use holdfast_core::keys::KdfParams;
use holdfast_core::logs::{self, LogKind, NewPiece};
use holdfast_core::progress::NoProgress;
use holdfast_core::prune;
use holdfast_core::repo::InitOptions;
use holdfast_core::retention::KeepPolicy;
use holdfast_core::snapshot;
use holdfast_core::Repository;
use holdfast_storage::{MemoryStorage, ObjectKind, Storage};

fn init(s: Arc<dyn Storage>) -> Repository {
    let opts = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        ..Default::default()
    };
    Repository::init(s, b"pw", &opts).unwrap()
}

#[test]
fn a_batch_round_trips_and_belongs_to_no_source_as_a_recovery_point() {
    let mem = Arc::new(MemoryStorage::new());
    let repo = init(mem.clone());
    let a = vec![7u8; 100_000];
    let b: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let (id, snap) = logs::append(
        &repo,
        "pg",
        LogKind::PgWal,
        &[],
        vec![
            NewPiece::from_bytes("000000010000000000000001", &a),
            NewPiece::from_bytes("000000010000000000000002", &b),
        ],
        &NoProgress,
    )
    .unwrap();
    assert_eq!(
        snap.source, None,
        "a log batch is no recovery point of its source"
    );
    assert_eq!(snap.paths, vec!["wal:pg".to_string()]);
    let (all, bad) = snapshot::load_all(&repo).unwrap();
    assert!(bad.is_empty());
    let found = logs::batches(&all, "pg", LogKind::PgWal);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0.id, id);
    assert!(logs::batches(&all, "pg", LogKind::Binlog).is_empty());
    assert!(logs::batches(&all, "other", LogKind::PgWal).is_empty());
    let (index, _) = repo.load_index().unwrap();
    let mut out = Vec::new();
    let p = logs::read_piece(
        &repo,
        &index,
        found[0].0,
        "000000010000000000000002",
        &mut out,
    )
    .unwrap();
    assert_eq!(out, b);
    assert_eq!(p.size, b.len() as u64);
    assert!(logs::read_piece(
        &repo,
        &index,
        found[0].0,
        "000000010000000000000003",
        &mut out
    )
    .is_err());
}

#[test]
fn a_piece_whose_bytes_differ_from_its_description_is_refused() {
    let mem = Arc::new(MemoryStorage::new());
    let repo = init(mem.clone());
    let a = vec![1u8; 1000];
    let mut p = NewPiece::from_bytes("000000010000000000000001", &a);
    // The description says other bytes than the ones stored.
    p.piece.blake3 = blake3::hash(b"something else").to_hex().to_string();
    logs::append(&repo, "pg", LogKind::PgWal, &[], vec![p], &NoProgress).unwrap();
    let (all, _) = snapshot::load_all(&repo).unwrap();
    let (index, _) = repo.load_index().unwrap();
    let mut out = Vec::new();
    let e =
        logs::read_piece(&repo, &index, &all[0], "000000010000000000000001", &mut out).unwrap_err();
    assert!(e.to_string().contains("BLAKE3"), "{e}");
}

#[test]
fn a_repository_wide_keep_policy_never_removes_log_batches() {
    let mem = Arc::new(MemoryStorage::new());
    let repo = init(mem.clone());
    for i in 0..3u8 {
        let bytes = vec![i; 10];
        logs::append(
            &repo,
            "pg",
            LogKind::PgWal,
            &[],
            vec![NewPiece::from_bytes(
                &format!("00000001000000000000000{i}"),
                &bytes,
            )],
            &NoProgress,
        )
        .unwrap();
    }
    let policy = KeepPolicy {
        last: Some(1),
        ..Default::default()
    };
    let items = prune::forget(&repo, &policy, Utc::now(), false).unwrap();
    assert!(items.is_empty(), "{items:?}");
    assert_eq!(mem.names(ObjectKind::Snapshot).len(), 3);
}

/// A piece of many chunks (stored by several threads, read back by several) comes back
/// byte for byte, in order; a damaged blob in it fails the read instead of being skipped.
#[test]
fn a_large_piece_round_trips_in_order_and_a_damaged_chunk_fails_it() {
    let mem = Arc::new(MemoryStorage::new());
    let repo = init(mem.clone());
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let bytes: Vec<u8> = (0..24 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    logs::append(
        &repo,
        "pg",
        LogKind::PgWal,
        &[],
        vec![NewPiece::from_bytes("000000010000000000000009", &bytes)],
        &NoProgress,
    )
    .unwrap();
    let (all, _) = snapshot::load_all(&repo).unwrap();
    let (index, _) = repo.load_index().unwrap();
    let mut out = Vec::new();
    logs::read_piece(&repo, &index, &all[0], "000000010000000000000009", &mut out).unwrap();
    assert!(
        out == bytes,
        "{} bytes back, {} stored",
        out.len(),
        bytes.len()
    );
    // Flip a byte in the middle of a pack: the read fails, naming the damage.
    let packs = mem.names(ObjectKind::Pack);
    let name = &packs[packs.len() / 2];
    let mut p = mem.get(ObjectKind::Pack, name).unwrap();
    let mid = p.len() / 2;
    p[mid] ^= 0x40;
    mem.put(
        ObjectKind::Pack,
        name,
        &p,
        holdfast_storage::PutMode::Overwrite,
    )
    .unwrap();
    let mut out = Vec::new();
    assert!(
        logs::read_piece(&repo, &index, &all[0], "000000010000000000000009", &mut out).is_err()
    );
}
