//! migrate and history: what protects the repository's metadata against an attacker who can
//! write to the store.

use anyhow::Result;
use holdfast_core::history;

use super::{open, print_json};
use crate::cli::Global;
use crate::exit;

/// Bring the config to the current format (authenticating a format 1 config) and record the
/// snapshots the history does not know.
pub fn migrate(g: &Global) -> Result<u8> {
    let mut repo = open(g)?;
    let c = repo.config().clone();
    let migrated = repo.migrate_config()?;
    let recorded = history::record_unrecorded(&repo)?;
    if g.json {
        print_json(&serde_json::json!({
            "config_migrated": migrated, "version": repo.config().version,
            "snapshots_recorded": recorded,
        }))?;
    } else {
        if migrated && !c.is_authenticated_format() {
            outln!(
                "config authenticated (format version {} -> {}) with these settings: chunker min {} avg {} max {}, compression {}, pack size {}, cipher {}; if any of them is not what you set, the config was changed before: do not use this repository",
                c.version,
                repo.config().version,
                c.chunker.min,
                c.chunker.avg,
                c.chunker.max,
                c.compression,
                c.pack_size,
                c.cipher
            );
        } else if migrated {
            outln!(
                "format version {} -> {}: files of at most {} bytes are now stored inside their directory's tree; holdfast releases that read only format {} cannot open this repository any more",
                c.version,
                repo.config().version,
                repo.config().inline_max.unwrap_or(0),
                c.version
            );
        } else {
            outln!(
                "config already authenticated and at format version {}",
                c.version
            );
        }
        outln!("{recorded} snapshot(s) recorded in the history");
    }
    Ok(exit::OK)
}

/// Audit the history; with `accept_loss`, accept what it found.
pub fn history(g: &Global, accept_loss: bool) -> Result<u8> {
    let repo = open(g)?;
    let a = history::audit(&repo)?;
    let errors = a.errors();
    let accepted = if accept_loss && !errors.is_empty() {
        Some(history::accept_loss(&repo, &a)?)
    } else {
        None
    };
    if g.json {
        let mut v = serde_json::to_value(&a)?;
        v["errors"] = serde_json::to_value(&errors)?;
        v["warnings"] = serde_json::to_value(a.warnings())?;
        v["accepted"] = serde_json::to_value(&accepted)?;
        print_json(&v)?;
    } else {
        for w in a.warnings() {
            eprintln!("warning: {w}");
        }
        for e in &errors {
            outln!("error: {e}");
        }
        match &accepted {
            Some(n) => outln!(
                "accepted: {} lost entr(y/ies), {} vanished snapshot(s); the history continues from here",
                n.len(),
                a.vanished.len()
            ),
            None => outln!(
                "{} history entries: {}",
                a.entries,
                if errors.is_empty() {
                    "no recovery point vanished".to_string()
                } else {
                    format!("{} ERRORS", errors.len())
                }
            ),
        }
    }
    Ok(if errors.is_empty() || accepted.is_some() {
        exit::OK
    } else {
        exit::ERROR
    })
}
