//! What this host remembers about a repository, outside the repository (`<state>/repos/<id>.json`):
//! the newest history entry it has seen and whether the repository's config was authenticated.
//! An attacker who can only write to the store cannot roll these back, so a deleted history
//! tail or a config downgraded to the unauthenticated format 1 is detected here (as git and TUF
//! keep the last known state on the client).
//!
//! The state directory is `HOLDFAST_STATE_DIR`, else `/var/lib/holdfast` for root, else
//! `$XDG_STATE_HOME/holdfast` or `~/.local/state/holdfast` (the same rule as `protect`'s locks).

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What this host last knew of one repository. Every field only ever grows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoState {
    /// This host has seen the repository's config authenticated (format 2 or later).
    #[serde(default)]
    pub config_authenticated: bool,
    /// Highest history sequence number seen.
    #[serde(default)]
    pub history_seq: u64,
    /// Names of the history entries seen at `history_seq`.
    #[serde(default)]
    pub history_heads: Vec<String>,
    /// Highest record-rollup sequence number seen (see `rollup`).
    #[serde(default)]
    pub rollup_seq: u64,
}

impl RepoState {
    /// Merge another state into this one, keeping the newer knowledge of each field.
    pub fn raise(&mut self, other: &RepoState) {
        self.config_authenticated |= other.config_authenticated;
        self.rollup_seq = self.rollup_seq.max(other.rollup_seq);
        if other.history_seq > self.history_seq {
            self.history_seq = other.history_seq;
            self.history_heads = other.history_heads.clone();
        } else if other.history_seq == self.history_seq {
            for h in &other.history_heads {
                if !self.history_heads.contains(h) {
                    self.history_heads.push(h.clone());
                }
            }
            self.history_heads.sort();
        }
    }
}

/// The state directory, or None when none can be determined.
pub fn state_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("HOLDFAST_STATE_DIR") {
        return Some(d.into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Some("/var/lib/holdfast".into());
    }
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
        .map(|d| d.join("holdfast"))
}

/// The file holding this host's state of repository `id` (a hex id, so a safe file name).
pub fn path_for(id: &str) -> Option<PathBuf> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    state_dir().map(|d| d.join("repos").join(format!("{id}.json")))
}

/// This host's state of repository `id` (empty if none is kept or it cannot be read).
pub fn load(id: &str) -> RepoState {
    path_for(id)
        .and_then(|p| fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Lower this host's record-rollup mark of repository `id` to `seq`: only on the operator's
/// word (`holdfast history --accept-loss`), after a loss was investigated.
pub fn accept_rollups(id: &str, seq: u64) {
    let Some(path) = path_for(id) else {
        return;
    };
    let mut st = load(id);
    st.rollup_seq = seq;
    let write = || -> std::io::Result<()> {
        fs::create_dir_all(path.parent().expect("state file has a directory"))?;
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec(&st).expect("serializable"))?;
        fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        tracing::warn!("could not update {}: {e}", path.display());
    }
}

/// Raise this host's state of repository `id` to include `seen`. Failures are logged, not
/// returned: the state is a second line of defence and must not stop a backup.
pub fn raise(id: &str, seen: &RepoState) {
    let Some(path) = path_for(id) else {
        return;
    };
    if let Err(e) = raise_at(&path, seen) {
        tracing::warn!(
            "could not update {}: {e} (rollback detection on this host is weaker until it can be written)",
            path.display()
        );
    }
}

fn raise_at(path: &Path, seen: &RepoState) -> std::io::Result<()> {
    let dir = path.parent().expect("state file has a directory");
    fs::create_dir_all(dir)?;
    // One writer at a time on this host, so two processes cannot lower each other's marks.
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))?;
    // SAFETY: flock on a file descriptor we own; released when `lock` is dropped.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut cur: RepoState = fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let before = cur.clone();
    cur.raise(seen);
    if cur == before && path.exists() {
        return Ok(());
    }
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(&cur).expect("serializable"))?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_only_grows() {
        let mut a = RepoState {
            config_authenticated: true,
            history_seq: 5,
            history_heads: vec!["b".into()],
            rollup_seq: 7,
        };
        a.raise(&RepoState {
            config_authenticated: false,
            history_seq: 3,
            history_heads: vec!["x".into()],
            rollup_seq: 2,
        });
        assert!(a.config_authenticated);
        assert_eq!(a.rollup_seq, 7);
        assert_eq!(
            (a.history_seq, a.history_heads.clone()),
            (5, vec!["b".into()])
        );
        a.raise(&RepoState {
            history_seq: 5,
            history_heads: vec!["a".into()],
            ..Default::default()
        });
        assert_eq!(a.history_heads, vec!["a".to_string(), "b".into()]);
        a.raise(&RepoState {
            history_seq: 6,
            history_heads: vec!["c".into()],
            ..Default::default()
        });
        assert_eq!((a.history_seq, a.history_heads), (6, vec!["c".into()]));
    }

    #[test]
    fn file_round_trip_never_lowers() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("repos").join("ab.json");
        let hi = RepoState {
            config_authenticated: true,
            history_seq: 9,
            history_heads: vec!["h".into()],
            rollup_seq: 4,
        };
        raise_at(&p, &hi).unwrap();
        raise_at(&p, &RepoState::default()).unwrap();
        let got: RepoState = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        assert_eq!(got, hi);
    }
}
