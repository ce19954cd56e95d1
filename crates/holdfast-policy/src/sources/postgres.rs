//! `kind = "postgres"`: a PostgreSQL server, dumped logically (pg_dump per database plus
//! pg_dumpall --globals-only) or physically (pg_basebackup), restored with pg_restore or by
//! extracting the base backup, drilled on a scratch server.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use holdfast_core::stream::{self, StreamItem, StreamOptions};

use super::conn::{PasswordEnvUnset, ServerSettings};
use super::tool::{feed, files, item, noted, output, verify_query, ToolError};
use super::{
    db_restore, pg_physical, pg_scratch, pg_wal, raw, Backed, BackupJob, Conn, DbRestoreError,
    DrillJob, DrillOutcome, RawSource, RestoreJob, ScratchError, Source, SourceError,
};
use crate::found::{self, Found};

/// How a PostgreSQL source is backed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgMode {
    /// pg_dump / pg_dumpall (the default).
    Logical,
    /// pg_basebackup of the whole cluster.
    Physical,
    /// Base backups with pg_basebackup plus every WAL segment archived (`wal-push`), for
    /// point-in-time recovery ([`super::pg_wal`]).
    Continuous,
}

/// Configuration of a PostgreSQL source.
#[derive(Debug, Clone)]
pub struct PostgresSource {
    /// The source's name (what `archive_command` must name).
    pub name: String,
    /// One database, or every database with the globals (`None`, or `all` in the file).
    pub database: Option<String>,
    /// Logical or physical.
    pub mode: PgMode,
    /// The server.
    pub server: ServerSettings,
    /// SQL query run on the scratch server in a drill.
    pub verify: Option<String>,
    /// The database the verify query runs in.
    pub verify_database: Option<String>,
    /// WAL archiving settings (`mode = "continuous"` only).
    pub wal: Option<pg_wal::WalSettings>,
}

