//! The engine's error type: every variant names the cause and, where there is one, the fix.

use holdfast_storage::StorageError;
use std::path::PathBuf;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// There is no repository at the location.
    #[error("no holdfast repository at {location}: create one with `holdfast init --repo {location}`, or check the path")]
    NoRepository {
        /// Where we looked.
        location: String,
    },
    /// The location holds something that is not a holdfast repository.
    #[error("{location} is not a holdfast repository ({detail}): check the path")]
    Foreign {
        /// Where.
        location: String,
        /// What was found.
        detail: String,
    },
    /// Key slots but no config: a repository being created right now (its config is written
    /// last), or one whose creation was interrupted.
    #[error("{location} holds key slots but no config object: a repository whose creation is under way or was interrupted, or whose config was deleted (if no other holdfast is creating it: put the config back from a copy of the repository, or, if it never held data, remove the directory and create it again)")]
    Unfinished {
        /// Where.
        location: String,
    },
    /// The repository was written by a newer holdfast.
    #[error("repository {location} has format version {found}, this holdfast reads up to version {supported}: upgrade holdfast")]
    NewerFormat {
        /// Where.
        location: String,
        /// Version found.
        found: u32,
        /// Highest supported version.
        supported: u32,
    },
    /// The config was changed outside holdfast (its MAC fails) or downgraded to drop its MAC.
    #[error("the config of {location} was tampered with: {detail}. Its settings cannot be trusted: restore `config` from a copy of the repository, or recreate it with `holdfast init` elsewhere and `holdfast copy`")]
    ConfigTampered {
        /// Where.
        location: String,
        /// What is wrong.
        detail: String,
    },
    /// `forget` cannot know the retention lock in force.
    #[error(
        "retention lock cannot be verified: {detail}. forget refuses to remove anything until then"
    )]
    RetentionLockUnverifiable {
        /// What is unreadable or missing, and the fix.
        detail: String,
    },
    /// No key slot opens with the password.
    #[error("wrong password: none of the {slots} key slot(s) of {location} opens with it; check HOLDFAST_PASSWORD, HOLDFAST_PASSWORD_FILE or HOLDFAST_PASSWORD_COMMAND")]
    WrongPassword {
        /// Where.
        location: String,
        /// How many slots were tried.
        slots: usize,
    },
    /// No key slot opened, and some are malformed (or there are none): the password may be
    /// right. Only when every slot is well formed and none opens is it [`Error::WrongPassword`].
    #[error("{}", damaged_slots_message(.location, .intact, .damaged))]
    DamagedKeySlots {
        /// Where.
        location: String,
        /// Well-formed slots, none of which opened with the password.
        intact: usize,
        /// One line per malformed slot: its name and what is wrong.
        damaged: Vec<String>,
    },
    /// Data read back failed authentication or does not parse.
    #[error("{what} is damaged: {detail}")]
    Corrupt {
        /// Which object or blob.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A blob the repository should hold is not in the index.
    #[error("blob {id} is missing from the repository index (referenced by {by}): run `holdfast check` to see what is affected")]
    MissingBlob {
        /// The blob id.
        id: String,
        /// Who referenced it.
        by: String,
    },
    /// No snapshot matched.
    #[error("no snapshot matches {0:?}: list them with `holdfast snapshots`")]
    SnapshotNotFound(String),
    /// Several snapshots matched a prefix.
    #[error("snapshot prefix {0:?} is ambiguous: give more characters of the id")]
    AmbiguousSnapshot(String),
    /// A path given on the command line is not in the snapshot.
    #[error("{path} is not in snapshot {snapshot}")]
    PathNotInSnapshot {
        /// The path.
        path: String,
        /// The snapshot id.
        snapshot: String,
    },
    /// A local file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An argument is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The operation cannot proceed because of the repository's state.
    #[error("{0}")]
    Refused(String),
    /// A writer's session expired (it looked dead to garbage collection) and packs the new
    /// snapshot needs were deleted: the snapshot was not recorded.
    #[error("this writer's session expired ({detail}) and garbage collection deleted {missing} pack(s) the new snapshot needs (e.g. pack {example}): no snapshot was recorded. Run the backup again: it stores that data anew")]
    SessionExpired {
        /// Why the session looked dead.
        detail: String,
        /// How many needed packs are gone.
        missing: usize,
        /// One of them.
        example: String,
    },
    /// The operation was interrupted.
    #[error("interrupted")]
    Interrupted,
}

fn damaged_slots_message(location: &str, intact: &usize, damaged: &[String]) -> String {
    if damaged.is_empty() {
        return format!("{location} has no key slots (keys/ is empty): restore the keys/ directory from a copy of the repository; without a key slot the data cannot be decrypted");
    }
    let others = match intact {
        0 => "no slot is intact".to_string(),
        n => format!("{n} intact slot(s) did not open with this password either"),
    };
    format!(
        "the repository {location} could not be opened: key slot {}; {others}. The slots are damaged, not necessarily the password: restore the damaged keys/ files from a copy of the repository, or use the password of another slot",
        damaged.join("; key slot "),
    )
}

impl Error {
    /// Wrap an I/O error with what was being done and where.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Shorthand for a damaged object.
    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

/// Result type of the engine.
pub type Result<T> = std::result::Result<T, Error>;
