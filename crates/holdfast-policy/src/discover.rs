//! `discover`: find the data on this host without being told, and compare it with the workload.
//!
//! Looks at mounted file systems, listening database servers (TCP ports and unix sockets from
//! `/proc/net`), well-known data directories (PostgreSQL, MySQL/MariaDB, Redis, MongoDB,
//! container volumes, logs), and, under the given roots, SQLite files (by their header),
//! database data directories and large directories.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{SourceKind, Workload};

/// One data location found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Found {
    /// What it is: filesystem, sqlite, postgres, mysql, redis, mongodb, logs, volumes, data-dir.
    pub kind: String,
    /// Path, or `tcp:PORT` / a socket path for servers.
    pub location: String,
    /// Bytes (used space for file systems; total file size for directories).
    pub size: Option<u64>,
    /// Newest modification time seen.
    pub modified: Option<DateTime<Utc>>,
    /// More about it.
    pub detail: String,
    /// The source that covers it, if any.
    pub protected_by: Option<String>,
    /// Listed under `[discover] ignore`.
    pub ignored: bool,
}

/// Discovery settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Directories to search.
    pub roots: Vec<PathBuf>,
    /// Directories bigger than this under a root are reported as data directories.
    pub large_dir_bytes: u64,
    /// Stop walking after this many entries per root (bounds the time on huge trees).
    pub max_entries: usize,
    /// Whether to look at host-wide places (mounts, /proc/net, /var/lib). Tests turn it off.
    pub host: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            roots: Vec::new(),
            large_dir_bytes: 64 << 20,
            max_entries: 500_000,
            host: true,
        }
    }
}

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

fn mtime(m: &fs::Metadata) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(m.mtime(), m.mtime_nsec() as u32)
}

/// Total size and newest mtime under a directory (bounded).
fn dir_usage(p: &Path, budget: &mut usize) -> (u64, Option<DateTime<Utc>>) {
    let mut size = 0;
    let mut newest: Option<DateTime<Utc>> = None;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if *budget == 0 {
                return (size, newest);
            }
            *budget -= 1;
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                size += m.len();
            }
            newest = newest.max(mtime(&m));
        }
    }
    (size, newest)
}

fn is_sqlite(p: &Path) -> bool {
    let mut buf = [0u8; 16];
    fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok()
        && &buf == SQLITE_MAGIC
}

fn found(kind: &str, path: &Path, detail: &str, budget: &mut usize) -> Found {
    let m = path.symlink_metadata().ok();
    let (size, modified) = match &m {
        Some(m) if m.is_dir() => dir_usage(path, budget),
        Some(m) => (m.len(), mtime(m)),
        None => (0, None),
    };
    Found {
        kind: kind.into(),
        location: path.display().to_string(),
        size: Some(size),
        modified,
        detail: detail.into(),
        protected_by: None,
        ignored: false,
    }
}

fn mounts(out: &mut Vec<Found>) {
    let Ok(text) = fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let real = [
        "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "vfat", "exfat", "ntfs", "ntfs3",
        "nfs", "nfs4", "cifs", "overlay", "jfs", "reiserfs",
    ];
    let mut seen = HashSet::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || !real.contains(&f[2]) || !seen.insert(f[1].to_string()) {
            continue;
        }
        let mp = f[1].replace("\\040", " ");
        let Ok(c) = std::ffi::CString::new(mp.as_bytes()) else {
            continue;
        };
        // SAFETY: statvfs fills the struct for a valid path pointer.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let used = (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0)
            .then(|| (st.f_blocks - st.f_bfree) as u64 * st.f_frsize as u64);
        out.push(Found {
            kind: "filesystem".into(),
            location: mp,
            size: used,
            modified: None,
            detail: format!("{} on {}", f[2], f[0]),
            protected_by: None,
            ignored: false,
        });
    }
}

