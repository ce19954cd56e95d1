//! `kind = "mysql"`: a MySQL or MariaDB server, dumped with mysqldump --single-transaction,
//! restored with the client (each dumped database replaced exactly), drilled on a scratch
//! server.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use holdfast_core::stream::{self, StreamOptions};

use super::conn::{PasswordEnvUnset, ServerSettings};
use super::mysql_binlog;
use super::pitr::{Continuous, Replicator};
use super::tool::{files, item, my_tool, noted, verify_query, ToolError};
use super::{
    db_restore, my_scratch, Backed, BackupJob, Conn, DbRestoreError, DrillJob, DrillOutcome,
    RawSource, RestoreJob, ScratchError, Source, SourceError,
};
use crate::found::{self, Found};

/// Configuration of a MySQL/MariaDB source.
#[derive(Debug, Clone)]
pub struct MysqlSource {
    /// One database, or every database (`None`, or `all` in the file).
    pub database: Option<String>,
    /// The server.
    pub server: ServerSettings,
    /// SQL query run on the scratch server in a drill.
    pub verify: Option<String>,
    /// The database the verify query runs in.
    pub verify_database: Option<String>,
    /// Continuous protection (`mode = "continuous"`): base dumps record their binary log
    /// position, `holdfast replicate` archives the binary log.
    pub continuous: Option<mysql_binlog::BinlogSettings>,
}

