//! Data sources that are backed up through their own backup mechanism, never by copying live
//! files: SQLite (online backup API), PostgreSQL (pg_dump / pg_dumpall, or pg_basebackup),
//! MySQL/MariaDB (mysqldump --single-transaction), and any command's output. Each dump is
//! streamed into the repository; each is restored by the store's own restore tool; each can be
//! drilled on a scratch server.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::Duration;

use holdfast_core::index::Index;
use holdfast_core::progress::Progress;
use holdfast_core::snapshot::SnapshotEntry;
use holdfast_core::stream::{self, StreamItem, StreamOptions};
use holdfast_core::{Id, Repository};

use crate::config::{SourceConfig, SourceKind};

mod db_restore;
mod drill;
pub mod pg_physical;
pub mod sqlite_restore;
pub use drill::{drill, my_scratch, pg_scratch, DrillOutcome};

/// Connection settings for a database client.
#[derive(Debug, Clone, Default)]
pub struct Conn {
    /// Host or socket directory.
    pub host: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// User.
    pub user: Option<String>,
    /// Password.
    pub password: Option<String>,
}

impl Conn {
    /// From a source's settings.
    pub fn of(s: &SourceConfig) -> Result<Conn, String> {
        let password = match &s.password_env {
            Some(v) => Some(
                std::env::var(v)
                    .map_err(|_| format!("environment variable {v} (password-env) is not set"))?,
            ),
            None => None,
        };
        Ok(Conn {
            host: s.host.clone(),
            port: s.port,
            user: s.user.clone(),
            password,
        })
    }

    fn pg(&self, c: &mut Command) {
        if let Some(h) = &self.host {
            c.env("PGHOST", h);
        }
        if let Some(p) = self.port {
            c.env("PGPORT", p.to_string());
        }
        if let Some(u) = &self.user {
            c.env("PGUSER", u);
        }
        if let Some(p) = &self.password {
            c.env("PGPASSWORD", p);
        }
        c.env("PGCONNECT_TIMEOUT", "10");
    }

    fn my(&self, c: &mut Command) {
        if let Some(h) = &self.host {
            if h.starts_with('/') {
                c.arg(format!("--socket={h}"));
            } else {
                c.arg(format!("--host={h}"));
            }
        }
        if let Some(p) = self.port {
            c.arg(format!("--port={p}"));
        }
        if let Some(u) = &self.user {
            c.arg(format!("--user={u}"));
        }
        if let Some(p) = &self.password {
            c.env("MYSQL_PWD", p);
        }
    }
}

/// A process whose standard output is read as a stream; started on first read.
struct Proc {
    cmd: Option<Command>,
    what: String,
    child: Option<Child>,
    stderr: Option<File>,
    spawn_error: Option<String>,
}

type Shared = Rc<RefCell<Proc>>;

struct ProcReader(Shared);

impl Read for ProcReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut p = self.0.borrow_mut();
        if p.child.is_none() && p.spawn_error.is_none() {
            let mut cmd = p.cmd.take().expect("command set until spawned");
            let err = tempfile::tempfile()?;
            cmd.stdout(Stdio::piped())
                .stderr(err.try_clone()?)
                .stdin(Stdio::null());
            match cmd.spawn() {
                Ok(c) => {
                    p.child = Some(c);
                    p.stderr = Some(err);
                }
                Err(e) => {
                    let msg = if e.kind() == io::ErrorKind::NotFound {
                        format!("{} is not installed (or not on PATH): install the database's client tools", p.what)
                    } else {
                        format!("cannot run {}: {e}", p.what)
                    };
                    p.spawn_error = Some(msg.clone());
                    return Err(io::Error::other(msg));
                }
            }
        }
        match p.child.as_mut().and_then(|c| c.stdout.as_mut()) {
            Some(out) => out.read(buf),
            None => Err(io::Error::other(p.spawn_error.clone().unwrap_or_default())),
        }
    }
}

