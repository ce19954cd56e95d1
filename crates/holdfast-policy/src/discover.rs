//! `discover`: find the data on this host without being told, and compare it with the workload.
//!
//! Looks at mounted file systems, listening database servers (TCP ports and unix sockets from
//! `/proc/net`), well-known data directories (PostgreSQL, MySQL/MariaDB, Redis, MongoDB,
//! container volumes, logs), and, under the given roots, SQLite files (by their header),
//! database data directories and large directories. Block devices, logical volumes and btrfs
//! subvolumes: [`crate::discover_devices`].

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::config::Workload;

pub use crate::found::{server_reached, Found};

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
        size: Some(size),
        modified,
        ..Found::new(kind, path.display().to_string(), detail.into())
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
            size: used,
            ..Found::new("filesystem", mp, format!("{} on {}", f[2], f[0]))
        });
    }
}

fn servers(out: &mut Vec<Found>) {
    for l in crate::procnet::listeners() {
        let location = match (l.ports.first(), l.sockets.first()) {
            (Some(p), _) => format!("tcp:{p}"),
            (None, Some(s)) => s.clone(),
            (None, None) => continue,
        };
        let mut what = Vec::new();
        if let Some(p) = l.pid {
            what.push(format!("pid {p}"));
        }
        if !l.ports.is_empty() {
            let ports: Vec<String> = l.ports.iter().map(|p| p.to_string()).collect();
            what.push(format!("port {}", ports.join(", ")));
        }
        if !l.sockets.is_empty() {
            what.push(format!("socket {}", l.sockets.join(", ")));
        }
        if let Some(d) = &l.data_dir {
            what.push(format!("data directory {}", d.display()));
        }
        out.push(Found {
            ports: l.ports.clone(),
            sockets: l.sockets.clone(),
            data_dir: l.data_dir.as_ref().map(|d| d.display().to_string()),
            ..Found::new(
                l.kind,
                location,
                format!("{} server ({})", l.kind, what.join("; ")),
            )
        });
    }
}

