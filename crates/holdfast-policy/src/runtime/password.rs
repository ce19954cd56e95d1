//! The one password resolver: an ordered chain of places a password may come from, tried in
//! turn. Every front end and every repository (the `--repo` one, a workload's, `copy`'s two
//! sides, a new key slot's) resolves through [`PasswordChain::resolve`]; only reading from a
//! terminal is left to the front end, as the [`Ask`] callback.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::config::{RepositoryConfig, Workload};

/// Reads one line from the person at a terminal, without echo. `Ok(None)`: there is no one
/// to ask (no terminal). The error says why reading failed.
pub type Ask<'a> = dyn Fn(&str) -> Result<Option<String>, String> + 'a;

/// Where a password may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// An environment variable; skipped when it is not set.
    Env(String),
    /// An environment variable that must be set (a workload's `password-env`).
    RequiredEnv {
        /// The variable.
        var: String,
        /// The setting that named it, for the error.
        setting: String,
    },
    /// The first line of a file.
    File(PathBuf),
    /// The first line a shell command prints (its standard error goes to ours).
    Command(String),
    /// Ask at the terminal (with `confirm`, twice); an empty answer is refused.
    Prompt {
        /// What to ask.
        message: String,
        /// Ask twice and compare.
        confirm: bool,
    },
}

/// Errors of resolving a password.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// A password file could not be read.
    #[error("reading password file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A password command could not be started.
    #[error("running password command {command:?}: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A password command failed.
    #[error("password command {command:?} failed with {status}: fix the command or give the password another way")]
    CommandFailed {
        /// The command.
        command: String,
        /// How it ended.
        status: std::process::ExitStatus,
    },
    /// A required environment variable is not set.
    #[error("environment variable {var} ({setting}) is not set")]
    EnvUnset {
        /// The variable.
        var: String,
        /// The setting that named it.
        setting: String,
    },
    /// Nothing in the chain gave a password.
    #[error("no password given: {hint}")]
    NoneGiven {
        /// Where one could be given.
        hint: String,
    },
    /// The two answers of a confirmed prompt differ.
    #[error("the passwords differ")]
    Differ,
    /// An empty password where one is not allowed.
    #[error("an empty password is not allowed")]
    Empty,
    /// Reading from the terminal failed.
    #[error("reading the password: {0}")]
    Prompt(String),
}

/// An ordered chain of password sources; the first that gives a password wins. A source
/// that is configured but fails (an unreadable file, a failing command) is an error, never
/// skipped: a password from further down the chain would open with the wrong key slot, or
/// hide the mistake.
#[derive(Debug, Clone)]
pub struct PasswordChain {
    /// The sources, in order.
    pub sources: Vec<PasswordSource>,
    /// Where a password could be given, for the error when none was.
    pub hint: String,
    /// Refuse an empty password from any source (a new repository or key slot).
    pub require_nonempty: bool,
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

impl PasswordChain {
    /// The password of the repository a command line names: `HOLDFAST_PASSWORD`, then
    /// `file`, then `command`, then the terminal (`confirm`: for a new repository, asked
    /// twice and never empty).
    pub fn command_line(file: Option<PathBuf>, command: Option<String>, confirm: bool) -> Self {
        let mut sources = vec![PasswordSource::Env("HOLDFAST_PASSWORD".into())];
        sources.extend(file.map(PasswordSource::File));
        sources.extend(command.map(PasswordSource::Command));
        sources.push(PasswordSource::Prompt {
            message: "repository password: ".into(),
            confirm,
        });
        PasswordChain {
            sources,
            hint: "set HOLDFAST_PASSWORD, HOLDFAST_PASSWORD_FILE or HOLDFAST_PASSWORD_COMMAND (no terminal to ask on)".into(),
            require_nonempty: confirm,
        }
    }

    /// One side of `copy`: its own password file, else the variable `env`, else `rest` (the
    /// command line's chain).
    pub fn side(file: Option<PathBuf>, env: &str, rest: PasswordChain) -> Self {
        let mut sources: Vec<PasswordSource> = file.map(PasswordSource::File).into_iter().collect();
        sources.push(PasswordSource::Env(env.into()));
        sources.extend(rest.sources);
        PasswordChain { sources, ..rest }
    }

