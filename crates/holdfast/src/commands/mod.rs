//! Command implementations: parse arguments into engine calls, print results.

mod browse;
mod data;
mod lock;
mod maintain;
mod policy;
mod trust;

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use holdfast_core::keys::KdfParams;
use holdfast_core::Repository;
use holdfast_storage::Storage;

use crate::cli::{Cli, Command, Global};

/// The current time, or HOLDFAST_NOW (RFC 3339) when set (tests and drills of the future).
pub(crate) fn now() -> Result<chrono::DateTime<chrono::Utc>> {
    match std::env::var("HOLDFAST_NOW") {
        Ok(t) => Ok(chrono::DateTime::parse_from_rfc3339(&t)
            .with_context(|| format!("HOLDFAST_NOW {t:?} is not an RFC 3339 time"))?
            .with_timezone(&chrono::Utc)),
        Err(_) => Ok(chrono::Utc::now()),
    }
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
        } => data::init(g, compression, pack_size_mib),
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
        Command::Protect { source } => policy::protect(g, source.as_deref()),
        Command::Drill {
            source,
            random,
            scratch,
        } => policy::drill(g, source.as_deref(), random, scratch),
        Command::Status { html, no_discover } => policy::status(g, html.as_deref(), no_discover),
    }
}

/// The storage backend for a repository location.
pub fn storage_for(g: &Global) -> Result<Arc<dyn Storage>> {
    let Some(loc) = g.repo.as_deref() else {
        bail!("no repository given: pass --repo DIR or set HOLDFAST_REPOSITORY");
    };
    storage_at(loc)
}

/// The storage backend for a location string: a directory, `file://DIR`, or `s3://BUCKET/PREFIX`.
pub fn storage_at(loc: &str) -> Result<Arc<dyn Storage>> {
    if let Some(rest) = loc.strip_prefix("s3://") {
        #[cfg(feature = "s3")]
        {
            let _ = rest;
            let c =
                holdfast_backend_opendal::S3Config::from_url(loc).map_err(anyhow::Error::msg)?;
            return Ok(Arc::new(
                holdfast_backend_opendal::ObjectStorage::s3(&c).map_err(anyhow::Error::msg)?,
            ));
        }
        #[cfg(not(feature = "s3"))]
        {
            let _ = rest;
            bail!("this build has no object-storage backend (feature `s3`)");
        }
    }
    if loc.starts_with("sftp://") {
        #[cfg(feature = "sftp")]
        {
            let c = holdfast_backend_sftp::SftpConfig::from_url(loc).map_err(anyhow::Error::msg)?;
            return Ok(Arc::new(
                holdfast_backend_sftp::SftpStorage::connect(&c).map_err(anyhow::Error::msg)?,
            ));
        }
        #[cfg(not(feature = "sftp"))]
        bail!("this build has no SFTP backend (feature `sftp`)");
    }
    if loc.starts_with("azblob://") {
        #[cfg(feature = "azblob")]
        {
            let c = holdfast_backend_opendal::AzblobConfig::from_url(loc)
                .map_err(anyhow::Error::msg)?;
            return Ok(Arc::new(
                holdfast_backend_opendal::ObjectStorage::azblob(&c).map_err(anyhow::Error::msg)?,
            ));
        }
        #[cfg(not(feature = "azblob"))]
        bail!("this build has no Azure Blob backend (feature `azblob`)");
    }
    if let Some((scheme, _)) = loc.split_once("://") {
        if scheme != "file" {
            bail!("repository URL scheme {scheme:?} is not supported: use a directory, file://DIR, s3://BUCKET/PREFIX, azblob://CONTAINER/PREFIX or sftp://[USER@]HOST[:PORT]/PATH");
        }
    }
    let path = loc.strip_prefix("file://").unwrap_or(loc);
    #[cfg(feature = "local")]
    {
        Ok(Arc::new(holdfast_backend_local::LocalStorage::new(path)))
    }
    #[cfg(not(feature = "local"))]
    {
        let _ = path;
        bail!("this build has no local-directory backend (feature `local`)")
    }
}

/// Open the repository named by the global options.
pub fn open(g: &Global) -> Result<Repository> {
    let storage = storage_for(g)?;
    // Refuse early, before asking for a password, if there is nothing to open.
    let pw = password_for_existing(g, &storage)?;
    Ok(Repository::open(storage, pw.as_bytes())?)
}

fn password_for_existing(g: &Global, storage: &Arc<dyn Storage>) -> Result<String> {
    match storage.get(holdfast_storage::ObjectKind::Config, "config") {
        Err(e) if e.is_not_found() => {
            // Let the engine produce the precise error (missing vs foreign).
            Repository::open(storage.clone(), b"")?;
            unreachable!("opening a repository without config cannot succeed")
        }
        _ => crate::password::password(g, false),
    }
}

/// Argon2 parameters: real ones, unless the test suite asks for cheap ones.
pub fn kdf() -> KdfParams {
    if std::env::var_os("HOLDFAST_INSECURE_TEST_KDF").is_some() {
        KdfParams::insecure_for_tests()
    } else {
        KdfParams::default()
    }
}

/// Print a value as JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).context("serializing output")?
    );
    Ok(())
}
