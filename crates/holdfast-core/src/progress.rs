//! Progress reporting. The engine never writes to a terminal; a front end implements this trait.

/// Receives progress from long operations. All methods have empty defaults.
pub trait Progress: Send + Sync {
    /// A new phase begins ("backup", "restore", "check", ...).
    fn phase(&self, _name: &str) {}
    /// More work was discovered: files and bytes to process.
    fn add_total(&self, _files: u64, _bytes: u64) {}
    /// Work was done.
    fn inc(&self, _files: u64, _bytes: u64) {}
    /// Something went wrong but the operation goes on.
    fn warn(&self, _message: &str) {}
    /// The phase ended.
    fn finish(&self) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
