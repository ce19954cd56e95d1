//! Point-in-time recovery of PostgreSQL (the restore and continuity side of `mode =
//! "continuous"`): the WAL chain from each base backup ([`chain`]), restoring to a time or an
//! LSN with `restore_command = holdfast wal-fetch` ([`recover`]), drills to a random time.

pub mod chain;
pub mod conf;
mod continuous;
mod drill;
pub mod history;
pub mod names;
pub mod recover;
pub mod start;

#[cfg(test)]
mod chain_tests;
