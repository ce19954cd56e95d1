//! Whether a process recorded in a writer session is provably gone: same host, same boot, and
//! its pid is not running or is running with a different start time (the pid was reused).
//! Only Linux can prove it (`/proc`); elsewhere a session ages out by its heartbeat alone.

/// This boot's id (`/proc/sys/kernel/random/boot_id`), if the system has one.
pub fn boot_id() -> Option<String> {
    let s = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let s = s.trim();
    (!s.is_empty() && s.len() <= 64).then(|| s.to_string())
}

/// When a process started, in clock ticks since boot (field 22 of `/proc/<pid>/stat`); `None`
/// if it does not exist or the system cannot say.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether a process of this host is provably gone. `host`, `boot` and `start` are what the
/// process recorded about itself; every one must match this system's for a verdict, and
/// anything unknown answers "not provably gone".
pub fn provably_gone(host: &str, boot: Option<&str>, pid: u32, start: Option<u64>) -> bool {
    let (Some(boot), Some(start)) = (boot, start) else {
        return false;
    };
    if pid == 0 || host != crate::util::hostname() || boot_id().as_deref() != Some(boot) {
        return false;
    }
    // /proc must work here for a verdict: our own entry must be readable.
    if process_start(std::process::id()).is_none() {
        return false;
    }
    process_start(pid) != Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_child_is_gone() {
        let me = std::process::id();
        let host = crate::util::hostname();
        let boot = boot_id().expect("Linux has a boot id");
        let start = process_start(me).expect("our own start time");
        assert!(!provably_gone(&host, Some(&boot), me, Some(start)));
        // The same pid with another start time is a reused pid: the recorded process is gone.
        assert!(provably_gone(&host, Some(&boot), me, Some(start + 1)));
        // A child that exited and was reaped.
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        let cstart = process_start(pid);
        c.wait().unwrap();
        assert!(provably_gone(&host, Some(&boot), pid, cstart.or(Some(1))));
        // Another host, another boot, or nothing recorded: no verdict.
        assert!(!provably_gone("another-host", Some(&boot), pid, Some(1)));
        assert!(!provably_gone(&host, Some("another-boot"), pid, Some(1)));
        assert!(!provably_gone(&host, None, pid, Some(1)));
        assert!(!provably_gone(&host, Some(&boot), pid, None));
    }
}
