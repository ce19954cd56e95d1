//! Opening, creating and reading a repository.

use std::collections::HashSet;
use std::sync::Arc;

use holdfast_storage::{ObjectKind, PutMode, Storage, StorageError};

use crate::config::read_config;
use serde::{de::DeserializeOwned, Serialize};

use crate::blob::{self, BlobType};
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{IdMode, Index, IndexFile};
use crate::keys::{KdfParams, KeySlot};

pub use crate::config::{ChunkerParams, RepoConfig, FORMAT_VERSION};

/// Options for [`Repository::init`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// zstd level.
    pub compression: i32,
    /// Chunker parameters.
    pub chunker: ChunkerParams,
    /// Target pack size.
    pub pack_size: u32,
    /// Argon2id cost.
    pub kdf: KdfParams,
    /// Files of at most this many bytes are stored inline in their tree node (0: never).
    pub inline_max: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            compression: 3,
            chunker: ChunkerParams::default(),
            pack_size: 16 << 20,
            kdf: KdfParams::default(),
            inline_max: crate::inline::DEFAULT_INLINE_MAX,
        }
    }
}

/// An open repository.
#[derive(Debug, Clone)]
pub struct Repository {
    storage: Arc<dyn Storage>,
    key: MasterKey,
    config: RepoConfig,
    key_id: String,
}

/// A key slot as listed.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// Slot id.
    pub id: String,
    /// Whether this is the slot the repository was opened with.
    pub current: bool,
    /// Host that created it.
    pub host: String,
    /// User that created it.
    pub user: String,
    /// Creation time.
    pub created: String,
}

/// Verify the config's MAC, and refuse an unauthenticated (version 1) config where this host
/// has seen the repository's config authenticated before (a downgrade to drop the MAC).
fn authenticate_config(config: &RepoConfig, key: &MasterKey, location: &str) -> Result<()> {
    config.verify(key, location)?;
    let seen = crate::localstate::load(&config.id);
    if config.is_authenticated_format() {
        if !seen.config_authenticated {
            crate::localstate::raise(
                &config.id,
                &crate::localstate::RepoState {
                    config_authenticated: true,
                    ..Default::default()
                },
            );
        }
    } else if seen.config_authenticated {
        return Err(Error::ConfigTampered {
            location: location.into(),
            detail: format!(
                "it says format version {} (no MAC), but this host has seen it authenticated (format version 2): someone replaced it with an unauthenticated one",
                config.version
            ),
        });
    } else {
        tracing::warn!(
            "the config of {location} is format version {} and not authenticated: anyone with write access to the store can change its settings; run `holdfast migrate`",
            config.version
        );
    }
    Ok(())
}

/// The largest object of a kind a reader accepts; anything read from a repository may be
/// hostile, so sizes are bounded before objects are read or parsed. Packs are bounded by the
/// configured pack size instead (`max_pack_len` in the check module).
pub fn max_object_len(kind: ObjectKind) -> u64 {
    match kind {
        ObjectKind::Config | ObjectKind::Key | ObjectKind::Session => 64 << 10,
        // A million condemned packs (16 TiB of 16 MiB packs).
        ObjectKind::Gc => crate::session::MAX_PLAN_LEN,
        // Lists of skipped files and warnings.
        ObjectKind::Snapshot => 64 << 20,
        // Object-lock records list every object they extended.
        ObjectKind::Record => 256 << 20,
        // One entry names the snapshots of one event (a forget of many).
        ObjectKind::History => 64 << 20,
        // The index prune writes holds every blob: 45 bytes each, 20 million blobs.
        ObjectKind::Index => 1 << 30,
        ObjectKind::Pack => u64::MAX,
    }
}

/// Refuse an object larger than its kind can be.
pub fn check_object_len(kind: ObjectKind, name: &str, size: u64) -> Result<()> {
    let max = max_object_len(kind);
    if size > max {
        return Err(Error::corrupt(
            format!("{kind} {name}"),
            format!("{size} bytes, more than a {kind} can be ({max}); it was not read"),
        ));
    }
    Ok(())
}