/// PostgreSQL clusters under a directory such as `/var/lib/postgresql` (`15/main`), at most
/// three levels down.
fn pg_clusters(top: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(top.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        if crate::procnet::is_data_dir("postgres", &d) {
            out.push(d);
            continue;
        }
        if depth == 3 {
            continue;
        }
        if let Ok(rd) = fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
    }
    out.sort();
    out
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
        if !path.is_dir() {
            continue;
        }
        let clusters = if kind == "postgres" {
            pg_clusters(path)
        } else {
            Vec::new()
        };
        if clusters.is_empty() {
            out.push(found(kind, path, detail, budget));
        }
        for c in clusters {
            out.push(found(
                kind,
                &c,
                "PostgreSQL data directory (cluster)",
                budget,
            ));
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
                        size: Some(size),
                        modified,
                        ..Found::new(
                            "data-dir",
                            p.display().to_string(),
                            "large directory".into(),
                        )
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
        crate::discover_devices::devices(&mut out);
    }
    for r in &o.roots {
        let mut b = o.max_entries;
        search_root(r, o, &mut out, &mut b);
    }
    let journals = crate::discover_journal::find(&o.roots, o.host, o.max_entries);
    out.extend(journals);
    if let Some(w) = w {
        out.extend(neighbours(w));
        mark(w, &mut out);
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

/// What the workload's sources see beside their own data (the buckets of an `s3` source's
/// endpoint), once each; the buckets holding this workload's own repositories are not data.
fn neighbours(w: &Workload) -> Vec<Found> {
    let repo_buckets: Vec<String> = w
        .repositories
        .values()
        .filter_map(|r| r.url.strip_prefix("s3://"))
        .map(|rest| rest.split(['/', '?']).next().unwrap_or("").to_string())
        .collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for s in &w.sources {
        for f in s.driver().neighbours() {
            let bucket = f
                .location
                .strip_prefix("s3://")
                .and_then(|r| r.split('?').next());
            if f.kind == "bucket" && bucket.is_some_and(|b| repo_buckets.iter().any(|r| r == b)) {
                continue;
            }
            if seen.insert(f.location.clone()) {
                out.push(f);
            } else if let Some(note) = f.note {
                // Seen through another source too: keep what this one says of it.
                if let Some(e) = out.iter_mut().find(|e| e.location == f.location) {
                    e.note.get_or_insert(note);
                }
            }
        }
    }
    out
}

/// Mark what the workload covers, ignores or accepts.
pub fn mark(w: &Workload, out: &mut [Found]) {
    // Servers first: a data directory is covered when the server serving it is.
    let servers: Vec<(Option<String>, Option<String>)> = out
        .iter()
        .filter(|f| f.is_server())
        .map(|f| (f.data_dir.clone(), covering_source(w, f)))
        .collect();
    for f in out.iter_mut() {
        f.protected_by = covering_source(w, f);
        if f.protected_by.is_none()
            && !f.is_server()
            && matches!(f.kind.as_str(), "postgres" | "mysql")
        {
            // Covered when every server whose data directory lies in it is covered.
            let served: Vec<&Option<String>> = servers
                .iter()
                .filter(|(d, _)| {
                    d.as_deref()
                        .is_some_and(|d| Path::new(d).starts_with(&f.location))
                })
                .map(|(_, by)| by)
                .collect();
            if served.iter().all(|by| by.is_some()) {
                f.protected_by = served.first().and_then(|by| (*by).clone());
            }
        }
        if f.protected_by.is_none() && f.note.is_none() {
            if let Some(p) = w.sources.iter().find(|s| {
                s.restores_files()
                    && s.strategy.is_some()
                    && s.all_paths()
                        .iter()
                        .any(|p| Path::new(&f.location).starts_with(p))
            }) {
                if matches!(f.kind.as_str(), "postgres" | "mysql" | "sqlite") {
                    f.note = Some(format!(
                        "inside path source {:?}, which copies the live files: that is not a consistent backup of a database; declare a source of kind {}",
                        p.name(),
                        f.kind
                    ));
                }
            }
        }
        let loc = Path::new(&f.location);
        f.ignored = w.discover.ignore.iter().any(|i| loc.starts_with(i));
        if let Some(a) = w.discover.accept.iter().find(|a| {
            let l = a.location.get_ref();
            *l == f.location || (l.starts_with('/') && loc.starts_with(l))
        }) {
            f.ignored = true;
            f.accepted = Some(a.reason.clone());
        }
    }
}

fn covering_source(w: &Workload, f: &Found) -> Option<String> {
    let loc = Path::new(&f.location);
    for s in w.sources.iter().filter(|s| s.strategy.is_some()) {
        if s.covers.iter().any(|c| {
            *c == f.location
                || (c.starts_with('/') && loc.starts_with(c))
                || (c.starts_with("tcp:") && f.ports.iter().any(|p| *c == format!("tcp:{p}")))
                || f.sockets.iter().any(|sk| sk == c)
        }) {
            return Some(s.name().to_string());
        }
        // A file system is covered only by a source of its whole mount point; anything else
        // by the kind's own rule (servers only by a source connected to them, SQLite files only
        // through SQLite's backup API).
        let covered = if f.kind == "filesystem" {
            s.driver().paths().iter().any(|p| p == loc)
        } else {
            s.driver().covers(f)
        };
        if covered {
            return Some(s.name().to_string());
        }
    }
    None
}

/// Ready-to-paste `[[source]]` blocks for unprotected locations: one per server or place,
/// with unique names (a data directory served by a listed server gets no second block: the
/// server's source covers it). File systems get none, nor do devices and subvolumes whose
/// data is judged place by place ([`Found::judged_elsewhere`]).
pub fn suggest_all(found: &[&Found], class: &str, taken: &[&str]) -> Vec<String> {
    let mut names: HashSet<String> = taken.iter().map(|s| s.to_string()).collect();
    let served: HashSet<&str> = found
        .iter()
        .filter(|f| f.is_server())
        .filter_map(|f| f.data_dir.as_deref())
        .collect();
    let mut out = Vec::new();
    for f in found {
        if f.judged_elsewhere()
            || (!f.is_server() && served.iter().any(|d| Path::new(d).starts_with(&f.location)))
        {
            continue;
        }
        let base = suggested_name(f);
        let mut name = base.clone();
        let mut n = 2;
        while !names.insert(name.clone()) {
            name = format!("{base}-{n}");
            n += 1;
        }
        out.push(suggest_named(f, &name, class));
    }
    out
}

/// A discovered bucket's name and endpoint (`s3://BUCKET?endpoint=URL`).
fn bucket_of(f: &Found) -> Option<(&str, &str)> {
    if f.kind != "bucket" {
        return None;
    }
    f.location.strip_prefix("s3://")?.split_once("?endpoint=")
}

fn suggested_name(f: &Found) -> String {
    let base = if let Some((bucket, _)) = bucket_of(f) {
        format!("bucket-{bucket}")
    } else if f.is_server() {
        match f.ports.first() {
            Some(p) => format!("{}-{p}", f.kind),
            None => f.kind.clone(),
        }
    } else {
        // The last two components, so /var/lib/postgresql/15/main is "15-main".
        let comps: Vec<String> = Path::new(&f.location)
            .components()
            .rev()
            .take(2)
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .filter(|c| c != "/")
            .collect();
        let mut comps: Vec<String> = comps.into_iter().rev().collect();
        if comps.len() == 2 && comps[1].len() > 8 {
            comps.remove(0);
        }
        if comps.is_empty() {
            f.kind.clone()
        } else {
            comps.join("-")
        }
    };
    base.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A ready-to-paste `[[source]]` block for a found location.
pub fn suggest(f: &Found, class: &str) -> String {
    suggest_named(f, &suggested_name(f), class)
}

fn suggest_named(f: &Found, name: &str, class: &str) -> String {
    let kind = match f.kind.as_str() {
        "sqlite" => "sqlite",
        "postgres" => "postgres",
        "mysql" => "mysql",
        "journal" => "journal",
        "block-device" | "logical-volume" => "volume",
        "bucket" => "s3",
        _ => "path",
    };
    let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut s = format!("[[source]]\nname = \"{name}\"\nkind = \"{kind}\"\n");
    if f.is_server() {
        if let Some(p) = f.ports.first() {
            s += &format!("host = \"127.0.0.1\"\nport = {p}\n");
        } else if let Some(sk) = f.sockets.first() {
            let host = if kind == "postgres" {
                Path::new(sk)
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            } else {
                sk.clone()
            };
            s += &format!("host = \"{}\"\n", q(&host));
        }
        if kind == "path" {
            s += &format!("# a {} server: back it up with kind = \"command\" and its own dump tool, then covers = [\"{}\"]\n", f.kind, q(&f.location));
        }
    } else if matches!(kind, "postgres" | "mysql") {
        s += "# the server using this data directory is not running or not visible: connect to it with host/port\n";
    } else if kind == "journal" {
        s += &format!("directory = \"{}\"\n", q(&f.location));
    } else if let Some((bucket, endpoint)) = bucket_of(f) {
        s += &format!(
            "bucket = \"{}\"\nendpoint = \"{}\"\n",
            q(bucket),
            q(endpoint)
        );
    } else if f.location.starts_with('/') {
        s += &format!("path = \"{}\"\n", q(&f.location));
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

    #[test]
    fn a_data_directory_is_covered_only_when_every_server_in_it_is() {
        let text = "[repository.r]\nurl = \"/tmp/x\"\n[class.c]\nrpo = \"1h\"\n[[source]]\nname = \"a\"\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = 5433\nclass = \"c\"\nstrategy = \"backup\"\n";
        let w = Workload::parse(Path::new("w.toml"), text).unwrap();
        let server = |port: u16, dir: &str| Found {
            ports: vec![port],
            data_dir: Some(dir.into()),
            ..Found::new("postgres", format!("tcp:{port}"), "postgres server".into())
        };
        let dir = |d: &str| Found::new("postgres", d.into(), "PostgreSQL data directory".into());
        let mut f = vec![
            server(5433, "/srv/pg/a"),
            server(5432, "/srv/pg/b"),
            dir("/srv/pg/a"),
            dir("/srv/pg/b"),
            dir("/srv/pg"),
        ];
        mark(&w, &mut f);
        let by: Vec<Option<&str>> = f.iter().map(|x| x.protected_by.as_deref()).collect();
        assert_eq!(by, vec![Some("a"), None, Some("a"), None, None], "{f:#?}");
    }
}
