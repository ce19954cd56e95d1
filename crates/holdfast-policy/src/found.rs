//! What discovery finds (a data location or a listening server), and how a database source is
//! matched against a server. A leaf module: both [`crate::discover`] and the source drivers
//! ([`crate::sources`]) use it.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One data location found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Found {
    /// What it is: filesystem, sqlite, postgres, mysql, redis, mongodb, logs, volumes, data-dir,
    /// block-device, logical-volume, btrfs-subvolume.
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
    /// Listed under `[discover] ignore`, or accepted on purpose under `[[discover.accept]]`.
    pub ignored: bool,
    /// Why it was accepted, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted: Option<String>,
    /// Servers: the TCP ports its process listens on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Servers: the unix sockets its process listens on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sockets: Vec<String>,
    /// Servers: the data directory the process serves; data directories: the server using it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// Why a source that seems to cover it does not (a live database copied as files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Block devices: the kernel's `MAJOR:MINOR` (one device has many paths: `/dev/dm-0`,
    /// `/dev/mapper/vg-lv`, `/dev/vg/lv`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Its data is judged place by place elsewhere: a block device holding mounted file
    /// systems or other devices, a btrfs subvolume of a mounted file system. Unprotected, it is
    /// worth a look, not an alarm (as a mount point is).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub contains_mounts: bool,
}

impl Found {
    /// A found location with nothing measured yet.
    pub fn new(kind: &str, location: String, detail: String) -> Found {
        Found {
            kind: kind.into(),
            location,
            size: None,
            modified: None,
            detail,
            protected_by: None,
            ignored: false,
            accepted: None,
            ports: Vec::new(),
            sockets: Vec::new(),
            data_dir: None,
            note: None,
            device: None,
            contains_mounts: false,
        }
    }

    /// Whether, left unprotected, it is only worth a look (a mount point, a device or subvolume
    /// whose data is found and judged place by place), not an alarm.
    pub fn judged_elsewhere(&self) -> bool {
        self.kind == "filesystem" || self.contains_mounts
    }

    /// Whether it is a listening server (not a place on disk).
    pub fn is_server(&self) -> bool {
        !self.ports.is_empty() || !self.sockets.is_empty()
    }
}

/// Whether a database source of `kind` reaching `host`/`port` connects to this found server:
/// same kind, a local host, and the same port or socket. Never by kind alone. `local_socket`:
/// whether a socket is the kind's default one for that port (used when no host is given);
/// `socket_dir`: a `host` that is a directory holds the kind's socket (PostgreSQL).
pub fn server_reached(
    f: &Found,
    kind: &str,
    host: Option<&str>,
    port: u16,
    local_socket: &dyn Fn(&str) -> bool,
    socket_dir: bool,
) -> bool {
    if f.kind != kind || !f.is_server() {
        return false;
    }
    match host {
        None => f.ports.contains(&port) || f.sockets.iter().any(|sk| local_socket(sk)),
        Some("localhost" | "127.0.0.1" | "::1") => f.ports.contains(&port),
        Some(h) if h.starts_with('/') => f.sockets.iter().any(|sk| {
            sk == h
                || (socket_dir && Path::new(sk).parent() == Some(Path::new(h)) && local_socket(sk))
        }),
        Some(_) => false, // another host: it does not protect a server on this one
    }
}
