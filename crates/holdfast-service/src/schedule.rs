//! Which jobs start now: a pure function of what is due, what runs and the limits, so a table
//! of cases tests every rule.
//!
//! Rules:
//! - never two jobs of one source at once (the source's lock in `protect` enforces it across
//!   processes too);
//! - at most `max_jobs` jobs at once; the job that fell due first starts first;
//! - a job is due at `due_at` plus the source's jitter share; after downtime the window
//!   counts from the service's start, so an overdue job starts at once (catch-up) and `protect`
//!   records the runs that were missed;
//! - a job that could not start within its class's `start-window` after it fell due (every
//!   slot busy) is *expired*: recorded as such, and not tried again before its next slot.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `protect --source`: the backup (and copies, and retention without a maintenance
    /// window).
    Backup,
    /// `drill SOURCE`: a timed restore or reproduction.
    Drill,
    /// Retention and prune, in the maintenance window.
    Maintenance,
}

impl Kind {
    /// The name used in records and the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Backup => "backup",
            Kind::Drill => "drill",
            Kind::Maintenance => "maintenance",
        }
    }
}

/// A job that is due.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Due {
    /// The source (for maintenance: the repository's first source, or `*`).
    pub source: String,
    /// What.
    pub kind: Kind,
    /// When it fell due.
    pub due_at: DateTime<Utc>,
    /// How long it may wait for a slot.
    pub start_window: Option<Duration>,
}

/// What to do now.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Decision {
    /// Start these.
    pub start: Vec<Due>,
    /// Record these as expired (they waited past their start window).
    pub expire: Vec<Due>,
}

/// The jitter share of a source: a fixed fraction of `jitter` from its name, so a restart does
/// not move it and sources with one cadence spread out.
pub fn jitter_of(source: &str, jitter: Option<Duration>) -> Duration {
    let Some(j) = jitter.filter(|j| j.num_milliseconds() > 0) else {
        return Duration::zero();
    };
    let h = blake3::hash(source.as_bytes());
    let n = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
    Duration::milliseconds((n % j.num_milliseconds() as u64) as i64)
}

/// Decide. `due` are the jobs whose time has come (their `due_at` may lie in the future by
/// their jitter: those wait); `running` the jobs running now (source, kind): a due job that is
/// the one running is neither started nor expired; `started` when the service started.
pub fn decide(
    now: DateTime<Utc>,
    started: DateTime<Utc>,
    mut due: Vec<Due>,
    running: &[(String, Kind)],
    max_jobs: usize,
    jitter: Option<Duration>,
) -> Decision {
    let mut d = Decision::default();
    due.retain(|j| !running.iter().any(|(s, k)| *s == j.source && *k == j.kind));
    let mut busy: Vec<String> = running.iter().map(|(s, _)| s.clone()).collect();
    let mut slots = max_jobs.saturating_sub(running.len());
    // Catch-up: while the service was down nothing could start; the wait counts from its start.
    for j in &mut due {
        j.due_at = j.due_at.max(started) + jitter_of(&j.source, jitter);
    }
    due.sort_by(|a, b| a.due_at.cmp(&b.due_at).then(a.kind.cmp(&b.kind)));
    for j in due {
        if j.due_at > now {
            continue;
        }
        if busy.contains(&j.source) {
            // Its other job runs; it waits (and may expire) like any job without a slot.
            if j.start_window.is_some_and(|w| now - j.due_at > w) {
                d.expire.push(j);
            }
            continue;
        }
        if slots > 0 {
            slots -= 1;
            busy.push(j.source.clone());
            d.start.push(j);
        } else if j.start_window.is_some_and(|w| now - j.due_at > w) {
            d.expire.push(j);
        }
    }
    d
}

