//! init, backup, restore.

use anyhow::{Context, Result};
use holdfast_core::backup::{self, BackupOptions, ParentChoice};
use holdfast_core::repo::InitOptions;
use holdfast_core::restore::{self, RestoreOptions};
use holdfast_core::snapshot;
use holdfast_core::util::human_bytes;

use holdfast_core::objlock::AfterWrite;
use holdfast_policy::runtime::PasswordChain;

use super::{location, open, password_chain, print_json, rt};
use crate::cli::{BackupArgs, Global, RestoreArgs};
use crate::exit;
use crate::progress::CliProgress;

pub fn init(g: &Global, compression: i32, pack_size_mib: u32, inline_max: u32) -> Result<u8> {
    let opts = InitOptions {
        compression,
        pack_size: pack_size_mib.clamp(1, 512) << 20,
        inline_max,
        ..Default::default()
    };
    let repo = rt()?.init(
        location(g)?,
        &password_chain(g, true),
        Some(&crate::password::ask),
        opts,
    )?;
    if g.json {
        print_json(
            &serde_json::json!({ "id": repo.config().id, "location": repo.storage().location() }),
        )?;
    } else if !g.quiet {
        outln!(
            "created holdfast repository {} at {}",
            &repo.config().id[..8],
            repo.storage().location()
        );
        outln!("keep the password safe: without it the data cannot be recovered");
    }
    Ok(exit::OK)
}

pub fn backup(g: &Global, a: BackupArgs) -> Result<u8> {
    let repo = open(g)?;
    let mut excludes = a.exclude.clone();
    for f in &a.exclude_file {
        excludes.extend(backup::read_exclude_file(f)?);
    }
    let parent = if a.force {
        ParentChoice::None
    } else if let Some(p) = &a.parent {
        let (all, _) = snapshot::load_all(&repo)?;
        ParentChoice::Id(snapshot::find(&all, p)?.id)
    } else {
        ParentChoice::Auto
    };
    let time = match &a.time {
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .with_context(|| format!("--time / HOLDFAST_NOW {t:?} is not an RFC 3339 time"))?
                .with_timezone(&chrono::Utc),
        ),
        None => None,
    };
    let opts = BackupOptions {
        paths: a.paths.clone(),
        tags: a.tag.clone(),
        excludes,
        one_file_system: a.one_file_system,
        dry_run: a.dry_run,
        parent,
        hostname: a.host.clone(),
        time,
        threads: 0,
        source: None,
        before_snapshot: None,
        read_from: Vec::new(),
    };
    let progress = CliProgress::new(g.quiet || g.json);
    if a.device_contents {
        return device_contents(g, &repo, &a, time, &progress);
    }
    let out = backup::backup(&repo, &opts, &progress)?;
    let s = &out.snapshot;
    let lock = match out.id {
        Some(_) => rt()?.lock_after_write(&repo),
        None => AfterWrite::Unlocked,
    };
    if g.json {
        print_json(&serde_json::json!({
            "snapshot": out.id.map(|i| i.to_hex()),
            "dry_run": a.dry_run,
            "complete": s.complete,
            "errors": s.errors,
            "warnings": s.warnings,
            "changed_while_read": s.changed_while_read,
            "summary": s.summary,
            "object_lock": lock_json(&lock),
        }))?;
    } else if !g.quiet {
        let m = &s.summary;
        outln!(
            "files: {} new, {} changed, {} unmodified; dirs: {}",
            m.files_new,
            m.files_changed,
            m.files_unmodified,
            m.dirs
        );
        outln!(
            "added to the repository: {} ({} blobs) from {} read, {} in total, {:.2}s",
            human_bytes(m.bytes_added),
            m.blobs_added,
            human_bytes(m.bytes_read),
            human_bytes(m.total_bytes),
            m.seconds
        );
        match out.id {
            Some(id) if s.complete => outln!("snapshot {} saved", id.short()),
            Some(id) => outln!(
                "snapshot {} saved INCOMPLETE: {} path(s) could not be read, {} file(s) changed while they were read (listed below); it is not a complete recovery point",
                id.short(),
                s.errors.len(),
                s.changed_while_read.len()
            ),
            None => outln!("dry run: nothing was stored"),
        }
    }
    if !s.errors.is_empty() && !g.json {
        eprintln!("{} path(s) were skipped:", s.errors.len());
        for e in &s.errors {
            eprintln!("  {e}");
        }
    }
    if !s.changed_while_read.is_empty() && !g.json {
        eprintln!(
            "{} file(s) kept changing while they were read (read again, changed again); stored as last read, which may mix old and new content: back them up when they are quiet, from a file-system snapshot, or exclude them",
            s.changed_while_read.len()
        );
        for e in &s.changed_while_read {
            eprintln!("  {e}");
        }
    }
    print_lock(g, &lock);
    Ok(if s.complete && !matches!(lock, AfterWrite::Failed(_)) {
        exit::OK
    } else {
        exit::WARNINGS
    })
}

