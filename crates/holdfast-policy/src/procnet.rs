//! Database servers listening on this host, identified by their process: which TCP ports and
//! unix sockets each one listens on, and which data directory it serves (a PostgreSQL or
//! MariaDB server runs with its data directory as its working directory). Read from `/proc`;
//! processes whose descriptors cannot be read (another user's, when not root) fall back to the
//! well-known port of their kind.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

/// One listening server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// postgres, mysql, redis or mongodb.
    pub kind: &'static str,
    /// Its process, when visible.
    pub pid: Option<u32>,
    /// TCP ports it listens on.
    pub ports: Vec<u16>,
    /// Unix sockets it listens on.
    pub sockets: Vec<String>,
    /// The data directory it serves, when known.
    pub data_dir: Option<PathBuf>,
}

/// The kind of database a process name is, if any.
pub fn kind_of_process(comm: &str) -> Option<&'static str> {
    match comm {
        "postgres" | "postmaster" => Some("postgres"),
        "mariadbd" | "mysqld" => Some("mysql"),
        "redis-server" => Some("redis"),
        "mongod" => Some("mongodb"),
        _ => None,
    }
}

/// The kind a well-known port belongs to.
pub fn kind_of_port(port: u16) -> Option<&'static str> {
    match port {
        5432 => Some("postgres"),
        3306 => Some("mysql"),
        6379 => Some("redis"),
        27017 => Some("mongodb"),
        _ => None,
    }
}

/// The kind a socket path suggests.
pub fn kind_of_socket(path: &str) -> Option<&'static str> {
    if path.contains(".s.PGSQL.") {
        Some("postgres")
    } else if path.ends_with("mysqld.sock") || path.ends_with("mysql.sock") {
        Some("mysql")
    } else if path.contains("redis") && path.ends_with(".sock") {
        Some("redis")
    } else {
        None
    }
}

/// `(port, inode)` of listening TCP sockets in a `/proc/net/tcp` text.
pub fn parse_tcp(text: &str) -> Vec<(u16, u64)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                return None; // not LISTEN
            }
            let port = u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()?;
            Some((port, f[9].parse().ok()?))
        })
        .collect()
}

/// `(path, inode)` of listening unix sockets in a `/proc/net/unix` text.
pub fn parse_unix(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Flags 00010000: __SO_ACCEPTCON, a listening socket.
            if f.len() < 8 || f[3] != "00010000" || !f[7].starts_with('/') {
                return None;
            }
            Some((f[7].to_string(), f[6].parse().ok()?))
        })
        .collect()
}

/// Visit every open file descriptor of every process that can be seen (all of them as root,
/// one's own user's otherwise): `f(pid, /proc/PID/fd/N)`.
pub fn for_each_fd(mut f: impl FnMut(u32, &Path)) {
    let Ok(procs) = fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            f(pid, &fd.path());
        }
    }
}

fn socket_owners(inodes: &HashMap<u64, ()>) -> HashMap<u64, u32> {
    let mut out = HashMap::new();
    for_each_fd(|pid, fd| {
        let Ok(l) = fs::read_link(fd) else {
            return;
        };
        let l = l.to_string_lossy();
        if let Some(n) = l
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|n| n.parse::<u64>().ok())
        {
            if inodes.contains_key(&n) {
                out.insert(n, pid);
            }
        }
    });
    out
}

/// Whether `dir` looks like the data directory of a server of `kind`.
pub fn is_data_dir(kind: &str, dir: &Path) -> bool {
    match kind {
        "postgres" => dir.join("PG_VERSION").is_file(),
        "mysql" => {
            dir.join("ibdata1").exists()
                || dir.join("aria_log_control").exists()
                || dir.join("mysql").is_dir()
        }
        _ => false,
    }
}

/// Every database server listening on this host.
pub fn listeners() -> Vec<Listener> {
    let mut tcp = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(t) = fs::read_to_string(f) {
            tcp.extend(parse_tcp(&t));
        }
    }
    let unix = fs::read_to_string("/proc/net/unix")
        .map(|t| parse_unix(&t))
        .unwrap_or_default();
    let inodes: HashMap<u64, ()> = tcp
        .iter()
        .map(|(_, i)| (*i, ()))
        .chain(unix.iter().map(|(_, i)| (*i, ())))
        .collect();
    let owner = socket_owners(&inodes);
    // Group by process (or, when the process is not visible, by port or socket).
    let mut by: BTreeMap<String, Listener> = BTreeMap::new();
    let comm = |pid: u32| {
        fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let mut add = |key_kind: Option<&'static str>,
                   pid: Option<u32>,
                   port: Option<u16>,
                   sock: Option<&str>| {
        let kind = match pid.and_then(|p| kind_of_process(&comm(p))).or(key_kind) {
            Some(k) => k,
            None => return,
        };
        let key = match (pid, port, sock) {
            (Some(p), _, _) => format!("pid:{p}"),
            (None, Some(p), _) => format!("port:{p}"),
            (None, None, Some(s)) => format!("sock:{s}"),
            _ => return,
        };
        let l = by.entry(key).or_insert_with(|| Listener {
            kind,
            pid,
            ports: Vec::new(),
            sockets: Vec::new(),
            data_dir: pid
                .and_then(|p| fs::read_link(format!("/proc/{p}/cwd")).ok())
                .filter(|d| is_data_dir(kind, d)),
        });
        if let Some(p) = port {
            if !l.ports.contains(&p) {
                l.ports.push(p);
            }
        }
        if let Some(s) = sock {
            if !l.sockets.iter().any(|x| x == s) {
                l.sockets.push(s.to_string());
            }
        }
    };
    for (port, inode) in &tcp {
        let pid = owner.get(inode).copied();
        // A visible process of another kind on a well-known port is not a database.
        let k = if pid.is_some() {
            None
        } else {
            kind_of_port(*port)
        };
        if pid.is_some() || k.is_some() {
            add(k, pid, Some(*port), None);
        }
    }
    for (path, inode) in &unix {
        let pid = owner.get(inode).copied();
        let k = if pid.is_some() {
            None
        } else {
            kind_of_socket(path)
        };
        add(k, pid, None, Some(path));
    }
    let mut v: Vec<Listener> = by.into_values().collect();
    for l in &mut v {
        l.ports.sort_unstable();
        l.sockets.sort();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000   104        0 31337 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1539 0100007F:C000 01 00000000:00000000 00:00000000 00000000   104        0 31338 1\n";
        assert_eq!(parse_tcp(tcp), vec![(5432, 31337)]);
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path\n0000000000000000: 00000002 00000000 00010000 0001 01 4242 /run/postgresql/.s.PGSQL.5432\n0000000000000000: 00000003 00000000 00000000 0001 03 4243 /run/postgresql/.s.PGSQL.5432\n0000000000000000: 00000002 00000000 00010000 0001 01 4244 @abstract\n";
        assert_eq!(
            parse_unix(unix),
            vec![("/run/postgresql/.s.PGSQL.5432".to_string(), 4242)]
        );
        assert_eq!(kind_of_process("postgres"), Some("postgres"));
        assert_eq!(kind_of_process("mariadbd"), Some("mysql"));
        assert_eq!(kind_of_process("nginx"), None);
        assert_eq!(kind_of_socket("/run/mysqld/mysqld.sock"), Some("mysql"));
    }
}
