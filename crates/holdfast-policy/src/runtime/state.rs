//! The state directory: where per-source locks live (so two `protect` runs on one host never
//! run one source twice).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The state directory the environment names: `HOLDFAST_STATE_DIR`, else [`default_dir`].
pub fn from_env() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    default_dir(|v| std::env::var_os(v), root)
}

/// The state directory given how to read the environment and whether we run as root:
/// `HOLDFAST_STATE_DIR`; else for root `/var/lib/holdfast`; else `$XDG_STATE_HOME/holdfast`,
/// `$HOME/.local/state/holdfast`, or the temporary directory's `holdfast`.
pub fn default_dir(var: impl Fn(&str) -> Option<OsString>, root: bool) -> PathBuf {
    if let Some(d) = var("HOLDFAST_STATE_DIR") {
        return d.into();
    }
    if root {
        return "/var/lib/holdfast".into();
    }
    var("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| Path::new(&h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("holdfast")
}

#[cfg(test)]
mod tests {
    use super::*;

    type Vars = &'static [(&'static str, &'static str)];

    #[test]
    fn state_dir_table() {
        let env = |pairs: Vars| {
            move |v: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == v)
                    .map(|(_, x)| OsString::from(x))
            }
        };
        let all = &[
            ("HOLDFAST_STATE_DIR", "/s"),
            ("XDG_STATE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        let rows: &[(Vars, bool, PathBuf)] = &[
            (all, true, "/s".into()),
            (all, false, "/s".into()),
            (&all[1..], true, "/var/lib/holdfast".into()),
            (&all[1..], false, "/x/holdfast".into()),
            (&all[2..], false, "/h/.local/state/holdfast".into()),
            (&[], false, std::env::temp_dir().join("holdfast")),
        ];
        for (vars, root, want) in rows {
            assert_eq!(&default_dir(env(vars), *root), want, "{vars:?} root={root}");
        }
    }
}
