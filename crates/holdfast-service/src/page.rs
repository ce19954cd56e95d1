//! The live status page (`GET /`): the same report as `status --html`
//! ([`holdfast_policy::report::html`], not a copy of it), plus what only the service knows
//! (running jobs, replication tasks, when the data was computed, a failed reload), plus a small
//! inline script (`page.js`, no external resources) that polls `api/snapshot` every few seconds
//! (`?every=SECONDS`, default 5) and updates each source's row, the summary, the controls and
//! the service's tables in place.
//!
//! A dead service never looks green: when a poll fails or times out, a red banner says
//! "service not answering since ..." and every green mark turns grey; when the service answers
//! with data computed long before its answer (`?stale=SECONDS`, default 600), the banner says
//! that too.
//!
//! The script fetches with the page's own credentials (`credentials: "same-origin"`) and never
//! puts a token in a URL. Behind `[service] token-file` the browser must add
//! `Authorization: Bearer ...` to every request itself: a reverse proxy that adds it (and does
//! its own authentication of people), or a header-setting browser extension (docs/SERVICE.md).

use crate::snapshot::Snapshot;

/// The script, inlined into every page.
const SCRIPT: &str = include_str!("page.js");

/// What the page adds to the report's style: the banner, and grey instead of green while the
/// service does not answer.
const STYLE: &str = "<style>#hf-banner{background:#c62828;color:#fff;font-weight:bold;padding:.6em 1em;border-radius:4px;margin:0 0 1em}\
#hf-notice,#hf-config{background:#fff3e0;color:#e65100;padding:.4em .8em;border-radius:4px}\
.hf-dead .ok{background:#9e9e9e}.hf-dead #hf-summary::before{content:\"last known: \"}.hf-gone{opacity:.4}</style>";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A table with a header row and one row per item (or one "none" row), cells already escaped.
fn table(id: &str, head: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut h = format!("<table id={id}><tr>");
    for c in head {
        h += &format!("<th>{c}</th>");
    }
    h += "</tr>";
    if rows.is_empty() {
        h += &format!("<tr><td colspan={} class=na>none</td></tr>", head.len());
    }
    for r in rows {
        h += "<tr>";
        for c in r {
            h += &format!("<td>{c}</td>");
        }
        h += "</tr>";
    }
    h + "</table>"
}

/// The service's own section: host, version, when the data was computed, a failed reload,
/// running jobs and replication tasks.
fn service_section(s: &Snapshot) -> String {
    let mut h = String::from("<h2>Service</h2>");
    h += &format!(
        "<div>host <code>{}</code>, holdfast {}, running since {} UTC; data computed <span id=hf-at>{}</span> UTC <span id=hf-age class=na></span></div>",
        esc(&s.host),
        esc(&s.version),
        when(s.started),
        when(s.at)
    );
    h += "<div class=na>this page asks the service every <span id=hf-every>few seconds</span>; last answer <span id=hf-checked>when the page loaded</span></div>";
    h += &format!(
        "<p id=hf-config{}>{}</p>",
        if s.config.error.is_some() {
            ""
        } else {
            " hidden"
        },
        s.config
            .error
            .as_deref()
            .map(|e| format!(
                "the newest reload of the workload failed, the previous one stays in use: {}",
                esc(e)
            ))
            .unwrap_or_default()
    );
    h += "<h3>Running jobs</h3>";
    h += &table(
        "hf-running",
        &["source", "job", "started (UTC)", "pid"],
        s.running
            .iter()
            .map(|j| {
                vec![
                    esc(&j.source),
                    esc(&j.kind),
                    when(j.started),
                    j.pid.to_string(),
                ]
            })
            .collect(),
    );
    h += "<h3>Replication tasks</h3>";
    h += &table(
        "hf-tasks",
        &["source", "health", "since (UTC)", "restarts", "last error"],
        s.tasks
            .iter()
            .map(|t| {
                let health = serde_json::to_value(t.health)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                let cls = if health == "running" { "ok" } else { "bad" };
                vec![
                    esc(&t.source),
                    format!("<span class={cls}>{}</span>", esc(&health)),
                    when(t.since),
                    t.restarts.to_string(),
                    esc(t.last_error.as_deref().unwrap_or("")),
                ]
            })
            .collect(),
    );
    h
}

