//! Small helpers shared by the engine's modules.

/// This host's name: `HOLDFAST_HOSTNAME` if set and not empty (like restic's `--host`, for a
/// host whose name changes or a container that should keep one), else the system's host name.
/// Recovery points, sessions and job records carry it.
pub fn hostname() -> String {
    if let Some(h) = std::env::var("HOLDFAST_HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
    {
        return h;
    }
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The current user's name (from the environment; "unknown" if unset).
pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid{}", unsafe { libc::getuid() }))
}

/// Bytes as a human-readable size (binary units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// An absolute path, with `.` and `..` resolved lexically (symlinks are not followed).
pub fn absolute(p: &std::path::Path) -> crate::Result<std::path::PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| crate::Error::io("resolving", p, e))?;
    // Lexically normalise `.` and `..` without following symlinks.
    let mut out = std::path::PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn human() {
        assert_eq!(super::human_bytes(10), "10 B");
        assert_eq!(super::human_bytes(1536), "1.50 KiB");
        assert_eq!(super::human_bytes(3 << 30), "3.00 GiB");
    }
}
