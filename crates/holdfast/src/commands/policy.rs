//! discover, plan, protect, drill, status, restore --source: the workload-level commands.
//! Each parses its arguments, calls the runtime (`holdfast_policy::runtime`) and prints.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use holdfast_policy::config::Workload;
use holdfast_policy::report::StatusReport;
use holdfast_policy::runtime::restore::{SourceRestoreRequest, SourceRestored};
use holdfast_policy::{discover as disc, duration, observe};

use super::{print_json, rt};
use crate::cli::Global;
use crate::exit;
use crate::progress::CliProgress;

fn workload(g: &Global) -> Result<Workload> {
    Ok(Workload::load(&g.config)?)
}

pub fn discover(g: &Global, roots: Vec<PathBuf>, suggest: bool, no_host: bool) -> Result<u8> {
    let w = if g.config.exists() {
        Some(workload(g)?)
    } else {
        None
    };
    let mut all_roots = w
        .as_ref()
        .map(|w| w.discover.roots.clone())
        .unwrap_or_default();
    // Absolute, so what is found can be pasted into a workload file anywhere.
    all_roots.extend(
        roots
            .into_iter()
            .map(|r| std::path::absolute(&r).unwrap_or(r)),
    );
    let opts = disc::Options {
        roots: all_roots,
        host: !no_host,
        ..Default::default()
    };
    let found = disc::discover(w.as_ref(), &opts);
    if g.json {
        print_json(&found)?;
        return Ok(exit::OK);
    }
    let unprotected: Vec<_> = found
        .iter()
        .filter(|f| f.protected_by.is_none() && !f.ignored)
        .collect();
    outln!(
        "{:<11} {:<12} {:>10} {:<17} location",
        "protected",
        "kind",
        "size",
        "last change"
    );
    for f in &found {
        outln!(
            "{:<11} {:<12} {:>10} {:<17} {}  ({})",
            match (&f.protected_by, f.ignored) {
                (Some(s), _) => s.chars().take(11).collect(),
                (None, true) => "ignored".to_string(),
                (None, false) => "NO".to_string(),
            },
            f.kind,
            f.size
                .map(holdfast_core::util::human_bytes)
                .unwrap_or_default(),
            f.modified
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default(),
            f.location,
            f.detail
        );
    }
    outln!(
        "{} location(s), {} not protected by any source",
        found.len(),
        unprotected.len()
    );
    if suggest {
        let class = w
            .as_ref()
            .and_then(|w| w.classes.keys().next().cloned())
            .unwrap_or_else(|| "CHOOSE-A-CLASS".into());
        let taken: Vec<&str> = w
            .as_ref()
            .map(|w| w.sources.iter().map(|s| s.name()).collect())
            .unwrap_or_default();
        for block in disc::suggest_all(&unprotected, &class, &taken) {
            outln!("\n{block}");
        }
    }
    Ok(exit::OK)
}

pub fn plan(g: &Global, no_discover: bool) -> Result<u8> {
    let w = workload(g)?;
    // Host discovery too (servers, mounts, well-known data directories): data nobody declared
    // is the first anti-pattern of REL09-BP01, wherever it lives.
    let plan = rt()?.plan(&w, !no_discover, &CliProgress::new(true));
    let (fs, sched) = (&plan.findings, &plan.schedule);
    if g.json {
        print_json(&plan)?;
    } else {
        for u in &plan.unreadable {
            eprintln!("warning: {u}");
        }
        if fs.is_empty() {
            outln!("no anti-patterns found");
        }
        for f in fs {
            outln!(
                "[{:?}] {} ({}): {}\n    anti-pattern: {}\n    fix: {}",
                f.severity,
                f.code,
                f.subject,
                f.message,
                f.anti_pattern,
                f.fix
            );
        }
        outln!("\ncadence derived from each RPO:");
        outln!(
            "{:<20} {:>8} {:>10} {:>10}  note",
            "source",
            "RPO",
            "interval",
            "run takes"
        );
        for s in sched {
            match &s.cadence {
                Some(c) => outln!(
                    "{:<20} {:>8} {:>10} {:>10}  {}",
                    s.source,
                    duration::show(chrono::Duration::seconds(s.rpo_seconds.unwrap_or(0))),
                    duration::show(c.interval),
                    duration::show(c.expected_run),
                    if c.feasible {
                        "start deadline = newest point + RPO - run time".to_string()
                    } else {
                        "CANNOT MEET THE RPO".to_string()
                    }
                ),
                None => outln!("{:<20} {:>8}", s.source, "none"),
            }
        }
    }
    Ok(if plan.high() {
        exit::NONCOMPLIANT
    } else {
        exit::OK
    })
}

