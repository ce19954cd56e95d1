//! `holdfast restore --source NAME --at TIME|latest` for a continuous mysql source: restore
//! the newest base dump that serves the target (the logical restore of `db_restore`), fetch
//! the binary log pieces from its file on (each checked against its batch's size and
//! BLAKE3), and replay them from the base's position with `mariadb-binlog
//! [--stop-datetime=SECOND] | mariadb`.
//!
//! What "at T" means: binary log events carry whole seconds (the start of the statement that
//! wrote them), so the replay is exactly the log from the base's position up to the first
//! event stamped at or after T's whole second (`floor(T)`): every transaction whose
//! statements all started before `floor(T)` and that the log holds before that event is
//! restored; nothing stamped at or after `floor(T)`. A change committed within T's own
//! second, before T, is not restored (ask for the next whole second to include it).
//! `--stop-datetime` is read in the client's local time zone: the child runs with `TZ=UTC`.

use std::fs;
use std::io::{Read, Seek};
use std::process::{Command, Stdio};

use holdfast_core::logs::{self, LogKind};

use super::window::{self, Chain};
use super::{utc_seconds, BinlogError, BinlogSettings};
use crate::sources::db_restore;
use crate::sources::pitr::{PitrRestore, PitrRestored};
use crate::sources::tool::{files, my_tool, ToolError};

/// Restore to the job's target.
pub fn restore_at(s: &BinlogSettings, job: &PitrRestore) -> Result<PitrRestored, BinlogError> {
    if let Some(t) = job.into {
        if s.database.as_deref() != Some(t) {
            return Err(BinlogError::Unreachable(format!(
                "--target {t}: a mysql point-in-time restore restores the databases its dump names ({}) into the server of the source's settings; it cannot rename them",
                s.database.as_deref().unwrap_or("every database")
            )));
        }
    }
    let batches: Vec<_> = job
        .logs
        .iter()
        .filter_map(|e| e.snapshot.log.as_ref().map(|l| (e, l)))
        .filter(|(_, l)| l.kind == LogKind::Binlog)
        .collect();
    let chain = Chain::of(&batches);
    let plan = window::plan(&chain, job.bases, job.target).map_err(BinlogError::Unreachable)?;
    let (index, _) = job.repo.load_index()?;
    let base = plan.base;
    let fs_ = files(job.repo, &index, base)?;
    let mut done = db_restore::mysql(
        job.repo,
        &index,
        &base.snapshot.tree,
        &fs_,
        job.replace,
        job.conn,
        s.database.as_deref(),
    )?;
    done.insert(
        0,
        format!(
            "restored base backup {} (binary log {} position {})",
            base.id.short(),
            plan.mark.file,
            plan.mark.pos
        ),
    );
    // Fetch the pieces, file by file.
    let dir = tempfile::tempdir().map_err(|e| BinlogError::Spool {
        path: std::env::temp_dir(),
        source: e,
    })?;
    let mut names: Vec<String> = Vec::new();
    let mut out: Option<fs::File> = None;
    let mut bytes = 0u64;
    for c in &plan.chunks {
        if names.last().map(String::as_str) != Some(c.file) {
            let path = dir.path().join(c.file);
            out =
                Some(fs::File::create(&path).map_err(|e| BinlogError::Spool { path, source: e })?);
            names.push(c.file.to_string());
        }
        let f = out.as_mut().expect("opened above");
        logs::read_piece(job.repo, &index, c.batch, c.name, f)?;
        bytes += c.end - c.start;
    }
    drop(out);
    let last = plan.chunks.last();
    let mut binlog = Command::new(my_tool("mariadb-binlog", "mysqlbinlog"));
    binlog
        .env("TZ", "UTC")
        .arg(format!("--start-position={}", plan.mark.pos));
    if let Some(st) = plan.stop {
        binlog.arg(format!("--stop-datetime={}", utc_seconds(st)));
    }
    if let Some(db) = &s.database {
        binlog.arg(format!("--database={db}"));
    }
    binlog.current_dir(dir.path()).args(&names);
    replay(binlog, job)?;
    done.push(format!(
        "replayed the binary log from {} position {} to {} position {} ({} bytes in {} pieces){}",
        plan.mark.file,
        plan.mark.pos,
        last.map(|c| c.file).unwrap_or(""),
        last.map(|c| c.end).unwrap_or(0),
        bytes,
        plan.chunks.len(),
        match plan.stop {
            Some(st) => format!(
                ", stopping at the first event stamped {} UTC or later",
                utc_seconds(st)
            ),
            None => String::new(),
        }
    ));
    Ok(PitrRestored {
        base: base.id.to_hex(),
        target: job.target.clone(),
        reached: plan.reached,
        done,
        warnings: plan.notes,
    })
}

/// `mariadb-binlog ... | mariadb`: both must succeed.
fn replay(mut binlog: Command, job: &PitrRestore) -> Result<(), BinlogError> {
    let tmp = |e| BinlogError::Spool {
        path: std::env::temp_dir(),
        source: e,
    };
    let err_a = tempfile::tempfile().map_err(tmp)?;
    let err_b = tempfile::tempfile().map_err(tmp)?;
    let what_a = "mariadb-binlog";
    let mut a = binlog
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err_a.try_clone().map_err(tmp)?)
        .spawn()
        .map_err(|e| {
            BinlogError::Tool(ToolError::Spawn {
                what: what_a.into(),
                source: e,
            })
        })?;
    let tool = my_tool("mariadb", "mysql");
    let mut client = Command::new(&tool);
    job.conn.my(&mut client);
    client.arg("--binary-mode");
    let mut b = client
        .stdin(a.stdout.take().expect("piped"))
        .stdout(Stdio::null())
        .stderr(err_b.try_clone().map_err(tmp)?)
        .spawn()
        .map_err(|e| {
            BinlogError::Tool(ToolError::Spawn {
                what: tool.clone(),
                source: e,
            })
        })?;
    let sb = b.wait().map_err(tmp)?;
    let sa = a.wait().map_err(tmp)?;
    let text = |mut f: fs::File| {
        let mut s = String::new();
        let _ = f.rewind();
        let _ = f.take(16 * 1024).read_to_string(&mut s);
        s.trim().to_string()
    };
    if !sa.success() {
        return Err(ToolError::Failed {
            what: what_a.into(),
            status: sa,
            stderr: text(err_a),
        }
        .into());
    }
    if !sb.success() {
        return Err(ToolError::Failed {
            what: format!("{tool} (replaying the binary log)"),
            status: sb,
            stderr: text(err_b),
        }
        .into());
    }
    Ok(())
}