fn finish(p: &Shared) -> Result<(), String> {
    let mut p = p.borrow_mut();
    if let Some(e) = &p.spawn_error {
        return Err(e.clone());
    }
    let what = p.what.clone();
    let Some(mut child) = p.child.take() else {
        return Err(format!("{what} never ran"));
    };
    drop(child.stdout.take());
    let status = child.wait().map_err(|e| format!("{what}: {e}"))?;
    let mut text = String::new();
    if let Some(mut f) = p.stderr.take() {
        let _ = f.rewind();
        let _ = f.take(16 * 1024).read_to_string(&mut text);
    }
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status}): {}", text.trim()))
    }
}

fn item<'a>(name: &str, what: &str, cmd: Command) -> StreamItem<'a> {
    let p: Shared = Rc::new(RefCell::new(Proc {
        cmd: Some(cmd),
        what: what.into(),
        child: None,
        stderr: None,
        spawn_error: None,
    }));
    let q = p.clone();
    StreamItem {
        name: name.into(),
        reader: Box::new(ProcReader(p)),
        finish: Box::new(move || finish(&q)),
    }
}

/// Run a command to completion; returns stdout, or the error with stderr.
fn output(mut c: Command, what: &str) -> Result<String, String> {
    let o = c.stdin(Stdio::null()).output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            format!("{what} is not installed (or not on PATH)")
        } else {
            format!("cannot run {what}: {e}")
        }
    })?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!(
            "{what} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// The MySQL/MariaDB client program names available (prefers the mariadb-* names).
fn my_tool(mariadb: &str, mysql: &str) -> String {
    let found = |n: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(n).is_file()))
    };
    if found(mariadb) {
        mariadb.into()
    } else {
        mysql.into()
    }
}

/// Back up a non-path source through its own mechanism; returns the snapshot id.
pub fn backup(
    repo: &Repository,
    s: &SourceConfig,
    time: chrono::DateTime<chrono::Utc>,
    scratch: &Path,
    progress: &dyn Progress,
) -> Result<Id, String> {
    let name = s.name();
    let opts = StreamOptions {
        dir: name.to_string(),
        label: format!("{}:{name}", format!("{:?}", s.kind).to_lowercase()),
        source: Some(name.to_string()),
        tags: s.tags.clone(),
        time: Some(time),
    };
    let conn = Conn::of(s)?;
    let mut _tmp = None;
    let items: Vec<StreamItem> = match s.kind {
        SourceKind::Sqlite => {
            let path = s
                .all_paths()
                .into_iter()
                .next()
                .ok_or("sqlite source without path")?;
            let dir = tempfile::Builder::new()
                .prefix("holdfast-sqlite-")
                .tempdir_in(scratch)
                .map_err(|e| format!("scratch directory {}: {e}", scratch.display()))?;
            let copy = dir.path().join("copy.sqlite");
            sqlite_online_backup(&path, &copy)?;
            let f = File::open(&copy).map_err(|e| e.to_string())?;
            _tmp = Some(dir);
            let base = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "db.sqlite".into());
            vec![StreamItem {
                name: base,
                reader: Box::new(f),
                finish: Box::new(|| Ok(())),
            }]
        }
        SourceKind::Postgres if s.mode.as_deref() == Some("physical") => {
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
            conn.pg(&mut c);
            vec![item("base.tar", "pg_basebackup", c)]
        }
        SourceKind::Postgres => {
            let dbs = match s.database.as_deref() {
                Some(db) if db != "all" => vec![db.to_string()],
                _ => {
                    let mut c = Command::new("psql");
                    c.args(["-X", "-At", "--no-password", "-d", "postgres", "-c", "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1"]);
                    conn.pg(&mut c);
                    output(c, "psql (listing databases)")?
                        .lines()
                        .map(String::from)
                        .collect()
                }
            };
            let mut items = Vec::new();
            if s.database.as_deref().is_none_or(|d| d == "all") {
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
            items
        }
        SourceKind::Mysql => {
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
            match s.database.as_deref() {
                Some(db) if db != "all" => c.args(["--databases", db]),
                _ => c.arg("--all-databases"),
            };
            vec![item("dump.sql", &tool, c)]
        }
        SourceKind::Command => {
            let cmd = s.command.clone().ok_or("command source without command")?;
            let mut c = Command::new("sh");
            c.arg("-c").arg(&cmd);
            let file = s.file_name.clone().unwrap_or_else(|| format!("{name}.out"));
            vec![item(&file, &format!("command {cmd:?}"), c)]
        }
        SourceKind::Path | SourceKind::S3 => {
            return Err(format!("kind {:?} is not a stream source", s.kind))
        }
    };
    stream::backup_streams(repo, &opts, items, progress)
        .map(|(id, _)| id)
        .map_err(|e| e.to_string())
}

