//! holdfast's workload model and the policy that REL09-BP01 asks for: data sources classified
//! by criticality, each class with an RPO and an RTO; cadence derived from the RPO; compliance
//! judged from measurements; anti-patterns named; data sources discovered.
//!
//! The rules (cadence, compliance, findings, retention in `holdfast-core`) are pure functions
//! tested with tables; [`jobs`] runs them against a repository.

#![warn(missing_docs)]

pub mod cadence;
pub mod chains;
pub mod compliance;
pub mod config;
pub mod discover;
pub mod discover_devices;
mod discover_journal;
pub mod drills;
pub mod duration;
pub mod env;
pub mod findings;
pub mod fleet;
pub mod found;
pub mod hooks;
pub mod jobs;
#[cfg(test)]
mod layering;
pub mod maintenance;
pub mod observe;
pub mod preflight;
pub mod procnet;
pub mod report;
pub mod runtime;
pub mod service_config;
pub mod sources;