impl Repository {
    /// Read a pack's header from storage with two ranged reads.
    pub fn read_pack_header(&self, name: &str, size: u64) -> Result<Vec<crate::pack::PackEntry>> {
        if size < 4 {
            return Err(Error::corrupt(
                format!("pack {name}"),
                "shorter than its trailer",
            ));
        }
        let t = self
            .storage()
            .get_range(ObjectKind::Pack, name, size - 4, 4)?;
        let (start, len) =
            crate::pack::header_range(name, size, t[..4].try_into().expect("4 bytes"))?;
        let sealed = self
            .storage()
            .get_range(ObjectKind::Pack, name, start, len)?;
        crate::pack::decrypt_header(self.key(), name, &sealed, start)
    }

    /// Create a repository and its first key slot.
    pub fn init(
        storage: Arc<dyn Storage>,
        password: &[u8],
        opts: &InitOptions,
    ) -> Result<Repository> {
        if !(-7..=22).contains(&opts.compression) {
            return Err(Error::Invalid(format!(
                "compression level {} is outside zstd's range (0 = off, 1..=22)",
                opts.compression
            )));
        }
        opts.chunker.validate().map_err(Error::Invalid)?;
        if opts.inline_max > crate::inline::INLINE_LIMIT {
            return Err(Error::Invalid(format!(
                "inline limit {} is above {} bytes",
                opts.inline_max,
                crate::inline::INLINE_LIMIT
            )));
        }
        if !(1 << 20..=1 << 30).contains(&opts.pack_size) {
            return Err(Error::Invalid(format!(
                "pack size {} is outside 1 MiB..=1 GiB",
                opts.pack_size
            )));
        }
        match read_config(&*storage) {
            Ok(_) => {
                return Err(Error::Refused(format!(
                    "{} already holds a holdfast repository",
                    storage.location()
                )))
            }
            Err(Error::NoRepository { .. }) => {}
            Err(e) => return Err(e),
        }
        storage.create()?;
        let key = MasterKey::generate();
        let config = RepoConfig {
            format: "holdfast".into(),
            version: FORMAT_VERSION,
            id: Id::random().to_hex(),
            created: chrono::Utc::now().to_rfc3339(),
            chunker: opts.chunker,
            compression: opts.compression,
            pack_size: opts.pack_size,
            cipher: crate::config::CIPHER.into(),
            inline_max: Some(opts.inline_max),
            mac: None,
        };
        let mut config = config;
        config.seal(&key);
        let slot = KeySlot::wrap(&key, password, opts.kdf, &config.id);
        let key_id = Id::random().to_hex();
        storage.put(
            ObjectKind::Key,
            &key_id,
            &serde_json::to_vec_pretty(&slot).expect("serializable"),
            PutMode::CreateNew,
        )?;
        storage.flush()?;
        // The config goes last: a crash before this leaves no repository, not half of one.
        let cfg = serde_json::to_vec_pretty(&config).expect("serializable");
        storage.put(ObjectKind::Config, "config", &cfg, PutMode::CreateNew)?;
        storage.flush()?;
        crate::localstate::raise(
            &config.id,
            &crate::localstate::RepoState {
                config_authenticated: true,
                ..Default::default()
            },
        );
        Ok(Repository {
            storage,
            key,
            config,
            key_id,
        })
    }

