//! Retention (`forget`): which snapshots a keep-policy keeps, and why. Pure functions.
//!
//! Rules follow restic's semantics: walking snapshots newest first, `last` keeps the N newest;
//! `hourly`/`daily`/`weekly`/`monthly`/`yearly` keep the newest snapshot of each of the N most
//! recent periods that have one; `within` keeps everything newer than `now - within`. Periods
//! are calendar periods in UTC (ISO weeks). A snapshot is kept if any rule keeps it.

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// A keep-policy. `None` means the rule is not used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepPolicy {
    /// Keep the N newest.
    pub last: Option<u32>,
    /// Keep one per hour for N hours that have snapshots.
    pub hourly: Option<u32>,
    /// One per day.
    pub daily: Option<u32>,
    /// One per ISO week.
    pub weekly: Option<u32>,
    /// One per month.
    pub monthly: Option<u32>,
    /// One per year.
    pub yearly: Option<u32>,
    /// Keep everything newer than this.
    #[serde(default, with = "opt_secs")]
    pub within: Option<Duration>,
}

mod opt_secs {
    use chrono::Duration;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.num_seconds()),
            None => s.serialize_none(),
        }
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Seconds(i64),
        Human(String),
    }
    /// Seconds, or a human duration such as `"7d"` (as written in a workload file).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<Repr>::deserialize(d)? {
            None => Ok(None),
            Some(Repr::Seconds(s)) => Ok(Some(Duration::seconds(s))),
            Some(Repr::Human(h)) => crate::duration::parse_seconds(&h)
                .map(|s| Some(Duration::seconds(s as i64)))
                .map_err(serde::de::Error::custom),
        }
    }
}

impl KeepPolicy {
    /// Whether no rule is set (such a policy would forget everything, so callers refuse it).
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
            && self.hourly.is_none()
            && self.daily.is_none()
            && self.weekly.is_none()
            && self.monthly.is_none()
            && self.yearly.is_none()
            && self.within.is_none()
    }
}

/// The decision for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Index into the input.
    pub index: usize,
    /// Rules that keep it; empty means forget.
    pub reasons: Vec<&'static str>,
}

