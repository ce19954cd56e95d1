//! replicate: log shipping of continuous sources in the foreground.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};
use holdfast_policy::config::Workload;
use holdfast_policy::runtime::replicate::{ReplicateOptions, RoundEvent};

use super::{print_json, rt};
use crate::cli::Global;
use crate::exit;

/// `holdfast replicate`: run until SIGINT/SIGTERM (or `--rounds`, `--for`); exit 0 when the
/// last round of every source succeeded, else exit 1 (the failures were printed).
pub fn replicate(
    g: &Global,
    sources: Vec<String>,
    rounds: Option<u64>,
    duration: Option<&str>,
) -> Result<u8> {
    let w = Workload::load(&g.config)?;
    let duration = duration
        .map(|d| holdfast_core::duration::parse(d).map_err(anyhow::Error::msg))
        .transpose()
        .context("--for")?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing a signal handler")?;
    }
    let quiet = g.quiet || g.json;
    let report = move |ev: RoundEvent| match ev {
        RoundEvent::Started { source, what } => {
            if !quiet {
                outln!("{source}: replicating ({what})");
            }
        }
        RoundEvent::Round { source, result } => match result {
            Ok(s) => {
                if !quiet {
                    for m in &s.messages {
                        outln!("{source}: {m}");
                    }
                    if s.pieces > 0 {
                        tracing::info!("{source}: shipped {} pieces, {} bytes", s.pieces, s.bytes);
                    }
                }
            }
            Err(e) => eprintln!("holdfast: replicate {source}: {e} (retrying)"),
        },
    };
    let opts = ReplicateOptions {
        sources,
        rounds,
        duration,
    };
    let done = rt()?.replicate(&w, &opts, &stop, &report)?;
    if g.json {
        print_json(&done)?;
    } else if !g.quiet {
        for d in &done {
            outln!(
                "{}: {} rounds ({} failed), {} pieces, {} bytes",
                d.source,
                d.rounds,
                d.failed_rounds,
                d.pieces,
                d.bytes
            );
        }
    }
    Ok(if done.iter().any(|d| d.last_error.is_some()) {
        exit::ERROR
    } else {
        exit::OK
    })
}
