//! Encryption and keyed hashing.
//!
//! One 64-byte master secret per repository. Three keys are derived from it with BLAKE3's key
//! derivation: the AEAD key (XChaCha20-Poly1305), the chunk-id key (keyed BLAKE3, so the store
//! never learns plaintext hashes), and the chunker seed (so chunk boundaries do not fingerprint
//! known files). Every encrypted object is `nonce(24) || ciphertext || tag(16)` with a random
//! 192-bit nonce: nonces cannot repeat in practice, whatever the number of writers.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::id::Id;

/// Nonce length of XChaCha20-Poly1305.
pub const NONCE_LEN: usize = 24;
/// Authentication tag length.
pub const TAG_LEN: usize = 16;
/// Bytes an encryption adds to its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Authentication failed: wrong key, or the bytes were changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed (wrong key or damaged data)")]
pub struct AuthError;

/// The repository's keys, derived from the master secret.
#[derive(Clone)]
pub struct MasterKey {
    secret: [u8; 64],
    cipher: XChaCha20Poly1305,
    mac_key: [u8; 32],
    config_key: [u8; 32],
    chunker_seed: u64,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A new random master key.
    pub fn generate() -> Self {
        let mut secret = [0u8; 64];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
        Self::from_secret(secret)
    }

    /// Derive the keys from a master secret.
    pub fn from_secret(secret: [u8; 64]) -> Self {
        let enc = blake3::derive_key("holdfast 2026-11 data encryption key", &secret);
        let mac_key = blake3::derive_key("holdfast 2026-11 chunk id key", &secret);
        let seed = blake3::derive_key("holdfast 2026-11 chunker seed", &secret);
        let config_key = blake3::derive_key("holdfast 2026-11 config mac key", &secret);
        MasterKey {
            secret,
            cipher: XChaCha20Poly1305::new(&enc.into()),
            mac_key,
            config_key,
            chunker_seed: u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")),
        }
    }

    /// The master secret (to wrap it into a key slot).
    pub fn secret(&self) -> &[u8; 64] {
        &self.secret
    }

    /// Seed of the content-defined chunker.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// Keyed BLAKE3 of a blob's plaintext: its id.
    pub fn blob_id(&self, data: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.mac_key, data).as_bytes())
    }

    /// Keyed BLAKE3 MAC of the config's canonical bytes (format version 2).
    pub fn config_mac(&self, canonical: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.config_key, canonical).as_bytes()
    }

    /// Encrypt `plain`, binding `aad` (which must be given again to decrypt).
    pub fn encrypt(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        seal(&self.cipher, aad, plain)
    }

    /// Decrypt and authenticate.
    pub fn decrypt(&self, aad: &[u8], data: &[u8]) -> Result<Vec<u8>, AuthError> {
        open(&self.cipher, aad, data)
    }
}

/// Encrypt with a cipher and a fresh random nonce.
pub(crate) fn seal(cipher: &XChaCha20Poly1305, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let nonce: [u8; NONCE_LEN] = rand::random();
    let ct = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Decrypt `nonce || ciphertext || tag`.
pub(crate) fn open(
    cipher: &XChaCha20Poly1305,
    aad: &[u8],
    data: &[u8],
) -> Result<Vec<u8>, AuthError> {
    if data.len() < OVERHEAD {
        return Err(AuthError);
    }
    let (nonce, ct) = data.split_at(NONCE_LEN);
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| AuthError)
}

/// A cipher from a raw 32-byte key (used for key slots).
pub(crate) fn cipher_from(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096), aad in proptest::collection::vec(any::<u8>(), 0..64)) {
            let k = MasterKey::generate();
            let c = k.encrypt(&aad, &data);
            prop_assert_eq!(c.len(), data.len() + OVERHEAD);
            prop_assert_eq!(k.decrypt(&aad, &c).unwrap(), data);
        }

        #[test]
        fn any_flipped_bit_is_detected(data in proptest::collection::vec(any::<u8>(), 1..512), bit in any::<usize>()) {
            let k = MasterKey::generate();
            let mut c = k.encrypt(b"x", &data);
            let bit = bit % (c.len() * 8);
            c[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(k.decrypt(b"x", &c), Err(AuthError));
        }
    }

    #[test]
    fn wrong_key_or_aad_fails() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        let c = a.encrypt(b"aad", b"secret");
        assert!(b.decrypt(b"aad", &c).is_err());
        assert!(a.decrypt(b"other", &c).is_err());
        assert!(a.decrypt(b"aad", &c[..10]).is_err());
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), Id::of_bytes(b"x"));
    }

    #[test]
    fn derivation_is_deterministic() {
        let a = MasterKey::generate();
        let b = MasterKey::from_secret(*a.secret());
        assert_eq!(a.blob_id(b"data"), b.blob_id(b"data"));
        assert_eq!(a.chunker_seed(), b.chunker_seed());
        assert_eq!(b.decrypt(b"", &a.encrypt(b"", b"m")).unwrap(), b"m");
    }
}
