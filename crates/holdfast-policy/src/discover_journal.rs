//! `discover`'s probe for systemd journals: the system journal directories
//! (`/var/log/journal`, `/run/log/journal`) on the host, and under the given roots every
//! directory holding `*.journal` files. Each is reported once, by its canonical path, as kind
//! `journal`; a journal source covers it only when it reads that very directory
//! ([`crate::sources::journal::JournalSource`]'s `covers`).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::found::Found;
use crate::sources::journal::SYSTEM_DIRS;

/// Whether a file name is a journal file's (active, archived, or left dirty).
fn is_journal_file(name: &str) -> bool {
    name.ends_with(".journal") || name.ends_with(".journal~")
}

/// Bytes of journal files directly in `d`, and how many there are.
fn journal_files(d: &Path) -> (u64, u64) {
    let Ok(rd) = fs::read_dir(d) else {
        return (0, 0);
    };
    let mut n = 0;
    let mut size = 0;
    for e in rd.flatten() {
        if is_journal_file(&e.file_name().to_string_lossy())
            && e.file_type().is_ok_and(|t| t.is_file())
        {
            n += 1;
            size += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    (n, size)
}

fn push(out: &mut Vec<Found>, seen: &mut HashSet<PathBuf>, d: &Path, detail: String) {
    let canon = fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf());
    // A machine-id directory under a reported journal directory is read with it.
    if !seen.insert(canon.clone()) || canon.parent().is_some_and(|p| seen.contains(p)) {
        return;
    }
    let (files, mut size) = journal_files(&canon);
    if let Ok(rd) = fs::read_dir(&canon) {
        for e in rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        {
            size += journal_files(&e.path()).1;
        }
    }
    out.push(Found {
        size: Some(size),
        ..Found::new(
            "journal",
            canon.display().to_string(),
            format!("{detail} ({files} journal files here; back it up with kind = \"journal\")"),
        )
    });
}

/// Journals on this host (`host`) and under `roots` (at most `max_entries` entries walked per
/// root).
pub fn find(roots: &[PathBuf], host: bool, max_entries: usize) -> Vec<Found> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    if host {
        for d in SYSTEM_DIRS {
            if Path::new(d).is_dir() {
                push(&mut out, &mut seen, Path::new(d), "systemd journal".into());
            }
        }
    }
    for r in roots {
        let mut budget = max_entries;
        let mut stack = vec![r.clone()];
        let mut dirs = Vec::new();
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            let mut has = false;
            for e in rd.flatten() {
                if budget == 0 {
                    break;
                }
                budget -= 1;
                match e.file_type() {
                    Ok(t) if t.is_dir() => stack.push(e.path()),
                    Ok(t) if t.is_file() => {
                        has |= is_journal_file(&e.file_name().to_string_lossy())
                    }
                    _ => {}
                }
            }
            if has {
                dirs.push(d);
            }
        }
        // Parents first, so a machine-id directory folds into its journal directory.
        dirs.sort();
        for d in dirs {
            push(&mut out, &mut seen, &d, "journal directory".into());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_with_journal_files_are_found_once() {
        let t = tempfile::tempdir().unwrap();
        let j = t.path().join("app/journal");
        let m = j.join("0123456789abcdef0123456789abcdef");
        fs::create_dir_all(&m).unwrap();
        fs::write(j.join("system.journal"), b"x").unwrap();
        fs::write(m.join("user@1.journal~"), b"yy").unwrap();
        fs::create_dir_all(t.path().join("other")).unwrap();
        fs::write(t.path().join("other/notes.txt"), b"z").unwrap();
        let f = find(&[t.path().to_path_buf()], false, 1000);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, "journal");
        assert_eq!(
            Path::new(&f[0].location),
            fs::canonicalize(&j).unwrap().as_path()
        );
        assert_eq!(f[0].size, Some(3));
    }
}