/// Why a MySQL/MariaDB source failed.
#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] holdfast_core::Error),
    /// The password is not available.
    #[error(transparent)]
    Password(#[from] PasswordEnvUnset),
    /// A MariaDB tool failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The restore failed or was refused.
    #[error(transparent)]
    Restore(#[from] DbRestoreError),
    /// The scratch server for a drill did not start.
    #[error(transparent)]
    Scratch(#[from] ScratchError),
}

impl From<MysqlError> for SourceError {
    fn from(e: MysqlError) -> Self {
        SourceError::new("mysql", e)
    }
}

/// Run a drill's verify query on a MySQL/MariaDB server (in `database` when given); true if
/// it passed. What it returned is in `messages`.
pub(super) fn verify_on(
    conn: &Conn,
    q: &str,
    database: Option<&str>,
    messages: &mut Vec<String>,
) -> bool {
    let mut c = Command::new(my_tool("mariadb", "mysql"));
    conn.my(&mut c);
    c.args(["-N", "-B"]);
    if let Some(db) = database {
        c.arg(format!("--database={db}"));
        messages.push(format!("verify query runs in database {db:?}"));
    }
    c.args(["-e", q]);
    verify_query(c, messages)
}

/// Build from the workload file.
pub fn build(r: &RawSource, _base: &Path) -> Result<Arc<dyn Source>, String> {
    let database = r.database.clone().filter(|d| d != "all");
    let continuous = match r.mode.as_deref() {
        None if r.log.is_some() => {
            return Err(format!(
                "source {:?}: [source.log] is for continuous protection: add mode = \"continuous\"",
                r.name()
            ))
        }
        None => None,
        Some("continuous") => Some(mysql_binlog::BinlogSettings::of(r, database.clone())?),
        Some(m) => {
            return Err(format!(
                "source {:?}: mode {m:?} is not one of a mysql source's: \"continuous\" (or leave it out for dumps only)",
                r.name()
            ))
        }
    };
    Ok(Arc::new(MysqlSource {
        continuous,
        database,
        server: ServerSettings::of(r),
        verify: r.verify.clone(),
        verify_database: r.verify_database.clone(),
    }))
}

impl Source for MysqlSource {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn backup(&self, job: &BackupJob) -> Result<Backed, SourceError> {
        let name = job.name;
        let conn = self.server.conn().map_err(MysqlError::from)?;
        let tool = my_tool("mariadb-dump", "mysqldump");
        let mut c = Command::new(&tool);
        conn.my(&mut c);
        c.args([
            "--single-transaction",
            "--routines",
            "--events",
            "--triggers",
            "--hex-blob",
        ]);
        match &self.database {
            Some(db) => c.args(["--databases", db]),
            None => c.arg("--all-databases"),
        };
        if self.continuous.is_some() {
            c.arg(mysql_binlog::DUMP_OPTION);
        }
        let opts = StreamOptions {
            dir: name.to_string(),
            label: format!("mysql:{name}"),
            source: Some(name.to_string()),
            tags: job.tags.to_vec(),
            time: Some(job.time),
            log: None,
        };
        let mut dump = item("dump.sql", &tool, c);
        let seen = mysql_binlog::new_seen();
        if self.continuous.is_some() {
            dump.reader = Box::new(mysql_binlog::ScanReader::new(dump.reader, seen.clone()));
        }
        let (id, _) = stream::backup_streams(job.repo, &opts, vec![dump], job.progress)
            .map_err(MysqlError::from)?;
        if self.continuous.is_some() {
            mysql_binlog::mark_base(job.repo, name, &id, &seen, job.progress)?;
        }
        Ok(Backed {
            snapshot: Some(id),
            skipped: Vec::new(),
        })
    }

    /// `into` is ignored: the dump names its databases.
    fn restore(&self, job: &RestoreJob) -> Result<Vec<String>, SourceError> {
        let (repo, snap) = (job.repo, job.snap);
        let (index, _) = repo.load_index().map_err(MysqlError::from)?;
        let fs_ = files(repo, &index, snap).map_err(MysqlError::from)?;
        let only = self.database.as_deref();
        Ok(db_restore::mysql(
            repo,
            &index,
            &snap.snapshot.tree,
            &fs_,
            job.replace,
            job.conn,
            only,
        )
        .map_err(MysqlError::from)?)
    }

    fn drill(&self, job: &DrillJob) -> Result<DrillOutcome, SourceError> {
        let server =
            my_scratch::Server::start(job.scratch, job.timeout).map_err(MysqlError::from)?;
        let conn = server.conn();
        let mut messages = Vec::new();
        let r = self
            .restore(&RestoreJob {
                repo: job.repo,
                snap: job.snap,
                into: None,
                replace: false,
                conn: &conn,
            })
            .map_err(|e| e.to_string());
        let mut ok = noted(r, &mut messages);
        if ok {
            if let Some(q) = &self.verify {
                let db = self.verify_database.as_deref().or(self.database.as_deref());
                ok = verify_on(&conn, q, db, &mut messages);
            }
        }
        drop(server);
        Ok(DrillOutcome {
            passed: ok,
            messages,
            files: 1,
            bytes: job.snap.snapshot.summary.total_bytes,
        })
    }

    fn conn(&self) -> Result<Conn, SourceError> {
        Ok(self.server.conn().map_err(MysqlError::from)?)
    }

    fn covers(&self, f: &Found) -> bool {
        let default =
            |sk: &str| sk == "/run/mysqld/mysqld.sock" || sk == "/var/run/mysqld/mysqld.sock";
        found::server_reached(
            f,
            "mysql",
            self.server.host.as_deref(),
            self.server.port.unwrap_or(3306),
            &default,
            false,
        )
    }

    fn continuous(&self) -> Option<&dyn Continuous> {
        self.continuous.as_ref().map(|c| c as &dyn Continuous)
    }

    fn replicator(&self, _name: &str) -> Option<Box<dyn Replicator>> {
        self.continuous.as_ref().map(|c| c.replicator())
    }

    fn describe(&self) -> String {
        if self.continuous.is_some() {
            return format!(
                "continuous: mysqldump --single-transaction --master-data=2 base backups of {}, binary log archived by holdfast replicate",
                self.database.as_deref().unwrap_or("every database")
            );
        }
        match &self.database {
            Some(db) => format!("mysqldump --single-transaction of database {db}"),
            None => "mysqldump --single-transaction of every database".into(),
        }
    }
}
