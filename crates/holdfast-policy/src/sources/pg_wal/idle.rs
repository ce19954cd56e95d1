//! What an idle server proves: `archive_timeout` switches segments only when WAL was written
//! since the last switch, so on a server that writes nothing the newest archived segment ages
//! although nothing is missing. Asking the server which segment holds the last byte of WAL it
//! has inserted tells whether everything written up to now is archived: when that segment is
//! in the archive (through an unbroken chain), every change committed up to the moment of the
//! question is recoverable.

use std::process::Command;

use chrono::{DateTime, Utc};

use super::super::tool::{output, ToolError};
use super::super::Conn;
use super::classify;

/// Where a server's WAL ends, and when it was asked.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Written {
    /// The segment holding the last byte of WAL inserted (`pg_walfile_name` of
    /// `pg_current_wal_insert_lsn()`: at a segment boundary, the segment before it).
    pub segment: String,
    /// The insert position (`16/B374D848`).
    pub lsn: String,
    /// The server's clock when asked.
    pub at: DateTime<Utc>,
}

/// Why the server could not say where its WAL ends.
#[derive(Debug, thiserror::Error)]
pub enum IdleError {
    /// psql failed (server down, wrong credentials, a standby: it writes no WAL of its own).
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The answer was not what the query returns.
    #[error("psql answered {0:?} when asked where the WAL ends (segment|lsn|time)")]
    Answer(String),
}

/// One query on the server, its fields separated by `sep`; a server that cannot be reached
/// answers within 5 s (`status` and `plan` ask on every run and must not hang on it).
pub fn ask(conn: &Conn, sql: &str, sep: &str, what: &str) -> Result<String, ToolError> {
    let mut c = Command::new("psql");
    c.args([
        "-X",
        "-At",
        "-F",
        sep,
        "--no-password",
        "-d",
        "postgres",
        "-c",
        sql,
    ]);
    conn.pg(&mut c);
    if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
        c.env("PGCONNECT_TIMEOUT", "5");
    }
    output(c, what)
}

/// Ask the server.
pub fn written(conn: &Conn) -> Result<Written, IdleError> {
    let out = ask(
        conn,
        "SELECT pg_walfile_name(l), l, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM pg_current_wal_insert_lsn() AS l",
        "|",
        "psql (asking where the WAL ends)",
    )?;
    parse(out.trim()).ok_or_else(|| IdleError::Answer(out.trim().to_string()))
}

fn parse(line: &str) -> Option<Written> {
    let mut f = line.split('|');
    let (segment, lsn, at) = (f.next()?, f.next()?, f.next()?);
    classify(segment).filter(|k| *k == super::WalFileKind::Segment)?;
    Some(Written {
        segment: segment.into(),
        lsn: lsn.into(),
        at: DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc),
    })
}

/// The instant up to which everything is archived, if `w.segment` is archived (`archived`
/// says whether a name is in the source's unbroken chain).
pub fn archived_until(w: &Written, archived: &dyn Fn(&str) -> bool) -> Option<DateTime<Utc>> {
    archived(&w.segment).then_some(w.at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_table() {
        let w = parse("000000010000000000000003|0/3000000|2026-12-01T10:00:00.123456Z").unwrap();
        assert_eq!(w.segment, "000000010000000000000003");
        assert_eq!(w.lsn, "0/3000000");
        assert_eq!(w.at.to_rfc3339(), "2026-12-01T10:00:00.123456+00:00");
        assert_eq!(
            archived_until(&w, &|n| n == "000000010000000000000003"),
            Some(w.at)
        );
        assert_eq!(archived_until(&w, &|_| false), None);
        for bad in [
            "",
            "x|0/1|2026-12-01T10:00:00Z",
            "000000010000000000000003|0/3",
            "00000002.history|0/1|2026-12-01T10:00:00Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
