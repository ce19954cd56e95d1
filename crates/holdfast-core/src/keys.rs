//! Key slots: the master secret wrapped by a key derived from a passphrase with Argon2id.
//!
//! A key slot is a plaintext JSON object (`keys/<random id>`) holding the Argon2id parameters,
//! the salt, and the master secret encrypted with XChaCha20-Poly1305 under the derived key, with
//! the repository id as associated data (so a slot cannot be moved to another repository).

use serde::{Deserialize, Serialize};

use crate::crypto::{self, AuthError, MasterKey};

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// 46 MiB, 1 pass, 1 lane: OWASP's first recommended Argon2id setting (memory-hard enough to
    /// make each guess cost 46 MiB of RAM), about 50 ms on a current core, so opening a
    /// repository stays cheap for commands run every minute.
    fn default() -> Self {
        KdfParams {
            m_cost: 46 * 1024,
            t_cost: 1,
            p_cost: 1,
        }
    }
}

impl KdfParams {
    /// The cheapest parameters Argon2 accepts: for tests only (`HOLDFAST_INSECURE_TEST_KDF=1`).
    pub fn insecure_for_tests() -> Self {
        KdfParams {
            m_cost: 8,
            t_cost: 1,
            p_cost: 1,
        }
    }
}

/// Largest Argon2 memory cost accepted from a slot, in KiB: 2 GiB (the default is 46 MiB).
pub const MAX_M_COST: u32 = 2 << 20;
/// Largest Argon2 pass count accepted from a slot.
pub const MAX_T_COST: u32 = 64;
/// Largest Argon2 lane count accepted from a slot.
pub const MAX_P_COST: u32 = 64;
/// Largest total Argon2 work accepted from a slot (memory cost × passes, KiB): 4 GiB, so a
/// forged slot cannot make opening take minutes (the default is 46 MiB × 1).
pub const MAX_WORK: u64 = 4 << 20;
/// Length of a wrapped master secret: nonce, 64 bytes, tag.
const WRAPPED_LEN: usize = crypto::NONCE_LEN + 64 + crypto::TAG_LEN;

/// A key slot as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeySlot {
    /// Always "argon2id".
    pub kdf: String,
    /// Cost parameters.
    pub params: KdfParams,
    /// Salt, hex.
    pub salt: String,
    /// `nonce || E(master secret) || tag`, hex.
    pub wrapped: String,
    /// When the slot was made (RFC 3339).
    pub created: String,
    /// Host that made it.
    pub host: String,
    /// User that made it.
    pub user: String,
}

fn derive(password: &[u8], salt: &[u8], p: KdfParams) -> Result<[u8; 32], String> {
    let params = argon2::Params::new(p.m_cost, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| format!("invalid Argon2 parameters: {e}"))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    a.hash_password_into(password, salt, &mut out)
        .map_err(|e| format!("Argon2 failed: {e}"))?;
    Ok(out)
}

impl KeySlot {
    /// Wrap `master` under `password`.
    pub fn wrap(master: &MasterKey, password: &[u8], params: KdfParams, repo_id: &str) -> Self {
        let salt: [u8; 16] = rand::random();
        let k = derive(password, &salt, params).expect("valid default parameters");
        let wrapped = crypto::seal(
            &crypto::cipher_from(&k),
            repo_id.as_bytes(),
            master.secret(),
        );
        KeySlot {
            kdf: "argon2id".into(),
            params,
            salt: hex::encode(salt),
            wrapped: hex::encode(wrapped),
            created: chrono::Utc::now().to_rfc3339(),
            host: crate::util::hostname(),
            user: crate::util::username(),
        }
    }

    /// Parse a slot as stored. A slot comes from the repository, which may be hostile or
    /// damaged: everything is checked before use, including the Argon2 costs (a forged slot
    /// must not make opening allocate gigabytes). `Err` says what is wrong with it.
    pub fn parse(raw: &[u8]) -> Result<KeySlot, String> {
        let slot: KeySlot =
            serde_json::from_slice(raw).map_err(|e| format!("not a key slot: {e}"))?;
        slot.structure()?;
        Ok(slot)
    }

