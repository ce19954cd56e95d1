//! The state machine (pure): from the alerts firing before and now, the messages to send.
//!
//! One `firing` message when a key appears, one `resolved` when it goes away, a `reminder`
//! every `[service.notify] reminder` while it stays, nothing else. A key listed twice in one
//! evaluation counts once; the same alerts observed again send nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::alerts::{Alert, AlertKind};

/// Why a message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The alert began to fire.
    Firing,
    /// The alert stopped firing.
    Resolved,
    /// The alert still fires (every `reminder`).
    Reminder,
}

impl Event {
    /// `firing`, `resolved`, `reminder`.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Firing => "firing",
            Event::Resolved => "resolved",
            Event::Reminder => "reminder",
        }
    }
}

/// One alert that fires, as the notifier remembers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Firing {
    /// The alert as last seen.
    pub alert: Alert,
    /// When it began to fire.
    pub since: DateTime<Utc>,
    /// When its newest message (firing or reminder) was made.
    pub last_sent: DateTime<Utc>,
}

/// What the notifier remembers between observations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The alerts firing, by key.
    #[serde(default)]
    pub firing: BTreeMap<String, Firing>,
    /// Alerts seen but not yet held for their kind's [`hold`], by key: since when.
    #[serde(default)]
    pub pending: BTreeMap<String, DateTime<Utc>>,
}

/// How long a condition must hold before it fires. A repository that cannot be read fires
/// after a minute: one failed listing of a store, or a repository the first backup is about
/// to create, is not worth a message (and its resolution a second later). Everything else
/// fires at once.
pub fn hold(kind: AlertKind) -> Duration {
    match kind {
        AlertKind::RepositoryUnreadable => Duration::minutes(1),
        _ => Duration::zero(),
    }
}

/// One message, as every destination receives it (holdfast's own JSON document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `firing`, `resolved` or `reminder`.
    pub event: Event,
    /// What the alert is about.
    pub kind: AlertKind,
    /// The alert's stable key (`rpo:SOURCE`).
    pub key: String,
    /// The source, if it is about one.
    pub source: Option<String>,
    /// One line for people (for `resolved`: the summary it had while it fired).
    pub summary: String,
    /// The host whose service sends it.
    pub host: String,
    /// When the message was made.
    pub at: DateTime<Utc>,
    /// When the alert began to fire.
    pub since: DateTime<Utc>,
}

