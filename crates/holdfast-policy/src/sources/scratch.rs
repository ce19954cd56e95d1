//! How a scratch database server (for drills and tests) fails to start.

use std::process::ExitStatus;

use super::tool::ToolError;

/// A scratch server could not be set up or started.
#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    /// The server's programs are not installed.
    #[error("{0}")]
    Missing(&'static str),
    /// A setup program failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The server did not start; the end of its log says why.
    #[error("{error}; server log: {log}")]
    Start {
        /// What failed.
        #[source]
        error: ToolError,
        /// The last lines of the server log.
        log: String,
    },
    /// The server exited while starting.
    #[error("the scratch MariaDB server exited ({status}): {log}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of the server log.
        log: String,
    },
    /// The server did not answer in time.
    #[error("the scratch MariaDB server did not start in time")]
    Timeout,
    /// The scratch directory could not be given to the server's user.
    #[error("chown {dir} to {user}: {stderr} (a scratch PostgreSQL server must not run as root; the postgresql package creates the user)")]
    Chown {
        /// The directory.
        dir: String,
        /// The user.
        user: String,
        /// What chown said.
        stderr: String,
    },
    /// Local I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The wrapper for an I/O error while doing `what`.
pub(super) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ScratchError {
    let what = what.into();
    move |source| ScratchError::Io { what, source }
}

/// The last lines of a server log, on one line.
pub(super) fn log_tail(path: &std::path::Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
}
