//! holdfast repositories on any host reachable over SSH: `sftp://[USER@]HOST[:PORT]/PATH`.
//!
//! The connection is the system's `ssh` with the `sftp` subsystem, so everything in the user's
//! SSH configuration applies (keys, agents, `Host` aliases, known hosts, jump hosts); `ssh` runs
//! with `BatchMode=yes`, so it never prompts. `?config=FILE` passes `-F FILE`.
//!
//! The layout is that of a local repository (`config`, `keys/…`, `data/ab/…`, …), and so are the
//! guarantees the engine needs (see `holdfast-storage`):
//! - **Atomic puts.** An object is written to a temporary name, `fsync`ed
//!   (`fsync@openssh.com`), closed, then moved into place: hard-linked for
//!   [`PutMode::CreateNew`] (`hardlink@openssh.com`, which fails if the name is taken) or
//!   renamed over for [`PutMode::Overwrite`] (`posix-rename@openssh.com`). A crash leaves at most
//!   a temporary file, never a partial object under a final name.
//! - **Durability.** Object contents are on the server's disk when `put` returns. SFTP has no
//!   directory `fsync`, so the *names* become durable when the server's file system commits its
//!   journal (seconds on ext4 and XFS); [`Storage::flush`] cannot force it. This is the one
//!   guarantee weaker than a local repository's.
//!
//! - **Private files.** Objects are made `0600` before their first byte is written, and the
//!   directories created at and under the repository's path `0700`.
//!
//! These three OpenSSH extensions are required; a server without them is refused at connect
//! with an error that names them. (OpenDAL's SFTP service writes in place and never fsyncs,
//! which is why this backend talks SFTP itself through `openssh-sftp-client`.)

#![warn(missing_docs)]

use std::io::SeekFrom;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use holdfast_storage::{ObjectInfo, ObjectKind, PutMode, Result, Storage, StorageError};
use openssh_sftp_client::error::{Error as SftpError, SftpErrorKind};
use openssh_sftp_client::metadata::Permissions;
use openssh_sftp_client::{Sftp, SftpOptions};
use tokio::io::AsyncSeekExt;

/// Mode of every object file: its owner's alone, so no other user of the server can copy the
/// key slots for offline guessing.
pub const FILE_MODE: u16 = 0o600;
/// Mode of the directories the backend creates at and under the repository directory.
pub const DIR_MODE: u16 = 0o700;

/// Where a repository is: `sftp://[USER@]HOST[:PORT]/PATH[?config=FILE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftpConfig {
    /// User (default: the SSH configuration's).
    pub user: Option<String>,
    /// Host name or `Host` alias.
    pub host: String,
    /// Port (default: the SSH configuration's).
    pub port: Option<u16>,
    /// Repository directory on the server (absolute).
    pub path: String,
    /// An SSH configuration file to use instead of the user's.
    pub config: Option<PathBuf>,
}

impl SftpConfig {
    /// Parse an `sftp://` URL.
    pub fn from_url(url: &str) -> std::result::Result<SftpConfig, String> {
        let rest = url
            .strip_prefix("sftp://")
            .ok_or_else(|| format!("{url:?} is not an sftp:// URL"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').ok_or_else(|| {
            format!("{url:?} names no directory: use sftp://[USER@]HOST[:PORT]/PATH")
        })?;
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                Some(
                    p.parse::<u16>()
                        .map_err(|_| format!("{url:?}: port {p:?} is not a number"))?,
                ),
            ),
            None => (hostport, None),
        };
        if host.is_empty() || path.trim_matches('/').is_empty() {
            return Err(format!(
                "{url:?}: use sftp://[USER@]HOST[:PORT]/PATH with a host and a directory"
            ));
        }
        let mut config = None;
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            match kv.split_once('=') {
                Some(("config", v)) if !v.is_empty() => config = Some(PathBuf::from(v)),
                _ => return Err(format!("{url:?}: unknown parameter {kv:?} (config=FILE)")),
            }
        }
        Ok(SftpConfig {
            user,
            host: host.to_string(),
            port,
            path: format!("/{}", path.trim_end_matches('/').trim_start_matches('/')),
            config,
        })
    }
}

