//! The fleet view as HTML: a section for the service's page, and a page of its own
//! (`status --all-hosts --html FILE`).

use chrono::Duration;

use super::{FleetReport, HostState};
use crate::duration::show;
use crate::report::{badge, esc};

/// The fleet as an HTML section (a `<section id=fleet>`), for a page of its own or the
/// service's page.
pub fn html_section(r: &FleetReport) -> String {
    let failing = r.hosts.iter().filter(|h| h.failing).count();
    let mut h = String::from("<section id=fleet><h2>Fleet</h2>");
    h += &if r.ok() {
        format!(
            "<p class=\"summary ok\">{} host(s), every one reporting and every source met</p>",
            r.hosts.len()
        )
    } else if r.hosts.is_empty() {
        "<p class=\"summary bad\">no host has written a recovery point or a report here</p>"
            .to_string()
    } else {
        format!(
            "<p class=\"summary bad\">{failing} of {} host(s) failing</p>",
            r.hosts.len()
        )
    };
    for u in &r.unreadable {
        h += &format!("<p class=problems>{}</p>", esc(u));
    }
    h += "<table><tr><th>host</th><th>state</th><th>source</th><th>class</th><th>newest point</th><th>RPO</th><th>RPO</th><th>last drill</th><th>RTO</th><th>RTO</th><th>drills fresh</th></tr>";
    for host in &r.hosts {
        let state = match host.state {
            HostState::Reporting => "<span class=ok>reporting</span>".to_string(),
            HostState::Retired => "<span class=na>retired</span>".to_string(),
            other => format!(
                "<span class=bad>{}</span>",
                serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
                    .unwrap_or_default()
            ),
        };
        let span = host.sources.len().max(1);
        h += &format!(
            "<tr class={}><td rowspan={span}><b>{}</b><div class=problems>{}</div><div class=na>{}</div></td><td rowspan={span}>{state}</td>",
            if host.failing { "failing" } else { "met" },
            esc(&host.host),
            host.problems.iter().map(|p| esc(p)).collect::<Vec<_>>().join("<br>"),
            host.last_report
                .map(|t| format!("last report {} UTC", t.format("%Y-%m-%d %H:%M:%S")))
                .unwrap_or_else(|| "no report".into()),
        );
        if host.sources.is_empty() {
            h += "<td colspan=9>no sources</td></tr>";
        }
        for (i, s) in host.sources.iter().enumerate() {
            if i > 0 {
                h += "<tr>";
            }
            let dur = |x: Option<i64>| {
                x.map(|x| show(Duration::seconds(x)))
                    .unwrap_or_else(|| "—".into())
            };
            h += &format!(
                "<td><b>{}</b>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&s.name),
                if s.problems.is_empty() {
                    String::new()
                } else {
                    format!("<div class=problems>{}</div>", s.problems.iter().map(|p| esc(p)).collect::<Vec<_>>().join("<br>"))
                },
                esc(s.class.as_deref().unwrap_or("—")),
                s.age_seconds.map(|a| format!("{} ago", show(Duration::seconds(a)))).unwrap_or_else(|| "never".into()),
                dur(s.rpo_seconds),
                badge(s.rpo),
                s.last_drill.as_ref().map(|d| format!("{:.1}s", d.seconds)).unwrap_or_else(|| "never".into()),
                dur(s.rto_seconds),
                badge(s.rto),
                badge(s.drill_fresh),
            );
        }
    }
    h += "</table></section>";
    h
}

/// The fleet as one self-contained HTML page.
pub fn html(r: &FleetReport) -> String {
    let mut h = String::from("<!doctype html><html lang=en><head><meta charset=utf-8><title>holdfast fleet</title><style>");
    h += "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}";
    h += "td,th{padding:.35em .7em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}th{background:#f4f4f4}";
    h += ".ok{color:#fff;background:#2e7d32;padding:1px 6px;border-radius:3px}.bad{color:#fff;background:#c62828;padding:1px 6px;border-radius:3px}";
    h += ".na{color:#666}.summary{font-size:1.2em;padding:.6em 1em;border-radius:4px;display:inline-block}.problems{color:#c62828;font-size:.9em}";
    h += &format!(
        "</style></head><body><h1>holdfast fleet</h1><div>repositories {}, computed {} UTC</div>",
        esc(&r.repositories.join(", ")),
        r.now.format("%Y-%m-%d %H:%M:%S")
    );
    h += &html_section(r);
    h += "</body></html>\n";
    h
}