    /// A new password (`key add`, `key passwd`): `HOLDFAST_NEW_PASSWORD`, then `file`, then
    /// the terminal, asked twice.
    pub fn new_password(file: Option<PathBuf>) -> Self {
        let mut sources = vec![PasswordSource::Env("HOLDFAST_NEW_PASSWORD".into())];
        sources.extend(file.map(PasswordSource::File));
        sources.push(PasswordSource::Prompt {
            message: "new password: ".into(),
            confirm: true,
        });
        PasswordChain {
            sources,
            hint: "set HOLDFAST_NEW_PASSWORD or HOLDFAST_NEW_PASSWORD_FILE (no terminal to ask on)"
                .into(),
            require_nonempty: false,
        }
    }

    /// A workload repository's password: its `password-file` (relative to the workload file),
    /// `password-command`, `password-env`, else `HOLDFAST_PASSWORD`. Never a prompt: jobs run
    /// unattended.
    pub fn workload(w: &Workload, r: &RepositoryConfig) -> Self {
        let mut sources = Vec::new();
        sources.extend(
            r.password_file
                .as_ref()
                .map(|f| PasswordSource::File(w.resolve(f))),
        );
        sources.extend(r.password_command.clone().map(PasswordSource::Command));
        sources.extend(
            r.password_env
                .clone()
                .map(|var| PasswordSource::RequiredEnv {
                    var,
                    setting: "password-env".into(),
                }),
        );
        sources.push(PasswordSource::Env("HOLDFAST_PASSWORD".into()));
        PasswordChain {
            sources,
            hint: "the repository has no password-file, password-command or password-env, and HOLDFAST_PASSWORD is not set".into(),
            require_nonempty: false,
        }
    }

    /// The password: the first source that gives one. `ask` reads from a terminal; without
    /// one a prompt counts as "no one to ask".
    pub fn resolve(&self, ask: Option<&Ask>) -> Result<String, PasswordError> {
        for s in &self.sources {
            let got = match s {
                PasswordSource::Env(v) => std::env::var(v).ok(),
                PasswordSource::RequiredEnv { var, setting } => {
                    Some(std::env::var(var).map_err(|_| PasswordError::EnvUnset {
                        var: var.clone(),
                        setting: setting.clone(),
                    })?)
                }
                PasswordSource::File(path) => Some(first_line(
                    &std::fs::read_to_string(path).map_err(|source| PasswordError::File {
                        path: path.clone(),
                        source,
                    })?,
                )),
                PasswordSource::Command(command) => Some(run(command)?),
                PasswordSource::Prompt { message, confirm } => match ask {
                    Some(ask) => prompt(ask, message, *confirm)?,
                    None => None,
                },
            };
            if let Some(p) = got {
                if self.require_nonempty && p.is_empty() {
                    return Err(PasswordError::Empty);
                }
                return Ok(p);
            }
        }
        Err(PasswordError::NoneGiven {
            hint: self.hint.clone(),
        })
    }
}

fn run(command: &str) -> Result<String, PasswordError> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| PasswordError::Spawn {
            command: command.into(),
            source,
        })?;
    if !out.status.success() {
        return Err(PasswordError::CommandFailed {
            command: command.into(),
            status: out.status,
        });
    }
    Ok(first_line(&String::from_utf8_lossy(&out.stdout)))
}