/// A consistent copy of a live SQLite database through SQLite's online backup API, in one step
/// (the source's read lock is held for the copy, so writers in WAL mode go on).
pub fn sqlite_online_backup(src: &Path, dst: &Path) -> Result<(), String> {
    let from = rusqlite::Connection::open_with_flags(
        src,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("opening SQLite database {}: {e}", src.display()))?;
    from.busy_timeout(Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    let mut to = rusqlite::Connection::open(dst).map_err(|e| format!("{}: {e}", dst.display()))?;
    let b = rusqlite::backup::Backup::new(&from, &mut to)
        .map_err(|e| format!("SQLite backup of {}: {e}", src.display()))?;
    // One step copies every page under one read lock: a consistent copy even while writers in
    // WAL mode go on (a multi-step copy restarts whenever another connection writes).
    loop {
        match b
            .step(-1)
            .map_err(|e| format!("SQLite backup of {}: {e}", src.display()))?
        {
            rusqlite::backup::StepResult::Done => break,
            rusqlite::backup::StepResult::More => {}
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    Ok(())
}

/// Stream one file of a snapshot into a command's standard input.
fn feed(
    repo: &Repository,
    index: &Index,
    root: &Id,
    path: &str,
    cmd: Command,
    what: &str,
) -> Result<(), String> {
    feed_with(repo, index, root, path, cmd, what, |w| w)
}

/// The same, through a filter on the command's standard input (`wrap`).
fn feed_with(
    repo: &Repository,
    index: &Index,
    root: &Id,
    path: &str,
    mut cmd: Command,
    what: &str,
    wrap: impl FnOnce(Box<dyn io::Write>) -> Box<dyn io::Write>,
) -> Result<(), String> {
    let err = tempfile::tempfile().map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(err.try_clone().map_err(|e| e.to_string())?)
        .stderr(err.try_clone().map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                format!("{what} is not installed (or not on PATH)")
            } else {
                format!("cannot run {what}: {e}")
            }
        })?;
    let mut stdin = wrap(Box::new(child.stdin.take().expect("piped")));
    let fed = stream::read_file(repo, index, root, path, &mut stdin)
        .map_err(|e| e.to_string())
        .and_then(|_| stdin.flush().map_err(|e| e.to_string()));
    drop(stdin);
    let status = child.wait().map_err(|e| e.to_string())?;
    let mut text = String::new();
    let mut f = err;
    let _ = f.rewind();
    let _ = f.take(16 * 1024).read_to_string(&mut text);
    if status.success() {
        fed.map_err(|e| format!("reading {path} from the repository: {e}"))
    } else {
        Err(format!("{what} failed ({status}): {}", text.trim()))
    }
}

/// Files of a stream snapshot: `(directory, file)`.
fn files(
    repo: &Repository,
    index: &Index,
    snap: &SnapshotEntry,
) -> Result<Vec<(String, String)>, String> {
    stream::list_files(repo, index, &snap.snapshot.tree).map_err(|e| e.to_string())
}

/// Whether a PostgreSQL database has user tables. `None`: it does not exist.
fn pg_user_tables(conn: &Conn, db: &str) -> Result<Option<u64>, String> {
    let mut c = Command::new("psql");
    c.args([
        "-X",
        "-At",
        "--no-password",
        "-d",
        "postgres",
        "-c",
        &format!(
            "SELECT count(*) FROM pg_database WHERE datname = '{}'",
            db.replace('\'', "''")
        ),
    ]);
    conn.pg(&mut c);
    if output(c, "psql")?.trim() == "0" {
        return Ok(None);
    }
    let mut c = Command::new("psql");
    c.args(["-X", "-At", "--no-password", "-d", db, "-c", "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r','v','m','S','f','p') AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg_toast%'"]);
    conn.pg(&mut c);
    Ok(Some(output(c, "psql")?.trim().parse().unwrap_or(0)))
}

/// Restore a database source's snapshot with the store's own tools.
///
/// `into`: sqlite: a file; postgres logical: a database name (default: the original names);
/// postgres physical: an empty directory; mysql: ignored (the dump names its databases);
/// command: ignored (the restore command decides). Refuses a non-empty target unless `replace`.
pub fn restore(
    repo: &Repository,
    s: &SourceConfig,
    snap: &SnapshotEntry,
    into: Option<&str>,
    replace: bool,
    conn: &Conn,
) -> Result<Vec<String>, String> {
    let (index, _) = repo.load_index().map_err(|e| e.to_string())?;
    let root = &snap.snapshot.tree;
    let fs_ = files(repo, &index, snap)?;
    let mut done = Vec::new();
    match s.kind {
        SourceKind::Sqlite => {
            let (d, f) = fs_.first().ok_or("the snapshot holds no database file")?;
            let target = PathBuf::from(into.ok_or("restoring an sqlite source needs --into FILE")?);
            let path = format!("{d}/{f}");
            done.push(sqlite_restore::restore(&target, replace, |out| {
                stream::read_file(repo, &index, root, &path, out)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })?);
        }
        SourceKind::Postgres if s.mode.as_deref() == Some("physical") => {
            let (d, f) = fs_.first().ok_or("the snapshot holds no base backup")?;
            let target = PathBuf::from(
                into.ok_or("restoring a physical postgres backup needs --into DATA_DIRECTORY")?,
            );
            let path = format!("{d}/{f}");
            done.extend(pg_physical::restore(&target, replace, |dir| {
                let mut c = Command::new("tar");
                c.arg("-x").arg("-C").arg(dir).arg("-f").arg("-");
                feed(repo, &index, root, &path, c, "tar")
            })?);
        }
        SourceKind::Postgres => {
            done.extend(db_restore::postgres(
                repo, &index, root, &fs_, into, replace, conn,
            )?);
        }
        SourceKind::Mysql => {
            let only = s.database.as_deref().filter(|d| *d != "all");
            done.extend(db_restore::mysql(
                repo, &index, root, &fs_, replace, conn, only,
            )?);
        }
        SourceKind::Command => {
            let (d, f) = fs_.first().ok_or("the snapshot holds no data")?;
            let cmd = s
                .restore_command
                .clone()
                .ok_or("this command source has no restore-command")?;
            let mut c = Command::new("sh");
            c.arg("-c").arg(&cmd);
            if let Some(t) = into {
                c.env("HOLDFAST_RESTORE_TARGET", t);
            }
            feed(
                repo,
                &index,
                root,
                &format!("{d}/{f}"),
                c,
                &format!("restore-command {cmd:?}"),
            )?;
            done.push(format!("fed {f} to the restore command"));
        }
        SourceKind::Path | SourceKind::S3 => return Err("not a stream source".into()),
    }
    Ok(done)
}