fn servers(out: &mut Vec<Found>) {
    let ports = [
        (5432u16, "postgres"),
        (3306, "mysql"),
        (6379, "redis"),
        (27017, "mongodb"),
    ];
    let mut seen = HashSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 || f[3] != "0A" {
                continue; // not LISTEN
            }
            let Some(port) = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
            else {
                continue;
            };
            if let Some((_, kind)) = ports.iter().find(|(p, _)| *p == port) {
                if seen.insert(port) {
                    out.push(Found {
                        kind: (*kind).into(),
                        location: format!("tcp:{port}"),
                        size: None,
                        modified: None,
                        detail: format!("{kind} server listening on port {port}"),
                        protected_by: None,
                        ignored: false,
                    });
                }
            }
        }
    }
    if let Ok(text) = fs::read_to_string("/proc/net/unix") {
        for line in text.lines().skip(1) {
            let Some(path) = line.split_whitespace().nth(7) else {
                continue;
            };
            let kind = if path.contains(".s.PGSQL.") {
                "postgres"
            } else if path.ends_with("mysqld.sock") || path.ends_with("mysql.sock") {
                "mysql"
            } else if path.contains("redis") && path.ends_with(".sock") {
                "redis"
            } else {
                continue;
            };
            if seen.insert(0) || !out.iter().any(|f| f.location == path) {
                out.push(Found {
                    kind: kind.into(),
                    location: path.into(),
                    size: None,
                    modified: None,
                    detail: format!("{kind} server socket"),
                    protected_by: None,
                    ignored: false,
                });
            }
        }
    }
}

fn well_known(out: &mut Vec<Found>, budget: &mut usize) {
    for (p, kind, detail) in [
        (
            "/var/lib/postgresql",
            "postgres",
            "PostgreSQL data directory",
        ),
        ("/var/lib/pgsql", "postgres", "PostgreSQL data directory"),
        ("/var/lib/mysql", "mysql", "MySQL/MariaDB data directory"),
        ("/var/lib/redis", "redis", "Redis data directory"),
        ("/var/lib/mongodb", "mongodb", "MongoDB data directory"),
        ("/var/lib/docker/volumes", "volumes", "Docker volumes"),
        (
            "/var/lib/containers/storage/volumes",
            "volumes",
            "Podman volumes",
        ),
        ("/var/log", "logs", "system logs"),
    ] {
        let path = Path::new(p);
        if path.is_dir() {
            out.push(found(kind, path, detail, budget));
        }
    }
}

/// Search a root for SQLite files, database data directories, log directories and large
/// directories.
fn search_root(root: &Path, o: &Options, out: &mut Vec<Found>, budget: &mut usize) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        let mut names = Vec::new();
        for e in rd.flatten() {
            names.push(e.file_name());
        }
        let has = |n: &str| names.iter().any(|x| x == n);
        if has("PG_VERSION") && has("global") {
            out.push(found("postgres", &d, "PostgreSQL data directory (copying it live is not a backup: use kind = \"postgres\")", budget));
            continue;
        }
        if has("ibdata1") || (has("mysql") && has("performance_schema")) {
            out.push(found("mysql", &d, "MySQL/MariaDB data directory", budget));
            continue;
        }
        for n in &names {
            if *budget == 0 {
                return;
            }
            *budget -= 1;
            let p = d.join(n);
            let Ok(m) = p.symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                let name = n.to_string_lossy();
                if name == "log" || name == "logs" {
                    out.push(found("logs", &p, "log directory", budget));
                } else {
                    stack.push(p);
                }
            } else if m.is_file() && m.len() >= 512 && is_sqlite(&p) {
                out.push(found("sqlite", &p, "SQLite database (by header)", budget));
            } else if m.is_file() && n == "dump.rdb" {
                out.push(found("redis", &p, "Redis dump file", budget));
            }
        }
    }
    // Large directories directly under the root.
    if let Ok(rd) = fs::read_dir(root) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir()
                && !out.iter().any(|f| {
                    Path::new(&f.location).starts_with(&p)
                        || p.starts_with(&f.location) && f.kind != "filesystem"
                })
            {
                let mut b = o.max_entries;
                let (size, modified) = dir_usage(&p, &mut b);
                if size >= o.large_dir_bytes {
                    out.push(Found {
                        kind: "data-dir".into(),
                        location: p.display().to_string(),
                        size: Some(size),
                        modified,
                        detail: "large directory".into(),
                        protected_by: None,
                        ignored: false,
                    });
                }
            }
        }
    }
}

/// Find data locations, and mark those a workload covers or ignores.
pub fn discover(w: Option<&Workload>, o: &Options) -> Vec<Found> {
    let mut out = Vec::new();
    let mut budget = o.max_entries;
    if o.host {
        mounts(&mut out);
        servers(&mut out);
        well_known(&mut out, &mut budget);
    }
    for r in &o.roots {
        let mut b = o.max_entries;
        search_root(r, o, &mut out, &mut b);
    }
    if let Some(w) = w {
        for f in &mut out {
            f.protected_by = covering_source(w, f);
            f.ignored = w
                .discover
                .ignore
                .iter()
                .any(|i| Path::new(&f.location).starts_with(i));
        }
    }
    // Unprotected first, then by kind and location.
    out.sort_by(|a, b| {
        (
            a.protected_by.is_some() || a.ignored,
            a.kind == "filesystem",
            &a.kind,
            &a.location,
        )
            .cmp(&(
                b.protected_by.is_some() || b.ignored,
                b.kind == "filesystem",
                &b.kind,
                &b.location,
            ))
    });
    out
}