    /// Check everything but the password: derivation, costs, salt and wrapped key lengths.
    fn structure(&self) -> Result<(Vec<u8>, Vec<u8>), String> {
        if self.kdf != "argon2id" {
            return Err(format!("unknown key derivation {:?}", self.kdf));
        }
        let p = self.params;
        if p.m_cost > MAX_M_COST
            || p.t_cost > MAX_T_COST
            || p.p_cost > MAX_P_COST
            || p.m_cost as u64 * p.t_cost as u64 > MAX_WORK
        {
            return Err(format!(
                "Argon2 costs m_cost {} KiB, t_cost {}, p_cost {} exceed what holdfast accepts ({MAX_M_COST} KiB, {MAX_T_COST}, {MAX_P_COST}, memory x passes at most {MAX_WORK} KiB)",
                p.m_cost, p.t_cost, p.p_cost
            ));
        }
        argon2::Params::new(p.m_cost, p.t_cost, p.p_cost, Some(32))
            .map_err(|e| format!("invalid Argon2 parameters: {e}"))?;
        let salt = hex::decode(&self.salt).map_err(|e| format!("salt: {e}"))?;
        if !(8..=64).contains(&salt.len()) {
            return Err(format!("salt is {} bytes, not 8 to 64", salt.len()));
        }
        let wrapped = hex::decode(&self.wrapped).map_err(|e| format!("wrapped key: {e}"))?;
        if wrapped.len() != WRAPPED_LEN {
            return Err(format!(
                "wrapped key is {} bytes, not {WRAPPED_LEN}",
                wrapped.len()
            ));
        }
        Ok((salt, wrapped))
    }

    /// Unwrap with `password`. `Err(None)`: the slot is well formed but does not open with the
    /// password (a wrong password, or a slot damaged where only authentication can tell);
    /// `Err(Some(msg))`: the slot is malformed.
    pub fn unwrap_key(&self, password: &[u8], repo_id: &str) -> Result<MasterKey, Option<String>> {
        let (salt, wrapped) = self.structure().map_err(Some)?;
        let k = derive(password, &salt, self.params).map_err(Some)?;
        let secret = crypto::open(&crypto::cipher_from(&k), repo_id.as_bytes(), &wrapped)
            .map_err(|AuthError| None)?;
        let secret: [u8; 64] = secret
            .try_into()
            .map_err(|_| Some("wrapped key has the wrong length".to_string()))?;
        Ok(MasterKey::from_secret(secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap() {
        let m = MasterKey::generate();
        let s = KeySlot::wrap(&m, b"pw", KdfParams::insecure_for_tests(), "repo1");
        let back = s.unwrap_key(b"pw", "repo1").unwrap();
        assert_eq!(back.secret(), m.secret());
        assert!(matches!(s.unwrap_key(b"nope", "repo1"), Err(None)));
        assert!(matches!(s.unwrap_key(b"pw", "repo2"), Err(None)));
        let mut bad = s.clone();
        bad.salt = "zz".into();
        assert!(matches!(bad.unwrap_key(b"pw", "repo1"), Err(Some(_))));
    }

    /// Forged or damaged slots are refused before any key derivation, naming what is wrong.
    #[test]
    fn malformed_slots_are_refused_before_deriving() {
        let m = MasterKey::generate();
        let good = KeySlot::wrap(&m, b"pw", KdfParams::insecure_for_tests(), "r");
        let raw = serde_json::to_vec(&good).unwrap();
        assert!(KeySlot::parse(&raw).is_ok());
        type Damage = Box<dyn Fn(&mut KeySlot)>;
        let cases: Vec<(Damage, &str)> = vec![
            (Box::new(|k| k.params.m_cost = u32::MAX), "exceed"),
            (Box::new(|k| k.params.t_cost = 1_000_000), "exceed"),
            (
                Box::new(|k| k.kdf = "scrypt".into()),
                "unknown key derivation",
            ),
            (Box::new(|k| k.salt = "00".into()), "salt is 1 bytes"),
            (
                Box::new(|k| k.wrapped.truncate(40)),
                "wrapped key is 20 bytes",
            ),
            (Box::new(|k| k.wrapped.push('x')), "wrapped key"),
        ];
        for (damage, want) in cases {
            let mut k = good.clone();
            damage(&mut k);
            let e = KeySlot::parse(&serde_json::to_vec(&k).unwrap()).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
            assert!(matches!(k.unwrap_key(b"pw", "r"), Err(Some(_))));
        }
        assert!(KeySlot::parse(b"{\"kdf\":")
            .unwrap_err()
            .contains("not a key slot"));
    }
}
