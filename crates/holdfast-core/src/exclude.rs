//! Exclude patterns: with a `/` they match the whole path, without one the file name.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// Read exclude patterns from a file: one per line, `#` comments and blank lines ignored.
pub fn read_exclude_file(path: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(path).map_err(|e| Error::io("reading exclude file", path, e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// Compiled exclude patterns.
pub struct Excludes {
    by_path: GlobSet,
    by_name: GlobSet,
}

impl Excludes {
    /// Compile patterns.
    pub fn new(patterns: &[String]) -> Result<Self> {
        let mut p = GlobSetBuilder::new();
        let mut n = GlobSetBuilder::new();
        for pat in patterns {
            let g = GlobBuilder::new(pat.trim_end_matches('/'))
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::Invalid(format!("exclude pattern {pat:?}: {e}")))?;
            if pat.contains('/') {
                p.add(g);
            } else {
                n.add(g);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::Invalid(format!("exclude patterns: {e}")))
        };
        Ok(Excludes {
            by_path: build(p)?,
            by_name: build(n)?,
        })
    }

    /// Whether an entry is excluded.
    pub fn excluded(&self, path: &Path, name: &[u8]) -> bool {
        self.by_name
            .is_match(Path::new(std::ffi::OsStr::from_bytes(name)))
            || self.by_path.is_match(path)
    }
}
