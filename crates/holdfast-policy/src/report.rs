//! The `status` report as data, and as one self-contained HTML page.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::compliance::{Control, SourceFacts, SourceStatus, Verdict};
use crate::duration::show;

/// Everything `status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// When it was computed.
    pub now: DateTime<Utc>,
    /// The workload file.
    pub workload: String,
    /// Per source.
    pub sources: Vec<SourceRow>,
    /// Workload controls.
    pub controls: Vec<Control>,
    /// Repositories that could not be read.
    pub unreadable: Vec<String>,
    /// Tampering or loss found in the repositories' history (recovery points that vanished
    /// outside `forget`, a rolled-back history, an unverifiable retention lock).
    pub alarms: Vec<String>,
    /// Per repository: encryption, immutability, copies held.
    pub repositories: Vec<RepositoryRow>,
    /// What host discovery found that no source covers and nobody accepted (`None`: discovery
    /// was not run, e.g. `status --no-discover` or the status at the end of `protect`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unprotected: Option<Vec<crate::discover::Found>>,
}

/// One repository's protection, as read from it.
#[derive(Debug, Clone, Serialize)]
pub struct RepositoryRow {
    /// Name in the workload.
    pub name: String,
    /// Where.
    pub url: String,
    /// The cipher of its recovery points.
    pub encryption: String,
    /// How its recovery points are protected from deletion.
    pub immutability: String,
    /// Sources with recovery points here, and the newest one's time.
    pub holds: Vec<(String, DateTime<Utc>)>,
}

/// One source's row.
#[derive(Debug, Clone, Serialize)]
pub struct SourceRow {
    /// Facts.
    pub facts: SourceFacts,
    /// RPO seconds (for display).
    pub rpo_seconds: Option<i64>,
    /// RTO seconds.
    pub rto_seconds: Option<i64>,
    /// Verdicts.
    pub status: SourceStatus,
    /// Last job: kind, state, time.
    pub last_job: Option<(String, String, DateTime<Utc>)>,
    /// Recovery point times (timeline).
    pub points: Vec<DateTime<Utc>>,
    /// Drill times and whether they passed (timeline).
    pub drills: Vec<(DateTime<Utc>, bool, f64)>,
}

impl StatusReport {
    /// Add what discovery found: unprotected data locations fail the control
    /// `all-data-sources-known` (REL09-BP01's first anti-pattern). File systems alone do not
    /// fail it (their data directories are found and judged one by one).
    pub fn with_discovery(mut self, found: Vec<crate::discover::Found>) -> Self {
        let open: Vec<crate::discover::Found> = found
            .into_iter()
            .filter(|f| f.protected_by.is_none() && !f.ignored)
            .collect();
        let failing: Vec<String> = open
            .iter()
            .filter(|f| !f.judged_elsewhere())
            .map(|f| f.location.clone())
            .collect();
        self.controls.insert(
            0,
            Control {
                id: "all-data-sources-known",
                title: "every data location discovered on this host is covered by a source or accepted",
                passed: failing.is_empty(),
                failing,
            },
        );
        self.unprotected = Some(open);
        self
    }

    /// Whether every control passes and every repository could be read.
    pub fn ok(&self) -> bool {
        self.controls.iter().all(|c| c.passed)
            && self.unreadable.is_empty()
            && self.alarms.is_empty()
    }
}

/// Escape text for HTML.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A verdict as a coloured HTML badge.
pub(crate) fn badge(v: Verdict) -> &'static str {
    match v {
        Verdict::Met => "<span class=ok>met</span>",
        Verdict::Breached => "<span class=bad>breached</span>",
        Verdict::NotMeasured => "<span class=bad>not measured</span>",
        Verdict::NotApplicable => "<span class=na>n/a</span>",
    }
}

fn opt_dur(s: Option<i64>) -> String {
    s.map(|s| show(Duration::seconds(s)))
        .unwrap_or_else(|| "—".into())
}

