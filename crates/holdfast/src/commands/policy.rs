//! discover, plan, protect, drill, status: the workload-level commands.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use holdfast_core::repo::InitOptions;
use holdfast_core::{Error, Repository};
use holdfast_policy::config::{RepositoryConfig, Workload};
use holdfast_policy::findings::Severity;
use holdfast_policy::jobs::{self, Env, JobError};
use holdfast_policy::report::StatusReport;
use holdfast_policy::{discover as disc, duration, findings, observe};

use super::{kdf, print_json, storage_at};
use crate::cli::Global;
use crate::exit;
use crate::progress::CliProgress;

fn workload(g: &Global) -> Result<Workload> {
    Ok(Workload::load(&g.config)?)
}

use super::now;

/// The job environment for a workload: clock, opener, state directory, progress.
fn env<'a>(
    w: &'a Workload,
    open: &'a jobs::Opener<'a>,
    progress: &'a CliProgress,
) -> Result<Env<'a>> {
    Ok(Env {
        workload: w,
        now: now()?,
        open,
        state_dir: state_dir(),
        progress,
    })
}

fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HOLDFAST_STATE_DIR") {
        return d.into();
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return "/var/lib/holdfast".into();
    }
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("holdfast")
}

fn password(w: &Workload, name: &str, r: &RepositoryConfig) -> Result<String, JobError> {
    let fail = |m: String| JobError::Repository {
        name: name.into(),
        message: m,
    };
    if let Some(f) = &r.password_file {
        let p = w.resolve(f);
        let s = std::fs::read_to_string(&p)
            .map_err(|e| fail(format!("password-file {}: {e}", p.display())))?;
        return Ok(s.lines().next().unwrap_or("").to_string());
    }
    if let Some(c) = &r.password_command {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(c)
            .output()
            .map_err(|e| fail(format!("password-command: {e}")))?;
        if !out.status.success() {
            return Err(fail(format!(
                "password-command {c:?} failed with {}",
                out.status
            )));
        }
        return Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string());
    }
    if let Some(v) = &r.password_env {
        return std::env::var(v).map_err(|_| {
            fail(format!(
                "environment variable {v} (password-env) is not set"
            ))
        });
    }
    std::env::var("HOLDFAST_PASSWORD").map_err(|_| {
        fail(
            "no password-file, password-command or password-env, and HOLDFAST_PASSWORD is not set"
                .into(),
        )
    })
}

/// Open (and with `create`, initialise) a workload repository.
fn opener(
    w: &Workload,
    create: bool,
) -> impl Fn(&str, &RepositoryConfig) -> Result<Repository, JobError> + '_ {
    move |name, r| {
        let fail = |m: String| JobError::Repository {
            name: name.into(),
            message: m,
        };
        let url = if r.url.contains("://") {
            r.url.clone()
        } else {
            w.resolve(Path::new(&r.url)).display().to_string()
        };
        let storage = storage_at(&url).map_err(|e| fail(e.to_string()))?;
        let pw = password(w, name, r)?;
        match Repository::open(storage.clone(), pw.as_bytes()) {
            Err(Error::NoRepository { .. }) if create => {
                tracing::info!("creating repository {name} at {url}");
                Repository::init(
                    storage,
                    pw.as_bytes(),
                    &InitOptions {
                        kdf: kdf(),
                        ..Default::default()
                    },
                )
                .map_err(JobError::from)
            }
            r => r.map_err(JobError::from),
        }
    }
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

/// What discovery finds on this host and under the workload's roots, marked against it.
fn discovered(w: &Workload, host: bool) -> Vec<disc::Found> {
    let opts = disc::Options {
        roots: w.discover.roots.clone(),
        host,
        ..Default::default()
    };
    disc::discover(Some(w), &opts)
}

