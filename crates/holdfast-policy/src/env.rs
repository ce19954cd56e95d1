//! What jobs need from their caller (the workload, "now", how to open repositories, the state
//! directory, progress) and how they fail. Kept apart from [`crate::jobs`] and
//! [`crate::observe`] so neither imports the other's caller.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use holdfast_core::progress::Progress;
use holdfast_core::Repository;

use crate::config::{RepositoryConfig, Workload};

/// Errors of policy jobs.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] holdfast_core::Error),
    /// A repository could not be opened.
    #[error("repository {name:?}: {message}")]
    Repository {
        /// Its name in the workload.
        name: String,
        /// Why.
        message: String,
    },
    /// Bad request.
    #[error("{0}")]
    Invalid(String),
    /// The workload has no source of this name.
    #[error("no source named {name:?} in {workload}: the sources are {known}")]
    UnknownSource {
        /// The name asked for.
        name: String,
        /// The workload file.
        workload: String,
        /// The names it has.
        known: String,
    },
    /// A source driver failed outside any recorded job.
    #[error(transparent)]
    Source(#[from] crate::sources::SourceError),
    /// Local I/O.
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

impl JobError {
    /// The error for a source name the workload does not have.
    pub fn unknown_source(w: &Workload, name: &str) -> JobError {
        let known: Vec<&str> = w.sources.iter().map(|s| s.name()).collect();
        JobError::UnknownSource {
            name: name.into(),
            workload: w.path.display().to_string(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        }
    }
}

/// Opens the repository a workload names (the CLI knows the backends and passwords).
pub type Opener<'a> = dyn Fn(&str, &RepositoryConfig) -> Result<Repository, JobError> + 'a;

/// What jobs need from their caller.
pub struct Env<'a> {
    /// The workload.
    pub workload: &'a Workload,
    /// "Now" (injectable for tests).
    pub now: DateTime<Utc>,
    /// Opens repositories.
    pub open: &'a Opener<'a>,
    /// Where per-source locks live (so two `protect` runs never run one source twice).
    pub state_dir: PathBuf,
    /// Progress of long operations.
    pub progress: &'a dyn Progress,
}
