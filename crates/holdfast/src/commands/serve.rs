//! `holdfast serve`: the long-running service (see the `holdfast-service` crate).

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::rt;
use crate::cli::Global;
use crate::exit;

/// Run until SIGTERM or SIGINT; SIGHUP reloads the workload file. Exit 0 after a clean stop.
pub fn serve(g: &Global, listen: Option<String>, scratch: Option<PathBuf>) -> Result<u8> {
    let signals = holdfast_service::Signals::default();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, signals.stop.clone())
            .context("installing a signal handler")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, signals.reload.clone())
        .context("installing a signal handler")?;
    let opts = holdfast_service::ServeOptions {
        config: std::path::absolute(&g.config).unwrap_or_else(|_| g.config.clone()),
        exe: std::env::current_exe().context("finding the holdfast binary for the jobs")?,
        runtime: rt()?,
        listen,
        scratch,
    };
    holdfast_service::serve(opts, signals)?;
    Ok(exit::OK)
}
