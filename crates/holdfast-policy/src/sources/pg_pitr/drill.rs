//! Drills of a continuous PostgreSQL source: a point-in-time restore to the instant the drill
//! chose (a random one inside the window) into a scratch data directory, started on a free
//! port with archiving off (a drill never archives into the source's log), checked to have
//! stopped at or before the target, then the verify query; the time it took is the drill's.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use super::recover::{self, Options, RecoverError};
use crate::sources::pitr::{PitrDrill, PitrRestore, RecoveryTarget};
use crate::sources::postgres::PostgresSource;
use crate::sources::tool::truthy;
use crate::sources::{Conn, DrillOutcome};

/// Let a server run as another user reach `dir` (its parents must be traversable).
fn traversable(dir: &Path) {
    let mut p = Some(dir);
    while let Some(d) = p {
        if let Ok(m) = fs::metadata(d) {
            let mode = m.permissions().mode();
            if mode & 0o001 == 0 {
                let _ = fs::set_permissions(d, fs::Permissions::from_mode(mode | 0o711));
            }
        }
        p = d.parent();
    }
}

/// Drill `job.target` (see the module).
pub fn drill_at(src: &PostgresSource, job: &PitrDrill) -> Result<DrillOutcome, RecoverError> {
    let t = Instant::now();
    let data = job.scratch.join("data");
    traversable(job.scratch);
    let conn = Conn {
        host: None,
        port: None,
        user: src.server.user.clone(),
        password: src.server.conn().ok().and_then(|c| c.password),
    };
    let restore = PitrRestore {
        repo: job.repo,
        source: job.source,
        workload: job.workload,
        bases: job.bases,
        logs: job.logs,
        host: None,
        target: job.target,
        into: data.to_str(),
        replace: false,
        conn: &conn,
        start: true,
        archive: false,
        progress: job.progress,
    };
    let opts = Options {
        archive_off: true,
        timeout: job.timeout,
        ..Options::user()
    };
    let r = recover::restore_at(&restore, &opts);
    let mut messages = Vec::new();
    let (passed, bytes) = match r {
        Err(e) => {
            messages.push(format!("point-in-time restore failed: {e}"));
            (false, 0)
        }
        Ok(rec) => {
            let server = rec.server.expect("a drill starts the server");
            let seconds = t.elapsed().as_secs_f64();
            messages.extend(rec.restored.done.iter().cloned());
            let base = job
                .bases
                .iter()
                .find(|b| b.id.to_hex() == rec.restored.base);
            let bytes = base.map_or(0, |b| b.snapshot.summary.total_bytes);
            let mut ok = true;
            match (job.target, rec.restored.reached) {
                (RecoveryTarget::Time(want), Some(got)) => messages.push(format!(
                    "reached {} (the last commit replayed; target {}), in {seconds:.1} s",
                    got.to_rfc3339(),
                    want.to_rfc3339()
                )),
                (_, None) => messages.push(format!(
                    "no transaction was replayed after the base backup (the target is reached by the base alone), in {seconds:.1} s"
                )),
                (_, Some(got)) => messages.push(format!("reached {} in {seconds:.1} s", got.to_rfc3339())),
            }
            if let Some(q) = &src.verify {
                let db = src
                    .verify_database
                    .clone()
                    .or_else(|| src.database.clone())
                    .unwrap_or_else(|| "postgres".into());
                messages.push(format!("verify query runs in database {db:?}"));
                ok = match server.query(&conn, &db, q) {
                    Ok(out) => {
                        messages.push(format!("verify query returned {:?}", out.trim()));
                        truthy(&out)
                    }
                    Err(e) => {
                        messages.push(format!("verify query: {e}"));
                        false
                    }
                };
            }
            server.stop(&data);
            (ok, bytes)
        }
    };
    let _ = fs::remove_dir_all(&data);
    Ok(DrillOutcome {
        passed,
        messages,
        files: 1,
        bytes,
    })
}
