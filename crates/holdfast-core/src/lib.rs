//! The holdfast engine: a deduplicating, compressing, always-encrypted backup repository.
//!
//! This crate has no terminal I/O. Front ends report progress through [`progress::Progress`],
//! and every failure is an [`Error`] that names its cause and fix. The repository format is
//! specified in `docs/DESIGN.md`.

#![warn(missing_docs)]

mod assemble;
pub mod backup;
mod bigfile;
pub mod blob;
mod blobindex;
mod blobtable;
pub mod browse;
mod budget;
pub mod built;
pub mod check;
pub mod config;
pub mod copy;
pub mod crypto;
pub mod duration;
pub mod error;
pub mod exclude;
pub mod fetch;
mod fileread;
pub mod fsmeta;
pub mod history;
pub mod id;
pub mod index;
mod indexload;
pub mod inline;
pub mod keys;
pub mod liveness;
pub mod localstate;
pub mod logs;
pub mod objlock;
pub mod pack;
pub mod progress;
pub mod prune;
pub mod records;
pub mod repo;
pub mod restore;
mod restore_big;
pub mod retention;
pub mod rollup;
pub mod session;
pub mod snapshot;
pub mod stream;
mod textrepr;
pub mod tree;
pub mod trees;
pub mod util;
pub mod volume;
pub mod writer;

pub use error::{Error, Result};
pub use id::Id;
pub use repo::Repository;
