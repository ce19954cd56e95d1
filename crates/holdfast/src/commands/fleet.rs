//! `status --all-hosts`: every host's sources, judged from the repositories alone.

use std::path::Path;

use anyhow::{Context, Result};
use holdfast_core::records::{self, Record};
use holdfast_policy::compliance::Verdict;
use holdfast_policy::config::Workload;
use holdfast_policy::duration;
use holdfast_policy::fleet::{self, FleetReport, HostState};
use serde::Serialize;

use super::{open, print_json, rt};
use crate::cli::Global;
use crate::exit;
use crate::progress::CliProgress;

/// The fleet of `--repo` when given, else of every repository of the workload (one that cannot
/// be opened is reported unreadable, which fails the view).
fn observe(g: &Global) -> Result<FleetReport> {
    let rt = rt()?;
    if let Some(r) = &g.repo {
        return Ok(fleet::fleet(&[(r.clone(), Ok(open(g)?))], rt.now()));
    }
    let w = Workload::load(&g.config).with_context(|| {
        format!(
            "`status --all-hosts` reads the repositories of the workload {} (or give one with --repo)",
            g.config.display()
        )
    })?;
    Ok(rt.with_env(&w, false, &CliProgress::new(true), fleet::observe))
}

#[derive(Serialize)]
struct Out<'a> {
    ok: bool,
    #[serde(flatten)]
    report: &'a FleetReport,
}

fn word<T: Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|x| x.as_str().map(|s| s.replace('_', " ")))
        .unwrap_or_default()
}

/// Print the fleet; exit 0 only when every host reports and every source of every host meets
/// its objectives, 4 (NONCOMPLIANT) otherwise.
pub fn all_hosts(g: &Global, html: Option<&Path>) -> Result<u8> {
    let r = observe(g)?;
    if let Some(h) = html {
        std::fs::write(h, fleet::html(&r)).with_context(|| format!("writing {}", h.display()))?;
    }
    if g.json {
        print_json(&Out {
            ok: r.ok(),
            report: &r,
        })?;
    } else {
        print(&r);
    }
    Ok(if r.ok() { exit::OK } else { exit::NONCOMPLIANT })
}

fn print(r: &FleetReport) {
    for u in &r.unreadable {
        outln!("UNREADABLE: {u}");
    }
    let dur = |x: Option<i64>| {
        x.map(|x| duration::show(chrono::Duration::seconds(x)))
            .unwrap_or_else(|| "-".into())
    };
    for h in &r.hosts {
        outln!(
            "host {}: {}{}{}",
            h.host,
            if h.failing { "FAILING, " } else { "" },
            word(h.state),
            h.last_report
                .filter(|_| h.state != HostState::Retired)
                .map(|t| format!(
                    " (last report {} ago, every {})",
                    duration::show(r.now - t),
                    dur(h.interval_seconds)
                ))
                .unwrap_or_default()
        );
        for p in &h.problems {
            outln!("    {p}");
        }
        if h.sources.is_empty() {
            continue;
        }
        outln!(
            "    {:<18} {:<10} {:>7} {:>10} {:<12} {:>7} {:>9} {:<12} drills",
            "source",
            "class",
            "RPO",
            "newest",
            "RPO",
            "RTO",
            "drill",
            "RTO"
        );
        let v = |v: Verdict| match v {
            Verdict::NotApplicable => "n/a".to_string(),
            v => word(v),
        };
        for s in &h.sources {
            outln!(
                "    {:<18} {:<10} {:>7} {:>10} {:<12} {:>7} {:>9} {:<12} {}",
                s.name,
                s.class.as_deref().unwrap_or("-"),
                dur(s.rpo_seconds),
                s.age_seconds
                    .map(|a| duration::show(chrono::Duration::seconds(a)))
                    .unwrap_or_else(|| "never".into()),
                v(s.rpo),
                dur(s.rto_seconds),
                s.last_drill
                    .as_ref()
                    .map(|d| format!("{:.1}s", d.seconds))
                    .unwrap_or_else(|| "never".into()),
                v(s.rto),
                v(s.drill_fresh),
            );
            for p in &s.problems {
                outln!("        {p}");
            }
        }
    }
    let failing = r.hosts.iter().filter(|h| h.failing).count();
    let stopped = r
        .hosts
        .iter()
        .filter(|h| !matches!(h.state, HostState::Reporting | HostState::Retired))
        .count();
    if r.ok() {
        outln!(
            "{} host(s): every one reporting, every source met",
            r.hosts.len()
        );
    } else if r.hosts.is_empty() {
        outln!("FAILING: no host has written a recovery point or a report to these repositories");
    } else {
        outln!(
            "FAILING: {failing} of {} host(s) ({stopped} not reporting){}",
            r.hosts.len(),
            if r.unreadable.is_empty() {
                String::new()
            } else {
                format!(", {} unreadable", r.unreadable.len())
            }
        );
    }
}

/// `retire-host HOST --reason TEXT`: write a retirement for `host` into `--repo`, else into
/// every repository of the workload. The fleet view then shows it retired, not failing, until
/// the host writes anything newer.
pub fn retire_host(g: &Global, host: &str, reason: &str) -> Result<u8> {
    if reason.trim().is_empty() {
        anyhow::bail!("give the reason with --reason (it is shown wherever the host is listed)");
    }
    let rt = rt()?;
    let r = fleet::retirement(host, reason, rt.now());
    r.check()
        .map_err(|e| anyhow::anyhow!("cannot retire host {host:?}: {e}"))?;
    let mut written = Vec::new();
    if let Some(loc) = &g.repo {
        let repo = open(g)?;
        records::save(&repo, &Record::Host(r.clone()))?;
        written.push(loc.clone());
    } else {
        let w = Workload::load(&g.config).with_context(|| {
            format!(
                "`retire-host` writes into the repositories of the workload {} (or give one with --repo)",
                g.config.display()
            )
        })?;
        for (name, cfg) in &w.repositories {
            let repo = rt.open_workload_repository(&w, name, cfg, false)?;
            records::save(&repo, &Record::Host(r.clone()))
                .with_context(|| format!("repository {name:?}"))?;
            written.push(name.clone());
        }
    }
    if g.json {
        print_json(&serde_json::json!({ "retired": host, "repositories": written, "report": r }))?;
    } else {
        outln!(
            "host {host} retired in {}: `status --all-hosts` no longer judges it, until it writes anything newer",
            written.join(", ")
        );
    }
    Ok(exit::OK)
}
