//! Reading file-system metadata into tree nodes, and applying it back on restore.

use std::ffi::CString;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::tree::{FsName, Node, NodeKind, Xattr};

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
        mtime: m
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(m.mtime_nsec()),
        ctime: m
            .ctime()
            .saturating_mul(1_000_000_000)
            .saturating_add(m.ctime_nsec()),
        inode: m.ino(),
        dev: m.dev(),
        links: m.nlink(),
        size: if kind == NodeKind::File { m.size() } else { 0 },
        content: Vec::new(),
        subtree: None,
        target: None,
        rdev: matches!(kind, NodeKind::Chardev | NodeKind::Blockdev).then(|| m.rdev()),
        xattrs: Vec::new(),
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

/// Apply owner, mode, extended attributes and times to a restored entry (not following
/// symlinks). Ownership errors are ignored when not running as root, as every archiver does.
pub fn apply(path: &Path, node: &Node) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: valid path pointer; lchown does not follow symlinks.
    let r = unsafe { libc::lchown(c.as_ptr(), node.uid, node.gid) };
    // SAFETY: geteuid has no preconditions.
    if r != 0 && unsafe { libc::geteuid() } == 0 {
        return Err(io::Error::last_os_error());
    }
    for x in &node.xattrs {
        let v = hex::decode(&x.value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if let Err(e) = xattr::set(path, x.name.to_os(), &v) {
            if e.raw_os_error() != Some(libc::ENOTSUP) {
                return Err(e);
            }
        }
    }
    if node.kind != NodeKind::Symlink {
        // SAFETY: valid path pointer.
        check(unsafe { libc::chmod(c.as_ptr(), node.mode as libc::mode_t) })?;
    }
    let ts = libc::timespec {
        tv_sec: node.mtime.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: node.mtime.rem_euclid(1_000_000_000) as _,
    };
    let times = [ts, ts];
    // SAFETY: valid path pointer and a two-element timespec array.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// [`apply`] through an open file (no path lookups): owner, extended attributes, mode, times.
pub fn apply_file(f: &std::fs::File, node: &Node) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let fd = f.as_raw_fd();
    // SAFETY: fd is a valid open descriptor for the duration of these calls.
    let r = unsafe { libc::fchown(fd, node.uid, node.gid) };
    // SAFETY: geteuid has no preconditions.
    if r != 0 && unsafe { libc::geteuid() } == 0 {
        return Err(io::Error::last_os_error());
    }
    for x in &node.xattrs {
        use xattr::FileExt;
        let v = hex::decode(&x.value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if let Err(e) = f.set_xattr(x.name.to_os(), &v) {
            if e.raw_os_error() != Some(libc::ENOTSUP) {
                return Err(e);
            }
        }
    }
    // SAFETY: valid descriptor.
    check(unsafe { libc::fchmod(fd, node.mode as libc::mode_t) })?;
    let ts = libc::timespec {
        tv_sec: node.mtime.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: node.mtime.rem_euclid(1_000_000_000) as _,
    };
    let times = [ts, ts];
    // SAFETY: valid descriptor and a two-element timespec array.
    check(unsafe { libc::futimens(fd, times.as_ptr()) })
}