/// Whether `now` is inside a daily window (`start`, `end` minutes since midnight UTC; an end
/// before the start wraps past midnight).
pub fn in_window(now: DateTime<Utc>, (start, end): (u32, u32)) -> bool {
    use chrono::Timelike;
    let m = now.hour() * 60 + now.minute();
    if start < end {
        (start..end).contains(&m)
    } else {
        m >= start || m < end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn due(source: &str, kind: Kind, at: i64, window: Option<i64>) -> Due {
        Due {
            source: source.into(),
            kind,
            due_at: t(at),
            start_window: window.map(Duration::seconds),
        }
    }

    fn names(v: &[Due]) -> Vec<String> {
        v.iter()
            .map(|d| format!("{}/{}", d.source, d.kind.as_str()))
            .collect()
    }

    /// (case, now, due, running, max, want start, want expire)
    type Case = (
        &'static str,
        i64,
        Vec<Due>,
        Vec<&'static str>,
        usize,
        Vec<&'static str>,
        Vec<&'static str>,
    );

    #[test]
    fn table() {
        use Kind::*;
        let cases: Vec<Case> = vec![
            ("nothing due", 100, vec![], vec![], 2, vec![], vec![]),
            (
                "due now starts",
                100,
                vec![due("a", Backup, 100, None)],
                vec![],
                2,
                vec!["a/backup"],
                vec![],
            ),
            (
                "due later waits",
                100,
                vec![due("a", Backup, 101, None)],
                vec![],
                2,
                vec![],
                vec![],
            ),
            (
                "oldest first within the limit",
                100,
                vec![
                    due("b", Backup, 90, None),
                    due("a", Backup, 50, None),
                    due("c", Backup, 95, None),
                ],
                vec![],
                2,
                vec!["a/backup", "b/backup"],
                vec![],
            ),
            (
                "running jobs take slots",
                100,
                vec![due("a", Backup, 50, None)],
                vec!["x", "y"],
                2,
                vec![],
                vec![],
            ),
            (
                "never two runs of one source",
                100,
                vec![due("a", Backup, 50, None), due("a", Drill, 60, None)],
                vec![],
                3,
                vec!["a/backup"],
                vec![],
            ),
            (
                "a running source waits",
                100,
                vec![due("a", Drill, 50, None)],
                vec!["a"],
                3,
                vec![],
                vec![],
            ),
            (
                "a running source's other job expires after its window",
                100,
                vec![due("a", Drill, 30, Some(60))],
                vec!["a"],
                3,
                vec![],
                vec!["a/drill"],
            ),
            (
                "the running job itself is neither started nor expired",
                100,
                vec![due("a", Backup, 0, Some(60))],
                vec!["a"],
                3,
                vec![],
                vec![],
            ),
            (
                "no slot within the start window: expired",
                100,
                vec![due("a", Backup, 39, Some(60))],
                vec!["x"],
                1,
                vec![],
                vec!["a/backup"],
            ),
            (
                "just inside the start window: still waits",
                100,
                vec![due("a", Backup, 40, Some(60))],
                vec!["x"],
                1,
                vec![],
                vec![],
            ),
            (
                "a free slot starts even a late job",
                100,
                vec![due("a", Backup, 0, Some(60))],
                vec![],
                1,
                vec!["a/backup"],
                vec![],
            ),
        ];
        for (case, now, d, running, max, start, expire) in cases {
            let running: Vec<(String, Kind)> = running
                .iter()
                .map(|s| (s.to_string(), Kind::Backup))
                .collect();
            // The service started long before: no catch-up clamp.
            let got = decide(t(now), t(-1000), d, &running, max, None);
            assert_eq!(names(&got.start), start, "{case}: start");
            assert_eq!(names(&got.expire), expire, "{case}: expire");
        }
    }

    #[test]
    fn after_downtime_the_window_counts_from_the_start() {
        // Due an hour before the service started, a 1-minute start window: it starts at once.
        let d = decide(
            t(10),
            t(0),
            vec![due("a", Kind::Backup, -3600, Some(60))],
            &[],
            1,
            None,
        );
        assert_eq!(names(&d.start), vec!["a/backup"]);
        // But waiting past the window after the start still expires it.
        let d = decide(
            t(61),
            t(0),
            vec![due("a", Kind::Backup, -3600, Some(60))],
            &[("x".into(), Kind::Backup)],
            1,
            None,
        );
        assert_eq!(names(&d.expire), vec!["a/backup"]);
    }

    #[test]
    fn jitter_is_stable_bounded_and_spreads() {
        let j = Some(Duration::seconds(60));
        let a = jitter_of("alpha", j);
        assert_eq!(a, jitter_of("alpha", j));
        assert!(a >= Duration::zero() && a < Duration::seconds(60));
        let spread: std::collections::HashSet<i64> = (0..20)
            .map(|i| jitter_of(&format!("s{i}"), j).num_seconds())
            .collect();
        assert!(spread.len() > 5, "{spread:?}");
        assert_eq!(jitter_of("alpha", None), Duration::zero());
        // A jittered job is not due before its share.
        let share = jitter_of("alpha", j);
        let d = decide(
            t(0) + share - Duration::milliseconds(1),
            t(-1000),
            vec![due("alpha", Kind::Backup, 0, None)],
            &[],
            1,
            j,
        );
        assert!(d.start.is_empty() || share.is_zero());
    }

    #[test]
    fn windows() {
        use chrono::TimeZone;
        let at = |h, m| Utc.with_ymd_and_hms(2026, 12, 1, h, m, 0).unwrap();
        for (now, w, want) in [
            (at(2, 0), (120, 240), true),
            (at(3, 59), (120, 240), true),
            (at(4, 0), (120, 240), false),
            (at(1, 59), (120, 240), false),
            (at(23, 45), (1410, 30), true),
            (at(0, 10), (1410, 30), true),
            (at(0, 30), (1410, 30), false),
        ] {
            assert_eq!(in_window(now, w), want, "{now} {w:?}");
        }
    }
}