fn covering_source(w: &Workload, f: &Found) -> Option<String> {
    let loc = Path::new(&f.location);
    for s in &w.sources {
        if s.strategy.is_none() {
            continue;
        }
        let by_path = s.all_paths().iter().any(|p| loc.starts_with(p));
        let by_kind = f.location.starts_with("tcp:")
            || !f.location.starts_with('/')
            || f.detail.contains("socket");
        let kind_match = matches!(
            (f.kind.as_str(), s.kind),
            ("postgres", SourceKind::Postgres) | ("mysql", SourceKind::Mysql)
        );
        // A file system is covered only by a source of its whole mount point.
        if f.kind == "filesystem" {
            if s.all_paths().iter().any(|p| p == loc) {
                return Some(s.name().to_string());
            }
            continue;
        }
        if by_path || (by_kind && kind_match) || (kind_match && f.kind != "sqlite") {
            return Some(s.name().to_string());
        }
    }
    None
}

/// A ready-to-paste `[[source]]` block for a found location.
pub fn suggest(f: &Found, class: &str) -> String {
    let base = Path::new(&f.location)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| f.kind.clone());
    let name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let kind = match f.kind.as_str() {
        "sqlite" => "sqlite",
        "postgres" => "postgres",
        "mysql" => "mysql",
        _ => "path",
    };
    let mut s = format!("[[source]]\nname = \"{name}\"\nkind = \"{kind}\"\n");
    if f.location.starts_with('/') && !f.detail.contains("socket") {
        s += &format!(
            "path = \"{}\"\n",
            f.location.replace('\\', "\\\\").replace('"', "\\\"")
        );
    }
    s += &format!(
        "class = \"{class}\"\nstrategy = \"backup\"\n# found: {}\n",
        f.detail
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sqlite_logs_and_large_dirs_and_marks_coverage() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("app/db")).unwrap();
        let mut db = SQLITE_MAGIC.to_vec();
        db.resize(4096, 0);
        fs::write(root.join("app/db/main.sqlite"), &db).unwrap();
        fs::write(root.join("app/db/not-sqlite.db"), vec![1u8; 4096]).unwrap();
        fs::create_dir_all(root.join("app/logs")).unwrap();
        fs::write(root.join("app/logs/a.log"), b"x").unwrap();
        fs::create_dir_all(root.join("media")).unwrap();
        fs::write(root.join("media/big"), vec![0u8; 2 << 20]).unwrap();
        let o = Options {
            roots: vec![root.to_path_buf()],
            large_dir_bytes: 1 << 20,
            host: false,
            ..Default::default()
        };
        let text = format!(
            "[repository.r]\nurl = \"/tmp/x\"\n[class.c]\nrpo = \"1h\"\n[[source]]\nname = \"media\"\nkind = \"path\"\npath = \"{}\"\nclass = \"c\"\nstrategy = \"backup\"\n",
            root.join("media").display()
        );
        let w = Workload::parse(Path::new("w.toml"), &text).unwrap();
        let f = discover(Some(&w), &o);
        let kinds: Vec<(&str, bool)> = f
            .iter()
            .map(|x| (x.kind.as_str(), x.protected_by.is_some()))
            .collect();
        assert!(
            f.iter()
                .any(|x| x.kind == "sqlite" && x.location.ends_with("main.sqlite")),
            "{f:?}"
        );
        assert!(!f.iter().any(|x| x.location.ends_with("not-sqlite.db")));
        assert!(f.iter().any(|x| x.kind == "logs"), "{f:?}");
        let media = f
            .iter()
            .find(|x| x.kind == "data-dir")
            .expect("large dir found");
        assert_eq!(media.protected_by.as_deref(), Some("media"));
        // Unprotected come first.
        assert!(!kinds[0].1, "{kinds:?}");
        assert!(kinds.last().unwrap().1);
        let s = suggest(&f[0], "c");
        assert!(s.contains("[[source]]") && s.contains("strategy = \"backup\""));
        let pasted = format!("{text}\n{}", s);
        Workload::parse(Path::new("w.toml"), &pasted).expect("suggested block parses");
    }
}