/// Why a PostgreSQL source failed.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] holdfast_core::Error),
    /// The password is not available.
    #[error(transparent)]
    Password(#[from] PasswordEnvUnset),
    /// A physical restore needs a target directory.
    #[error("restoring a physical postgres backup needs --target DATA_DIRECTORY")]
    NoDataDirectory,
    /// The snapshot holds no base backup.
    #[error("the snapshot holds no base backup")]
    NoBaseBackup,
    /// A PostgreSQL tool failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// A logical restore failed or was refused.
    #[error(transparent)]
    Restore(#[from] DbRestoreError),
    /// A physical restore failed or was refused.
    #[error(transparent)]
    Physical(#[from] pg_physical::PhysicalError),
    /// The scratch server for a drill did not start.
    #[error(transparent)]
    Scratch(#[from] ScratchError),
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

impl From<PostgresError> for SourceError {
    fn from(e: PostgresError) -> Self {
        SourceError::new("postgres", e)
    }
}

/// Build from the workload file.
pub fn build(r: &RawSource, _base: &Path) -> Result<Arc<dyn Source>, String> {
    let mode = match r.mode.as_deref() {
        None | Some("logical") => PgMode::Logical,
        Some("physical") => PgMode::Physical,
        Some("continuous") => PgMode::Continuous,
        Some(m) => return Err(raw::mode_error(r.name(), m)),
    };
    let wal = match mode {
        PgMode::Continuous => Some(pg_wal::WalSettings::of(r)?),
        _ if r.log.is_some() => {
            return Err(format!(
                "source {:?}: [source.log] is only for mode = \"continuous\"",
                r.name()
            ))
        }
        _ => None,
    };
    Ok(Arc::new(PostgresSource {
        name: r.name().to_string(),
        database: r.database.clone().filter(|d| d != "all"),
        mode,
        server: ServerSettings::of(r),
        verify: r.verify.clone(),
        verify_database: r.verify_database.clone(),
        wal,
    }))
}

impl PostgresSource {
    /// `label`: the base backup's label (continuous mode: `holdfast SOURCE TIME`).
    fn dump_items(
        &self,
        conn: &Conn,
        label: Option<&str>,
    ) -> Result<Vec<StreamItem<'static>>, PostgresError> {
        if self.mode != PgMode::Logical {
            let mut c = Command::new("pg_basebackup");
            c.args([
                "-D",
                "-",
                "-F",
                "tar",
                "-X",
                "fetch",
                "--checkpoint=fast",
                "--no-password",
            ]);
            if let Some(l) = label {
                c.args(["-l", l]);
            }
            conn.pg(&mut c);
            return Ok(vec![item("base.tar", "pg_basebackup", c)]);
        }
        let dbs = match &self.database {
            Some(db) => vec![db.clone()],
            None => {
                let mut c = Command::new("psql");
                c.args(["-X", "-At", "--no-password", "-d", "postgres", "-c", "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1"]);
                conn.pg(&mut c);
                output(c, "psql (listing databases)")
                    .map_err(PostgresError::from)?
                    .lines()
                    .map(String::from)
                    .collect()
            }
        };
        let mut items = Vec::new();
        if self.database.is_none() {
            let mut c = Command::new("pg_dumpall");
            c.args(["--globals-only", "--no-password"]);
            conn.pg(&mut c);
            items.push(item("globals.sql", "pg_dumpall --globals-only", c));
        }
        for db in dbs {
            let mut c = Command::new("pg_dump");
            // Uncompressed: holdfast deduplicates first and compresses after (a zlib stream
            // would change entirely with any row and defeat deduplication).
            c.args(["-F", "custom", "-Z", "0", "--no-password", "-d", &db]);
            conn.pg(&mut c);
            items.push(item(&format!("{db}.dump"), &format!("pg_dump {db}"), c));
        }
        Ok(items)
    }

    fn verify(&self, conn: &Conn, messages: &mut Vec<String>) -> bool {
        let Some(q) = &self.verify else {
            return true;
        };
        let db = self
            .verify_database
            .clone()
            .or_else(|| self.database.clone())
            .unwrap_or_else(|| "postgres".into());
        messages.push(format!(
            "verify query runs in database {db:?}{}",
            if self.verify_database.is_none() && self.database.is_none() {
                " (whole cluster: name another with verify-database = \"...\")"
            } else {
                ""
            }
        ));
        let mut c = Command::new("psql");
        c.args([
            "-X",
            "-At",
            "--no-password",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &db,
            "-c",
            q,
        ]);
        conn.pg(&mut c);
        verify_query(c, messages)
    }
}

impl Source for PostgresSource {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn backup(&self, job: &BackupJob) -> Result<Backed, SourceError> {
        let name = job.name;
        let conn = self.server.conn().map_err(PostgresError::from)?;
        let label = (self.mode == PgMode::Continuous).then(|| pg_wal::base_label(name, job.time));
        let items = self.dump_items(&conn, label.as_deref())?;
        let opts = StreamOptions {
            dir: name.to_string(),
            label: format!("postgres:{name}"),
            source: Some(name.to_string()),
            tags: job.tags.to_vec(),
            time: Some(job.time),
            log: None,
        };
        let (id, _) = stream::backup_streams(job.repo, &opts, items, job.progress)
            .map_err(PostgresError::from)?;
        Ok(Backed {
            snapshot: Some(id),
            skipped: Vec::new(),
        })
    }

    /// `into`: logical: a database name (default: the original names); physical: an empty
    /// directory (or one to replace).
    fn restore(&self, job: &RestoreJob) -> Result<Vec<String>, SourceError> {
        let (repo, snap) = (job.repo, job.snap);
        let (index, _) = repo.load_index().map_err(PostgresError::from)?;
        let root = &snap.snapshot.tree;
        let fs_ = files(repo, &index, snap).map_err(PostgresError::from)?;
        let done: Vec<String> = match self.mode {
            PgMode::Physical | PgMode::Continuous => {
                let (d, f) = fs_.first().ok_or(PostgresError::NoBaseBackup)?;
                let target = PathBuf::from(job.into.ok_or(PostgresError::NoDataDirectory)?);
                let path = format!("{d}/{f}");
                pg_physical::restore(&target, job.replace, |dir| {
                    let mut c = Command::new("tar");
                    c.arg("-x").arg("-C").arg(dir).arg("-f").arg("-");
                    feed(repo, &index, root, &path, c, "tar")
                })
                .map_err(PostgresError::from)?
            }
            PgMode::Logical => {
                db_restore::postgres(repo, &index, root, &fs_, job.into, job.replace, job.conn)
                    .map_err(PostgresError::from)?
            }
        };
        Ok(done)
    }

    fn drill(&self, job: &DrillJob) -> Result<DrillOutcome, SourceError> {
        let server =
            pg_scratch::Server::start(job.scratch, job.timeout).map_err(PostgresError::from)?;
        let conn = server.conn();
        let restore = |into: Option<&str>| {
            self.restore(&RestoreJob {
                repo: job.repo,
                snap: job.snap,
                into,
                replace: false,
                conn: &conn,
            })
        };
        let r = match self.mode {
            PgMode::Physical | PgMode::Continuous => {
                server.stop();
                let data = server.data_dir();
                fs::remove_dir_all(&data).map_err(|source| PostgresError::Io {
                    what: format!("emptying {}", data.display()),
                    source,
                })?;
                let msgs = restore(Some(data.to_str().unwrap_or_default()))?;
                server.adopt_restored_data().map_err(PostgresError::from)?;
                Ok(msgs)
            }
            PgMode::Logical => restore(None),
        };
        let mut messages = Vec::new();
        let mut ok = noted(r.map_err(|e| e.to_string()), &mut messages);
        if ok {
            ok = self.verify(&conn, &mut messages);
        }
        server.stop();
        Ok(DrillOutcome {
            passed: ok,
            messages,
            files: 1,
            bytes: job.snap.snapshot.summary.total_bytes,
        })
    }

    fn conn(&self) -> Result<Conn, SourceError> {
        Ok(self.server.conn().map_err(PostgresError::from)?)
    }

    fn continuous(&self) -> Option<&dyn super::pitr::Continuous> {
        (self.mode == PgMode::Continuous).then_some(self as &dyn super::pitr::Continuous)
    }

    fn pg_wal(&self) -> Option<&pg_wal::WalSettings> {
        self.wal.as_ref()
    }

    /// A continuous source's server must archive its WAL into holdfast: without it there
    /// are only base backups, and no point in time between them.
    fn preflight(&self) -> Vec<String> {
        if self.mode != PgMode::Continuous {
            return Vec::new();
        }
        match self.server.conn() {
            Ok(conn) => pg_wal::settings::check(&self.name, &conn),
            Err(e) => vec![e.to_string()],
        }
    }

    fn covers(&self, f: &Found) -> bool {
        let port = self.server.port.unwrap_or(5432);
        let pg_socket = move |sk: &str| sk.ends_with(&format!("/.s.PGSQL.{port}"));
        found::server_reached(
            f,
            "postgres",
            self.server.host.as_deref(),
            port,
            &pg_socket,
            true,
        )
    }

    fn describe(&self) -> String {
        match self.mode {
            PgMode::Physical => "pg_basebackup of the whole cluster".into(),
            PgMode::Continuous => {
                "pg_basebackup of the whole cluster plus every WAL segment (wal-push)".into()
            }
            PgMode::Logical => match &self.database {
                Some(db) => format!("pg_dump of database {db}"),
                None => "pg_dump of every database, with pg_dumpall --globals-only".into(),
            },
        }
    }
}
