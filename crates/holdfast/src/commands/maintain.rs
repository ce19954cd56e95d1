//! check, forget, prune, key.

use anyhow::{bail, Context, Result};
use holdfast_core::check::{self, ReadData};
use holdfast_core::prune::{self, PruneOptions};
use holdfast_core::retention::KeepPolicy;
use holdfast_core::util::human_bytes;

use super::{kdf, open, print_json};
use crate::cli::{ForgetArgs, Global, KeyAction};
use crate::exit;
use crate::progress::CliProgress;

pub fn check(g: &Global, read_data: bool, subset: Option<String>) -> Result<u8> {
    let repo = open(g)?;
    let mode = match (read_data, subset) {
        (true, _) => ReadData::All,
        (false, Some(s)) => {
            let n: f64 = s
                .trim_end_matches('%')
                .parse()
                .ok()
                .filter(|n: &f64| *n > 0.0 && *n <= 100.0)
                .with_context(|| {
                    format!(
                        "--read-data-subset {s:?}: give a percentage between 0 and 100, e.g. 10%"
                    )
                })?;
            ReadData::Subset(n)
        }
        _ => ReadData::None,
    };
    let progress = CliProgress::new(g.quiet || g.json);
    let r = check::check(&repo, mode, &progress)?;
    // The change-log chains of the workload's continuous sources, when a workload is given:
    // a gap makes instants unrecoverable although every object checks clean.
    let chains = match g
        .config
        .exists()
        .then(|| holdfast_policy::config::Workload::load(&g.config))
    {
        Some(Ok(w)) => {
            let (all, _) = holdfast_core::snapshot::load_all(&repo)?;
            holdfast_policy::chains::windows(&w, &all, &holdfast_core::util::hostname())
        }
        Some(Err(e)) => {
            eprintln!(
                "warning: the workload {} cannot be read, so no change-log chain was checked: {e}",
                g.config.display()
            );
            Vec::new()
        }
        None => Vec::new(),
    };
    let broken: Vec<String> = chains
        .iter()
        .flat_map(|(name, win)| {
            win.gaps
                .iter()
                .map(move |gap| {
                    format!(
                        "source {name}: change log gap: {} missing{}, no instant from {} to {} can be restored",
                        gap.missing,
                        if gap.count > 1 { format!(" (and {} more)", gap.count - 1) } else { String::new() },
                        gap.after.map(|t| t.to_rfc3339()).unwrap_or_else(|| "the base backup".into()),
                        gap.resumes.map(|t| t.to_rfc3339()).unwrap_or_else(|| "now".into()),
                    )
                })
                .chain(win.problems.iter().map(move |p| format!("source {name}: change log: {p}")))
        })
        .collect();
    let ok = r.ok() && broken.is_empty();
    if g.json {
        let mut v = serde_json::to_value(&r)?;
        v["log_chains"] = serde_json::to_value(
            chains
                .iter()
                .map(|(n, w)| serde_json::json!({ "source": n, "window": w }))
                .collect::<Vec<_>>(),
        )?;
        v["log_errors"] = serde_json::to_value(&broken)?;
        print_json(&v)?;
    } else {
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
        for e in r.errors.iter().chain(&broken) {
            outln!("error: {e}");
        }
        for (name, win) in &chains {
            if let (Some(a), Some(b)) = (win.from, win.to) {
                outln!(
                    "source {name}: change log from {} to {} ({} pieces){}",
                    a.to_rfc3339(),
                    b.to_rfc3339(),
                    win.pieces,
                    if win.whole() { "" } else { ", BROKEN" }
                );
            }
        }
        if !r.affected.is_empty() {
            outln!("affected (snapshot:path):");
            for a in &r.affected {
                outln!("  {a}");
            }
        }
        outln!(
            "{} snapshots, {} trees, {} packs ({} read): {}",
            r.snapshots,
            r.trees,
            r.packs,
            r.packs_read,
            if ok {
                "no errors".to_string()
            } else {
                format!("{} ERRORS", r.errors.len() + broken.len())
            }
        );
    }
    Ok(if ok { exit::OK } else { exit::ERROR })
}

/// Parse "7d", "36h", "2w", "90m" (the one grammar of `holdfast_core::duration`).
pub fn parse_duration(s: &str) -> Result<chrono::Duration> {
    let secs = holdfast_core::duration::parse_seconds(s).map_err(anyhow::Error::msg)?;
    Ok(chrono::Duration::seconds(secs as i64))
}

pub fn forget(g: &Global, a: ForgetArgs) -> Result<u8> {
    let repo = open(g)?;
    let policy = KeepPolicy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: a.keep_within.as_deref().map(parse_duration).transpose()?,
    };
    let now = super::now()?;
    let items = prune::forget(&repo, &policy, now, a.dry_run)?;
    let removed = items.iter().filter(|i| i.reasons.is_empty()).count();
    if g.json {
        // One JSON document: with --prune, the prune report is a member of it.
        let pruned = if a.prune && !a.dry_run {
            Some(serde_json::to_value(prune_repository(
                g, &repo, false, 10.0, false,
            )?)?)
        } else {
            None
        };
        let mut v = serde_json::json!({ "dry_run": a.dry_run, "snapshots": items });
        if let Some(p) = pruned {
            v["prune"] = p;
        }
        print_json(&v)?;
        return Ok(exit::OK);
    } else if !g.quiet {
        for i in &items {
            let what = if i.reasons.is_empty() {
                "remove".to_string()
            } else {
                format!("keep ({})", i.reasons.join(", "))
            };
            outln!(
                "{} {} {} {}",
                &i.id[..8],
                i.time.format("%Y-%m-%d %H:%M:%S"),
                i.hostname,
                what
            );
        }
        outln!(
            "{} snapshot(s) {}, {} kept",
            removed,
            if a.dry_run {
                "would be removed"
            } else {
                "removed"
            },
            items.len() - removed
        );
    }
    if a.prune && !a.dry_run {
        return run_prune(g, &repo, false, 10.0, false);
    }
    Ok(exit::OK)
}

