//! What `plan` asks a continuous PostgreSQL source's server before any backup runs: whether it
//! archives its WAL into holdfast at all (`wal_level`, `archive_mode`, `archive_command`).
//! A server that does not archive leaves only base backups: point-in-time recovery, and the
//! RPO `status` promises from the log, would silently be missing.

use super::super::Conn;

/// Why the server's settings do not archive `source`'s WAL through holdfast (empty: they do).
/// Pure: `wal_level`, `archive_mode`, `archive_command` as the server reports them.
pub fn problems(source: &str, wal_level: &str, archive_mode: &str, command: &str) -> Vec<String> {
    let mut out = Vec::new();
    if wal_level.trim() == "minimal" {
        out.push(
            "wal_level = minimal: its WAL cannot be archived (set wal_level = replica and restart)"
                .to_string(),
        );
    }
    if !matches!(archive_mode.trim(), "on" | "always") {
        out.push(format!(
            "archive_mode = {}: no WAL is archived (set archive_mode = on and restart PostgreSQL)",
            archive_mode.trim()
        ));
    }
    let c = command.trim();
    let words: Vec<&str> = c.split_whitespace().collect();
    let archives_here = words
        .iter()
        .any(|w| w.ends_with("holdfast") || w.ends_with("holdfast'"))
        && words.contains(&"wal-push")
        && words
            .windows(2)
            .any(|p| p[0] == "--source" && p[1].trim_matches('\'') == source)
        && words.contains(&"%p");
    if !archives_here {
        out.push(format!(
            "archive_command is {:?}: the WAL is not archived into holdfast for source {source} (set archive_command = 'holdfast --config WORKLOAD wal-push --source {source} %p', see docs/pitr/postgres-archive.md)",
            c
        ));
    }
    out
}

/// Ask the server (a failure to ask is itself the answer: the source cannot be archived from
/// a server holdfast cannot reach).
pub fn check(source: &str, conn: &Conn) -> Vec<String> {
    match super::idle::ask(
        conn,
        "SELECT current_setting('wal_level'), current_setting('archive_mode'), current_setting('archive_command')",
        "\u{1f}",
        "psql (reading the archive settings)",
    ) {
        Ok(out) => {
            let f: Vec<&str> = out.trim_end_matches('\n').splitn(3, '\u{1f}').collect();
            match f.as_slice() {
                [level, mode, command] => problems(source, level, mode, command),
                _ => vec![format!(
                    "the server's archive settings could not be read (psql answered {:?})",
                    out.trim()
                )],
            }
        }
        Err(e) => vec![format!(
            "the server's archive settings could not be read: {e}"
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::problems;

    #[test]
    fn archive_settings_table() {
        let ok = "/usr/bin/holdfast --config /etc/holdfast.toml wal-push --source pg %p";
        let cases: &[(&str, &str, &str, usize, &str)] = &[
            ("replica", "on", ok, 0, ""),
            ("logical", "always", ok, 0, ""),
            (
                "replica",
                "on",
                "env HOLDFAST_STATE_DIR=/s '/opt/hold fast/holdfast' --config w wal-push --source pg %p",
                0,
                "",
            ),
            ("minimal", "on", ok, 1, "wal_level = minimal"),
            ("replica", "off", ok, 1, "archive_mode = off"),
            ("replica", "on", "", 1, "not archived into holdfast"),
            ("replica", "on", "cp %p /archive/%f", 1, "not archived into holdfast"),
            (
                "replica",
                "on",
                "holdfast --config w wal-push --source other %p",
                1,
                "for source pg",
            ),
            (
                "replica",
                "on",
                "holdfast --config w wal-fetch --source pg %f %p",
                1,
                "not archived",
            ),
            ("minimal", "off", "", 3, "archive_mode"),
        ];
        for (level, mode, command, n, says) in cases {
            let p = problems("pg", level, mode, command);
            assert_eq!(p.len(), *n, "{level} {mode} {command:?}: {p:?}");
            assert!(p.iter().any(|x| x.contains(says)) || *n == 0, "{p:?}");
        }
    }
}
