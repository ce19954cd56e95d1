//! wal-push, wal-fetch: PostgreSQL's archive_command and restore_command for a continuous
//! source.

use std::path::Path;

use anyhow::Result;
use holdfast_policy::config::Workload;
use holdfast_policy::sources::pg_wal::fetch::Fetched;

use super::{print_json, rt};
use crate::cli::Global;
use crate::exit;

/// `wal-fetch` exit code for every failure but "not archived": above 125, so that PostgreSQL
/// aborts recovery instead of taking the failure for the end of the archive (and promoting a
/// server that misses WAL).
pub const FETCH_FAILED: u8 = 126;

/// `holdfast wal-push --source NAME %p`: exit 0 only when the file is durable in the
/// repository; any failure exits non-zero (PostgreSQL keeps the file and retries).
pub fn push(g: &Global, source: &str, path: &Path) -> Result<u8> {
    let w = Workload::load(&g.config)?;
    let p = rt()?.wal_push(&w, source, path, &holdfast_core::progress::NoProgress)?;
    if g.json {
        print_json(&p)?;
    } else if !g.quiet && g.verbose > 0 {
        if p.already {
            outln!("{}: already archived", p.name);
        } else {
            outln!(
                "{}: archived {} files ({} bytes) in batch {}; {} files ({} bytes) wait in pg_wal",
                p.name,
                p.stored.len(),
                p.bytes,
                p.batch.as_deref().map_or("-", |b| &b[..8.min(b.len())]),
                p.waiting_files,
                p.waiting_bytes
            );
        }
    }
    Ok(exit::OK)
}

/// `holdfast wal-fetch --source NAME %f %p`: exit 0 when `%p` holds the file, 1 when it is not
/// archived (normal at the end of recovery), [`FETCH_FAILED`] for anything else.
pub fn fetch(g: &Global, source: &str, host: Option<&str>, name: &str, dest: &Path) -> Result<u8> {
    let r = Workload::load(&g.config)
        .map_err(anyhow::Error::from)
        .and_then(|w| Ok(rt()?.wal_fetch(&w, source, name, dest, host)?));
    match r {
        Ok(f @ Fetched::Delivered { .. }) => {
            if g.json {
                print_json(&f)?;
            }
            Ok(exit::OK)
        }
        Ok(Fetched::NotArchived) => {
            if g.json {
                print_json(&Fetched::NotArchived)?;
            } else if !g.quiet {
                eprintln!("holdfast wal-fetch: {name} is not archived for {source}");
            }
            Ok(exit::ERROR)
        }
        Err(e) => {
            eprintln!("error: wal-fetch {name}: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            Ok(FETCH_FAILED)
        }
    }
}
