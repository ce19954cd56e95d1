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

/// Largest Argon2 memory cost a reader accepts: 1 GiB (in KiB).
pub const MAX_M_COST: u32 = 1 << 20;
/// Largest Argon2 pass count a reader accepts.
pub const MAX_T_COST: u32 = 16;
/// Largest Argon2 lane count a reader accepts.
pub const MAX_P_COST: u32 = 16;
/// Largest total work (memory in KiB times passes) a reader accepts: 4 passes over 1 GiB, a few
/// seconds on a current core.
pub const MAX_WORK: u64 = 4 << 20;

impl KdfParams {
    /// Check the parameters against the bounds above: a key slot is read from the repository,
    /// which may be hostile, and Argon2 allocates `m_cost` KiB and runs `t_cost` passes.
    pub fn check(&self) -> Result<(), String> {
        if self.m_cost > MAX_M_COST
            || self.t_cost == 0
            || self.t_cost > MAX_T_COST
            || self.p_cost == 0
            || self.p_cost > MAX_P_COST
            || self.m_cost as u64 * self.t_cost as u64 > MAX_WORK
        {
            return Err(format!(
                "Argon2 parameters m_cost {} KiB, t_cost {}, p_cost {} exceed what holdfast accepts (m_cost at most {MAX_M_COST} KiB, t_cost 1..={MAX_T_COST}, p_cost 1..={MAX_P_COST}, m_cost x t_cost at most {MAX_WORK})",
                self.m_cost, self.t_cost, self.p_cost
            ));
        }
        Ok(())
    }
}

fn derive(password: &[u8], salt: &[u8], p: KdfParams) -> Result<[u8; 32], String> {
    p.check()?;
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

    /// Unwrap with `password`. `Err(None)` is a wrong password; `Err(Some(msg))` a malformed slot.
    pub fn unwrap_key(&self, password: &[u8], repo_id: &str) -> Result<MasterKey, Option<String>> {
        if self.kdf != "argon2id" {
            return Err(Some(format!("unknown key derivation {:?}", self.kdf)));
        }
        if self.salt.len() > 128 || self.wrapped.len() > 512 {
            return Err(Some("salt or wrapped key is implausibly long".into()));
        }
        self.params.check().map_err(Some)?;
        let salt = hex::decode(&self.salt).map_err(|e| Some(format!("salt: {e}")))?;
        let wrapped = hex::decode(&self.wrapped).map_err(|e| Some(format!("wrapped key: {e}")))?;
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

    #[test]
    fn hostile_argon2_parameters_are_refused_at_once() {
        let m = MasterKey::generate();
        let s = KeySlot::wrap(&m, b"pw", KdfParams::insecure_for_tests(), "repo1");
        for (m_cost, t_cost, p_cost) in [
            (u32::MAX, 1, 1),       // 4 TiB of memory
            (MAX_M_COST + 1, 1, 1), // just over the bound
            (8, u32::MAX, 1),       // four billion passes
            (MAX_M_COST, 5, 1),     // too much work in total
            (8, 1, u32::MAX),       // lanes
            (8, 0, 1),              // no pass
        ] {
            let mut bad = s.clone();
            bad.params = KdfParams {
                m_cost,
                t_cost,
                p_cost,
            };
            let t = std::time::Instant::now();
            match bad.unwrap_key(b"pw", "repo1") {
                Err(Some(msg)) => assert!(msg.contains("exceed"), "{msg}"),
                other => panic!("{m_cost}/{t_cost}/{p_cost}: {:?}", other.map(|_| ())),
            }
            assert!(t.elapsed() < std::time::Duration::from_millis(100));
        }
        // The defaults and the largest accepted memory cost pass the bound.
        assert!(KdfParams::default().check().is_ok());
        assert!(KdfParams {
            m_cost: MAX_M_COST,
            t_cost: 4,
            p_cost: 4
        }
        .check()
        .is_ok());
    }
}
