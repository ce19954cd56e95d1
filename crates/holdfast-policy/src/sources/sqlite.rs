//! `kind = "sqlite"`: an SQLite database file, copied through SQLite's online backup API,
//! restored atomically (refused while another process has it open), drilled with
//! `PRAGMA integrity_check` and the source's verify query.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use holdfast_core::stream::{self, StreamItem, StreamOptions};

use super::tool::{files, truthy, ToolError};
use super::{
    sqlite_restore, Backed, BackupJob, Conn, DrillJob, DrillOutcome, RawSource, RestoreJob, Source,
    SourceError,
};
use crate::found::Found;

/// Configuration of an SQLite source.
#[derive(Debug, Clone)]
pub struct SqliteSource {
    /// The database file (absolute).
    pub path: PathBuf,
    /// Paths as given (the first is the database).
    paths: Vec<PathBuf>,
    /// SQL query run on the restored copy in a drill; passes if its first value is true.
    pub verify: Option<String>,
    /// Continuous protection (`mode = "continuous"`): WAL frames shipped by `holdfast replicate`.
    pub wal: Option<super::sqlite_wal::SqliteWal>,
}

/// Why an SQLite source failed.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] holdfast_core::Error),
    /// SQLite failed.
    #[error("{what}: {source}")]
    Sqlite {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// Local I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A restore needs a target file.
    #[error("restoring an sqlite source needs --target FILE")]
    NoTarget,
    /// The snapshot is not of an SQLite source.
    #[error("the snapshot holds no database file")]
    Empty,
    /// The restore was refused or failed.
    #[error(transparent)]
    Restore(#[from] sqlite_restore::RestoreError),
    /// Listing the recovery point's files failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The scratch directory's path cannot be passed on.
    #[error("scratch path is not UTF-8")]
    NotUtf8,
}

impl From<SqliteError> for SourceError {
    fn from(e: SqliteError) -> Self {
        SourceError::new("sqlite", e)
    }
}

fn sql(what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> SqliteError {
    let what = what.into();
    move |source| SqliteError::Sqlite { what, source }
}

/// Build from the workload file.
pub fn build(r: &RawSource, base: &Path) -> Result<Arc<dyn Source>, String> {
    let paths = r.required_paths("Sqlite", base)?;
    let wal = super::sqlite_wal::settings(r, &paths[0])?;
    Ok(Arc::new(SqliteSource {
        path: paths[0].clone(),
        paths,
        verify: r.verify.clone(),
        wal,
    }))
}

/// A consistent copy of a live SQLite database through SQLite's online backup API, in one step
/// (the source's read lock is held for the copy, so writers in WAL mode go on).
pub fn sqlite_online_backup(src: &Path, dst: &Path) -> Result<(), SqliteError> {
    let from = rusqlite::Connection::open_with_flags(
        src,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql(format!("opening SQLite database {}", src.display())))?;
    from.busy_timeout(Duration::from_secs(30))
        .map_err(sql("setting the busy timeout"))?;
    let mut to = rusqlite::Connection::open(dst).map_err(sql(dst.display().to_string()))?;
    let what = format!("SQLite backup of {}", src.display());
    let b = rusqlite::backup::Backup::new(&from, &mut to).map_err(sql(what.clone()))?;
    // One step copies every page under one read lock: a consistent copy even while writers in
    // WAL mode go on (a multi-step copy restarts whenever another connection writes).
    loop {
        match b.step(-1).map_err(sql(what.clone()))? {
            rusqlite::backup::StepResult::Done => break,
            rusqlite::backup::StepResult::More => {}
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    Ok(())
}

impl SqliteSource {
    fn check(&self, db: &Path, messages: &mut Vec<String>) -> Result<bool, SqliteError> {
        check_db(db, self.verify.as_deref(), messages)
    }
}

/// A drill's checks of a restored database: `PRAGMA integrity_check`, rows per table, and the
/// `verify` query (passes when its first value is true).
pub(super) fn check_db(
    db: &Path,
    verify: Option<&str>,
    messages: &mut Vec<String>,
) -> Result<bool, SqliteError> {
    {
        let c = rusqlite::Connection::open(db).map_err(sql(db.display().to_string()))?;
        let ic: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(sql("PRAGMA integrity_check"))?;
        messages.push(format!("PRAGMA integrity_check: {ic}"));
        let mut ok = ic == "ok";
        let tables: Vec<String> = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY 1")
            .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
            .map_err(sql("listing tables"))?;
        for t in tables {
            let n: i64 = c
                .query_row(
                    &format!("SELECT count(*) FROM \"{}\"", t.replace('"', "\"\"")),
                    [],
                    |r| r.get(0),
                )
                .map_err(sql(format!("counting rows of {t}")))?;
            messages.push(format!("table {t}: {n} rows"));
        }
        if let Some(q) = verify {
            match c.query_row(q, [], |r| r.get::<_, rusqlite::types::Value>(0)) {
                Ok(v) => {
                    let t = match v {
                        rusqlite::types::Value::Integer(i) => i.to_string(),
                        rusqlite::types::Value::Text(t) => t,
                        rusqlite::types::Value::Real(r) => r.to_string(),
                        _ => String::new(),
                    };
                    messages.push(format!("verify query returned {t:?}"));
                    ok &= truthy(&t);
                }
                Err(e) => {
                    messages.push(format!("verify query failed: {e}"));
                    ok = false;
                }
            }
        }
        Ok(ok)
    }
}

impl Source for SqliteSource {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    fn backup(&self, job: &BackupJob) -> Result<Backed, SourceError> {
        let name = job.name;
        let dir = tempfile::Builder::new()
            .prefix("holdfast-sqlite-")
            .tempdir_in(job.scratch)
            .map_err(|source| SqliteError::Io {
                what: format!("scratch directory {}", job.scratch.display()),
                source,
            })?;
        let copy = dir.path().join("copy.sqlite");
        sqlite_online_backup(&self.path, &copy)?;
        let f = File::open(&copy).map_err(|source| SqliteError::Io {
            what: copy.display().to_string(),
            source,
        })?;
        let base = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "db.sqlite".into());
        let items = vec![StreamItem {
            name: base,
            reader: Box::new(f),
            finish: Box::new(|| Ok(())),
        }];
        let opts = StreamOptions {
            dir: name.to_string(),
            label: format!("sqlite:{name}"),
            source: Some(name.to_string()),
            tags: job.tags.to_vec(),
            time: Some(job.time),
            log: None,
        };
        let (id, _) = stream::backup_streams(job.repo, &opts, items, job.progress)
            .map_err(SqliteError::from)?;
        Ok(Backed {
            snapshot: Some(id),
            skipped: Vec::new(),
        })
    }

    fn restore(&self, job: &RestoreJob) -> Result<Vec<String>, SourceError> {
        let (repo, snap) = (job.repo, job.snap);
        let (index, _) = repo.load_index().map_err(SqliteError::from)?;
        let fs_ = files(repo, &index, snap).map_err(SqliteError::from)?;
        let (d, f) = fs_.first().ok_or(SqliteError::Empty)?;
        let target = PathBuf::from(job.into.ok_or(SqliteError::NoTarget)?);
        let path = format!("{d}/{f}");
        let root = &snap.snapshot.tree;
        let done = sqlite_restore::restore(&target, job.replace, |out| {
            stream::read_file(repo, &index, root, &path, out).map(|_| ())
        })
        .map_err(SqliteError::from)?;
        Ok(vec![done])
    }

    fn drill(&self, job: &DrillJob) -> Result<DrillOutcome, SourceError> {
        let db = job.scratch.join("restored.sqlite");
        let into = db.to_str().ok_or(SqliteError::NotUtf8)?;
        let mut messages = self.restore(&RestoreJob {
            repo: job.repo,
            snap: job.snap,
            into: Some(into),
            replace: false,
            conn: &Conn::default(),
        })?;
        let passed = self.check(&db, &mut messages)?;
        Ok(DrillOutcome {
            passed,
            messages,
            files: 1,
            bytes: job.snap.snapshot.summary.total_bytes,
        })
    }

    fn covers(&self, f: &Found) -> bool {
        // An SQLite database: only through SQLite's backup API, by a source of its file.
        f.kind == "sqlite" && self.paths.iter().any(|p| Path::new(&f.location) == p)
    }

    fn preflight(&self) -> Vec<String> {
        self.paths
            .iter()
            .filter_map(|p| {
                super::unusable(p).or_else(|| {
                    let mut head = [0u8; 16];
                    let is_db = fs::File::open(p)
                        .and_then(|mut f| f.read_exact(&mut head))
                        .is_ok()
                        && &head == b"SQLite format 3\0";
                    if !is_db {
                        return Some(format!("{} is not an SQLite database", p.display()));
                    }
                    // Continuous protection reads the WAL: bytes 18 and 19 are 2 in WAL mode.
                    let mut v = [0u8; 20];
                    let wal = fs::File::open(p)
                        .and_then(|mut f| f.read_exact(&mut v))
                        .is_ok_and(|_| v[18] == 2 && v[19] == 2);
                    (self.wal.is_some() && !wal).then(|| {
                        format!(
                            "{} is not in WAL mode, which continuous protection needs: run `sqlite3 {} 'PRAGMA journal_mode=WAL'` once",
                            p.display(),
                            p.display()
                        )
                    })
                })
            })
            .collect()
    }

    fn describe(&self) -> String {
        match &self.wal {
            Some(w) => format!(
                "SQLite WAL shipped every {}s by holdfast replicate, on snapshots of {}",
                w.interval.as_secs(),
                super::path::show_paths(&self.paths)
            ),
            None => format!(
                "SQLite online backup of {}",
                super::path::show_paths(&self.paths)
            ),
        }
    }

    fn continuous(&self) -> Option<&dyn super::pitr::Continuous> {
        self.wal.as_ref().map(|w| w as &dyn super::pitr::Continuous)
    }

    fn replicator(&self, _name: &str) -> Option<Box<dyn super::pitr::Replicator>> {
        self.wal.as_ref().map(|w| {
            Box::new(super::sqlite_wal::SqliteReplicator::new(w.clone()))
                as Box<dyn super::pitr::Replicator>
        })
    }
}
