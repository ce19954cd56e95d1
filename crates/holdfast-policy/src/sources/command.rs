//! `kind = "command"`: the standard output of a command (a store's own dump tool), restored by
//! feeding it to the source's restore command.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use holdfast_core::stream::{self, StreamOptions};

use super::tool::{feed, files, item, ToolError};
use super::{
    Backed, BackupJob, Conn, DrillJob, DrillOutcome, RawSource, RestoreJob, Source, SourceError,
};
use crate::hooks::run_hook;

/// Configuration of a command source.
#[derive(Debug, Clone)]
pub struct CommandSource {
    /// Command whose standard output is the data.
    pub command: String,
    /// Command that takes the data on standard input to restore it.
    pub restore_command: Option<String>,
    /// File name of the data inside the snapshot (default `NAME.out`).
    pub file_name: Option<String>,
    /// Command that checks a restored copy in a drill (`$HOLDFAST_DRILL_DIR`).
    pub verify: Option<String>,
}

/// Why a command source failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] holdfast_core::Error),
    /// Nothing says how to restore it.
    #[error("this command source has no restore-command")]
    NoRestoreCommand,
    /// The snapshot holds nothing.
    #[error("the snapshot holds no data")]
    Empty,
    /// The command or the restore command failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// Local I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl From<CommandError> for SourceError {
    fn from(e: CommandError) -> Self {
        SourceError::new("command", e)
    }
}

/// Build from the workload file.
pub fn build(r: &RawSource, _base: &Path) -> Result<Arc<dyn Source>, String> {
    let Some(command) = r.command.clone() else {
        return Err(format!(
            "source {:?} of kind command needs command = \"...\" (its standard output is backed up)",
            r.name()
        ));
    };
    r.no_mode()?;
    Ok(Arc::new(CommandSource {
        command,
        restore_command: r.restore_command.clone(),
        file_name: r.file_name.clone(),
        verify: r.verify.clone(),
    }))
}

impl Source for CommandSource {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn backup(&self, job: &BackupJob) -> Result<Backed, SourceError> {
        let name = job.name;
        let mut c = Command::new("sh");
        c.arg("-c").arg(&self.command);
        let file = self
            .file_name
            .clone()
            .unwrap_or_else(|| format!("{name}.out"));
        let items = vec![item(&file, &format!("command {:?}", self.command), c)];
        let opts = StreamOptions {
            dir: name.to_string(),
            label: format!("command:{name}"),
            source: Some(name.to_string()),
            tags: job.tags.to_vec(),
            time: Some(job.time),
            log: None,
        };
        let (id, _) = stream::backup_streams(job.repo, &opts, items, job.progress)
            .map_err(CommandError::from)?;
        Ok(Backed {
            snapshot: Some(id),
            skipped: Vec::new(),
        })
    }

    /// `into` is passed to the restore command as `$HOLDFAST_RESTORE_TARGET`.
    fn restore(&self, job: &RestoreJob) -> Result<Vec<String>, SourceError> {
        let (repo, snap) = (job.repo, job.snap);
        let (index, _) = repo.load_index().map_err(CommandError::from)?;
        let fs_ = files(repo, &index, snap).map_err(CommandError::from)?;
        let (d, f) = fs_.first().ok_or(CommandError::Empty)?;
        let cmd = self
            .restore_command
            .as_ref()
            .ok_or(CommandError::NoRestoreCommand)?;
        let mut c = Command::new("sh");
        c.arg("-c").arg(cmd);
        if let Some(t) = job.into {
            c.env("HOLDFAST_RESTORE_TARGET", t);
        }
        feed(
            repo,
            &index,
            &snap.snapshot.tree,
            &format!("{d}/{f}"),
            c,
            &format!("restore-command {cmd:?}"),
        )
        .map_err(CommandError::from)?;
        Ok(vec![format!("fed {f} to the restore command")])
    }

    fn drill(&self, job: &DrillJob) -> Result<DrillOutcome, SourceError> {
        let target = job.scratch.join("restored");
        fs::create_dir_all(&target).map_err(|source| CommandError::Io {
            what: format!("creating {}", target.display()),
            source,
        })?;
        let mut messages = Vec::new();
        let mut ok = true;
        match self.restore(&RestoreJob {
            repo: job.repo,
            snap: job.snap,
            into: Some(target.to_str().unwrap_or_default()),
            replace: false,
            conn: &Conn::default(),
        }) {
            Ok(m) => messages.extend(m),
            Err(e) => {
                messages.push(e.to_string());
                ok = false;
            }
        }
        if ok {
            if let Some(v) = &self.verify {
                let (vok, out) = run_hook(v, job.timeout, &[("HOLDFAST_DRILL_DIR", &target)]);
                messages.push(format!("verify: {}", if vok { "ok".into() } else { out }));
                ok = vok;
            }
        }
        Ok(DrillOutcome {
            passed: ok,
            messages,
            files: 1,
            bytes: job.snap.snapshot.summary.total_bytes,
        })
    }

    fn describe(&self) -> String {
        format!("the output of {:?}", self.command)
    }
}
