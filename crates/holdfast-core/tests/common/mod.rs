//! Helpers shared by the tests that run the engine on the storage crate's test seams.

#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::sync::Arc;

use holdfast_core::backup::{self, BackupOptions, BackupOutcome};
use holdfast_core::check::{self, CheckReport, ReadData};
use holdfast_core::keys::KdfParams;
use holdfast_core::progress::NoProgress;
use holdfast_core::repo::InitOptions;
use holdfast_core::restore::{self, RestoreOptions};
use holdfast_core::{snapshot, Repository};
use holdfast_storage::Storage;

/// A new repository on `s` (cheap key derivation, 1 MiB packs).
pub fn init(s: Arc<dyn Storage>) -> Repository {
    let opts = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        pack_size: 1 << 20,
        ..Default::default()
    };
    Repository::init(s, b"pw", &opts).unwrap()
}

/// Open the repository on `s` again, as a new process would.
pub fn open(s: Arc<dyn Storage>) -> Repository {
    Repository::open(s, b"pw").unwrap()
}

/// `n` incompressible bytes (xorshift), different for each seed.
pub fn data(seed: u8, n: usize) -> Vec<u8> {
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

/// A deterministic coin, for choosing what a crash keeps.
pub struct Coin(u64);

impl Coin {
    /// A coin seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Coin(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// Heads or tails.
    pub fn flip(&mut self) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 & 1 == 1
    }
}

/// Size of the large file of [`source`]: three chunks or so, in at least two packs.
pub const LARGE: usize = 2_300_000;

/// A directory `src` under `dir` with one large file `a` (version `seed`, [`LARGE`] bytes)
/// and one small one.
pub fn source(dir: &Path, seed: u8) -> std::path::PathBuf {
    source_sized(dir, seed, LARGE)
}

/// [`source`] with a large file of `size` bytes.
pub fn source_sized(dir: &Path, seed: u8, size: usize) -> std::path::PathBuf {
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), data(seed, size)).unwrap();
    fs::write(src.join("small"), [seed; 100]).unwrap();
    src
}

/// Back up `src`.
pub fn backup(r: &Repository, src: &Path) -> holdfast_core::Result<BackupOutcome> {
    let opts = BackupOptions {
        paths: vec![src.to_path_buf()],
        ..Default::default()
    };
    backup::backup(r, &opts, &NoProgress)
}

/// `check --read-data`.
pub fn check(r: &Repository) -> CheckReport {
    check::check(r, ReadData::All, &NoProgress).unwrap()
}

/// Restore the newest snapshot into a new directory under `dir` and return the bytes of its
/// `src/a`.
pub fn restore_newest(r: &Repository, dir: &Path) -> Vec<u8> {
    let (idx, _) = r.load_index().unwrap();
    let (mut all, bad) = snapshot::load_all(r).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    all.sort_by_key(|s| s.snapshot.time);
    let out = tempfile::tempdir_in(dir).unwrap().keep();
    let res = restore::restore(
        r,
        &idx,
        all.last().expect("a snapshot to restore"),
        &RestoreOptions {
            target: out.clone(),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert!(res.errors.is_empty(), "{:?}", res.errors);
    fs::read(out.join("src/a")).unwrap()
}
