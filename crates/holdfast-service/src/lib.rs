//! `holdfast serve`: one long-running process per host that runs what `protect` and `drill`
//! decide on their schedule, hosts the continuous replication tasks, serves the status page, a
//! JSON API and Prometheus metrics over HTTP (read-only), and sends notifications on changes of
//! state.
//!
//! The pieces, each its own module:
//! - [`snapshot`]: the service's view of the workload (status, jobs, drills, running jobs,
//!   replication tasks, repositories), computed by the observer and shared read-only with the
//!   HTTP server, the metrics and the alerts.
//! - [`schedule`]: which jobs to start now (pure: a table of cases tests it).
//! - [`journal`]: the local record of running jobs, so a killed service records the job it
//!   lost as failed on its next start.
//! - [`runner`]: jobs as child processes of the `holdfast` binary (isolated, killable, timed).
//! - [`replication`]: the continuous tasks, restarted with backoff, stalls detected.
//! - [`metrics`], [`alerts`], [`notify`], [`page`], [`http`]: what the world sees.
//! - [`serve`]: the loop that ties them together, signals and systemd.
//!
//! The library does no terminal I/O; its own log goes through `tracing`.

#![warn(missing_docs)]

pub mod alerts;
pub mod http;
pub mod journal;
pub mod metrics;
pub mod notify;
pub mod observer;
pub mod page;
pub mod replication;
pub mod runner;
pub mod schedule;
pub mod serve;
pub mod snapshot;

pub use serve::{serve, ServeError, ServeOptions, Signals};
pub use snapshot::Snapshot;
