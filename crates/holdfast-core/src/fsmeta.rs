//! Reading file-system metadata into tree nodes, and applying it back on restore.

use std::ffi::CString;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::tree::{FileTime, FsName, Node, NodeKind, Xattr};

/// Build a node from `lstat` metadata (content, subtree and target filled by the caller).
pub fn node_from_metadata(name: FsName, m: &Metadata) -> Node {
    let ft = m.file_type();
    use std::os::unix::fs::FileTypeExt;
    let kind = if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::Chardev
    } else if ft.is_block_device() {
        NodeKind::Blockdev
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    };
    Node {
        name,
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: FileTime::new(m.mtime(), m.mtime_nsec()),
        ctime: FileTime::new(m.ctime(), m.ctime_nsec()),
        inode: m.ino(),
        dev: m.dev(),
        links: m.nlink(),
        size: if kind == NodeKind::File { m.size() } else { 0 },
        content: Vec::new(),
        inline: None,
        subtree: None,
        target: None,
        rdev: matches!(kind, NodeKind::Chardev | NodeKind::Blockdev).then(|| m.rdev()),
        xattrs: Vec::new(),
        changed_while_read: false,
    }
}

/// Read the extended attributes of a path (not following symlinks). Unsupported file systems
/// yield none.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<Xattr>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for n in names {
        if let Some(v) = xattr::get(path, &n)? {
            out.push(Xattr {
                name: FsName::from_os(&n),
                value: hex::encode(v),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Create a fifo or device node.
pub fn make_special(path: &Path, node: &Node) -> io::Result<()> {
    let c = cpath(path)?;
    let (t, dev) = match node.kind {
        NodeKind::Fifo => (libc::S_IFIFO, 0),
        NodeKind::Chardev => (libc::S_IFCHR, node.rdev.unwrap_or(0)),
        NodeKind::Blockdev => (libc::S_IFBLK, node.rdev.unwrap_or(0)),
        _ => return Ok(()),
    };
    // SAFETY: c is a valid NUL-terminated path.
    check(unsafe {
        libc::mknod(
            c.as_ptr(),
            t | (node.mode & 0o7777) as libc::mode_t,
            dev as libc::dev_t,
        )
    })
}

fn timespec(t: &FileTime) -> libc::timespec {
    libc::timespec {
        tv_sec: t.sec as libc::time_t,
        tv_nsec: t.nsec as _,
    }
}

/// Where metadata goes: a path (not following symlinks) or an open file.
enum Target<'a> {
    Path(&'a Path, CString),
    File(&'a std::fs::File),
}

impl Target<'_> {
    fn chown(&self, uid: u32, gid: u32) -> io::Result<()> {
        use std::os::unix::io::AsRawFd;
        check(match self {
            // SAFETY: valid path pointer; lchown does not follow symlinks.
            Target::Path(_, c) => unsafe { libc::lchown(c.as_ptr(), uid, gid) },
            // SAFETY: the descriptor is open for the duration of the call.
            Target::File(f) => unsafe { libc::fchown(f.as_raw_fd(), uid, gid) },
        })
    }

    fn set_xattr(&self, name: &std::ffi::OsStr, value: &[u8]) -> io::Result<()> {
        use xattr::FileExt;
        match self {
            Target::Path(p, _) => xattr::set(p, name, value),
            Target::File(f) => f.set_xattr(name, value),
        }
    }

    fn chmod(&self, mode: u32) -> io::Result<()> {
        use std::os::unix::io::AsRawFd;
        check(match self {
            // SAFETY: valid path pointer.
            Target::Path(_, c) => unsafe { libc::chmod(c.as_ptr(), mode as libc::mode_t) },
            // SAFETY: valid descriptor.
            Target::File(f) => unsafe { libc::fchmod(f.as_raw_fd(), mode as libc::mode_t) },
        })
    }

    fn set_times(&self, mtime: &FileTime) -> io::Result<()> {
        use std::os::unix::io::AsRawFd;
        let ts = timespec(mtime);
        let times = [ts, ts];
        check(match self {
            // SAFETY: valid path pointer and a two-element timespec array.
            Target::Path(_, c) => unsafe {
                libc::utimensat(
                    libc::AT_FDCWD,
                    c.as_ptr(),
                    times.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            },
            // SAFETY: valid descriptor and a two-element timespec array.
            Target::File(f) => unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) },
        })
    }
}

/// Apply owner, extended attributes, mode and times, each on its own: one that cannot be set
/// does not stop the others. Returns what could not be set, one line each (empty: everything
/// was). Ownership is not reported when not running as root (only root may give files away,
/// and every archiver restores ownership only as root).
fn apply_to(t: &Target, node: &Node) -> Vec<String> {
    let mut missed = Vec::new();
    if let Err(e) = t.chown(node.uid, node.gid) {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            missed.push(format!("owner {}:{} not set: {e}", node.uid, node.gid));
        }
    }
    for x in &node.xattrs {
        let r = hex::decode(&x.value)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
            .and_then(|v| t.set_xattr(&x.name.to_os(), &v));
        if let Err(e) = r {
            let why = match e.raw_os_error() {
                Some(libc::ENOTSUP) => "the target file system does not support it".to_string(),
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    format!("{e} (this namespace needs root or a capability)")
                }
                _ => e.to_string(),
            };
            missed.push(format!(
                "extended attribute {} not set: {why}",
                x.name.display()
            ));
        }
    }
    if node.kind != NodeKind::Symlink {
        if let Err(e) = t.chmod(node.mode) {
            missed.push(format!("mode {:o} not set: {e}", node.mode));
        }
    }
    if let Err(e) = t.set_times(&node.mtime) {
        missed.push(format!("modification time not set: {e}"));
    }
    missed
}

/// Apply owner, extended attributes, mode and times to a restored entry (not following
/// symlinks); see [`apply_file`]. Returns what could not be set, one line each.
pub fn apply(path: &Path, node: &Node) -> Vec<String> {
    match cpath(path) {
        Ok(c) => apply_to(&Target::Path(path, c), node),
        Err(e) => vec![format!("metadata not set: {e}")],
    }
}

/// [`apply`] through an open file (no path lookups). Each of owner, every extended attribute,
/// mode and times is set on its own, so one that cannot be set (a `trusted.` attribute when
/// not root) does not cost the others. Returns what could not be set, one line each.
pub fn apply_file(f: &std::fs::File, node: &Node) -> Vec<String> {
    apply_to(&Target::File(f), node)
}