/// The messages for the change from `state` to `alerts` at `now`; `state` becomes the new
/// firing set.
pub fn step(
    state: &mut State,
    alerts: &[Alert],
    now: DateTime<Utc>,
    reminder: Option<Duration>,
    host: &str,
) -> Vec<Message> {
    let msg = |event, a: &Alert, since| Message {
        event,
        kind: a.kind,
        key: a.key.clone(),
        source: a.source.clone(),
        summary: a.summary.clone(),
        host: host.to_string(),
        at: now,
        since,
    };
    let mut out = Vec::new();
    let mut now_firing = std::collections::BTreeSet::new();
    for a in alerts {
        if !now_firing.insert(a.key.clone()) {
            continue;
        }
        match state.firing.get_mut(&a.key) {
            None => {
                let seen = *state.pending.entry(a.key.clone()).or_insert(now);
                if now - seen < hold(a.kind) {
                    continue;
                }
                state.pending.remove(&a.key);
                out.push(msg(Event::Firing, a, now));
                state.firing.insert(
                    a.key.clone(),
                    Firing {
                        alert: a.clone(),
                        since: now,
                        last_sent: now,
                    },
                );
            }
            Some(f) => {
                f.alert = a.clone();
                if let Some(every) = reminder.filter(|r| *r > Duration::zero()) {
                    if now - f.last_sent >= every {
                        f.last_sent = now;
                        out.push(msg(Event::Reminder, a, f.since));
                    }
                }
            }
        }
    }
    state.pending.retain(|k, _| now_firing.contains(k));
    let gone: Vec<String> = state
        .firing
        .keys()
        .filter(|k| !now_firing.contains(*k))
        .cloned()
        .collect();
    for k in gone {
        if let Some(f) = state.firing.remove(&k) {
            out.push(msg(Event::Resolved, &f.alert, f.since));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn a(key: &str) -> Alert {
        Alert {
            key: key.into(),
            kind: AlertKind::RpoBreached,
            source: Some("s".into()),
            summary: format!("{key} fires"),
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(s)
    }

    /// A run of observations (second, keys firing) and the messages each must make.
    #[test]
    fn one_message_per_change_of_state() {
        type Run = (
            &'static str,
            Option<i64>,
            Vec<(i64, Vec<&'static str>, Vec<&'static str>)>,
        );
        let runs: Vec<Run> = vec![
            (
                "fires once, stays quiet, resolves once",
                None,
                vec![
                    (0, vec!["rpo:s"], vec!["firing rpo:s"]),
                    (30, vec!["rpo:s"], vec![]),
                    (60, vec!["rpo:s"], vec![]),
                    (90, vec![], vec!["resolved rpo:s"]),
                    (120, vec![], vec![]),
                ],
            ),
            (
                "distinct keys are distinct alerts",
                None,
                vec![
                    (
                        0,
                        vec!["rpo:s", "job:s"],
                        vec!["firing rpo:s", "firing job:s"],
                    ),
                    (1, vec!["rpo:s"], vec!["resolved job:s"]),
                    (2, vec![], vec!["resolved rpo:s"]),
                ],
            ),
            (
                "a key listed twice in one evaluation counts once",
                None,
                vec![
                    (0, vec!["rpo:s", "rpo:s"], vec!["firing rpo:s"]),
                    (1, vec!["rpo:s", "rpo:s"], vec![]),
                ],
            ),
            (
                "reminders at the interval, from the newest message",
                Some(60),
                vec![
                    (0, vec!["rpo:s"], vec!["firing rpo:s"]),
                    (59, vec!["rpo:s"], vec![]),
                    (60, vec!["rpo:s"], vec!["reminder rpo:s"]),
                    (100, vec!["rpo:s"], vec![]),
                    (130, vec!["rpo:s"], vec!["reminder rpo:s"]),
                    (131, vec![], vec!["resolved rpo:s"]),
                    (300, vec![], vec![]),
                ],
            ),
            (
                "a zero reminder means none",
                Some(0),
                vec![
                    (0, vec!["rpo:s"], vec!["firing rpo:s"]),
                    (1, vec!["rpo:s"], vec![]),
                ],
            ),
            (
                "fires again after it resolved",
                None,
                vec![
                    (0, vec!["rpo:s"], vec!["firing rpo:s"]),
                    (1, vec![], vec!["resolved rpo:s"]),
                    (2, vec!["rpo:s"], vec!["firing rpo:s"]),
                ],
            ),
        ];
        for (name, reminder, steps) in runs {
            let mut st = State::default();
            for (at, keys, want) in steps {
                let alerts: Vec<Alert> = keys.iter().map(|k| a(k)).collect();
                let got: Vec<String> = step(
                    &mut st,
                    &alerts,
                    t(at),
                    reminder.map(Duration::seconds),
                    "h",
                )
                .iter()
                .map(|m| format!("{} {}", m.event.as_str(), m.key))
                .collect();
                assert_eq!(got, want, "{name}, at {at}");
            }
        }
    }

    #[test]
    fn an_unreadable_repository_fires_only_once_it_held() {
        let r = |key: &str| Alert {
            kind: AlertKind::RepositoryUnreadable,
            ..a(key)
        };
        let mut st = State::default();
        let keys = |m: Vec<Message>| -> Vec<String> {
            m.iter()
                .map(|m| format!("{} {}", m.event.as_str(), m.key))
                .collect()
        };
        let none: Vec<String> = vec![];
        // Unreadable for a moment, then readable: nothing at all.
        assert_eq!(
            keys(step(&mut st, &[r("repository:m")], t(0), None, "h")),
            none
        );
        assert_eq!(
            keys(step(&mut st, &[r("repository:m")], t(30), None, "h")),
            none
        );
        assert_eq!(keys(step(&mut st, &[], t(31), None, "h")), none);
        assert!(st.pending.is_empty());
        // Unreadable again: the minute counts from now.
        assert_eq!(
            keys(step(&mut st, &[r("repository:m")], t(40), None, "h")),
            none
        );
        assert_eq!(
            keys(step(&mut st, &[r("repository:m")], t(99), None, "h")),
            none
        );
        let m = step(&mut st, &[r("repository:m")], t(100), None, "h");
        assert_eq!(keys(m.clone()), ["firing repository:m"]);
        assert_eq!(m[0].since, t(100));
        assert_eq!(
            keys(step(&mut st, &[], t(101), None, "h")),
            ["resolved repository:m"]
        );
    }

    #[test]
    fn messages_carry_since_host_and_the_summary_it_had() {
        let mut st = State::default();
        step(
            &mut st,
            &[a("rpo:s")],
            t(0),
            Some(Duration::seconds(10)),
            "h1",
        );
        let mut newer = a("rpo:s");
        newer.summary = "older now".into();
        let r = step(&mut st, &[newer], t(10), Some(Duration::seconds(10)), "h1");
        assert_eq!(r[0].event, Event::Reminder);
        assert_eq!((r[0].since, r[0].at), (t(0), t(10)));
        assert_eq!(r[0].summary, "older now");
        let r = step(&mut st, &[], t(20), None, "h1");
        assert_eq!(r[0].event, Event::Resolved);
        assert_eq!(r[0].summary, "older now");
        assert_eq!(
            (r[0].host.as_str(), r[0].since, r[0].at),
            ("h1", t(0), t(20))
        );
        assert!(st.firing.is_empty());
    }
}
