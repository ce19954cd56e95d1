//! The bodies webhooks receive, one shape per `format` (pure).

use serde_json::json;

use super::machine::{Event, Message};

/// The formats a webhook can have.
pub const FORMATS: &[&str] = holdfast_policy::service_config::WEBHOOK_FORMATS;

/// One HTTP request's content.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// `[holdfast] FIRING on HOST: rpo:files`.
pub fn title(m: &Message) -> String {
    let what = match m.event {
        Event::Firing => "FIRING",
        Event::Resolved => "RESOLVED",
        Event::Reminder => "STILL FIRING",
    };
    format!("[holdfast] {what} on {}: {}", m.host, m.key)
}

/// The line under the title.
pub fn text(m: &Message) -> String {
    let since = m.since.format("%Y-%m-%d %H:%M:%S UTC");
    match m.event {
        Event::Firing => m.summary.clone(),
        Event::Reminder => format!("{} (firing since {since})", m.summary),
        Event::Resolved => format!("resolved (was firing since {since}): {}", m.summary),
    }
}

/// Header values are ASCII without control characters.
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// The request for `m` in `format` (`None`: no such format).
pub fn render(format: &str, m: &Message) -> Option<Rendered> {
    let as_json = |v: serde_json::Value| Rendered {
        content_type: "application/json",
        headers: vec![],
        body: serde_json::to_vec(&v).expect("JSON values serialize"),
    };
    let line = format!("{}\n{}", title(m), text(m));
    Some(match format {
        "json" => as_json(serde_json::to_value(m).expect("messages serialize")),
        "slack" => as_json(json!({ "text": line })),
        "discord" => as_json(json!({ "content": line })),
        "teams" => as_json(json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        { "type": "TextBlock", "size": "Medium", "weight": "Bolder",
                          "text": title(m), "wrap": true },
                        { "type": "TextBlock", "text": text(m), "wrap": true }
                    ]
                }
            }]
        })),
        "ntfy" => Rendered {
            content_type: "text/plain; charset=utf-8",
            headers: vec![
                ("Title", header_safe(&title(m))),
                (
                    "Priority",
                    match m.event {
                        Event::Resolved => "default",
                        _ => "high",
                    }
                    .into(),
                ),
                (
                    "Tags",
                    match m.event {
                        Event::Firing => "rotating_light,holdfast",
                        Event::Reminder => "warning,holdfast",
                        Event::Resolved => "white_check_mark,holdfast",
                    }
                    .into(),
                ),
            ],
            body: text(m).into_bytes(),
        },
        "gotify" => as_json(json!({
            "title": title(m),
            "message": text(m),
            "priority": match m.event { Event::Resolved => 4, _ => 8 },
        })),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::AlertKind;
    use chrono::{TimeZone, Utc};
    use serde_json::Value;

    fn m(event: Event) -> Message {
        Message {
            event,
            kind: AlertKind::RpoBreached,
            key: "rpo:files".into(),
            source: Some("files".into()),
            summary: "files: RPO breached: no recovery point yet (RPO 1h)".into(),
            host: "h1".into(),
            at: Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap(),
            since: Utc.with_ymd_and_hms(2026, 1, 1, 11, 0, 0).unwrap(),
        }
    }

    fn body(format: &str, e: Event) -> Value {
        let r = render(format, &m(e)).unwrap();
        assert_eq!(r.content_type, "application/json", "{format}");
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn holdfast_json_document() {
        let v = body("json", Event::Firing);
        assert_eq!(v["event"], "firing");
        assert_eq!(v["kind"], "rpo_breached");
        assert_eq!(v["key"], "rpo:files");
        assert_eq!(v["source"], "files");
        assert_eq!(v["host"], "h1");
        assert_eq!(v["at"], "2026-01-01T12:00:00Z");
        assert_eq!(v["since"], "2026-01-01T11:00:00Z");
        assert!(v["summary"].as_str().unwrap().contains("RPO breached"));
        // It reads back as the message it was.
        let back: Message = serde_json::from_value(v).unwrap();
        assert_eq!(back, m(Event::Firing));
        assert_eq!(body("json", Event::Resolved)["event"], "resolved");
        assert_eq!(body("json", Event::Reminder)["event"], "reminder");
    }

    #[test]
    fn chat_and_push_templates() {
        let slack = body("slack", Event::Firing);
        let t = slack["text"].as_str().unwrap();
        assert!(t.starts_with("[holdfast] FIRING on h1: rpo:files\n"), "{t}");
        assert!(t.contains("no recovery point yet"));
        let d = body("discord", Event::Resolved);
        let c = d["content"].as_str().unwrap();
        assert!(c.starts_with("[holdfast] RESOLVED on h1"), "{c}");
        assert!(
            c.contains("was firing since 2026-01-01 11:00:00 UTC"),
            "{c}"
        );
        let teams = body("teams", Event::Reminder);
        let card = &teams["attachments"][0];
        assert_eq!(
            card["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(card["content"]["type"], "AdaptiveCard");
        assert_eq!(
            card["content"]["body"][0]["text"],
            "[holdfast] STILL FIRING on h1: rpo:files"
        );
        let g = body("gotify", Event::Firing);
        assert_eq!(g["title"], "[holdfast] FIRING on h1: rpo:files");
        assert_eq!(g["priority"], 8);
        assert!(g["message"].as_str().unwrap().contains("RPO 1h"));
        assert_eq!(body("gotify", Event::Resolved)["priority"], 4);
    }

    #[test]
    fn ntfy_is_plain_text_with_headers() {
        let mut msg = m(Event::Firing);
        msg.host = "hôst\nx".into();
        let r = render("ntfy", &msg).unwrap();
        assert!(r.content_type.starts_with("text/plain"));
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            "files: RPO breached: no recovery point yet (RPO 1h)"
        );
        let h = |n: &str| r.headers.iter().find(|(k, _)| *k == n).unwrap().1.clone();
        assert_eq!(h("Title"), "[holdfast] FIRING on h?st?x: rpo:files");
        assert_eq!(h("Priority"), "high");
        assert!(h("Tags").contains("rotating_light"));
        let r = render("ntfy", &m(Event::Resolved)).unwrap();
        assert!(r.headers.contains(&("Priority", "default".into())));
    }

    #[test]
    fn every_listed_format_renders_and_others_do_not() {
        for f in FORMATS {
            assert!(render(f, &m(Event::Firing)).is_some(), "{f}");
        }
        assert!(render("xml", &m(Event::Firing)).is_none());
    }
}