/// Render the report as one HTML page with inline CSS and SVG (no external resources).
///
/// The parts that change between two reports carry stable handles, so a live page (the
/// service's, `holdfast_service::page`) can update them in place: `id=hf-computed`,
/// `id=hf-summary`, `id=hf-controls`, each source's row `data-source=NAME` and in it the cells
/// `data-f=problems|age|rpo|drill|rto|copies|job`.
pub fn html(r: &StatusReport) -> String {
    let mut h = String::new();
    let failing = r.controls.iter().filter(|c| !c.passed).count();
    h += "<!doctype html><html lang=en><head><meta charset=utf-8><title>holdfast status</title><style>";
    h += "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}h1{margin:0 0 .2em}table{border-collapse:collapse;margin:1em 0}";
    h += "td,th{padding:.35em .7em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}th{background:#f4f4f4}";
    h += ".ok{color:#fff;background:#2e7d32;padding:1px 6px;border-radius:3px}.bad{color:#fff;background:#c62828;padding:1px 6px;border-radius:3px}";
    h += ".na{color:#666}.summary{font-size:1.2em;padding:.6em 1em;border-radius:4px;display:inline-block}.problems{color:#c62828;font-size:.9em}svg{background:#fafafa}";
    h += "</style></head><body>";
    h += &format!(
        "<h1>holdfast status</h1><div>workload <code>{}</code>, computed <span id=hf-computed>{}</span> UTC</div>",
        esc(&r.workload),
        r.now.format("%Y-%m-%d %H:%M:%S")
    );
    h += &if r.ok() {
        "<p id=hf-summary class=\"summary ok\">every control passes</p>".to_string()
    } else {
        format!(
            "<p id=hf-summary class=\"summary bad\">{failing} control(s) failing{}{}</p>",
            if r.unreadable.is_empty() {
                String::new()
            } else {
                format!(", {} repository(ies) unreadable", r.unreadable.len())
            },
            if r.alarms.is_empty() {
                String::new()
            } else {
                format!(", {} alarm(s)", r.alarms.len())
            }
        )
    };
    for u in r.unreadable.iter().chain(&r.alarms) {
        h += &format!("<p class=problems>{}</p>", esc(u));
    }
    h += "<h2>Sources</h2><table><tr><th>source</th><th>class</th><th>strategy</th><th>RPO</th><th>newest point</th><th>RPO</th><th>RTO</th><th>last drill</th><th>RTO</th><th>copies</th><th>last job</th></tr>";
    for s in &r.sources {
        let f = &s.facts;
        h += &format!(
            "<tr data-source=\"{}\"><td><b>{}</b><div class=na>{}</div><div class=problems data-f=problems>{}</div></td><td>{}</td><td>{}</td><td>{}</td><td data-f=age>{} ago</td><td data-f=rpo>{}</td><td>{}</td><td data-f=drill>{}</td><td data-f=rto>{}</td><td data-f=copies>{}</td><td data-f=job>{}</td></tr>",
            esc(&f.name),
            esc(&f.name),
            esc(&format!("{}{}", f.mechanism, s.status.window.map(|(a, b)| format!("; recoverable to any second from {} to {} UTC", a.format("%Y-%m-%d %H:%M:%S"), b.format("%Y-%m-%d %H:%M:%S"))).unwrap_or_default())),
            s.status.problems.iter().map(|p| esc(p)).collect::<Vec<_>>().join("<br>"),
            esc(f.class.as_deref().unwrap_or("—")),
            f.strategy.map(|s| format!("{s:?}").to_lowercase()).unwrap_or_else(|| "—".into()),
            opt_dur(s.rpo_seconds),
            opt_dur(s.status.age_seconds),
            badge(s.status.rpo),
            opt_dur(s.rto_seconds),
            s.status.drill_seconds.map(|x| format!("{x:.1}s")).unwrap_or_else(|| "never".into()),
            badge(s.status.rto),
            badge(s.status.copies),
            s.last_job.as_ref().map(|(k, st, t)| format!("{} {} {}", esc(k), esc(st), t.format("%m-%d %H:%M"))).unwrap_or_else(|| "—".into()),
        );
    }
    h += "</table><h2>Repositories</h2><table><tr><th>repository</th><th>url</th><th>encryption</th><th>immutability</th><th>holds (newest point)</th></tr>";
    for r in &r.repositories {
        h += &format!(
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.name),
            esc(&r.url),
            esc(&r.encryption),
            esc(&r.immutability),
            esc(&r
                .holds
                .iter()
                .map(|(s, t)| format!("{s} {}", t.format("%m-%d %H:%M")))
                .collect::<Vec<_>>()
                .join(", "))
        );
    }
    h += "</table><h2>Controls</h2><table id=hf-controls><tr><th>control</th><th>result</th><th>failing sources</th></tr>";
    for c in &r.controls {
        h += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(c.title),
            if c.passed {
                "<span class=ok>pass</span>"
            } else {
                "<span class=bad>fail</span>"
            },
            esc(&c.failing.join(", "))
        );
    }
    h += "</table><h2>Timeline (last 14 days)</h2><p>dots (upper lane): recovery points; diamonds (lower lane): drills (green passed, red failed)</p>";
    let (w, row) = (900.0, 28.0);
    let start = r.now - Duration::days(14);
    let x = |t: DateTime<Utc>| -> f64 {
        160.0
            + ((t - start).num_seconds() as f64 / Duration::days(14).num_seconds() as f64)
                .clamp(0.0, 1.0)
                * (w - 170.0)
    };
    h += &format!(
        // A right margin, so the last date label is not cut.
        "<svg width={} height={} xmlns=\"http://www.w3.org/2000/svg\">",
        w + 30.0,
        row * (r.sources.len() as f64 + 1.0)
    );
    for d in 0..=14 {
        let t = start + Duration::days(d);
        h += &format!(
            "<line x1={0:.1} x2={0:.1} y1=0 y2={1} stroke=#e4e4e4 />",
            x(t),
            row * (r.sources.len() as f64 + 1.0)
        );
        if d % 2 == 0 {
            h += &format!(
                "<text x={:.1} y={} font-size=10 fill=#888 text-anchor=middle>{}</text>",
                x(t),
                row * (r.sources.len() as f64 + 1.0) - 6.0,
                t.format("%m-%d")
            );
        }
    }
    for (i, s) in r.sources.iter().enumerate() {
        let y = row * (i as f64 + 0.6);
        h += &format!(
            "<text x=4 y={:.1} font-size=12>{}</text>",
            y + 4.0,
            esc(&s.facts.name)
        );
        for p in s.points.iter().filter(|p| **p >= start) {
            // Recovery points and drills on lanes of their own: a drill marker never hides a point.
            h += &format!("<circle cx={:.1} cy={:.1} r=3.5 fill=#1565c0><title>recovery point {}</title></circle>", x(*p), y - 5.0, p.format("%Y-%m-%d %H:%M"));
        }
        for (t, ok, secs) in s.drills.iter().filter(|d| d.0 >= start) {
            let cx = x(*t);
            h += &format!(
                "<polygon points=\"{:.1},{:.1} {:.1},{:.1} {:.1},{:.1} {:.1},{:.1}\" fill={}><title>drill {} {:.1}s</title></polygon>",
                cx, y + 2.0, cx + 4.0, y + 6.0, cx, y + 10.0, cx - 4.0, y + 6.0,
                if *ok { "#2e7d32" } else { "#c62828" },
                t.format("%Y-%m-%d %H:%M"),
                secs
            );
        }
    }
    h += "</svg></body></html>\n";
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The live page (holdfast-service's `page`) finds each source's row and cells by these
    /// handles; a name that needs escaping stays one attribute.
    #[test]
    fn each_source_row_carries_stable_handles() {
        let now = Utc::now();
        let facts = SourceFacts {
            name: "a\"<b>".into(),
            mechanism: "path".into(),
            class: None,
            criticality: None,
            strategy: None,
            rpo: Some(Duration::hours(1)),
            rto: None,
            drill_every: None,
            has_retention: false,
            newest_point: None,
            points: 0,
            last_drill: None,
            copies: vec![],
            encrypted: true,
            continuous: None,
        };
        let status = crate::compliance::evaluate(&facts, now);
        let r = StatusReport {
            now,
            workload: "w.toml".into(),
            sources: vec![SourceRow {
                facts,
                rpo_seconds: Some(3600),
                rto_seconds: None,
                status,
                last_job: None,
                points: vec![],
                drills: vec![],
            }],
            controls: vec![],
            unreadable: vec![],
            alarms: vec![],
            repositories: vec![],
            unprotected: None,
        };
        let h = html(&r);
        assert!(h.contains("<tr data-source=\"a&quot;&lt;b&gt;\">"), "{h}");
        for f in ["problems", "age", "rpo", "drill", "rto", "copies", "job"] {
            assert_eq!(h.matches(&format!("data-f={f}>")).count(), 1, "{f}: {h}");
        }
        for id in ["hf-computed", "hf-summary", "hf-controls"] {
            assert_eq!(h.matches(&format!("id={id}")).count(), 1, "{id}");
        }
        // Never measured is not met: the row says so.
        assert!(h.contains("<td data-f=rpo><span class=bad>"), "{h}");
    }
}