fn print_status(g: &Global, r: &StatusReport) -> Result<()> {
    if g.json {
        return print_json(r);
    }
    for u in &r.unreadable {
        outln!("UNREADABLE: {u}");
    }
    for a in &r.alarms {
        outln!("ALARM: {a}");
    }
    outln!(
        "{:<18} {:<10} {:<9} {:>7} {:>10} {:<12} {:>7} {:>9} {:<12} {:<10} last job",
        "source",
        "class",
        "strategy",
        "RPO",
        "newest",
        "RPO",
        "RTO",
        "drill",
        "RTO",
        "copies"
    );
    let v = |v: holdfast_policy::compliance::Verdict| {
        serde_json::to_value(v)
            .ok()
            .and_then(|x| x.as_str().map(String::from))
            .unwrap_or_default()
    };
    for s in &r.sources {
        let f = &s.facts;
        outln!(
            "{:<18} {:<10} {:<9} {:>7} {:>10} {:<12} {:>7} {:>9} {:<12} {:<10} {}",
            f.name,
            f.class.as_deref().unwrap_or("-"),
            f.strategy
                .map(|s| format!("{s:?}").to_lowercase())
                .unwrap_or_else(|| "-".into()),
            s.rpo_seconds
                .map(|x| duration::show(chrono::Duration::seconds(x)))
                .unwrap_or_else(|| "-".into()),
            observe::show_age(s.status.age_seconds),
            v(s.status.rpo),
            s.rto_seconds
                .map(|x| duration::show(chrono::Duration::seconds(x)))
                .unwrap_or_else(|| "-".into()),
            s.status
                .drill_seconds
                .map(|x| format!("{x:.1}s"))
                .unwrap_or_else(|| "never".into()),
            v(s.status.rto),
            v(s.status.copies),
            s.last_job
                .as_ref()
                .map(|(k, st, t)| format!("{k} {st} {}", t.format("%m-%d %H:%M")))
                .unwrap_or_else(|| "-".into()),
        );
        outln!("    backed up by: {}", f.mechanism);
        if let Some(c) = &f.continuous {
            match s.status.window {
                Some((a, b)) => outln!(
                    "    recoverable: any second from {} to {} UTC{}",
                    a.format("%Y-%m-%d %H:%M:%S"),
                    b.format("%Y-%m-%d %H:%M:%S"),
                    if c.window.gaps.is_empty() {
                        String::new()
                    } else {
                        format!(", except {} gap(s) below", c.window.gaps.len())
                    }
                ),
                None => {
                    outln!("    recoverable: no window yet (a base backup and its log are needed)")
                }
            }
        }
        for p in &s.status.problems {
            outln!("    - {p}");
        }
    }
    outln!("\nrepositories:");
    for repo in &r.repositories {
        outln!(
            "  {} ({}): encryption {}; immutability: {}",
            repo.name,
            repo.url,
            repo.encryption,
            repo.immutability
        );
        for (src, t) in &repo.holds {
            outln!("    holds {src}, newest {}", t.format("%Y-%m-%d %H:%M"));
        }
    }
    match &r.unprotected {
        None => outln!("\nhost discovery: not run (data nobody declared is not looked for)"),
        Some(u) if u.is_empty() => {}
        Some(u) => {
            outln!("\ndiscovered on this host, covered by no source (accept on purpose with [[discover.accept]]):");
            for f in u {
                outln!(
                    "  {:<10} {}  ({}){}",
                    f.kind,
                    f.location,
                    f.detail,
                    f.note
                        .as_ref()
                        .map(|n| format!("; {n}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    outln!("\ncontrols:");
    for c in &r.controls {
        outln!(
            "  [{}] {}{}",
            if c.passed { "pass" } else { "FAIL" },
            c.title,
            if c.failing.is_empty() {
                String::new()
            } else {
                format!(": {}", c.failing.join(", "))
            }
        );
    }
    Ok(())
}

pub fn status(g: &Global, html: Option<&Path>, no_discover: bool) -> Result<u8> {
    let w = workload(g)?;
    let r = rt()?.status(&w, !no_discover, &CliProgress::new(true));
    if let Some(h) = html {
        std::fs::write(h, holdfast_policy::report::html(&r))
            .with_context(|| format!("writing {}", h.display()))?;
    }
    print_status(g, &r)?;
    Ok(if r.ok() { exit::OK } else { exit::NONCOMPLIANT })
}

pub fn protect(g: &Global, only: Option<&str>, retain: bool) -> Result<u8> {
    let w = workload(g)?;
    let progress = CliProgress::new(g.quiet || g.json);
    let done = if retain {
        rt()?.retain(&w, &progress)?
    } else {
        rt()?.protect(&w, only, &progress)?
    };
    let (lines, r) = (&done.protect, &done.status);
    if g.json {
        print_json(&done)?;
    } else {
        // -q (for cron): only jobs that did not simply complete, and failing controls.
        for l in lines {
            let notable: Vec<_> = l
                .jobs
                .iter()
                .filter(|j| !g.quiet || j.state != holdfast_core::records::JobState::Completed)
                .collect();
            if g.quiet && notable.is_empty() {
                continue;
            }
            outln!("{}: {}", l.source, l.action);
            for j in notable {
                outln!(
                    "    {} {} in {:.2}s{}{}",
                    j.job,
                    serde_json::to_value(j.state)?.as_str().unwrap_or_default(),
                    j.seconds,
                    j.snapshot
                        .as_deref()
                        .map(|s| format!(", snapshot {}", &s[..8]))
                        .unwrap_or_default(),
                    if j.messages.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", j.messages.join("; "))
                    }
                );
            }
        }
        if g.quiet {
            for c in r.controls.iter().filter(|c| !c.passed) {
                outln!("[FAIL] {}: {}", c.title, c.failing.join(", "));
            }
            for u in &r.unreadable {
                outln!("UNREADABLE: {u}");
            }
            for a in &r.alarms {
                outln!("ALARM: {a}");
            }
        } else {
            outln!();
            print_status(g, r)?;
        }
    }
    Ok(if done.failed() {
        exit::ERROR
    } else if !r.ok() {
        exit::NONCOMPLIANT
    } else if done.warned() {
        exit::WARNINGS
    } else {
        exit::OK
    })
}

pub fn drill(
    g: &Global,
    source: Option<&str>,
    random: bool,
    scratch: Option<PathBuf>,
) -> Result<u8> {
    let w = workload(g)?;
    let scratch = scratch.unwrap_or_else(std::env::temp_dir);
    let progress = CliProgress::new(g.quiet || g.json);
    let results = rt()?.drill(&w, source, random, &scratch, &progress)?;
    if g.json {
        print_json(&results)?;
    } else {
        if results.is_empty() {
            outln!("no drill is due");
        }
        for d in &results {
            outln!(
                "{} {} drill {}: {:.2}s{}",
                d.source,
                d.kind,
                if d.passed { "PASSED" } else { "FAILED" },
                d.seconds,
                d.snapshot
                    .as_deref()
                    .map(|s| format!(" (snapshot {})", &s[..8]))
                    .unwrap_or_default()
            );
            for m in &d.messages {
                outln!("    {m}");
            }
        }
    }
    Ok(if results.iter().all(|d| d.passed) {
        exit::OK
    } else {
        exit::NONCOMPLIANT
    })
}

pub fn restore_source(g: &Global, name: &str, a: crate::cli::RestoreArgs) -> Result<u8> {
    let w = workload(g)?;
    let target = match a.target() {
        Some(t) => Some(
            t.to_str()
                .with_context(|| format!("--target {} is not UTF-8", t.display()))?
                .to_string(),
        ),
        None => None,
    };
    let req = SourceRestoreRequest {
        source: name.into(),
        snapshot: a.snapshot.clone(),
        host: a.filter.host.clone(),
        target,
        include: a.include.clone(),
        replace: a.replace,
        at: match (&a.at, &a.lsn) {
            (Some(t), _) => Some(
                holdfast_policy::sources::pitr::parse_target(t, rt()?.now())
                    .map_err(anyhow::Error::msg)?,
            ),
            (None, Some(l)) => Some(holdfast_policy::sources::pitr::RecoveryTarget::Position(
                l.clone(),
            )),
            (None, None) => None,
        },
        start: a.start,
        no_archive: a.no_archive,
    };
    let done = rt()?.restore_source(&w, &req, &CliProgress::new(g.quiet || g.json))?;
    if g.json {
        print_json(&done)?;
    } else {
        match &done {
            SourceRestored::Files {
                snapshot,
                target,
                result,
            } => outln!(
                "restored {name} from snapshot {} into {}: {} files",
                &snapshot[..8],
                target.display(),
                result.files
            ),
            SourceRestored::Tool { done, .. } => {
                for d in done {
                    outln!("{d}");
                }
            }
            SourceRestored::PointInTime(p) => {
                for d in &p.done {
                    outln!("{d}");
                }
                for w in &p.warnings {
                    eprintln!("warning: {w}");
                }
                match p.reached {
                    Some(t) => outln!(
                        "restored {name} to {} (target {}) from base backup {}",
                        t.to_rfc3339(),
                        p.target,
                        &p.base[..8.min(p.base.len())]
                    ),
                    None => outln!(
                        "restored {name} for recovery to {} from base backup {}",
                        p.target,
                        &p.base[..8.min(p.base.len())]
                    ),
                }
            }
        }
    }
    Ok(match &done {
        SourceRestored::Files { result, .. } if !result.errors.is_empty() => exit::WARNINGS,
        SourceRestored::PointInTime(p) if !p.warnings.is_empty() => exit::WARNINGS,
        _ => exit::OK,
    })
}