impl Decision {
    /// Whether the snapshot is kept.
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

type Bucket = fn(&DateTime<Utc>) -> i64;

fn hour(t: &DateTime<Utc>) -> i64 {
    t.year() as i64 * 1_000_000 + t.ordinal() as i64 * 100 + t.hour() as i64
}
fn day(t: &DateTime<Utc>) -> i64 {
    t.year() as i64 * 1000 + t.ordinal() as i64
}
fn week(t: &DateTime<Utc>) -> i64 {
    let w = t.iso_week();
    w.year() as i64 * 100 + w.week() as i64
}
fn month(t: &DateTime<Utc>) -> i64 {
    t.year() as i64 * 100 + t.month() as i64
}
fn year(t: &DateTime<Utc>) -> i64 {
    t.year() as i64
}

/// Decide for each snapshot time (any order) whether the policy keeps it.
pub fn decide(times: &[DateTime<Utc>], policy: &KeepPolicy, now: DateTime<Utc>) -> Vec<Decision> {
    let mut order: Vec<usize> = (0..times.len()).collect();
    order.sort_by(|&a, &b| times[b].cmp(&times[a]).then(b.cmp(&a)));
    let mut rules: Vec<(&'static str, u32, Option<Bucket>, Option<i64>)> = Vec::new();
    for (name, n, b) in [
        ("last", policy.last, None),
        ("hourly", policy.hourly, Some(hour as Bucket)),
        ("daily", policy.daily, Some(day as Bucket)),
        ("weekly", policy.weekly, Some(week as Bucket)),
        ("monthly", policy.monthly, Some(month as Bucket)),
        ("yearly", policy.yearly, Some(year as Bucket)),
    ] {
        if let Some(n) = n {
            rules.push((name, n, b, None));
        }
    }
    let mut out: Vec<Decision> = (0..times.len())
        .map(|index| Decision {
            index,
            reasons: Vec::new(),
        })
        .collect();
    for &i in &order {
        let t = &times[i];
        for (name, left, bucket, last) in rules.iter_mut() {
            if *left == 0 {
                continue;
            }
            match bucket {
                None => {
                    *left -= 1;
                    out[i].reasons.push(name);
                }
                Some(b) => {
                    let k = b(t);
                    if *last != Some(k) {
                        *last = Some(k);
                        *left -= 1;
                        out[i].reasons.push(name);
                    }
                }
            }
        }
        if let Some(w) = policy.within {
            if *t >= now - w {
                out[i].reasons.push("within");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    fn kept(times: &[DateTime<Utc>], p: &KeepPolicy, now: DateTime<Utc>) -> Vec<usize> {
        decide(times, p, now)
            .into_iter()
            .filter(|d| d.keep())
            .map(|d| d.index)
            .collect()
    }

    #[test]
    fn table() {
        // Two snapshots a day for five days: indexes 0..10, oldest first.
        let times: Vec<_> = (0..10)
            .map(|i| t(2026, 1, 1 + i / 2, if i % 2 == 0 { 6 } else { 18 }))
            .collect();
        let now = t(2026, 1, 6, 0);
        let cases: Vec<(KeepPolicy, Vec<usize>)> = vec![
            (
                KeepPolicy {
                    last: Some(3),
                    ..Default::default()
                },
                vec![7, 8, 9],
            ),
            (
                KeepPolicy {
                    daily: Some(2),
                    ..Default::default()
                },
                vec![7, 9],
            ),
            (
                KeepPolicy {
                    daily: Some(100),
                    ..Default::default()
                },
                vec![1, 3, 5, 7, 9],
            ),
            (
                KeepPolicy {
                    last: Some(1),
                    daily: Some(2),
                    ..Default::default()
                },
                vec![7, 9],
            ),
            (
                KeepPolicy {
                    hourly: Some(3),
                    ..Default::default()
                },
                vec![7, 8, 9],
            ),
            (
                KeepPolicy {
                    weekly: Some(2),
                    ..Default::default()
                },
                vec![7, 9],
            ), // 2026-01-05 starts ISO week 2
            (
                KeepPolicy {
                    monthly: Some(1),
                    ..Default::default()
                },
                vec![9],
            ),
            (
                KeepPolicy {
                    yearly: Some(5),
                    ..Default::default()
                },
                vec![9],
            ),
            (
                KeepPolicy {
                    within: Some(Duration::hours(36)),
                    ..Default::default()
                },
                vec![7, 8, 9],
            ),
            (
                KeepPolicy {
                    last: Some(0),
                    ..Default::default()
                },
                vec![],
            ),
        ];
        for (p, want) in cases {
            assert_eq!(kept(&times, &p, now), want, "{p:?}");
        }
    }

    #[test]
    fn edge_cases() {
        let now = t(2026, 1, 1, 0);
        assert!(decide(
            &[],
            &KeepPolicy {
                last: Some(1),
                ..Default::default()
            },
            now
        )
        .is_empty());
        assert!(KeepPolicy::default().is_empty());
        // Identical times: both are distinct snapshots; last=1 keeps exactly one.
        let same = [now, now];
        assert_eq!(
            kept(
                &same,
                &KeepPolicy {
                    last: Some(1),
                    ..Default::default()
                },
                now
            )
            .len(),
            1
        );
        // A snapshot from the future (clock moved back) is within any window and newest.
        let fut = [t(2027, 1, 1, 0), now];
        assert_eq!(
            kept(
                &fut,
                &KeepPolicy {
                    within: Some(Duration::hours(1)),
                    ..Default::default()
                },
                now
            ),
            vec![0, 1]
        );
        // Reasons are reported.
        let d = decide(
            &[now],
            &KeepPolicy {
                last: Some(1),
                daily: Some(1),
                ..Default::default()
            },
            now,
        );
        assert_eq!(d[0].reasons, vec!["last", "daily"]);
    }
}