    /// Open with a password, trying each key slot.
    pub fn open(storage: Arc<dyn Storage>, password: &[u8]) -> Result<Repository> {
        let config = read_config(&*storage)?;
        let slots = storage.list(ObjectKind::Key)?;
        let mut damaged = Vec::new();
        for s in &slots {
            if let Err(e) = check_object_len(ObjectKind::Key, &s.name, s.size) {
                damaged.push(format!("{} is malformed ({e})", s.name));
                continue;
            }
            let raw = match storage.get(ObjectKind::Key, &s.name) {
                Ok(r) => r,
                // Listed, then removed by a concurrent `key remove`.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let opened = KeySlot::parse(&raw)
                .map_err(Some)
                .and_then(|slot| slot.unwrap_key(password, &config.id));
            match opened {
                Ok(key) => {
                    for d in &damaged {
                        tracing::warn!(
                            "key slot {d}: it was skipped; remove it with `holdfast key remove`"
                        );
                    }
                    authenticate_config(&config, &key, &storage.location())?;
                    return Ok(Repository {
                        storage,
                        key,
                        config,
                        key_id: s.name.clone(),
                    });
                }
                Err(None) => continue,
                Err(Some(m)) => damaged.push(format!("{} is malformed ({m})", s.name)),
            }
        }
        if damaged.is_empty() && !slots.is_empty() {
            return Err(Error::WrongPassword {
                location: storage.location(),
                slots: slots.len(),
            });
        }
        Err(Error::DamagedKeySlots {
            location: storage.location(),
            intact: slots.len() - damaged.len(),
            damaged,
        })
    }

    /// The backend.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The keys.
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// The configuration.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// Bring the config to [`FORMAT_VERSION`]: a version 1 config is authenticated with the
    /// master key, and a version 1 or 2 one gets the default inline limit (from then on, holdfast
    /// older than format 3 refuses the repository). Returns false if it already was. The other
    /// values are kept as they are (they were bounded when read).
    pub fn migrate_config(&mut self) -> Result<bool> {
        if self.config.version >= FORMAT_VERSION {
            return Ok(false);
        }
        let mut c = self.config.clone();
        c.version = FORMAT_VERSION;
        c.inline_max = Some(crate::inline::DEFAULT_INLINE_MAX);
        c.seal(&self.key);
        let bytes = serde_json::to_vec_pretty(&c).expect("serializable");
        self.storage
            .put(ObjectKind::Config, "config", &bytes, PutMode::Overwrite)?;
        self.storage.flush()?;
        crate::localstate::raise(
            &c.id,
            &crate::localstate::RepoState {
                config_authenticated: true,
                ..Default::default()
            },
        );
        self.config = c;
        Ok(true)
    }

    /// The key slot this repository was opened with.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Add a key slot for another password; returns its id.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<String> {
        let slot = KeySlot::wrap(&self.key, password, kdf, &self.config.id);
        let id = Id::random().to_hex();
        self.storage.put(
            ObjectKind::Key,
            &id,
            &serde_json::to_vec_pretty(&slot).expect("serializable"),
            PutMode::CreateNew,
        )?;
        self.storage.flush()?;
        Ok(id)
    }

