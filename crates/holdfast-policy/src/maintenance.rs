//! Retention and prune in their own window (`[service] maintenance-window = "02:00-04:00"`,
//! UTC). Without a window, `protect` applies each class's keep policy right after the source's
//! backup. With one, backups never wait for a prune: retention runs once per window, from
//! `protect --retain` (what the service schedules) or from the first `protect` (cron) inside
//! the window. `<state dir>/maintenance.last` remembers the window occurrence that ran.

use std::fs;

use chrono::{DateTime, Duration, Timelike, Utc};

use crate::jobs::{self, Action, Env, JobError, ProtectLine};

/// The start of the window occurrence `now` is in, if it is in one.
pub fn occurrence(now: DateTime<Utc>, (start, end): (u32, u32)) -> Option<DateTime<Utc>> {
    let m = now.hour() * 60 + now.minute();
    let midnight = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    let inside = if start < end {
        (start..end).contains(&m)
    } else {
        m >= start || m < end
    };
    if !inside {
        return None;
    }
    let day = if start >= end && m < end {
        midnight - Duration::days(1)
    } else {
        midnight
    };
    Some(day + Duration::minutes(start as i64))
}

fn marker(env: &Env) -> std::path::PathBuf {
    env.state_dir.join("maintenance.last")
}

/// Whether retention should run now: inside the window, and not yet in this occurrence.
pub fn due(env: &Env) -> bool {
    let Ok(Some(w)) = env.workload.service.maintenance() else {
        return false;
    };
    let Some(at) = occurrence(env.now, w) else {
        return false;
    };
    let done = fs::read_to_string(marker(env))
        .ok()
        .and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
        .map(|t| t.with_timezone(&Utc));
    done != Some(at)
}

/// Apply every scheduled source's keep policy (and prune where points went), now; remember
/// the window occurrence if inside one.
pub fn retain(env: &Env) -> Result<Vec<ProtectLine>, JobError> {
    let mut out = Vec::new();
    for s in &env.workload.sources {
        let Ok((class, _)) = jobs::schedulable(env.workload, s) else {
            continue;
        };
        let Some(_lock) = jobs::lock(&env.state_dir, s.name())? else {
            out.push(jobs::line(s, Action::RunningElsewhere, vec![]));
            continue;
        };
        let repo = jobs::open_for(env, s)?;
        let mut recs = Vec::new();
        if let Some(r) = jobs::run_retention(env, &repo, s, class) {
            recs.push(jobs::save(&repo, r)?);
        }
        out.push(jobs::line(s, Action::Retained, recs));
    }
    if let Ok(Some(w)) = env.workload.service.maintenance() {
        if let Some(at) = occurrence(env.now, w) {
            let _ = fs::create_dir_all(&env.state_dir);
            let _ = fs::write(marker(env), at.to_rfc3339());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn occurrences() {
        let at = |d, h, m| Utc.with_ymd_and_hms(2026, 12, d, h, m, 0).unwrap();
        for (now, w, want) in [
            (at(1, 2, 30), (120, 240), Some(at(1, 2, 0))),
            (at(1, 4, 0), (120, 240), None),
            (at(1, 23, 50), (1410, 30), Some(at(1, 23, 30))),
            (at(2, 0, 10), (1410, 30), Some(at(1, 23, 30))),
            (at(2, 0, 30), (1410, 30), None),
        ] {
            assert_eq!(occurrence(now, w), want, "{now} {w:?}");
        }
    }
}
