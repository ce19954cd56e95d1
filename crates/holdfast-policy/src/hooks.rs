//! Running the workload's shell commands (pre/post hooks, verify commands, reproduce recipes)
//! with a time limit.

use std::io::{Read, Seek};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run a shell command with a timeout; returns (success, combined output).
pub fn run_hook(cmd: &str, timeout: Duration, env: &[(&str, &Path)]) -> (bool, String) {
    let out = match tempfile::tempfile() {
        Ok(f) => f,
        Err(e) => return (false, format!("cannot create a temporary file: {e}")),
    };
    let mut c = Command::new("sh");
    c.arg("-c").arg(cmd).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let (o1, o2) = match (out.try_clone(), out.try_clone()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return (false, "cannot capture output".into()),
    };
    c.stdout(o1).stderr(o2);
    let mut child = match c.spawn() {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot run {cmd:?}: {e}")),
    };
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let mut text = String::new();
    let mut f = out;
    let _ = f.seek(std::io::SeekFrom::Start(0));
    let _ = f.take(64 * 1024).read_to_string(&mut text);
    match status {
        Some(s) if s.success() => (true, text),
        Some(s) => (false, format!("{cmd:?} failed ({s}): {}", text.trim())),
        None => (
            false,
            format!(
                "{cmd:?} did not finish within {}s and was killed: {}",
                timeout.as_secs(),
                text.trim()
            ),
        ),
    }
}
