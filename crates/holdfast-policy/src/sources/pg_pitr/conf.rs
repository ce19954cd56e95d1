//! The recovery settings a point-in-time restore writes into the restored data directory:
//! `restore_command`, the target, the action, the timeline, in `postgresql.auto.conf` (which
//! PostgreSQL reads last, so they win), and `recovery.signal`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::names;

/// Settings a restore replaces: the recovery settings of an earlier restore (a base backup
/// of a server that was itself restored carries them) must not survive into this one.
const REPLACED: &[&str] = &[
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_xid",
    "recovery_target_name",
    "recovery_target_action",
    "recovery_target_timeline",
    "recovery_target_inclusive",
];

/// Where recovery stops, as PostgreSQL is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The end of the archive.
    End,
    /// After every commit at or before this instant.
    Time(DateTime<Utc>),
    /// At this LSN.
    Lsn(u64),
}

/// Quote one word for the shell PostgreSQL runs `restore_command` with, and double `%` (which
/// PostgreSQL would otherwise expand).
pub fn shell_word(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:=@+,-".contains(&b));
    let q = if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    };
    q.replace('%', "%%")
}

/// A postgresql.conf string literal.
pub fn conf_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The `restore_command` fetching `source`'s WAL through holdfast (another host's, with
/// `host`: a restore of that host's points on this one).
pub fn restore_command(exe: &Path, workload: &Path, source: &str, host: Option<&str>) -> String {
    format!(
        "{} --config {} wal-fetch --source {}{} %f %p",
        shell_word(&exe.to_string_lossy()),
        shell_word(&workload.to_string_lossy()),
        shell_word(source),
        host.map(|h| format!(" --host {}", shell_word(h)))
            .unwrap_or_default()
    )
}

