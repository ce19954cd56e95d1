//! What `plan` can tell before any backup runs: a source that cannot be backed up as declared
//! (its path is missing or is a device, its "SQLite database" is not one). Such a source would
//! fail only in `protect`, or store nothing; `plan` names it first. Reads the file system, so it
//! is kept apart from the pure rules in `findings`.

use std::fs;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use crate::config::{SourceKind, Strategy, Workload};
use crate::findings::{anti, Finding, Severity};

/// Why a path cannot be backed up as the source's kind says, if it cannot.
pub fn unusable(kind: SourceKind, p: &Path) -> Option<String> {
    let m = match fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!("{} does not exist", p.display()))
        }
        Err(e) => return Some(format!("{} cannot be read: {e}", p.display())),
    };
    let t = m.file_type();
    if t.is_block_device() || t.is_char_device() || t.is_fifo() || t.is_socket() {
        return Some(format!(
            "{} is a device, pipe or socket: a backup would hold the node, not its data",
            p.display()
        ));
    }
    if kind == SourceKind::Sqlite {
        let mut head = [0u8; 16];
        let is_db = fs::File::open(p)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok()
            && &head == b"SQLite format 3\0";
        if !is_db {
            return Some(format!("{} is not an SQLite database", p.display()));
        }
    }
    None
}

/// Findings for sources that cannot be backed up as declared.
pub fn findings(w: &Workload) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in &w.sources {
        if s.strategy != Some(Strategy::Backup)
            || !matches!(s.kind, SourceKind::Path | SourceKind::Sqlite)
        {
            continue;
        }
        for p in s.all_paths() {
            if let Some(why) = unusable(s.kind, &p) {
                out.push(Finding {
                    code: "source-cannot-be-backed-up",
                    anti_pattern: anti::NO_BACKUP,
                    subject: s.name().to_string(),
                    severity: Severity::High,
                    message: format!("{}: {why}", s.name()),
                    fix:
                        "correct the source's path and kind (or its strategy) in the workload file"
                            .into(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_table() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        fs::write(&file, b"plain text, not a database").unwrap();
        let db = d.path().join("db");
        let mut bytes = b"SQLite format 3\0".to_vec();
        bytes.resize(512, 0);
        fs::write(&db, bytes).unwrap();
        let cases: [(SourceKind, &Path, Option<&str>); 6] = [
            (SourceKind::Path, d.path(), None),
            (SourceKind::Path, &file, None),
            (
                SourceKind::Path,
                Path::new("/nonexistent/x"),
                Some("does not exist"),
            ),
            (SourceKind::Path, Path::new("/dev/null"), Some("device")),
            (SourceKind::Sqlite, &file, Some("not an SQLite database")),
            (SourceKind::Sqlite, &db, None),
        ];
        for (kind, p, want) in cases {
            let got = unusable(kind, p);
            match want {
                None => assert_eq!(got, None, "{p:?}"),
                Some(w) => assert!(
                    got.as_deref().is_some_and(|g| g.contains(w)),
                    "{p:?}: {got:?}"
                ),
            }
        }
    }
}
