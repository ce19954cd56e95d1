//! The repository's `config` object: plaintext JSON, read before the password is asked for, and
//! (from format version 2) authenticated with a MAC keyed by the master secret once the key is
//! unlocked. Every field is bounded whether or not it is authenticated.

use holdfast_storage::{ObjectKind, Storage, StorageError};
use serde::{Deserialize, Serialize};

use crate::crypto::MasterKey;
use crate::error::{Error, Result};

/// The repository format version this build writes and the highest it reads. Version 1 (no
/// config MAC, no history) and version 2 (no inline content) are still read and written;
/// `holdfast migrate` brings either to version 3.
pub const FORMAT_VERSION: u32 = 3;

/// The first version whose config carries a MAC.
pub const AUTHENTICATED_VERSION: u32 = 2;

/// The only cipher holdfast has.
pub const CIPHER: &str = "xchacha20-poly1305";

/// Content-defined chunking parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Smallest chunk.
    pub min: u32,
    /// Target average.
    pub avg: u32,
    /// Largest chunk.
    pub max: u32,
}

impl ChunkerParams {
    /// Check the parameters against what FastCDC accepts (64 B..=1 MiB minimum,
    /// 256 B..=4 MiB average, 1 KiB..=16 MiB maximum, min <= avg <= max).
    pub fn validate(&self) -> std::result::Result<(), String> {
        let ok = (64..=1 << 20).contains(&self.min)
            && (256..=4 << 20).contains(&self.avg)
            && (1024..=16 << 20).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunker parameters min {} avg {} max {} are out of range (min 64 B..=1 MiB, avg 256 B..=4 MiB, max 1 KiB..=16 MiB, min <= avg <= max)",
                self.min, self.avg, self.max
            ))
        }
    }
}

impl Default for ChunkerParams {
    /// 512 KiB / 1 MiB / 8 MiB; see docs/DESIGN.md for the measurement behind it.
    fn default() -> Self {
        ChunkerParams {
            min: 512 * 1024,
            avg: 1024 * 1024,
            max: 8 * 1024 * 1024,
        }
    }
}

/// The plaintext `config` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    /// Always "holdfast".
    pub format: String,
    /// Format version.
    pub version: u32,
    /// Random repository id (hex).
    pub id: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Chunker parameters.
    pub chunker: ChunkerParams,
    /// zstd level for new blobs (0 = off).
    pub compression: i32,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Always "xchacha20-poly1305".
    pub cipher: String,
    /// Version 3 on: files of at most this many bytes are stored inline in their tree node
    /// (0: never). Absent before version 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_max: Option<u32>,
    /// Version 2 on: hex keyed BLAKE3 of [`RepoConfig::canonical`] under the config MAC key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl RepoConfig {
    /// The bytes the MAC covers: a domain string, then the compact JSON of every field but the
    /// MAC, in declaration order.
    pub fn canonical(&self) -> Vec<u8> {
        let mut c = self.clone();
        c.mac = None;
        let mut out = b"holdfast config\n".to_vec();
        out.extend(serde_json::to_vec(&c).expect("serializable"));
        out
    }

    /// Set the MAC for `key` (and the version to the authenticated format).
    pub fn seal(&mut self, key: &MasterKey) {
        self.version = self.version.max(AUTHENTICATED_VERSION);
        self.mac = Some(hex::encode(key.config_mac(&self.canonical())));
    }

    /// Whether this config claims the authenticated format.
    pub fn is_authenticated_format(&self) -> bool {
        self.version >= AUTHENTICATED_VERSION
    }

    /// Verify the MAC with the unlocked key. A version 1 config has none and passes: the caller
    /// decides whether that downgrade is acceptable (see `localstate`).
    pub fn verify(&self, key: &MasterKey, location: &str) -> Result<()> {
        if !self.is_authenticated_format() {
            return Ok(());
        }
        let want = blake3::Hash::from(key.config_mac(&self.canonical()));
        let got = self
            .mac
            .as_deref()
            .and_then(|m| hex::decode(m).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(blake3::Hash::from);
        if got != Some(want) {
            return Err(Error::ConfigTampered {
                location: location.into(),
                detail: if self.mac.is_none() {
                    format!(
                        "it claims format version {} but carries no MAC",
                        self.version
                    )
                } else {
                    "its MAC does not match its content".into()
                },
            });
        }
        Ok(())
    }

    /// Bound every field (also when authenticated: a MAC proves who wrote it, not that it is sane).
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.chunker.validate()?;
        if !(1 << 20..=1 << 30).contains(&self.pack_size) {
            return Err(format!(
                "pack size {} is outside 1 MiB..=1 GiB",
                self.pack_size
            ));
        }
        if !(-7..=22).contains(&self.compression) {
            return Err(format!(
                "compression level {} is outside zstd's range (-7..=22, 0 = off)",
                self.compression
            ));
        }
        if self.cipher != CIPHER {
            return Err(format!(
                "cipher {:?} is not {CIPHER:?}, the only cipher holdfast has",
                self.cipher
            ));
        }
        match self.inline_max {
            Some(m) if self.version < crate::inline::INLINE_VERSION => {
                return Err(format!(
                "it sets an inline limit ({m} bytes) but claims format version {}, which has none",
                self.version
            ))
            }
            Some(m) if m > crate::inline::INLINE_LIMIT => {
                return Err(format!(
                    "inline limit {m} is above {} bytes",
                    crate::inline::INLINE_LIMIT
                ))
            }
            _ => {}
        }
        if self.id.len() != 64 || !self.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("repository id {:?} is not 64 hex digits", self.id));
        }
        Ok(())
    }
}

