//! The workload runtime: everything a front end (the `holdfast` command line, the coming
//! service) needs to run what the workload asks, so that both behave the same by calling the
//! same functions.
//!
//! A [`Runtime`] owns the backend registry ([`Backends`]), the clock, the state directory and
//! the key-derivation parameters; it opens repositories with one password resolver
//! ([`PasswordChain`]), builds the job environment, runs `protect`, `drill`, `status` and
//! `plan` ([`workload`]), restores a source ([`restore`]) and extends the Object Lock after a
//! write. It does no terminal I/O: a front end that can ask for a password passes an [`Ask`].
//!
//! Layering: `runtime` sits on top of `jobs`, `observe`, `sources` and `config`; none of them
//! imports it.

pub mod backends;
pub mod password;
pub mod replicate;
pub mod restore;
pub mod state;
pub mod wal;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use holdfast_core::keys::KdfParams;
use holdfast_core::objlock::AfterWrite;
use holdfast_core::progress::Progress;
use holdfast_core::repo::InitOptions;
use holdfast_core::Repository;
use holdfast_storage::{ObjectKind, Storage};

pub use backends::{BackendError, Backends};
pub use password::{Ask, PasswordChain, PasswordError, PasswordSource};

use crate::config::{RepositoryConfig, Workload};
use crate::jobs::{Env, JobError};

