//! The repository config (plaintext JSON object `config`).
//!
//! - `serde_json::from_slice::<RepoConfig>` must not panic.
//! - The real reading path: the input is stored as `config` in an in-memory backend, next to a
//!   key slot for the config's `id`, and `Repository::open` reads and validates it (the engine's
//!   private `read_config`). A config the engine accepts must then be usable: the harness
//!   builds the content-defined chunker exactly as `backup.rs` does (`StreamCDC::with_level_and_seed`
//!   with `config.chunker`) and seals a blob with `Compressor::new(config.compression)`,
//!   which is what the first backup into the repository does. Neither may panic.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use holdfast_core::blob::{BlobType, Compressor};
use holdfast_core::crypto::MasterKey;
use holdfast_core::keys::{KdfParams, KeySlot};
use holdfast_core::repo::{RepoConfig, Repository};
use holdfast_storage::{ObjectInfo, ObjectKind, PutMode, Result, Storage, StorageError};
use libfuzzer_sys::fuzz_target;

/// Just enough of a backend for `Repository::open`.
#[derive(Debug, Default)]
struct Mem(Mutex<BTreeMap<(ObjectKind, String), Vec<u8>>>);

impl Storage for Mem {
    fn location(&self) -> String {
        "mem:".into()
    }
    fn create(&self) -> Result<()> {
        Ok(())
    }
    fn put(&self, kind: ObjectKind, name: &str, data: &[u8], _: PutMode) -> Result<()> {
        self.0
            .lock()
            .unwrap()
            .insert((kind, name.into()), data.to_vec());
        Ok(())
    }
    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        self.0
            .lock()
            .unwrap()
            .get(&(kind, name.into()))
            .cloned()
            .ok_or_else(|| StorageError::NotFound {
                kind,
                name: name.into(),
                location: self.location(),
            })
    }
    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let all = self.get(kind, name)?;
        let end = offset.saturating_add(len);
        all.get(offset as usize..end as usize)
            .map(<[u8]>::to_vec)
            .ok_or(StorageError::ShortRead {
                kind,
                name: name.into(),
                offset,
                end,
                size: all.len() as u64,
            })
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, n), v)| ObjectInfo {
                name: n.clone(),
                size: v.len() as u64,
            })
            .collect())
    }
    fn exists_many(&self, kind: ObjectKind, names: &[String]) -> Result<Vec<bool>> {
        let m = self.0.lock().unwrap();
        Ok(names
            .iter()
            .map(|n| m.contains_key(&(kind, n.clone())))
            .collect())
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        self.0.lock().unwrap().remove(&(kind, name.into()));
        Ok(())
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

fn key() -> &'static MasterKey {
    static KEY: OnceLock<MasterKey> = OnceLock::new();
    KEY.get_or_init(|| MasterKey::from_secret([7u8; 64]))
}

fuzz_target!(|data: &[u8]| {
    // 1. The type itself.
    let _ = serde_json::from_slice::<RepoConfig>(data);

    // 2. Through Repository::open. The key slot is bound to the repository id, so take the id
    // the way the engine will see it (a config without a string id is rejected anyway).
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let repo_id = v
        .get("id")
        .and_then(|i| i.as_str())
        .unwrap_or("")
        .to_owned();
    let storage = Arc::new(Mem::default());
    storage
        .put(ObjectKind::Config, "config", data, PutMode::CreateNew)
        .unwrap();
    let slot = KeySlot::wrap(key(), b"pw", KdfParams::insecure_for_tests(), &repo_id);
    storage
        .put(
            ObjectKind::Key,
            "00",
            &serde_json::to_vec(&slot).unwrap(),
            PutMode::CreateNew,
        )
        .unwrap();
    let Ok(repo) = Repository::open(storage, b"pw") else {
        return;
    };
    let c = repo.config();

    // 3. What the first backup does with an accepted config (backup.rs, read_large).
    let ch = c.chunker;
    let _cdc = fastcdc::v2020::StreamCDC::with_level_and_seed(
        std::io::empty(),
        ch.min,
        ch.avg,
        ch.max,
        fastcdc::v2020::Normalization::Level1,
        repo.key().chunker_seed(),
    );
    let plain = [0x61u8; 200];
    let id = repo.key().blob_id(&plain);
    let _ = Compressor::new(c.compression).seal(repo.key(), BlobType::Data, &id, &plain);
});