/// The page for the snapshot `s`: the status report's HTML with the service's section, a
/// banner for trouble, and the script that keeps it current.
pub fn html(s: &Snapshot) -> String {
    let mut page = match &s.status {
        Some(r) => holdfast_policy::report::html(r),
        // Until the first observation: a page that says so (never green) and reloads itself
        // once the status exists.
        None => "<!doctype html><html lang=en><head><meta charset=utf-8><title>holdfast status</title></head><body data-hf-empty><h1>holdfast status</h1><p id=hf-summary class=\"summary bad\">status not computed yet</p></body></html>\n".into(),
    };
    if let Some(i) = page.find("</head>") {
        page.insert_str(i, STYLE);
    }
    let top = "<div id=hf-banner role=alert hidden></div><p id=hf-notice hidden></p>";
    if let Some(i) = page
        .find("<body")
        .and_then(|i| page[i..].find('>').map(|j| i + j + 1))
    {
        page.insert_str(i, top);
    }
    let section = service_section(s);
    match page.find("<h2>Sources</h2>") {
        Some(i) => page.insert_str(i, &section),
        None => {
            if let Some(i) = page.rfind("</body>") {
                page.insert_str(i, &section);
            }
        }
    }
    // The fleet: every host's sources in these repositories (at page load; the service
    // recomputes it once a minute).
    if let (Some(f), Some(i)) = (&s.fleet, page.rfind("</body>")) {
        page.insert_str(i, &holdfast_policy::fleet::html_section(f));
    }
    if let Some(i) = page.rfind("</body>") {
        // The script cannot end the element early: page.js holds no "</".
        page.insert_str(i, &format!("<script>{SCRIPT}</script>"));
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{ConfigState, RunningJob, TaskHealth, TaskState};
    use chrono::Utc;

    fn snap() -> Snapshot {
        let now = Utc::now();
        Snapshot {
            at: now,
            host: "h<1>".into(),
            started: now,
            version: "0".into(),
            config: ConfigState {
                path: "w.toml".into(),
                loaded_at: now,
                error: Some("bad <b>toml</b>".into()),
            },
            status: None,
            sources: vec![],
            jobs: vec![],
            drills: vec![],
            running: vec![RunningJob {
                source: "a<script>".into(),
                kind: "backup".into(),
                started: now,
                pid: 42,
            }],
            tasks: vec![TaskState {
                source: "wal".into(),
                health: TaskHealth::Stalled,
                restarts: 3,
                since: now,
                last_error: Some("died".into()),
            }],
            repositories: vec![],
            fleet: None,
        }
    }

    #[test]
    fn the_page_escapes_what_it_shows_and_never_starts_green() {
        let p = html(&snap());
        assert!(
            p.contains("a&lt;script&gt;") && !p.contains("a<script>"),
            "{p}"
        );
        assert!(p.contains("h&lt;1&gt;") && p.contains("bad &lt;b&gt;toml"));
        assert!(p.contains("<span class=bad>stalled</span>"), "{p}");
        assert!(p.contains("status not computed yet") && !p.contains("class=\"summary ok\""));
        // One inline script, no external resource, the script does not end itself early.
        assert_eq!(p.matches("<script").count(), 1);
        assert!(!SCRIPT.contains("</"));
        assert!(!p.contains("src=") && !p.contains("http://") && !p.contains("https://"));
        assert!(p.contains("id=hf-banner") && p.contains("id=hf-running"));
    }

    #[test]
    fn the_script_polls_relative_with_the_pages_credentials_and_no_token_in_urls() {
        assert!(SCRIPT.contains("new URL(\"api/snapshot\", location.href)"));
        assert!(SCRIPT.contains("credentials: \"same-origin\""));
        assert!(!SCRIPT.to_lowercase().contains("token"));
        assert!(SCRIPT.contains("service not answering since"));
    }
}