/// Read and bound the config (before any password is asked for).
pub fn read_config(storage: &dyn Storage) -> Result<RepoConfig> {
    let location = storage.location();
    let raw = match storage.get(ObjectKind::Config, "config") {
        Ok(r) => r,
        Err(StorageError::NotFound { .. }) => {
            // Distinguish "nothing here" from "something else here".
            let has_keys = storage
                .list(ObjectKind::Key)
                .map(|l| !l.is_empty())
                .unwrap_or(false);
            return Err(if has_keys {
                Error::Unfinished { location }
            } else {
                Error::NoRepository { location }
            });
        }
        Err(e) => return Err(e.into()),
    };
    if raw.len() > 64 << 10 {
        return Err(Error::Foreign {
            location,
            detail: format!("its config is {} bytes, far larger than any", raw.len()),
        });
    }
    let v: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| Error::Foreign {
        location: location.clone(),
        detail: format!("its config is not JSON: {e}"),
    })?;
    if v.get("format").and_then(|f| f.as_str()) != Some("holdfast") {
        return Err(Error::Foreign {
            location,
            detail: "its config does not say format \"holdfast\"".into(),
        });
    }
    let version = v
        .get("version")
        .and_then(|f| f.as_u64())
        .map_or(0, |v| v.min(u32::MAX as u64) as u32);
    if version > FORMAT_VERSION {
        return Err(Error::NewerFormat {
            location,
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let c: RepoConfig = serde_json::from_value(v)
        .map_err(|e| Error::corrupt("repository config", e.to_string()))?;
    if c.version == 0 {
        return Err(Error::corrupt("repository config", "format version 0"));
    }
    c.validate()
        .map_err(|m| Error::corrupt("repository config", m))?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Edit = Box<dyn Fn(&mut RepoConfig)>;

    fn cfg() -> RepoConfig {
        RepoConfig {
            format: "holdfast".into(),
            version: FORMAT_VERSION,
            id: "ab".repeat(32),
            created: "2026-01-01T00:00:00Z".into(),
            chunker: ChunkerParams::default(),
            compression: 3,
            pack_size: 16 << 20,
            cipher: CIPHER.into(),
            inline_max: Some(crate::inline::DEFAULT_INLINE_MAX),
            mac: None,
        }
    }

    #[test]
    fn mac_detects_every_field_change() {
        let k = MasterKey::generate();
        let mut c = cfg();
        c.seal(&k);
        c.verify(&k, "here").unwrap();
        let edits: Vec<Edit> = vec![
            Box::new(|c| c.chunker.min = 64),
            Box::new(|c| c.chunker.avg = 256),
            Box::new(|c| c.compression = 19),
            Box::new(|c| c.pack_size = 1 << 20),
            Box::new(|c| c.cipher = "none".into()),
            Box::new(|c| c.created = "2020-01-01T00:00:00Z".into()),
            Box::new(|c| c.mac = None),
        ];
        for (i, e) in edits.iter().enumerate() {
            let mut t = c.clone();
            e(&mut t);
            assert!(
                matches!(t.verify(&k, "here"), Err(Error::ConfigTampered { .. })),
                "edit {i} not detected"
            );
        }
        // Another repository's key does not verify it either.
        assert!(c.verify(&MasterKey::generate(), "here").is_err());
    }

    #[test]
    fn fields_are_bounded() {
        for (f, want) in [
            (
                Box::new(|c: &mut RepoConfig| c.compression = 100) as Box<dyn Fn(&mut _)>,
                "compression",
            ),
            (
                Box::new(|c: &mut RepoConfig| c.cipher = "none".into()),
                "cipher",
            ),
            (
                Box::new(|c: &mut RepoConfig| c.chunker.max = 1 << 30),
                "chunker",
            ),
            (Box::new(|c: &mut RepoConfig| c.id = "../x".into()), "id"),
        ] {
            let mut c = cfg();
            f(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        cfg().validate().unwrap();
    }
}
