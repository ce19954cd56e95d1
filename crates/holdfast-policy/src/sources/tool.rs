//! Running the stores' own tools: a program whose standard output is streamed into the
//! repository, a program run to completion, a snapshot file fed to a program's standard input.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::rc::Rc;

use holdfast_core::index::Index;
use holdfast_core::snapshot::SnapshotEntry;
use holdfast_core::stream::{self, StreamItem};
use holdfast_core::{Id, Repository};

use super::Conn;

/// A store's tool could not be run, or failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The program is not on PATH.
    #[error("{what} is not installed (or not on PATH){hint}")]
    NotInstalled {
        /// The program.
        what: String,
        /// What to install, if known (starts with ": ").
        hint: &'static str,
    },
    /// The program could not be started.
    #[error("cannot run {what}: {source}")]
    Spawn {
        /// The program.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The program exited unsuccessfully.
    #[error("{what} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        what: String,
        /// Its exit status.
        status: ExitStatus,
        /// The start of its standard error.
        stderr: String,
    },
    /// The program was never started (nothing read its output).
    #[error("{what} never ran")]
    NeverRan {
        /// The program.
        what: String,
    },
    /// Local I/O around the program (pipes, temporary files, waiting).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The snapshot's file could not be read to feed it.
    #[error("reading {path} from the repository: {message}")]
    Read {
        /// The file in the snapshot.
        path: String,
        /// Why.
        message: String,
    },
    /// The repository failed.
    #[error(transparent)]
    Engine(#[from] holdfast_core::Error),
}

fn spawn_error(what: &str, e: io::Error, hint: &'static str) -> ToolError {
    if e.kind() == io::ErrorKind::NotFound {
        ToolError::NotInstalled {
            what: what.into(),
            hint,
        }
    } else {
        ToolError::Spawn {
            what: what.into(),
            source: e,
        }
    }
}

fn io_error(what: &str) -> impl FnOnce(io::Error) -> ToolError + '_ {
    move |source| ToolError::Io {
        what: what.into(),
        source,
    }
}

/// A process whose standard output is read as a stream; started on first read.
struct Proc {
    cmd: Option<Command>,
    what: String,
    child: Option<Child>,
    stderr: Option<File>,
    spawn_error: Option<(io::ErrorKind, String)>,
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
                    p.spawn_error = Some((e.kind(), e.to_string()));
                    let msg = spawn_error(&p.what, e, CLIENT_TOOLS).to_string();
                    return Err(io::Error::other(msg));
                }
            }
        }
        match p.child.as_mut().and_then(|c| c.stdout.as_mut()) {
            Some(out) => out.read(buf),
            None => Err(io::Error::other(format!("{} did not start", p.what))),
        }
    }
}

const CLIENT_TOOLS: &str = ": install the database's client tools";

fn finish(p: &Shared) -> Result<(), ToolError> {
    let mut p = p.borrow_mut();
    let what = p.what.clone();
    if let Some((kind, msg)) = &p.spawn_error {
        return Err(spawn_error(
            &what,
            io::Error::new(*kind, msg.clone()),
            CLIENT_TOOLS,
        ));
    }
    let Some(mut child) = p.child.take() else {
        return Err(ToolError::NeverRan { what });
    };
    drop(child.stdout.take());
    let status = child.wait().map_err(io_error(&what))?;
    let mut text = String::new();
    if let Some(mut f) = p.stderr.take() {
        let _ = f.rewind();
        let _ = f.take(16 * 1024).read_to_string(&mut text);
    }
    if status.success() {
        Ok(())
    } else {
        Err(ToolError::Failed {
            what,
            status,
            stderr: text.trim().to_string(),
        })
    }
}

pub(super) fn item<'a>(name: &str, what: &str, cmd: Command) -> StreamItem<'a> {
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
        finish: Box::new(move || finish(&q).map_err(|e| e.to_string())),
    }
}

/// Run a command to completion; returns stdout, or the error with stderr.
pub(super) fn output(mut c: Command, what: &str) -> Result<String, ToolError> {
    let o = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(what, e, ""))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(ToolError::Failed {
            what: what.into(),
            status: o.status,
            stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        })
    }
}

/// The MySQL/MariaDB client program names available (prefers the mariadb-* names).
pub(super) fn my_tool(mariadb: &str, mysql: &str) -> String {
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

/// Stream one file of a snapshot into a command's standard input.
pub(super) fn feed(
    repo: &Repository,
    index: &Index,
    root: &Id,
    path: &str,
    cmd: Command,
    what: &str,
) -> Result<(), ToolError> {
    feed_with(repo, index, root, path, cmd, what, |w| w)
}

/// The same, through a filter on the command's standard input (`wrap`).
pub(super) fn feed_with(
    repo: &Repository,
    index: &Index,
    root: &Id,
    path: &str,
    mut cmd: Command,
    what: &str,
    wrap: impl FnOnce(Box<dyn io::Write>) -> Box<dyn io::Write>,
) -> Result<(), ToolError> {
    let tmp = "a temporary file for the tool's output";
    let err = tempfile::tempfile().map_err(io_error(tmp))?;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(err.try_clone().map_err(io_error(tmp))?)
        .stderr(err.try_clone().map_err(io_error(tmp))?)
        .spawn()
        .map_err(|e| spawn_error(what, e, ""))?;
    let mut stdin = wrap(Box::new(child.stdin.take().expect("piped")));
    let fed = stream::read_file(repo, index, root, path, &mut stdin)
        .map_err(|e| e.to_string())
        .and_then(|_| stdin.flush().map_err(|e| e.to_string()));
    drop(stdin);
    let status = child.wait().map_err(io_error(what))?;
    let mut text = String::new();
    let mut f = err;
    let _ = f.rewind();
    let _ = f.take(16 * 1024).read_to_string(&mut text);
    if status.success() {
        fed.map_err(|message| ToolError::Read {
            path: path.into(),
            message,
        })
    } else {
        Err(ToolError::Failed {
            what: what.into(),
            status,
            stderr: text.trim().to_string(),
        })
    }
}

/// Files of a stream snapshot: `(directory, file)`.
pub(super) fn files(
    repo: &Repository,
    index: &Index,
    snap: &SnapshotEntry,
) -> Result<Vec<(String, String)>, ToolError> {
    Ok(stream::list_files(repo, index, &snap.snapshot.tree)?)
}

/// Whether a PostgreSQL database has user tables. `None`: it does not exist.
pub(super) fn pg_user_tables(conn: &Conn, db: &str) -> Result<Option<u64>, ToolError> {
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

/// Record a step's messages (or its error); true if it succeeded.
pub(super) fn noted(r: Result<Vec<String>, String>, messages: &mut Vec<String>) -> bool {
    match r {
        Ok(m) => {
            messages.extend(m);
            true
        }
        Err(e) => {
            messages.push(e);
            false
        }
    }
}

/// Run a verify query with a client command; records what it returned; true if it passed.
pub(super) fn verify_query(c: Command, messages: &mut Vec<String>) -> bool {
    match output(c, "verify query") {
        Ok(out) => {
            messages.push(format!("verify query returned {:?}", out.trim()));
            truthy(&out)
        }
        Err(e) => {
            messages.push(e.to_string());
            false
        }
    }
}

/// Whether a verify query's first value counts as true (not empty, `f`, `false` or `0`).
pub(super) fn truthy(s: &str) -> bool {
    let v = s.lines().next().unwrap_or("").trim();
    !(v.is_empty() || v == "f" || v == "false" || v == "0")
}
