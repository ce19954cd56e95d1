//! What `plan` can tell before any backup runs: a source that cannot be backed up as declared
//! (its path is missing or is a device, its "SQLite database" is not one). Such a source would
//! fail only in `protect`, or store nothing; `plan` names it first. Reads the file system, so it
//! is kept apart from the pure rules in `findings`.

use crate::config::{Strategy, Workload};
use crate::findings::{anti, Finding, Severity};

pub use crate::sources::unusable;

/// Findings for sources that cannot be backed up as declared.
pub fn findings(w: &Workload) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in &w.sources {
        if s.strategy != Some(Strategy::Backup) {
            continue;
        }
        for why in s.driver().preflight() {
            out.push(Finding {
                code: "source-cannot-be-backed-up",
                anti_pattern: anti::NO_BACKUP,
                subject: s.name().to_string(),
                severity: Severity::High,
                message: format!("{}: {why}", s.name()),
                fix: "correct the source's path and kind (or its strategy) in the workload file"
                    .into(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    #[test]
    fn unusable_table() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        fs::write(&file, b"plain text, not a database").unwrap();
        let db = d.path().join("db");
        let mut bytes = b"SQLite format 3\0".to_vec();
        bytes.resize(512, 0);
        fs::write(&db, bytes).unwrap();
        let cases: [(&str, &Path, Option<&str>); 6] = [
            ("path", d.path(), None),
            ("path", &file, None),
            ("path", Path::new("/nonexistent/x"), Some("does not exist")),
            ("path", Path::new("/dev/null"), Some("device")),
            ("sqlite", &file, Some("not an SQLite database")),
            ("sqlite", &db, None),
        ];
        // Through the real workload parser and the kind's driver.
        let unusable = |kind: &str, p: &Path| {
            let text = format!(
                "[[source]]\nname = \"s\"\nkind = \"{kind}\"\npath = {:?}\n",
                p.display().to_string()
            );
            let w = crate::config::Workload::parse(Path::new("/w.toml"), &text).unwrap();
            w.sources[0].driver().preflight().into_iter().next()
        };
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
