//! Cadence from the RPO: how often to back up, when a backup is due, and the deadline after
//! which the RPO is at risk. Pure functions.
//!
//! A recovery point is as old as the start of the backup that made it. If backups start every
//! `I` and take `D`, the newest *finished* recovery point can be `I + D` old just before the
//! next one finishes, and `protect` runs once per [`TICK`], so a start can slip by one tick.
//! The interval is therefore `RPO - D - TICK`. When that is below one tick the RPO cannot be
//! met by periodic backups at all (it needs continuous protection).

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// How often `protect` is expected to run (the systemd timer and cron entry in `contrib/`).
pub fn tick() -> Duration {
    Duration::minutes(1)
}

/// The derived schedule of a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cadence {
    /// Start a backup this long after the previous recovery point.
    #[serde(with = "secs")]
    pub interval: Duration,
    /// Whether periodic backups can meet the RPO at all.
    pub feasible: bool,
    /// The expected backup duration used (measured, or zero before the first backup).
    #[serde(with = "secs")]
    pub expected_run: Duration,
}

mod secs {
    use chrono::Duration;
    use serde::Serializer;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.num_milliseconds() as f64 / 1000.0)
    }
}

/// The cadence for an RPO, given how long a backup takes.
pub fn cadence(rpo: Duration, expected_run: Duration) -> Cadence {
    let expected_run = expected_run.max(Duration::zero());
    let interval = rpo - expected_run - tick();
    if interval < tick() {
        Cadence {
            interval: tick(),
            feasible: false,
            expected_run,
        }
    } else {
        Cadence {
            interval,
            feasible: true,
            expected_run,
        }
    }
}

/// Latest start of the next backup that still keeps the RPO: `last + RPO - D`.
pub fn start_deadline(
    last_point: DateTime<Utc>,
    rpo: Duration,
    expected_run: Duration,
) -> DateTime<Utc> {
    last_point + rpo - expected_run.max(Duration::zero())
}

/// Whether a backup is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Run now. `missed` counts whole intervals that passed without a run (machine off, protect
    /// not scheduled): they are recorded as expired, and one run catches up.
    Now {
        /// Why.
        reason: String,
        /// Scheduled runs missed.
        missed: u32,
    },
    /// Not yet.
    NotYet {
        /// When it becomes due.
        next: DateTime<Utc>,
    },
}

/// Decide whether a backup is due at `now`, given the newest recovery point's time.
pub fn due(now: DateTime<Utc>, last_point: Option<DateTime<Utc>>, interval: Duration) -> Due {
    let Some(last) = last_point else {
        return Due::Now {
            reason: "no recovery point yet".into(),
            missed: 0,
        };
    };
    if last > now + interval {
        // The newest point is further in the future than one interval: the clock moved back.
        // Do not trust it to mean "recent".
        return Due::Now {
            reason: format!(
                "newest recovery point is dated in the future ({last}): the clock moved back"
            ),
            missed: 0,
        };
    }
    let next = last + interval;
    if now < next {
        return Due::NotYet { next };
    }
    let late = now - next;
    let missed = if interval > Duration::zero() {
        (late.num_seconds() / interval.num_seconds().max(1)).clamp(0, u32::MAX as i64) as u32
    } else {
        0
    };
    Due::Now {
        reason: format!(
            "newest recovery point is {} old",
            crate::duration::show(now - last)
        ),
        missed,
    }
}

/// The duration to plan with: the longest of the recent completed runs (conservative).
pub fn expected_run(recent_seconds: &[f64]) -> Duration {
    let max = recent_seconds
        .iter()
        .rev()
        .take(5)
        .cloned()
        .fold(0.0, f64::max);
    Duration::milliseconds((max * 1000.0).ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, h, m, 0).unwrap()
    }

    #[test]
    fn cadence_table() {
        let m = Duration::minutes;
        // (rpo, duration) -> (interval, feasible)
        let cases = [
            (m(15), m(0), m(14), true),
            (m(15), m(4), m(10), true),
            (Duration::hours(24), m(30), m(24 * 60 - 31), true),
            (m(15), m(14), m(1), false), // RPO barely above the backup duration
            (m(10), m(20), m(1), false), // RPO shorter than the backup itself
            (m(1), m(0), m(1), false),   // below protect's own resolution
            (m(2), m(0), m(1), true),
        ];
        for (rpo, d, interval, feasible) in cases {
            let c = cadence(rpo, d);
            assert_eq!(
                (c.interval, c.feasible),
                (interval, feasible),
                "rpo {rpo} run {d}"
            );
        }
    }

    #[test]
    fn due_table() {
        let i = Duration::minutes(14);
        assert!(matches!(due(t(0, 0), None, i), Due::Now { missed: 0, .. }));
        assert_eq!(
            due(t(0, 10), Some(t(0, 0)), i),
            Due::NotYet { next: t(0, 14) }
        );
        assert!(matches!(
            due(t(0, 14), Some(t(0, 0)), i),
            Due::Now { missed: 0, .. }
        ));
        // Asleep for an hour: four intervals missed, one catch-up run.
        assert!(matches!(
            due(t(1, 14), Some(t(0, 0)), i),
            Due::Now { missed: 4, .. }
        ));
        // Clock moved back by less than an interval: not due yet.
        assert!(matches!(due(t(0, 0), Some(t(0, 5)), i), Due::NotYet { .. }));
        // Clock moved back by a day: due, and said why.
        match due(t(0, 0), Some(t(0, 0) + Duration::days(1)), i) {
            Due::Now { reason, .. } => assert!(reason.contains("clock moved back")),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn deadline_and_expected_run() {
        assert_eq!(
            start_deadline(t(0, 0), Duration::minutes(15), Duration::minutes(4)),
            t(0, 11)
        );
        assert_eq!(expected_run(&[]), Duration::zero());
        assert_eq!(
            expected_run(&[1.0, 30.5, 2.0]),
            Duration::milliseconds(30_500)
        );
    }
}
