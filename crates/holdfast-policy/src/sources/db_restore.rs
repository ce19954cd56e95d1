//! Logical restores of PostgreSQL and MySQL/MariaDB dumps over a server that may hold data.
//!
//! With `--replace` the result must be exactly the recovery point, not the recovery point laid
//! over today's database: objects created after the backup must not survive the restore. So
//! each database the dump holds is dropped and created anew before it is restored, and the
//! restore is refused while another session is connected to it (it would keep writing into a
//! database being replaced). Databases on the server that the dump does not hold are left as
//! they are, and the restore says which.

use std::cell::RefCell;
use std::io::{self, Write};
use std::process::Command;
use std::rc::Rc;

use holdfast_core::index::Index;
use holdfast_core::{Id, Repository};

use super::tool::{feed, feed_with, my_tool, output, pg_user_tables, ToolError};
use super::Conn;

/// Why a logical restore failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum DbRestoreError {
    /// A client tool failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// `--target` names one database, but the recovery point holds another number of dumps.
    #[error("--target names one database, but the snapshot holds {0} dumps")]
    IntoNeedsOneDump(usize),
    /// The target database holds data and `--replace` was not given.
    #[error(
        "database {db} is not empty ({relations} relations): pass --replace to restore over it"
    )]
    PgNotEmpty {
        /// The database.
        db: String,
        /// Its user relations.
        relations: u64,
    },
    /// Other sessions are connected to the PostgreSQL database to replace.
    #[error("database {db} has {} other session(s) connected ({}): a restore under them would mix two states; stop the application or terminate them, then restore again", .sessions.len(), .sessions.join(", "))]
    PgSessions {
        /// The database.
        db: String,
        /// The sessions.
        sessions: Vec<String>,
    },
    /// The snapshot holds no dump.
    #[error("the snapshot holds no dump")]
    NoDump,
    /// The server's tables could not be counted.
    #[error("could not count the server's tables")]
    CannotCount,
    /// The MariaDB server holds user tables and `--replace` was not given.
    #[error("the server already holds {0} user tables: pass --replace to restore over them")]
    MyNotEmpty(u64),
    /// Other sessions are connected to the MariaDB server.
    #[error("{} other session(s) are connected ({}): a restore under them would mix two states; stop the application, then restore again", .0.len(), .0.join(", "))]
    MySessions(Vec<String>),
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Other sessions connected to a PostgreSQL database: `application (user)` each.
fn pg_other_sessions(conn: &Conn, db: &str) -> Result<Vec<String>, ToolError> {
    let mut c = Command::new("psql");
    c.args([
        "-X",
        "-At",
        "--no-password",
        "-d",
        "postgres",
        "-c",
        &format!(
            "SELECT coalesce(nullif(application_name, ''), 'unnamed') || ' (' || usename || ', pid ' || pid || ')' FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid()",
            sql_str(db)
        ),
    ]);
    conn.pg(&mut c);
    Ok(output(c, "psql (listing sessions)")?
        .lines()
        .map(String::from)
        .filter(|l| !l.is_empty())
        .collect())
}

/// Restore the dumps of a logical PostgreSQL recovery point. `files` are `(dir, file)` in the
/// snapshot; `into` renames the one database.
#[allow(clippy::too_many_arguments)]
pub fn postgres(
    repo: &Repository,
    index: &Index,
    root: &Id,
    files: &[(String, String)],
    into: Option<&str>,
    replace: bool,
    conn: &Conn,
) -> Result<Vec<String>, DbRestoreError> {
    let mut done = Vec::new();
    if let Some((d, f)) = files.iter().find(|(_, f)| f == "globals.sql") {
        let mut c = Command::new("psql");
        c.args(["-X", "-q", "--no-password", "-d", "postgres", "-f", "-"]);
        conn.pg(&mut c);
        // Without ON_ERROR_STOP, roles that exist already are harmless errors (exit 0); a
        // server that cannot be reached is not (exit 2), and fails the restore.
        feed(repo, index, root, &format!("{d}/{f}"), c, "psql (globals)")?;
        done.push("roles and tablespaces applied".into());
    }
    let dumps: Vec<_> = files.iter().filter(|(_, f)| f.ends_with(".dump")).collect();
    if into.is_some() && dumps.len() != 1 {
        return Err(DbRestoreError::IntoNeedsOneDump(dumps.len()));
    }
    for (d, f) in dumps {
        let db = into
            .map(String::from)
            .unwrap_or_else(|| f.trim_end_matches(".dump").to_string());
        match pg_user_tables(conn, &db)? {
            Some(n) if n > 0 && !replace => {
                return Err(DbRestoreError::PgNotEmpty { db, relations: n })
            }
            Some(_) => {
                let others = pg_other_sessions(conn, &db)?;
                if !others.is_empty() {
                    return Err(DbRestoreError::PgSessions {
                        db,
                        sessions: others,
                    });
                }
                // Dropped and created anew: nothing made after the backup survives.
                let mut c = Command::new("dropdb");
                c.args(["--no-password", &db]);
                conn.pg(&mut c);
                output(c, "dropdb")?;
                done.push(format!("dropped database {db} to replace it"));
                createdb(conn, &db)?;
            }
            None => createdb(conn, &db)?,
        }
        let mut c = Command::new("pg_restore");
        c.args(["--no-password", "--exit-on-error", "--no-owner", "-d", &db]);
        conn.pg(&mut c);
        feed(
            repo,
            index,
            root,
            &format!("{d}/{f}"),
            c,
            &format!("pg_restore into {db}"),
        )?;
        done.push(format!("restored database {db}"));
    }
    Ok(done)
}