/// `holdfast backup --device-contents DEVICE`: the device's or image's contents as one file.
fn device_contents(
    g: &Global,
    repo: &holdfast_core::Repository,
    a: &BackupArgs,
    time: Option<chrono::DateTime<chrono::Utc>>,
    progress: &CliProgress,
) -> Result<u8> {
    let [path] = a.paths.as_slice() else {
        anyhow::bail!("--device-contents backs up one device or image at a time");
    };
    let path =
        std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "volume".into());
    let opts = holdfast_core::stream::StreamOptions {
        dir: name.clone(),
        label: path.display().to_string(),
        source: None,
        tags: a.tag.clone(),
        time,
        log: None,
    };
    let (id, warnings) = holdfast_policy::sources::volume::backup_volume(
        repo,
        &path,
        &opts,
        &format!("{name}.img"),
        progress,
        holdfast_policy::sources::volume::Allocation::Detect,
        Box::new(|| Ok(())),
    )?;
    let lock = rt()?.lock_after_write(repo);
    let (all, _) = snapshot::load_all(repo)?;
    let s = &snapshot::find(&all, &id.to_hex())?.snapshot;
    if g.json {
        print_json(&serde_json::json!({
            "snapshot": id.to_hex(),
            "complete": true,
            "summary": s.summary,
            "object_lock": lock_json(&lock),
        }))?;
    } else if !g.quiet {
        let m = &s.summary;
        outln!(
            "contents of {}: {} read of {}, {} added to the repository ({} blobs), {:.2}s",
            path.display(),
            human_bytes(m.bytes_read),
            human_bytes(m.total_bytes),
            human_bytes(m.bytes_added),
            m.blobs_added,
            m.seconds
        );
        outln!("snapshot {} saved", id.short());
    }
    print_lock(g, &lock);
    // The warnings (a thin volume read whole) were printed to standard error as they arose.
    Ok(
        if matches!(lock, AfterWrite::Failed(_)) || !warnings.is_empty() {
            exit::WARNINGS
        } else {
            exit::OK
        },
    )
}

/// Print what extending the store's Object Lock after a write did.
fn print_lock(g: &Global, lock: &AfterWrite) {
    match lock {
        AfterWrite::Extended(r) if !g.quiet && !g.json => outln!(
            "object lock: {} objects needed by young recovery points, {} extended",
            r.needed,
            r.extended
        ),
        AfterWrite::Failed(e) if !g.json => eprintln!(
            "warning: the recovery point is stored, but its object lock was not extended: {e}\n  fix the cause, then run `holdfast object-lock --extend`"
        ),
        _ => {}
    }
}

fn lock_json(lock: &AfterWrite) -> serde_json::Value {
    match lock {
        AfterWrite::Unlocked => serde_json::Value::Null,
        AfterWrite::Extended(r) => serde_json::to_value(r).unwrap_or_default(),
        AfterWrite::Failed(e) => serde_json::json!({ "error": e }),
    }
}

pub fn restore(g: &Global, a: RestoreArgs) -> Result<u8> {
    if let Some(src) = a.source.clone() {
        return super::policy::restore_source(g, &src, a);
    }
    let repo = open(g)?;
    let (all, _) = snapshot::load_all(&repo)?;
    let snap = super::select(&all, &a.filter, a.snapshot.as_deref().unwrap_or("latest"))?;
    let (index, _) = repo.load_index()?;
    let target = a
        .target()
        .context("a target directory is required: give TARGET or --target DIRECTORY")?
        .to_path_buf();
    let opts = RestoreOptions {
        target,
        include: a.include,
        overwrite: a.replace,
        threads: 0,
    };
    let progress = CliProgress::new(g.quiet || g.json);
    let out = restore::restore(&repo, &index, snap, &opts, &progress)?;
    if g.json {
        print_json(&serde_json::json!({ "snapshot": snap.id.to_hex(), "result": out }))?;
    } else if !g.quiet {
        outln!(
            "restored snapshot {} to {}: {} files, {} dirs, {} other, {}",
            snap.id.short(),
            opts.target.display(),
            out.files,
            out.dirs,
            out.others,
            human_bytes(out.bytes)
        );
    }
    if !out.errors.is_empty() {
        eprintln!("{} entries could not be restored:", out.errors.len());
        for e in &out.errors {
            eprintln!("  {e}");
        }
        return Ok(exit::WARNINGS);
    }
    Ok(exit::OK)
}

pub fn copy(
    g: &Global,
    from: &str,
    to: &str,
    from_pw: Option<std::path::PathBuf>,
    to_pw: Option<std::path::PathBuf>,
    which: &[String],
) -> Result<u8> {
    let rt = rt()?;
    let side = |loc: &str, file, env: &str| {
        let chain = PasswordChain::side(file, env, password_chain(g, false));
        rt.open(loc, &chain, Some(&crate::password::ask))
    };
    let src = side(from, from_pw, "HOLDFAST_FROM_PASSWORD")
        .with_context(|| format!("opening the source repository {from}"))?;
    let dst = side(to, to_pw, "HOLDFAST_TO_PASSWORD")
        .with_context(|| format!("opening the destination repository {to}"))?;
    let (all, _) = snapshot::load_all(&src)?;
    let mut wanted = std::collections::HashSet::new();
    for w in which {
        wanted.insert(snapshot::find(&all, w)?.id);
    }
    let progress = CliProgress::new(g.quiet || g.json);
    let r = holdfast_core::copy::copy(
        &src,
        &dst,
        &|s| wanted.is_empty() || wanted.contains(&s.id),
        &progress,
    )?;
    let lock = if r.copied.is_empty() {
        AfterWrite::Unlocked
    } else {
        rt.lock_after_write(&dst)
    };
    if g.json {
        let mut v = serde_json::to_value(&r)?;
        v["object_lock"] = lock_json(&lock);
        print_json(&v)?;
    } else if !g.quiet {
        for (a, b) in &r.copied {
            outln!("copied {} -> {}", &a[..8], &b[..8]);
        }
        outln!(
            "{} snapshot(s) copied, {} already present; {} uploaded in {} blobs",
            r.copied.len(),
            r.already_present,
            human_bytes(r.bytes_added),
            r.blobs_added
        );
    }
    print_lock(g, &lock);
    Ok(if matches!(lock, AfterWrite::Failed(_)) {
        exit::WARNINGS
    } else {
        exit::OK
    })
}