/// Open a repository another process is creating at this moment: its config is written
/// last, so wait for it (up to 5 s), then open what it made.
fn wait_created(
    storage: &Arc<dyn Storage>,
    password: &[u8],
) -> Result<Repository, holdfast_core::Error> {
    let mut last = None;
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        match Repository::open(storage.clone(), password) {
            Err(
                e @ (holdfast_core::Error::NoRepository { .. }
                | holdfast_core::Error::Unfinished { .. }),
            ) => last = Some(e),
            other => return other,
        }
    }
    Err(last.unwrap_or_else(|| holdfast_core::Error::NoRepository {
        location: storage.location(),
    }))
}

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No backend for the location.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// No password.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// The engine failed (the exit code follows its kind: see [`RuntimeError::engine`]).
    #[error(transparent)]
    Engine(#[from] holdfast_core::Error),
    /// A workload job failed.
    #[error(transparent)]
    Job(#[from] JobError),
    /// `holdfast replicate` cannot run a source.
    #[error("replicate {source_name}: {message}")]
    Replicate {
        /// The source (empty: the workload).
        source_name: String,
        /// Why.
        message: String,
    },
    /// `HOLDFAST_NOW` is set but is no time.
    #[error("HOLDFAST_NOW {value:?} is not an RFC 3339 time: {source}")]
    Clock {
        /// The value.
        value: String,
        /// Why.
        #[source]
        source: chrono::ParseError,
    },
    /// A source restore could not be done; `message` says why and what to do.
    #[error("restoring {source_name}: {message}")]
    SourceRestore {
        /// The source.
        source_name: String,
        /// Why.
        message: String,
    },
    /// Local I/O of the front end's request (writing a report).
    #[error("{op} {path}: {source}")]
    Io {
        /// What.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// The engine error inside, if that is what failed (front ends map its kind to an exit
    /// code: no repository, wrong password, invalid request).
    pub fn engine(&self) -> Option<&holdfast_core::Error> {
        match self {
            RuntimeError::Engine(e) => Some(e),
            _ => None,
        }
    }

    /// The job error inside, if that is what failed.
    pub fn job(&self) -> Option<&JobError> {
        match self {
            RuntimeError::Job(e) => Some(e),
            _ => None,
        }
    }
}

/// The workload runtime. Cheap to build; [`Runtime::from_env`] is what the command line uses.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Location → storage.
    pub backends: Backends,
    /// A fixed "now" (tests, drills of the future); `None`: the system clock.
    pub clock: Option<DateTime<Utc>>,
    /// Where per-source locks live.
    pub state_dir: PathBuf,
    /// Key derivation for new repositories and key slots.
    pub kdf: KdfParams,
}

impl Runtime {
    /// The runtime the environment describes: every built-in backend; the clock from
    /// `HOLDFAST_NOW` (RFC 3339) if set; the state directory from `HOLDFAST_STATE_DIR` or the
    /// default ([`state::default_dir`]); cheap key derivation if
    /// `HOLDFAST_INSECURE_TEST_KDF` is set (the test suite only).
    pub fn from_env() -> Result<Runtime, RuntimeError> {
        let clock = match std::env::var("HOLDFAST_NOW") {
            Ok(value) => Some(
                DateTime::parse_from_rfc3339(&value)
                    .map_err(|source| RuntimeError::Clock { value, source })?
                    .with_timezone(&Utc),
            ),
            Err(_) => None,
        };
        Ok(Runtime {
            backends: Backends::builtin(),
            clock,
            state_dir: state::from_env(),
            kdf: if std::env::var_os("HOLDFAST_INSECURE_TEST_KDF").is_some() {
                KdfParams::insecure_for_tests()
            } else {
                KdfParams::default()
            },
        })
    }

    /// Now.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.unwrap_or_else(Utc::now)
    }

    /// The storage of a location.
    pub fn storage(&self, location: &str) -> Result<Arc<dyn Storage>, BackendError> {
        self.backends.storage(location)
    }

    /// Open the repository at `location`. Refuses early, before asking for a password, if
    /// there is no repository there (the engine says whether it is missing or foreign).
    pub fn open(
        &self,
        location: &str,
        password: &PasswordChain,
        ask: Option<&Ask>,
    ) -> Result<Repository, RuntimeError> {
        let storage = self.storage(location)?;
        self.open_storage(storage, password, ask)
    }

    /// [`Runtime::open`] on a storage already built.
    pub fn open_storage(
        &self,
        storage: Arc<dyn Storage>,
        password: &PasswordChain,
        ask: Option<&Ask>,
    ) -> Result<Repository, RuntimeError> {
        if let Err(e) = storage.get(ObjectKind::Config, "config") {
            if e.is_not_found() {
                // The engine produces the precise error (missing vs foreign).
                return Err(Repository::open(storage, b"")
                    .err()
                    .unwrap_or_else(|| {
                        holdfast_core::Error::Invalid(
                            "the repository has no config, yet opened".into(),
                        )
                    })
                    .into());
            }
        }
        let pw = password.resolve(ask)?;
        Ok(Repository::open(storage, pw.as_bytes())?)
    }

    /// Create a repository at `location` (`opts.kdf` is replaced by the runtime's).
    pub fn init(
        &self,
        location: &str,
        password: &PasswordChain,
        ask: Option<&Ask>,
        opts: InitOptions,
    ) -> Result<Repository, RuntimeError> {
        let storage = self.storage(location)?;
        let pw = password.resolve(ask)?;
        let opts = InitOptions {
            kdf: self.kdf,
            ..opts
        };
        Ok(Repository::init(storage, pw.as_bytes(), &opts)?)
    }

    /// Open (with `create`, initialise if there is none) a repository a workload names.
    pub fn open_workload_repository(
        &self,
        w: &Workload,
        name: &str,
        r: &RepositoryConfig,
        create: bool,
    ) -> Result<Repository, JobError> {
        let fail = |message: String| JobError::Repository {
            name: name.into(),
            message,
        };
        let url = if r.url.contains("://") {
            r.url.clone()
        } else {
            w.resolve(Path::new(&r.url)).display().to_string()
        };
        let storage = self.storage(&url).map_err(|e| fail(e.to_string()))?;
        let pw = PasswordChain::workload(w, r)
            .resolve(None)
            .map_err(|e| fail(e.to_string()))?;
        match Repository::open(storage.clone(), pw.as_bytes()) {
            // Another process is creating it (its config comes last): wait for it.
            Err(holdfast_core::Error::Unfinished { .. }) if create => {
                wait_created(&storage, pw.as_bytes()).map_err(JobError::from)
            }
            Err(holdfast_core::Error::NoRepository { .. }) if create => {
                tracing::info!("creating repository {name} at {url}");
                let made = Repository::init(
                    storage.clone(),
                    pw.as_bytes(),
                    &InitOptions {
                        kdf: self.kdf,
                        ..Default::default()
                    },
                );
                match made {
                    Ok(r) => Ok(r),
                    // Another process may be creating it at this moment (the archiver's
                    // wal-push and a protect run): its config is written last, so wait for
                    // it and open what it made.
                    Err(e) => match wait_created(&storage, pw.as_bytes()) {
                        Ok(r) => Ok(r),
                        Err(_) => Err(JobError::from(e)),
                    },
                }
            }
            r => r.map_err(JobError::from),
        }
    }

    /// The opener jobs use for a workload's repositories.
    pub fn opener<'a>(
        &'a self,
        w: &'a Workload,
        create: bool,
    ) -> impl Fn(&str, &RepositoryConfig) -> Result<Repository, JobError> + 'a {
        move |name, r| self.open_workload_repository(w, name, r, create)
    }

    /// Run `f` in the job environment of a workload: this runtime's clock, opener (`create`:
    /// repositories that do not exist yet are initialised), state directory, and `progress`.
    pub fn with_env<T>(
        &self,
        w: &Workload,
        create: bool,
        progress: &dyn Progress,
        f: impl FnOnce(&Env) -> T,
    ) -> T {
        let open = self.opener(w, create);
        let env = Env {
            workload: w,
            now: self.now(),
            open: &open,
            state_dir: self.state_dir.clone(),
            progress,
        };
        f(&env)
    }

    /// Extend the store's Object Lock after a backup or copy wrote a recovery point.
    pub fn lock_after_write(&self, repo: &Repository) -> AfterWrite {
        holdfast_core::objlock::after_write(repo, self.now())
    }
}