    /// List key slots.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for s in self.storage.list(ObjectKind::Key)? {
            let raw = self.storage.get(ObjectKind::Key, &s.name)?;
            let (host, user, created) = match serde_json::from_slice::<KeySlot>(&raw) {
                Ok(k) => (k.host, k.user, k.created),
                Err(_) => ("?".into(), "?".into(), "malformed".into()),
            };
            out.push(KeyInfo {
                current: s.name == self.key_id,
                id: s.name,
                host,
                user,
                created,
            });
        }
        Ok(out)
    }

    /// Remove a key slot by id or unique prefix. Refuses the slot in use and the last slot.
    pub fn remove_key(&self, id_prefix: &str) -> Result<String> {
        let keys = self.list_keys()?;
        let matches: Vec<_> = keys
            .iter()
            .filter(|k| k.id.starts_with(id_prefix))
            .collect();
        let k = match matches.as_slice() {
            [k] => *k,
            [] => {
                return Err(Error::Invalid(format!(
                    "no key slot matches {id_prefix:?}: see `holdfast key list`"
                )))
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "key prefix {id_prefix:?} is ambiguous"
                )))
            }
        };
        if k.current {
            return Err(Error::Refused("refusing to remove the key slot this command was opened with: open with another password first".into()));
        }
        if keys.len() <= 1 {
            return Err(Error::Refused(
                "refusing to remove the last key slot: the repository could never be opened again"
                    .into(),
            ));
        }
        crate::history::append(
            self,
            vec![crate::history::Event::KeyRemoved { id: k.id.clone() }],
        )?;
        self.storage.delete(ObjectKind::Key, &k.id)?;
        self.storage.flush()?;
        Ok(k.id.clone())
    }

    /// Replace the current slot's password: add a new slot, then remove the old one.
    pub fn change_password(&mut self, new_password: &[u8], kdf: KdfParams) -> Result<String> {
        let new_id = self.add_key(new_password, kdf)?;
        let old = std::mem::replace(&mut self.key_id, new_id.clone());
        crate::history::append(
            self,
            vec![crate::history::Event::KeyRemoved { id: old.clone() }],
        )?;
        self.storage.delete(ObjectKind::Key, &old)?;
        self.storage.flush()?;
        Ok(new_id)
    }

    /// Encrypt and store a JSON object under the BLAKE3 of its encrypted bytes.
    pub fn save_json<T: Serialize>(&self, kind: ObjectKind, aad: &[u8], value: &T) -> Result<Id> {
        let plain = serde_json::to_vec(value).expect("serializable");
        let sealed = self.key.encrypt(aad, &plain);
        let id = Id::of_bytes(&sealed);
        self.storage
            .put(kind, &id.to_hex(), &sealed, PutMode::CreateNew)?;
        Ok(id)
    }

    /// Load and decrypt a JSON object listed with `size` bytes: an object larger than its kind
    /// can be ([`max_object_len`]) is refused before it is read.
    pub fn load_json_listed<T: DeserializeOwned>(
        &self,
        kind: ObjectKind,
        name: &str,
        size: u64,
        aad: &[u8],
    ) -> Result<T> {
        check_object_len(kind, name, size)?;
        self.load_json(kind, name, aad)
    }

    /// Load and decrypt a JSON object.
    pub fn load_json<T: DeserializeOwned>(
        &self,
        kind: ObjectKind,
        name: &str,
        aad: &[u8],
    ) -> Result<T> {
        let raw = self.storage.get(kind, name)?;
        check_object_len(kind, name, raw.len() as u64)?;
        let what = || format!("{kind} {name}");
        if Id::from_hex(name).is_some_and(|id| id != Id::of_bytes(&raw))
            && kind != ObjectKind::Session
        {
            return Err(Error::corrupt(what(), "content does not match its name"));
        }
        let plain = self
            .key
            .decrypt(aad, &raw)
            .map_err(|e| Error::corrupt(what(), e.to_string()))?;
        serde_json::from_slice(&plain).map_err(|e| Error::corrupt(what(), e.to_string()))
    }

    /// Read every index file into one compact index ([`IdMode::Compact`]: what readers and
    /// backups need). Returns the index and the ids of the files read. Entries of packs that
    /// are gone are left out (see [`Repository::load_index_and_gone`]).
    pub fn load_index(&self) -> Result<(Index, Vec<Id>)> {
        self.load_index_as(IdMode::Compact)
    }

    /// [`Repository::load_index`], keeping ids as `mode` says ([`IdMode::Full`] to list them).
    pub fn load_index_as(&self, mode: IdMode) -> Result<(Index, Vec<Id>)> {
        let (idx, files, _) = self.load_index_and_gone_as(mode)?;
        Ok((idx, files))
    }

    /// [`Repository::load_index`], and the packs that index files name but that are gone.
    ///
    /// Their entries are left out: nobody may read from or deduplicate against a pack that does
    /// not exist. Such entries are written by a writer that a prune counted as dead (suspended,
    /// or its session record removed) and that indexed its packs after the prune deleted them,
    /// or come from an old index file put back. The pack listing is read after the index
    /// files, and a writer stores a pack before it indexes it, so a pack missing here was
    /// deleted (by a prune, which condemned it) and not just not written yet.
    pub fn load_index_and_gone(&self) -> Result<(Index, Vec<Id>, HashSet<Id>)> {
        self.load_index_and_gone_as(IdMode::Compact)
    }

    /// [`Repository::load_index_and_gone`], keeping ids as `mode` says.
    pub fn load_index_and_gone_as(&self, mode: IdMode) -> Result<(Index, Vec<Id>, HashSet<Id>)> {
        let (mut idx, files, _) = self.load_index_files_as(mode)?;
        let mut listed = HashSet::new();
        // Packs no readable index names (an interrupted writer's, or the index file naming them
        // is damaged): index them from their own headers, in memory.
        for o in self.storage.list(ObjectKind::Pack)? {
            let Some(id) = Id::from_hex(&o.name) else {
                continue;
            };
            listed.insert(id);
            if idx.has_pack(&id) {
                continue;
            }
            match self.read_pack_header(&o.name, o.size) {
                Ok(entries) => idx.add_pack(id, &entries),
                Err(e) => tracing::warn!(
                    "pack {} is in no index and its header is unreadable: {e}",
                    o.name
                ),
            }
        }
        let gone = gone_packs(&idx, &listed);
        if !gone.is_empty() {
            idx = idx.without_packs(&gone);
        }
        Ok((idx, files, gone))
    }

    /// Read the index files only, into a compact index. Damaged files are skipped with a
    /// warning (their packs can be indexed from the packs' headers) and named in the third
    /// list; the second list has every index file, damaged ones included.
    pub fn load_index_files(&self) -> Result<(Index, Vec<Id>, Vec<String>)> {
        self.load_index_files_as(IdMode::Compact)
    }

    /// [`Repository::load_index_files`], keeping ids as `mode` says. The files are read and
    /// decoded on every core (`indexload.rs`).
    pub fn load_index_files_as(&self, mode: IdMode) -> Result<(Index, Vec<Id>, Vec<String>)> {
        crate::indexload::load(self, mode)
    }

    /// Read one index file.
    pub fn read_index_file(&self, name: &str) -> Result<IndexFile> {
        let raw = self.storage.get(ObjectKind::Index, name)?;
        check_object_len(ObjectKind::Index, name, raw.len() as u64)?;
        if Id::from_hex(name) != Some(Id::of_bytes(&raw)) {
            return Err(Error::corrupt(
                format!("index {name}"),
                "content does not match its name",
            ));
        }
        IndexFile::open(&self.key, name, &raw)
    }

    /// Write an index file; returns its id.
    pub fn write_index_file(&self, f: &IndexFile) -> Result<Id> {
        let sealed = f.seal(&self.key);
        let id = Id::of_bytes(&sealed);
        self.storage
            .put(ObjectKind::Index, &id.to_hex(), &sealed, PutMode::Overwrite)?;
        Ok(id)
    }

    /// Read, authenticate and decode one blob.
    pub fn read_blob(&self, index: &Index, t: BlobType, id: &Id) -> Result<Vec<u8>> {
        let (pack, loc) = index.get(id).ok_or_else(|| Error::MissingBlob {
            id: id.to_hex(),
            by: "a tree or snapshot".into(),
        })?;
        let stored = self
            .storage
            .get_range(
                ObjectKind::Pack,
                &pack.to_hex(),
                loc.offset as u64,
                loc.length as u64,
            )
            .map_err(|e| match e {
                StorageError::NotFound { .. } => Error::corrupt(
                    format!("pack {}", pack.to_hex()),
                    format!("missing, but the index says it holds blob {id}"),
                ),
                e => e.into(),
            })?;
        self.open_blob(t, id, &pack, &stored, loc.raw_len)
    }

    /// Authenticate and decode one blob from its stored bytes, read from `pack`.
    pub fn open_blob(
        &self,
        t: BlobType,
        id: &Id,
        pack: &Id,
        stored: &[u8],
        raw_len: u32,
    ) -> Result<Vec<u8>> {
        blob::open(&self.key, t, id, stored, raw_len).map_err(|e| match e {
            Error::Corrupt { what, detail } => {
                Error::corrupt(format!("{what} in pack {}", pack.short()), detail)
            }
            e => e,
        })
    }
}

/// The packs `index` names that are not in `listed` (the store's pack listing), with a warning
/// if there are any: their entries must not be used.
pub(crate) fn gone_packs(index: &Index, listed: &HashSet<Id>) -> HashSet<Id> {
    let gone: HashSet<Id> = index
        .packs()
        .iter()
        .filter(|p| !listed.contains(p))
        .copied()
        .collect();
    if let Some(p) = gone.iter().next() {
        tracing::warn!(
            "the index names {} pack(s) that are gone (e.g. {p}); their entries are ignored and `holdfast prune` removes them",
            gone.len()
        );
    }
    gone
}
