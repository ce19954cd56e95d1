//! Command implementations: parse arguments into engine calls, print results.

mod browse;
mod continuous;
mod data;
mod fleet;
mod lock;
mod maintain;
mod policy;
mod serve;
mod trust;
mod wal;

use std::sync::Arc;

use anyhow::{Context, Result};
use holdfast_core::keys::KdfParams;
use holdfast_core::Repository;
use holdfast_policy::runtime::{BackendError, PasswordChain, Runtime};
use holdfast_storage::Storage;

use crate::cli::{Cli, Command, Global};

/// The current time, or HOLDFAST_NOW (RFC 3339) when set (tests and drills of the future).
pub(crate) fn now() -> Result<chrono::DateTime<chrono::Utc>> {
    Ok(rt()?.now())
}

/// The snapshot `spec` names: an id prefix, or `latest`, the newest snapshot that `filter`
/// matches. An unfiltered `latest` in a repository of several hosts or path sets says on
/// standard error which one it picked.
pub(crate) fn select<'a>(
    all: &'a [holdfast_core::snapshot::SnapshotEntry],
    filter: &crate::cli::SnapshotFilter,
    spec: &str,
) -> Result<&'a holdfast_core::snapshot::SnapshotEntry> {
    if spec != "latest" {
        return Ok(holdfast_core::snapshot::find(all, spec)?);
    }
    let m: Vec<_> = all.iter().filter(|s| filter.matches(&s.snapshot)).collect();
    let Some(s) = m.last().copied() else {
        return Err(
            holdfast_core::Error::SnapshotNotFound(if filter.is_empty() {
                "latest".into()
            } else {
                format!("latest (no snapshot matches {filter:?})")
            })
            .into(),
        );
    };
    if filter.is_empty() {
        let groups: std::collections::HashSet<_> = all
            .iter()
            .map(|x| (&x.snapshot.hostname, &x.snapshot.paths, &x.snapshot.source))
            .collect();
        if groups.len() > 1 {
            eprintln!(
                "note: `latest` is the newest snapshot of any host and path: {} of host {}, paths {}; choose with --host, --path, --tag or --of",
                s.id.short(),
                s.snapshot.hostname,
                s.snapshot.paths.join(" ")
            );
        }
    }
    Ok(s)
}

/// Run a command; returns the exit code.
pub fn run(cli: Cli) -> Result<u8> {
    let g = &cli.global;
    match cli.command {
        Command::Init {
            compression,
            pack_size_mib,
            inline_max,
        } => data::init(g, compression, pack_size_mib, inline_max),
        Command::Backup(a) => data::backup(g, a),
        Command::Restore(a) => data::restore(g, a),
        Command::Snapshots { filter } => browse::snapshots(g, &filter),
        Command::Ls {
            filter,
            snapshot,
            path,
            long,
        } => browse::ls(g, &filter, &snapshot, path.as_deref(), long),
        Command::Diff { a, b } => browse::diff(g, &a, &b),
        Command::Stats { filter, snapshot } => browse::stats(g, &filter, snapshot.as_deref()),
        Command::Check {
            read_data,
            read_data_subset,
        } => maintain::check(g, read_data, read_data_subset),
        Command::Forget(a) => maintain::forget(g, a),
        Command::Prune {
            dry_run,
            max_unused,
            remove_unreadable_sessions,
        } => maintain::prune(g, dry_run, max_unused, remove_unreadable_sessions),
        Command::Key { action } => maintain::key(g, action),
        Command::ObjectLock {
            undelete_since: Some(t),
            dry_run,
            ..
        } => lock::undelete(g, &t, dry_run),
        Command::ObjectLock { extend, verify, .. } => lock::object_lock(g, extend, verify),
        Command::RetentionLock {
            min_age,
            compliance,
        } => maintain::retention_lock(g, min_age.as_deref(), compliance),
        Command::Migrate => trust::migrate(g),
        Command::History { accept_loss } => trust::history(g, accept_loss),
        Command::Copy {
            from,
            to,
            from_password_file,
            to_password_file,
            snapshots,
        } => data::copy(
            g,
            &from,
            &to,
            from_password_file,
            to_password_file,
            &snapshots,
        ),
        Command::Discover {
            root,
            suggest,
            no_host,
        } => policy::discover(g, root, suggest, no_host),
        Command::Plan { no_discover } => policy::plan(g, no_discover),
        Command::Protect { source, retain } => policy::protect(g, source.as_deref(), retain),
        Command::Drill {
            source,
            random,
            scratch,
        } => policy::drill(g, source.as_deref(), random, scratch),
        Command::Status {
            html, all_hosts, ..
        } if all_hosts => fleet::all_hosts(g, html.as_deref()),
        Command::Status {
            html, no_discover, ..
        } => policy::status(g, html.as_deref(), no_discover),
        Command::RetireHost { host, reason } => fleet::retire_host(g, &host, &reason),
        Command::Serve { listen, scratch } => serve::serve(g, listen, scratch),
        Command::Replicate {
            source,
            rounds,
            duration,
        } => continuous::replicate(g, source, rounds, duration.as_deref()),
        Command::WalPush { source, path } => wal::push(g, &source, &path),
        Command::WalFetch {
            source,
            host,
            name,
            path,
        } => wal::fetch(g, &source, host.as_deref(), &name, &path),
    }
}

/// The workload runtime, as the environment configures it (clock, state directory, KDF).
pub(crate) fn rt() -> Result<Runtime> {
    Ok(Runtime::from_env()?)
}

/// The repository location the global options name.
fn location(g: &Global) -> Result<&str> {
    Ok(g.repo.as_deref().ok_or(BackendError::NoLocation)?)
}

/// Where the `--repo` repository's password comes from (`confirm`: a new one, asked twice).
pub(crate) fn password_chain(g: &Global, confirm: bool) -> PasswordChain {
    PasswordChain::command_line(g.password_file.clone(), g.password_command.clone(), confirm)
}

/// The storage backend for the repository the global options name.
pub fn storage_for(g: &Global) -> Result<Arc<dyn Storage>> {
    Ok(rt()?.storage(location(g)?)?)
}

/// Open the repository named by the global options.
pub fn open(g: &Global) -> Result<Repository> {
    let loc = location(g)?;
    Ok(rt()?.open(loc, &password_chain(g, false), Some(&crate::password::ask))?)
}

/// Argon2 parameters: real ones, unless the test suite asks for cheap ones.
pub fn kdf() -> Result<KdfParams> {
    Ok(rt()?.kdf)
}

/// Print a value as JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).context("serializing output")?
    );
    Ok(())
}