pub fn plan(g: &Global, no_discover: bool) -> Result<u8> {
    let w = workload(g)?;
    let open = opener(&w, false);
    let progress = CliProgress::new(true);
    let env = env(&w, &open, &progress)?;
    let o = observe::observe(&env);
    // Host discovery too (servers, mounts, well-known data directories): data nobody declared
    // is the first anti-pattern of REL09-BP01, wherever it lives.
    let unprotected: Vec<disc::Found> = if no_discover {
        Vec::new()
    } else {
        discovered(&w, true)
    };
    let (mut fs, sched) = findings::findings(&w, &o.measured(), &unprotected, env.now);
    fs.extend(holdfast_policy::preflight::findings(&w));
    let high = fs.iter().any(|f| f.severity == Severity::High);
    if g.json {
        print_json(
            &serde_json::json!({ "findings": fs, "schedule": sched, "unreadable": o.unreadable }),
        )?;
    } else {
        for u in &o.unreadable {
            eprintln!("warning: {u}");
        }
        if fs.is_empty() {
            outln!("no anti-patterns found");
        }
        for f in &fs {
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
        for s in &sched {
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
    Ok(if high { exit::NONCOMPLIANT } else { exit::OK })
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
    let open = opener(&w, false);
    let progress = CliProgress::new(true);
    let env = env(&w, &open, &progress)?;
    let mut r = observe::status(&env);
    if !no_discover {
        r = r.with_discovery(discovered(&w, true));
    }
    if let Some(h) = html {
        std::fs::write(h, holdfast_policy::report::html(&r))
            .with_context(|| format!("writing {}", h.display()))?;
    }
    print_status(g, &r)?;
    Ok(if r.ok() { exit::OK } else { exit::NONCOMPLIANT })
}

pub fn protect(g: &Global, only: Option<&str>) -> Result<u8> {
    let mut w = workload(g)?;
    if let Some(o) = only {
        if w.source(o).is_none() {
            return Err(JobError::unknown_source(&w, o).into());
        }
        w.sources.retain(|s| s.name() == o);
    }
    let open = opener(&w, true);
    let progress = CliProgress::new(g.quiet || g.json);
    let env = env(&w, &open, &progress)?;
    let lines = jobs::protect(&env)?;
    let full = workload(g)?;
    let open2 = opener(&full, false);
    let env2 = Env {
        workload: &full,
        now: now()?,
        open: &open2,
        state_dir: state_dir(),
        progress: &progress,
    };
    let r = observe::status(&env2);
    if g.json {
        print_json(&serde_json::json!({ "protect": lines, "status": r }))?;
    } else {
        // -q (for cron): only jobs that did not simply complete, and failing controls.
        for l in &lines {
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
            print_status(g, &r)?;
        }
    }
    let failed = lines
        .iter()
        .flat_map(|l| &l.jobs)
        .any(|j| j.state == holdfast_core::records::JobState::Failed);
    Ok(if failed {
        exit::ERROR
    } else if r.ok() {
        exit::OK
    } else {
        exit::NONCOMPLIANT
    })
}

pub fn drill(
    g: &Global,
    source: Option<&str>,
    random: bool,
    scratch: Option<PathBuf>,
) -> Result<u8> {
    let w = workload(g)?;
    let open = opener(&w, true);
    let progress = CliProgress::new(g.quiet || g.json);
    let env = env(&w, &open, &progress)?;
    let scratch = scratch.unwrap_or_else(std::env::temp_dir);
    let names: Vec<String> = match source {
        Some(s) => vec![s.to_string()],
        None => {
            // Every source whose drill is due: never drilled, or older than its class's drill-every.
            let r = observe::status(&env);
            r.sources
                .iter()
                .filter(|s| {
                    s.facts.strategy.is_some()
                        && (s.facts.last_drill.is_none() || s.status.drill_fresh.fails())
                })
                .map(|s| s.facts.name.clone())
                .collect()
        }
    };
    let mut results = Vec::new();
    for n in &names {
        results.push(jobs::drill(&env, n, random, &scratch)?);
    }
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
    let s = w
        .source(name)
        .ok_or_else(|| JobError::unknown_source(&w, name))?;
    let (rname, rcfg) = w
        .repository_of(s)
        .with_context(|| format!("source {name} has no repository"))?;
    let repo = opener(&w, false)(rname, rcfg)?;
    let (all, _) = holdfast_core::snapshot::load_all(&repo)?;
    let me = holdfast_core::util::hostname();
    let mine: Vec<_> = all
        .iter()
        .filter(|x| x.snapshot.source.as_deref() == Some(name))
        .cloned()
        .collect();
    let snap = match a.snapshot.as_deref() {
        // The newest complete point of this source made by this host (or any host, for a
        // shared source, or the host --host names); an explicit id may name any of them.
        None | Some("latest") => mine
            .iter()
            .rev()
            .filter(|x| match &a.filter.host {
                Some(h) => &x.snapshot.hostname == h,
                None => s.owns(x.snapshot.source.as_deref(), &x.snapshot.hostname, &me),
            })
            .find(|x| x.snapshot.complete)
            .cloned()
            .with_context(|| {
                format!("source {name} has no complete recovery point made by host {} (another host's: pass --host NAME or a snapshot id)", a.filter.host.as_deref().unwrap_or(&me))
            })?,
        Some(id) => holdfast_core::snapshot::find(&mine, id)?.clone(),
    };
    if s.restores_files() {
        let target = a
            .into
            .map(PathBuf::from)
            .or(a.target)
            .or(a.target_opt)
            .context("give --into DIRECTORY")?;
        let (index, _) = repo.load_index()?;
        let opts = holdfast_core::restore::RestoreOptions {
            target,
            include: a.include,
            overwrite: a.replace || a.overwrite,
            threads: 0,
        };
        let out = holdfast_core::restore::restore(
            &repo,
            &index,
            &snap,
            &opts,
            &CliProgress::new(g.quiet || g.json),
        )?;
        if g.json {
            print_json(&serde_json::json!({ "snapshot": snap.id.to_hex(), "result": out }))?;
        } else {
            outln!(
                "restored {name} from snapshot {} into {}: {} files",
                snap.id.short(),
                opts.target.display(),
                out.files
            );
        }
        return Ok(if out.errors.is_empty() {
            exit::OK
        } else {
            exit::WARNINGS
        });
    }
    let conn = holdfast_policy::sources::Conn::of(s).map_err(anyhow::Error::msg)?;
    let done =
        holdfast_policy::sources::restore(&repo, s, &snap, a.into.as_deref(), a.replace, &conn)
            .map_err(|e| anyhow::anyhow!("restoring {name}: {e}"))?;
    if g.json {
        print_json(&serde_json::json!({ "snapshot": snap.id.to_hex(), "done": done }))?;
    } else {
        for d in &done {
            outln!("{d}");
        }
    }
    Ok(exit::OK)
}