fn prompt(ask: &Ask, message: &str, confirm: bool) -> Result<Option<String>, PasswordError> {
    let Some(p) = ask(message).map_err(PasswordError::Prompt)? else {
        return Ok(None);
    };
    if confirm {
        let again = ask("again: ")
            .map_err(PasswordError::Prompt)?
            .ok_or_else(|| PasswordError::Prompt("the terminal went away".into()))?;
        if again != p {
            return Err(PasswordError::Differ);
        }
    }
    if p.is_empty() {
        return Err(PasswordError::Empty);
    }
    Ok(Some(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn chain(sources: Vec<PasswordSource>) -> PasswordChain {
        PasswordChain {
            sources,
            hint: "HINT".into(),
            require_nonempty: false,
        }
    }

    #[test]
    fn first_source_that_gives_a_password_wins() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pw");
        std::fs::write(&f, "from-file\nsecond line\n").unwrap();
        // An unset variable is skipped; the file gives its first line; the command is not run.
        let c = chain(vec![
            PasswordSource::Env("HOLDFAST_TEST_UNSET_4711".into()),
            PasswordSource::File(f.clone()),
            PasswordSource::Command("exit 1".into()),
        ]);
        assert_eq!(c.resolve(None).unwrap(), "from-file");
        let c = chain(vec![
            PasswordSource::Command("printf 'cmd-pw\\nrest'".into()),
            PasswordSource::File(f),
        ]);
        assert_eq!(c.resolve(None).unwrap(), "cmd-pw");
    }

    #[test]
    fn a_configured_source_that_fails_is_an_error_not_skipped() {
        let c = chain(vec![
            PasswordSource::File("/nonexistent/holdfast-pw".into()),
            PasswordSource::Command("echo fallback".into()),
        ]);
        let e = c.resolve(None).unwrap_err();
        assert!(matches!(e, PasswordError::File { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/holdfast-pw"), "{e}");
        let c = chain(vec![
            PasswordSource::Command("exit 3".into()),
            PasswordSource::Command("echo fallback".into()),
        ]);
        assert!(matches!(
            c.resolve(None),
            Err(PasswordError::CommandFailed { .. })
        ));
        let c = chain(vec![
            PasswordSource::RequiredEnv {
                var: "HOLDFAST_TEST_UNSET_4712".into(),
                setting: "password-env".into(),
            },
            PasswordSource::Command("echo fallback".into()),
        ]);
        let e = c.resolve(None).unwrap_err();
        assert!(
            e.to_string()
                .contains("HOLDFAST_TEST_UNSET_4712 (password-env)"),
            "{e}"
        );
    }

    #[test]
    fn prompt_without_a_terminal_gives_the_hint() {
        let c = chain(vec![PasswordSource::Prompt {
            message: "pw: ".into(),
            confirm: false,
        }]);
        let no_tty = |_: &str| Ok(None);
        for ask in [None, Some(&no_tty as &Ask)] {
            let e = c.resolve(ask).unwrap_err();
            assert_eq!(e.to_string(), "no password given: HINT");
        }
    }

    #[test]
    fn prompt_confirms_and_refuses_empty() {
        let answers = RefCell::new(vec!["b", "a"]);
        let asked = RefCell::new(Vec::new());
        let ask = |m: &str| {
            asked.borrow_mut().push(m.to_string());
            Ok(answers.borrow_mut().pop().map(String::from))
        };
        let confirm = chain(vec![PasswordSource::Prompt {
            message: "new: ".into(),
            confirm: true,
        }]);
        assert!(matches!(
            confirm.resolve(Some(&ask)),
            Err(PasswordError::Differ)
        ));
        assert_eq!(*asked.borrow(), vec!["new: ", "again: "]);
        *answers.borrow_mut() = vec!["same", "same"];
        assert_eq!(confirm.resolve(Some(&ask)).unwrap(), "same");
        *answers.borrow_mut() = vec![""];
        let once = chain(vec![PasswordSource::Prompt {
            message: "pw: ".into(),
            confirm: false,
        }]);
        assert!(matches!(
            once.resolve(Some(&ask)),
            Err(PasswordError::Empty)
        ));
    }

    #[test]
    fn require_nonempty_refuses_an_empty_password_from_any_source() {
        let mut c = chain(vec![PasswordSource::Command("echo".into())]);
        assert_eq!(c.resolve(None).unwrap(), "");
        c.require_nonempty = true;
        assert!(matches!(c.resolve(None), Err(PasswordError::Empty)));
    }

    #[test]
    fn standard_chains_keep_their_order() {
        use PasswordSource as S;
        let c = PasswordChain::command_line(Some("f".into()), Some("c".into()), false);
        assert_eq!(
            c.sources[..3],
            [
                S::Env("HOLDFAST_PASSWORD".into()),
                S::File("f".into()),
                S::Command("c".into())
            ]
        );
        assert!(matches!(c.sources[3], S::Prompt { confirm: false, .. }));
        let s = PasswordChain::side(Some("side".into()), "HOLDFAST_FROM_PASSWORD", c);
        assert_eq!(s.sources[0], S::File("side".into()));
        assert_eq!(s.sources[1], S::Env("HOLDFAST_FROM_PASSWORD".into()));
        assert_eq!(s.sources[2], S::Env("HOLDFAST_PASSWORD".into()));
        let n = PasswordChain::new_password(None);
        assert_eq!(n.sources[0], S::Env("HOLDFAST_NEW_PASSWORD".into()));
        assert!(matches!(n.sources[1], S::Prompt { confirm: true, .. }));
    }
}