/// A repository on an SFTP server.
pub struct SftpStorage {
    sftp: Arc<Sftp>,
    rt: tokio::runtime::Runtime,
    root: String,
    location: String,
    /// The ssh process; killed when the storage is dropped.
    _child: tokio::process::Child,
}

impl std::fmt::Debug for SftpStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SftpStorage({})", self.location)
    }
}

impl SftpStorage {
    /// Connect: start `ssh -s sftp` and check the server's extensions.
    pub fn connect(c: &SftpConfig) -> std::result::Result<SftpStorage, String> {
        let location = format!(
            "sftp://{}{}{}{}",
            c.user
                .as_deref()
                .map(|u| format!("{u}@"))
                .unwrap_or_default(),
            c.host,
            c.port.map(|p| format!(":{p}")).unwrap_or_default(),
            c.path
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("starting the I/O runtime: {e}"))?;
        let mut cmd = tokio::process::Command::new("ssh");
        if let Some(f) = &c.config {
            cmd.arg("-F").arg(f);
        }
        if let Some(p) = c.port {
            cmd.arg("-p").arg(p.to_string());
        }
        cmd.args(["-o", "BatchMode=yes", "-o", "ServerAliveInterval=15", "-s"])
            .arg(match &c.user {
                Some(u) => format!("{u}@{}", c.host),
                None => c.host.clone(),
            })
            .arg("sftp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let (sftp, child) = rt.block_on(async {
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("{location}: cannot run ssh ({e}); install an OpenSSH client"))?;
            let stdin = child.stdin.take().expect("piped");
            let stdout = child.stdout.take().expect("piped");
            let mut stderr = child.stderr.take().expect("piped");
            match Sftp::new(stdin, stdout, SftpOptions::new()).await {
                Ok(s) => Ok((s, child)),
                Err(e) => {
                    use tokio::io::AsyncReadExt;
                    let _ = child.kill().await;
                    let mut msg = String::new();
                    let _ = stderr.read_to_string(&mut msg).await;
                    Err(format!(
                        "{location}: the SFTP session did not start ({e}); ssh said: {}; check that `ssh {}` logs in without a prompt (keys, known_hosts)",
                        msg.trim(),
                        c.host
                    ))
                }
            }
        })?;
        let missing: Vec<&str> = [
            (sftp.support_fsync(), "fsync@openssh.com"),
            (sftp.support_hardlink(), "hardlink@openssh.com"),
            (sftp.support_posix_rename(), "posix-rename@openssh.com"),
        ]
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, n)| n)
        .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{location}: the SFTP server lacks {}, which atomic and durable writes need; use an OpenSSH server",
                missing.join(", ")
            ));
        }
        Ok(SftpStorage {
            sftp: Arc::new(sftp),
            rt,
            root: c.path.clone(),
            location,
            _child: child,
        })
    }

    fn dir(&self, kind: ObjectKind, name: &str) -> String {
        match kind {
            ObjectKind::Config => self.root.clone(),
            k if k.fanned_out() && name.len() >= 2 => {
                format!("{}/{}/{}", self.root, k.dir(), &name[..2])
            }
            k => format!("{}/{}", self.root, k.dir()),
        }
    }

    fn path(&self, kind: ObjectKind, name: &str) -> String {
        match kind {
            ObjectKind::Config => format!("{}/config", self.root),
            k => format!("{}/{name}", self.dir(k, name)),
        }
    }

    fn err(&self, op: &str, kind: ObjectKind, name: &str, e: SftpError) -> StorageError {
        match &e {
            SftpError::SftpError(SftpErrorKind::NoSuchFile, _) => StorageError::NotFound {
                kind,
                name: name.into(),
                location: self.location.clone(),
            },
            SftpError::SftpError(SftpErrorKind::PermDenied, _) => StorageError::PermissionDenied {
                op: format!("{op} {kind} {name}"),
                location: self.location.clone(),
                fix: "the SSH user may not do this in the repository directory: check its owner and mode on the server".into(),
            },
            _ => StorageError::Remote {
                op: format!("{op} {kind} {name}"),
                location: self.location.clone(),
                transient: false,
                message: format!("{e} (check that the server is reachable and the session alive; run the command again)"),
            },
        }
    }

    /// `mkdir -p` on the server.
    async fn mkdirs(&self, dir: &str) -> std::result::Result<(), SftpError> {
        let mut fs = self.sftp.fs();
        let mut cur = String::new();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            cur.push('/');
            cur.push_str(part);
            match fs.metadata(&cur).await {
                Ok(_) => continue,
                Err(SftpError::SftpError(SftpErrorKind::NoSuchFile, _)) => {}
                Err(e) => return Err(e),
            }
            let mut b = fs.dir_builder();
            if cur.starts_with(&self.root) {
                b.permissions(Permissions::from(DIR_MODE));
            }
            match b.create(&cur).await {
                Ok(()) => {}
                // Made by a concurrent writer in between.
                Err(e) if fs.metadata(&cur).await.is_ok() => {
                    tracing::debug!("mkdir {cur} raced: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn put_async(
        &self,
        kind: ObjectKind,
        name: &str,
        data: &[u8],
        mode: PutMode,
    ) -> std::result::Result<(), StorageError> {
        let dir = self.dir(kind, name);
        let dest = self.path(kind, name);
        let tmp = format!("{dir}/.tmp-{}", hex::encode(rand::random::<[u8; 8]>()));
        let e = |op: &str, err| self.err(op, kind, name, err);
        let mut opts = self.sftp.options();
        opts.write(true).create_new(true);
        let mut f = match opts.open(&tmp).await {
            Ok(f) => f,
            Err(SftpError::SftpError(SftpErrorKind::NoSuchFile, _)) => {
                self.mkdirs(&dir)
                    .await
                    .map_err(|x| e("creating the directory of", x))?;
                opts.open(&tmp).await.map_err(|x| e("writing", x))?
            }
            Err(x) => return Err(e("writing", x)),
        };
        let written = async {
            // Before any byte is written: the server creates files with its umask (0644).
            f.set_permissions(Permissions::from(FILE_MODE)).await?;
            f.write_all(data).await?;
            f.sync_all().await?;
            f.close().await
        }
        .await;
        let mut fs = self.sftp.fs();
        if let Err(x) = written {
            let _ = fs.remove_file(&tmp).await;
            return Err(e("writing", x));
        }
        let placed = match mode {
            PutMode::Overwrite => fs.rename(&tmp, &dest).await,
            PutMode::CreateNew => {
                let r = fs.hard_link(&tmp, &dest).await;
                let _ = fs.remove_file(&tmp).await;
                match r {
                    Err(x) if fs.metadata(&dest).await.is_ok() => {
                        tracing::debug!("create-new of {dest}: {x}");
                        return Err(StorageError::AlreadyExists {
                            kind,
                            name: name.into(),
                            location: self.location.clone(),
                        });
                    }
                    r => r,
                }
            }
        };
        if placed.is_err() {
            let _ = fs.remove_file(&tmp).await;
        }
        placed.map_err(|x| e("placing", x))
    }

    async fn read_async(
        &self,
        kind: ObjectKind,
        name: &str,
        range: Option<(u64, u64)>,
    ) -> std::result::Result<Vec<u8>, StorageError> {
        let e = |op: &str, err| self.err(op, kind, name, err);
        let mut f = self
            .sftp
            .open(self.path(kind, name))
            .await
            .map_err(|x| e("reading", x))?;
        let (offset, len) = match range {
            Some(r) => r,
            None => {
                let m = f.metadata().await.map_err(|x| e("reading", x))?;
                (0, m.len().unwrap_or(0))
            }
        };
        if offset > 0 {
            f.seek(SeekFrom::Start(offset))
                .await
                .map_err(|x| e("reading", SftpError::IOError(x)))?;
        }
        let mut out = Vec::with_capacity(len as usize);
        while (out.len() as u64) < len {
            let want = (len - out.len() as u64).min(1 << 20) as u32;
            match f
                .read(want, Default::default())
                .await
                .map_err(|x| e("reading", x))?
            {
                Some(b) if !b.is_empty() => out.extend_from_slice(&b),
                _ => break,
            }
        }
        let _ = f.close().await;
        Ok(out)
    }

    async fn list_dir(
        &self,
        dir: &str,
    ) -> std::result::Result<Vec<(String, u64, bool)>, SftpError> {
        let mut fs = self.sftp.fs();
        let d = match fs.open_dir(dir).await {
            Ok(d) => d,
            Err(SftpError::SftpError(SftpErrorKind::NoSuchFile, _)) => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        use futures_util::StreamExt;
        let mut entries = Box::pin(d.read_dir());
        let mut out = Vec::new();
        while let Some(ent) = entries.next().await {
            let ent = ent?;
            let name = ent.filename().to_string_lossy().to_string();
            if name == "." || name == ".." {
                continue;
            }
            let m = ent.metadata();
            let is_dir = ent.file_type().is_some_and(|t| t.is_dir());
            out.push((name, m.len().unwrap_or(0), is_dir));
        }
        Ok(out)
    }
}

fn is_object_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl Storage for SftpStorage {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn create(&self) -> Result<()> {
        self.rt.block_on(async {
            let mut fs = self.sftp.fs();
            if fs.metadata(format!("{}/config", self.root)).await.is_ok() {
                return Err(StorageError::AlreadyExists {
                    kind: ObjectKind::Config,
                    name: "config".into(),
                    location: self.location.clone(),
                });
            }
            for k in ObjectKind::ALL {
                if k != ObjectKind::Config {
                    self.mkdirs(&format!("{}/{}", self.root, k.dir()))
                        .await
                        .map_err(|e| self.err("creating", k, "directory", e))?;
                }
            }
            Ok(())
        })
    }

    fn put(&self, kind: ObjectKind, name: &str, data: &[u8], mode: PutMode) -> Result<()> {
        self.rt.block_on(self.put_async(kind, name, data, mode))
    }

    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        self.rt.block_on(self.read_async(kind, name, None))
    }

    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let b = self
            .rt
            .block_on(self.read_async(kind, name, Some((offset, len))))?;
        StorageError::whole_range(kind, name, offset, len, b)
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        self.rt.block_on(async {
            let e = |x| self.err("listing", kind, "", x);
            let mut out = Vec::new();
            if kind == ObjectKind::Config {
                for (n, size, _) in self.list_dir(&self.root).await.map_err(e)? {
                    if n == "config" {
                        out.push(ObjectInfo { name: n, size });
                    }
                }
                return Ok(out);
            }
            let top = format!("{}/{}", self.root, kind.dir());
            for (n, size, is_dir) in self.list_dir(&top).await.map_err(e)? {
                if is_dir && kind.fanned_out() {
                    for (m, size, _) in self.list_dir(&format!("{top}/{n}")).await.map_err(e)? {
                        if is_object_name(&m) {
                            out.push(ObjectInfo { name: m, size });
                        }
                    }
                } else if is_object_name(&n) {
                    out.push(ObjectInfo { name: n, size });
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        self.rt.block_on(async {
            match self.sftp.fs().remove_file(self.path(kind, name)).await {
                Ok(()) | Err(SftpError::SftpError(SftpErrorKind::NoSuchFile, _)) => Ok(()),
                Err(e) => Err(self.err("deleting", kind, name, e)),
            }
        })
    }

    fn flush(&self) -> Result<()> {
        // Contents were fsynced by each put; SFTP cannot fsync a directory (see the crate docs).
        Ok(())
    }

    fn write_concurrency(&self) -> usize {
        4
    }

    fn read_concurrency(&self) -> usize {
        16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = SftpConfig::from_url("sftp://backup@host.example:2222/srv/repo/?config=/tmp/cfg")
            .unwrap();
        assert_eq!(
            c,
            SftpConfig {
                user: Some("backup".into()),
                host: "host.example".into(),
                port: Some(2222),
                path: "/srv/repo".into(),
                config: Some("/tmp/cfg".into()),
            }
        );
        let c = SftpConfig::from_url("sftp://alias/data").unwrap();
        assert_eq!((c.user, c.port, c.path.as_str()), (None, None, "/data"));
        for bad in [
            "sftp://host",
            "sftp://host/",
            "sftp:///p",
            "sftp://h:x/p",
            "sftp://h/p?key=secret",
            "s3://h/p",
        ] {
            assert!(SftpConfig::from_url(bad).is_err(), "{bad}");
        }
        assert!(is_object_name("ab12") && !is_object_name(".tmp-ab") && !is_object_name("AB"));
    }
}