/// The lines written for a restore.
pub fn settings(restore_command: &str, stop: &Stop, archive_off: bool) -> Vec<String> {
    let mut out = vec![format!(
        "restore_command = {}",
        conf_string(restore_command)
    )];
    match stop {
        Stop::End => {}
        Stop::Time(t) => out.push(format!(
            "recovery_target_time = {}",
            // Microseconds, like commit timestamps: truncating keeps "at or before" exact.
            conf_string(&t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        )),
        Stop::Lsn(l) => out.push(format!(
            "recovery_target_lsn = {}",
            conf_string(&names::format_lsn(*l))
        )),
    }
    if *stop != Stop::End {
        out.push("recovery_target_inclusive = on".into());
        out.push("recovery_target_action = 'promote'".into());
    }
    out.push("recovery_target_timeline = 'latest'".into());
    if archive_off {
        out.push("archive_mode = 'off'".into());
    }
    out
}

fn key(line: &str) -> Option<&str> {
    let k = line.trim_start().split(['=', ' ', '\t']).next()?;
    (!k.is_empty() && !k.starts_with('#')).then_some(k)
}

/// Write the settings into `data` (postgresql.auto.conf without earlier recovery settings,
/// then ours; an empty recovery.signal; no standby.signal), files mode 0600.
pub fn write(data: &Path, lines: &[String], why: &str) -> std::io::Result<()> {
    let auto = data.join("postgresql.auto.conf");
    let old = match fs::read_to_string(&auto) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    for l in old.lines() {
        let k = key(l).map(|k| k.to_ascii_lowercase());
        let ours = k.as_deref().is_some_and(|k| {
            REPLACED.contains(&k)
                || (k == "archive_mode" && lines.iter().any(|x| x.starts_with("archive_mode")))
        });
        if !ours && !l.starts_with("# holdfast restore") {
            text.push_str(l);
            text.push('\n');
        }
    }
    text.push_str(&format!("# holdfast restore: {why}\n"));
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    let tmp = data.join("postgresql.auto.conf.holdfast");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    fs::rename(&tmp, &auto)?;
    let sig = data.join("recovery.signal");
    fs::File::create(&sig)?.sync_all()?;
    fs::set_permissions(&sig, fs::Permissions::from_mode(0o600))?;
    match fs::remove_file(data.join("standby.signal")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    Ok(())
}

/// Remove the target from the settings (recovery then replays to the end of the archive).
pub fn drop_target(data: &Path) -> std::io::Result<()> {
    let auto = data.join("postgresql.auto.conf");
    let old = fs::read_to_string(&auto)?;
    let text: String = old
        .lines()
        .filter(|l| {
            !key(l).is_some_and(|k| {
                let k = k.to_ascii_lowercase();
                k.starts_with("recovery_target") && k != "recovery_target_timeline"
            })
        })
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&auto, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_command_quoting() {
        let c = restore_command(
            Path::new("/opt/hold fast/bin/holdfast"),
            Path::new("/etc/it's 100%.toml"),
            "db",
            None,
        );
        assert_eq!(
            c,
            r"'/opt/hold fast/bin/holdfast' --config '/etc/it'\''s 100%%.toml' wal-fetch --source db %f %p"
        );
        assert_eq!(
            conf_string(&c),
            r"'''/opt/hold fast/bin/holdfast'' --config ''/etc/it''\''''s 100%%.toml'' wal-fetch --source db %f %p'"
        );
        assert_eq!(
            restore_command(
                Path::new("/usr/bin/holdfast"),
                Path::new("/etc/holdfast.toml"),
                "main-db",
                None
            ),
            "/usr/bin/holdfast --config /etc/holdfast.toml wal-fetch --source main-db %f %p"
        );
        assert_eq!(
            restore_command(
                Path::new("/usr/bin/holdfast"),
                Path::new("/etc/holdfast.toml"),
                "main-db",
                Some("db-1; rm")
            ),
            "/usr/bin/holdfast --config /etc/holdfast.toml wal-fetch --source main-db --host 'db-1; rm' %f %p"
        );
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("a;b"), "'a;b'");
    }

    #[test]
    fn settings_replace_earlier_recovery_settings() {
        let d = tempfile::tempdir().unwrap();
        fs::write(
            d.path().join("postgresql.auto.conf"),
            "# Do not edit this file manually!\nwork_mem = '8MB'\nrecovery_target_time = '2020-01-01 00:00:00+00'\nRestore_Command = 'cp x'\narchive_mode = on\n",
        )
        .unwrap();
        fs::write(d.path().join("standby.signal"), "").unwrap();
        let t = DateTime::parse_from_rfc3339("2026-12-01T10:41:06.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let lines = settings("holdfast wal-fetch %f %p", &Stop::Time(t), true);
        write(d.path(), &lines, "to 2026-12-01T10:41:06Z").unwrap();
        let text = fs::read_to_string(d.path().join("postgresql.auto.conf")).unwrap();
        assert_eq!(
            text,
            "# Do not edit this file manually!\nwork_mem = '8MB'\n# holdfast restore: to 2026-12-01T10:41:06Z\nrestore_command = 'holdfast wal-fetch %f %p'\nrecovery_target_time = '2026-12-01 10:41:06.123456+00'\nrecovery_target_inclusive = on\nrecovery_target_action = 'promote'\nrecovery_target_timeline = 'latest'\narchive_mode = 'off'\n"
        );
        assert!(d.path().join("recovery.signal").is_file());
        assert!(!d.path().join("standby.signal").exists());
        let mode = fs::metadata(d.path().join("postgresql.auto.conf"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        drop_target(d.path()).unwrap();
        let text = fs::read_to_string(d.path().join("postgresql.auto.conf")).unwrap();
        assert!(
            !text.contains("recovery_target_time =") && !text.contains("recovery_target_action"),
            "{text}"
        );
        assert!(
            text.contains("recovery_target_timeline = 'latest'")
                && text.contains("restore_command")
        );
        // Latest: no target at all, and archiving as configured.
        let l = settings("c", &Stop::End, false);
        assert_eq!(
            l,
            vec![
                "restore_command = 'c'",
                "recovery_target_timeline = 'latest'"
            ]
        );
        assert_eq!(
            settings("c", &Stop::Lsn(0x300_0028), false)[1],
            "recovery_target_lsn = '0/3000028'"
        );
    }
}
