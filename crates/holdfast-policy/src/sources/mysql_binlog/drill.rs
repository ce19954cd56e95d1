//! Drills of continuous mysql sources: restore to the drilled instant on a scratch MariaDB
//! server (the base dump, then the binary log replayed up to the instant), confirm the replay
//! reached it, run the source's verify query.

use super::super::pitr::{PitrDrill, PitrRestore, RecoveryTarget};
use super::super::{my_scratch, DrillOutcome, SourceError};
use super::{restore, BinlogSettings};

/// Restore `job.target` on a scratch server and check it.
pub fn drill_at(s: &BinlogSettings, job: &PitrDrill) -> Result<DrillOutcome, SourceError> {
    let server = my_scratch::Server::start(job.scratch, job.timeout)
        .map_err(|e| SourceError::new("mysql", e))?;
    let conn = server.conn();
    let mut messages = Vec::new();
    let r = restore::restore_at(
        s,
        &PitrRestore {
            repo: job.repo,
            source: job.source,
            workload: job.workload,
            bases: job.bases,
            logs: job.logs,
            host: None,
            target: job.target,
            into: None,
            replace: false,
            conn: &conn,
            start: false,
            archive: false,
            progress: job.progress,
        },
    );
    let mut ok = match r {
        Ok(r) => {
            messages.extend(r.done);
            // The replay stops at the first event stamped at or after the target's second:
            // it must have reached that second (a replay that stopped short is a failure).
            let reached = match (job.target, r.reached) {
                (RecoveryTarget::Time(t), Some(at)) => {
                    let floor = t.timestamp();
                    if at.timestamp() < floor {
                        messages.push(format!(
                            "the replay reached {} only, before the drilled second {}",
                            at.to_rfc3339(),
                            t.to_rfc3339()
                        ));
                        false
                    } else {
                        true
                    }
                }
                (_, Some(_)) => true,
                (_, None) => {
                    messages.push("the restore does not say which instant it reached".into());
                    false
                }
            };
            for w in r.warnings {
                messages.push(format!("warning: {w}"));
            }
            reached
        }
        Err(e) => {
            messages.push(e.to_string());
            false
        }
    };
    if ok {
        if let Some(q) = &s.verify {
            let db = s.verify_database.as_deref().or(s.database.as_deref());
            ok = super::super::mysql::verify_on(&conn, q, db, &mut messages);
        }
    }
    drop(server);
    Ok(DrillOutcome {
        passed: ok,
        messages,
        files: 1,
        bytes: 0,
    })
}