pub fn prune(
    g: &Global,
    dry_run: bool,
    max_unused: f64,
    remove_unreadable_sessions: bool,
) -> Result<u8> {
    let repo = open(g)?;
    run_prune(g, &repo, dry_run, max_unused, remove_unreadable_sessions)
}

/// Run prune and return its report (printing nothing).
fn prune_repository(
    g: &Global,
    repo: &holdfast_core::Repository,
    dry_run: bool,
    max_unused: f64,
    remove_unreadable_sessions: bool,
) -> Result<prune::PruneReport> {
    if !(0.0..=100.0).contains(&max_unused) {
        bail!("--max-unused must be between 0 and 100");
    }
    let opts = PruneOptions {
        dry_run,
        max_unused_percent: max_unused,
        // HOLDFAST_NOW (tests): a prune as it would judge sessions at that time.
        now: std::env::var_os("HOLDFAST_NOW")
            .is_some()
            .then(super::now)
            .transpose()?,
        remove_unreadable_sessions,
    };
    let progress = CliProgress::new(g.quiet || g.json);
    Ok(prune::prune(repo, &opts, &progress)?)
}

fn run_prune(
    g: &Global,
    repo: &holdfast_core::Repository,
    dry_run: bool,
    max_unused: f64,
    remove_unreadable_sessions: bool,
) -> Result<u8> {
    let r = prune_repository(g, repo, dry_run, max_unused, remove_unreadable_sessions)?;
    if g.json {
        print_json(&r)?;
    } else if !g.quiet {
        for w in &r.waiting {
            outln!("{w}");
        }
        for n in &r.unreadable_sessions_removed {
            outln!("removed the unreadable session record sessions/{n}");
        }
        for n in &r.unreadable_plans_removed {
            outln!("removed the unreadable gc plan gc/{n}");
        }
        if r.tmp_files_removed > 0 {
            outln!(
                "{} {} temporary file(s) of interrupted writes from tmp/, {}",
                if dry_run { "would remove" } else { "removed" },
                r.tmp_files_removed,
                human_bytes(r.tmp_bytes_removed)
            );
        }
        outln!(
            "{}: {} pack(s) condemned ({} repacked), {} deleted, {} freed",
            if dry_run { "dry run" } else { "prune" },
            r.packs_condemned,
            r.packs_repacked,
            r.packs_deleted,
            human_bytes(r.bytes_freed)
        );
    }
    Ok(exit::OK)
}

pub fn key(g: &Global, action: KeyAction) -> Result<u8> {
    let mut repo = open(g)?;
    match action {
        KeyAction::List => {
            let keys = repo.list_keys()?;
            if g.json {
                print_json(&keys)?;
            } else {
                for k in keys {
                    outln!(
                        "{} {} {}@{} {}",
                        if k.current { "*" } else { " " },
                        &k.id[..8],
                        k.user,
                        k.host,
                        k.created
                    );
                }
            }
        }
        KeyAction::Add { new_password_file } => {
            let pw =
                holdfast_policy::runtime::PasswordChain::new_password(new_password_file.clone())
                    .resolve(Some(&crate::password::ask))?;
            let id = repo.add_key(pw.as_bytes(), kdf()?)?;
            report(g, "added key slot", &id)?;
        }
        KeyAction::Remove { id } => {
            let id = repo.remove_key(&id)?;
            report(g, "removed key slot", &id)?;
        }
        KeyAction::Passwd { new_password_file } => {
            let pw =
                holdfast_policy::runtime::PasswordChain::new_password(new_password_file.clone())
                    .resolve(Some(&crate::password::ask))?;
            let id = repo.change_password(pw.as_bytes(), kdf()?)?;
            report(g, "password changed; new key slot", &id)?;
        }
    }
    Ok(exit::OK)
}

fn report(g: &Global, what: &str, id: &str) -> Result<()> {
    if g.json {
        print_json(&serde_json::json!({ "key": id }))
    } else {
        outln!("{what} {}", &id[..8.min(id.len())]);
        Ok(())
    }
}

pub fn retention_lock(g: &Global, min_age: Option<&str>, compliance: bool) -> Result<u8> {
    let repo = open(g)?;
    let lock = match min_age {
        Some(a) => {
            let d = parse_duration(a)?;
            Some(holdfast_core::records::set_retention_lock(
                &repo,
                d.num_seconds(),
                compliance,
                chrono::Utc::now(),
            )?)
        }
        None => holdfast_core::records::retention_lock(&repo)?,
    };
    if g.json {
        print_json(&lock)?;
    } else {
        match lock {
            Some(l) => outln!(
                "retention lock: snapshots younger than {} are never forgotten{} (set {} on {})",
                humantime::format_duration(std::time::Duration::from_secs(
                    l.min_age_seconds as u64
                )),
                if l.compliance {
                    "; compliance mode: it cannot be lowered"
                } else {
                    ""
                },
                l.set_at.format("%Y-%m-%d %H:%M"),
                l.host
            ),
            None => outln!("no retention lock"),
        }
    }
    Ok(exit::OK)
}