fn createdb(conn: &Conn, db: &str) -> Result<(), ToolError> {
    let mut c = Command::new("createdb");
    c.args(["--no-password", db]);
    conn.pg(&mut c);
    output(c, "createdb").map(|_| ())
}

/// Databases MySQL/MariaDB keeps for itself: never dropped by a restore.
const MY_SYSTEM: [&str; 4] = ["mysql", "information_schema", "performance_schema", "sys"];

fn my_query(conn: &Conn, tool: &str, q: &str) -> Result<Vec<String>, ToolError> {
    let mut c = Command::new(tool);
    conn.my(&mut c);
    c.args(["-N", "-B", "-e", q]);
    Ok(output(c, tool)?
        .lines()
        .map(String::from)
        .filter(|l| !l.is_empty())
        .collect())
}

/// Restore a MySQL/MariaDB dump (made with `--databases` or `--all-databases`).
pub fn mysql(
    repo: &Repository,
    index: &Index,
    root: &Id,
    files: &[(String, String)],
    replace: bool,
    conn: &Conn,
    only: Option<&str>,
) -> Result<Vec<String>, DbRestoreError> {
    let (d, f) = files.first().ok_or(DbRestoreError::NoDump)?;
    let tool = my_tool("mariadb", "mysql");
    let system = MY_SYSTEM.map(sql_str).join(",");
    let n: u64 = my_query(
        conn,
        &tool,
        &format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN ({system}){}",
            only.map(|db| format!(" AND table_schema = {}", sql_str(db)))
                .unwrap_or_default()
        ),
    )?
    .first()
    .and_then(|v| v.trim().parse().ok())
    .ok_or(DbRestoreError::CannotCount)?;
    if n > 0 && !replace {
        return Err(DbRestoreError::MyNotEmpty(n));
    }
    let mut done = Vec::new();
    if n > 0 {
        let others = my_query(
            conn,
            &tool,
            &format!(
                "SELECT concat(user, '@', host, ' (id ', id, ', database ', coalesce(db, 'none'), ')') FROM information_schema.processlist WHERE id <> connection_id() AND command NOT IN ('Daemon', 'Binlog Dump', 'Binlog Dump GTID') AND user NOT IN ('system user', 'event_scheduler'){}",
                only.map(|db| format!(" AND db = {}", sql_str(db))).unwrap_or_default()
            ),
        )?;
        if !others.is_empty() {
            return Err(DbRestoreError::MySessions(others));
        }
    }
    let before = my_query(conn, &tool, "SHOW DATABASES")?;
    let restored = Rc::new(RefCell::new(Vec::new()));
    let seen = restored.clone();
    let mut c = Command::new(&tool);
    conn.my(&mut c);
    feed_with(repo, index, root, &format!("{d}/{f}"), c, &tool, move |w| {
        Box::new(DropBeforeCreate::new(w, seen))
    })?;
    let restored = restored.borrow().clone();
    for db in &restored {
        done.push(format!("replaced database {db} with the recovery point's"));
    }
    let untouched: Vec<&String> = before
        .iter()
        .filter(|b| !MY_SYSTEM.contains(&b.as_str()) && !restored.contains(b))
        .collect();
    if !untouched.is_empty() && only.is_none() {
        done.push(format!(
            "left as they are (not in the recovery point): {}",
            untouched
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(done)
}

/// A dump filter: before each `CREATE DATABASE` of a user database, a `DROP DATABASE IF
/// EXISTS` of it, so tables made after the backup do not survive. Looks only at line starts;
/// everything else passes through unbuffered.
pub struct DropBeforeCreate<W: Write> {
    out: W,
    line: Vec<u8>,
    passthrough: bool,
    databases: Rc<RefCell<Vec<String>>>,
}

const CREATE: &[u8] = b"CREATE DATABASE ";
/// A `CREATE DATABASE` line longer than this is passed on as it is.
const MAX_CREATE_LINE: usize = 64 << 10;

impl<W: Write> DropBeforeCreate<W> {
    /// Filter into `out`; the names of the user databases dropped and created go to
    /// `databases`.
    pub fn new(out: W, databases: Rc<RefCell<Vec<String>>>) -> Self {
        DropBeforeCreate {
            out,
            line: Vec::new(),
            passthrough: false,
            databases,
        }
    }

    fn emit_line(&mut self, complete: bool) -> io::Result<()> {
        if complete && self.line.starts_with(CREATE) {
            if let Some(db) = backquoted(&self.line[CREATE.len()..]) {
                if !MY_SYSTEM.contains(&db.as_str()) {
                    writeln!(
                        self.out,
                        "DROP DATABASE IF EXISTS `{}`;",
                        db.replace('`', "``")
                    )?;
                    self.databases.borrow_mut().push(db);
                }
            }
        }
        self.out.write_all(&self.line)?;
        self.line.clear();
        self.passthrough = !complete;
        Ok(())
    }
}

/// The first backquoted name in `s` (```` `` ```` is a backquote inside it).
fn backquoted(s: &[u8]) -> Option<String> {
    let start = s.iter().position(|&b| b == b'`')? + 1;
    let mut name = Vec::new();
    let mut i = start;
    while i < s.len() {
        if s[i] == b'`' {
            if s.get(i + 1) == Some(&b'`') {
                name.push(b'`');
                i += 2;
                continue;
            }
            return String::from_utf8(name).ok();
        }
        name.push(s[i]);
        i += 1;
    }
    None
}

impl<W: Write> Write for DropBeforeCreate<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let nl = rest.iter().position(|&b| b == b'\n');
            let take = nl.map(|i| i + 1).unwrap_or(rest.len());
            if self.passthrough {
                self.out.write_all(&rest[..take])?;
                self.passthrough = nl.is_none();
                rest = &rest[take..];
                continue;
            }
            self.line.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            let complete = nl.is_some();
            let n = self.line.len().min(CREATE.len());
            let may_be_create = self.line[..n] == CREATE[..n];
            if complete || !may_be_create || self.line.len() > MAX_CREATE_LINE {
                self.emit_line(complete)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.line.is_empty() {
            self.out.write_all(&self.line)?;
            self.line.clear();
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_each_user_database_before_its_create_whatever_the_chunks() {
        let dump = b"-- MariaDB dump\n/*!40101 SET NAMES utf8mb4 */;\nCREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop` /*!40100 DEFAULT CHARACTER SET latin1 */;\nUSE `shop`;\nINSERT INTO t VALUES ('CREATE DATABASE `x`');\nCREATE DATABASE /*!32312 IF NOT EXISTS*/ `mysql`;\nCREATE DATABASE /*!32312 IF NOT EXISTS*/ `we``ird`;\nlast line without newline";
        for chunk in [1, 2, 3, 7, 16, 17, 1000] {
            let dbs = Rc::new(RefCell::new(Vec::new()));
            let mut out = Vec::new();
            {
                let mut w = DropBeforeCreate::new(&mut out, dbs.clone());
                for c in dump.chunks(chunk) {
                    w.write_all(c).unwrap();
                }
                w.flush().unwrap();
            }
            let text = String::from_utf8(out).unwrap();
            let want = String::from_utf8(dump.to_vec())
                .unwrap()
                .replace(
                    "CREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop`",
                    "DROP DATABASE IF EXISTS `shop`;\nCREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop`",
                )
                .replace(
                    "CREATE DATABASE /*!32312 IF NOT EXISTS*/ `we``ird`",
                    "DROP DATABASE IF EXISTS `we``ird`;\nCREATE DATABASE /*!32312 IF NOT EXISTS*/ `we``ird`",
                );
            assert_eq!(text, want, "chunk {chunk}");
            assert_eq!(
                *dbs.borrow(),
                vec!["shop".to_string(), "we`ird".to_string()]
            );
        }
    }
}
