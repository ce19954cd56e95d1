//! Jobs as child processes of the `holdfast` binary: `protect --source S`, `drill S`,
//! `protect --retain`, `replicate --source S`. A child runs in its own process group (a
//! terminal's Ctrl-C reaches the service only, which decides), dies with the service
//! (`PR_SET_PDEATHSIG`, so a killed service leaves no orphan writing into a repository), and
//! is stopped with SIGTERM, then SIGKILL, when its completion window or the service's stop
//! timeout runs out.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::schedule::Kind;

/// How to start the holdfast binary.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The binary.
    pub exe: PathBuf,
    /// The workload file.
    pub config: PathBuf,
    /// The state directory the children use (the service's own).
    pub state_dir: PathBuf,
    /// Where drills restore.
    pub scratch: Option<PathBuf>,
}

/// The most of a child's standard output kept (its JSON report).
const MAX_OUTPUT: usize = 4 << 20;

/// A running job.
pub struct Job {
    /// Source (`*` for maintenance of the whole workload).
    pub source: String,
    /// What.
    pub kind: Kind,
    /// When it started.
    pub started: DateTime<Utc>,
    /// When it must be done (its completion window), if ever.
    pub deadline: Option<Instant>,
    child: Child,
    out: Option<std::thread::JoinHandle<Vec<u8>>>,
    stopping: Option<Instant>,
    /// Why the service stopped it, if it did.
    pub stopped_because: Option<String>,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Source.
    pub source: String,
    /// What.
    pub kind: Kind,
    /// When it started.
    pub started: DateTime<Utc>,
    /// How long it ran.
    pub seconds: f64,
    /// The exit status.
    pub status: ExitStatus,
    /// Its JSON report (standard output), if it printed one.
    pub report: Option<serde_json::Value>,
    /// Why the service stopped it, if it did.
    pub stopped_because: Option<String>,
}

impl Outcome {
    /// The exit code (`None`: killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    /// Whether the job itself worked: exit 0, 3 (it recorded its point, with warnings that its
    /// job record and the status carry) or 4 (it ran; a control fails, which the status
    /// shows). Anything else is retried with backoff.
    pub fn worked(&self) -> bool {
        self.stopped_because.is_none() && matches!(self.code(), Some(0) | Some(3) | Some(4))
    }
    /// Whether the child reported its jobs (protect's `protect` lines, drill records), and so
    /// recorded them itself; never for a job the service stopped.
    pub fn reported(&self) -> bool {
        self.stopped_because.is_none()
            && self
                .report
                .as_ref()
                .is_some_and(|r| r.get("protect").is_some() || r.is_array())
    }

    /// The error the child reported (`{"error": ...}`), or how it ended.
    pub fn error(&self) -> String {
        if let Some(why) = &self.stopped_because {
            return why.clone();
        }
        if let Some(e) = self
            .report
            .as_ref()
            .and_then(|r| r.get("error"))
            .and_then(|e| e.as_str())
        {
            return e.to_string();
        }
        // protect's report: the first failed job's message.
        let failed = self
            .report
            .as_ref()
            .and_then(|r| r.get("protect"))
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
            .filter_map(|l| l.get("jobs").and_then(|j| j.as_array()))
            .flatten()
            .find(|j| j.get("state").and_then(|s| s.as_str()) == Some("failed"))
            .and_then(|j| {
                j.get("messages")
                    .and_then(|m| m.get(0))
                    .and_then(|m| m.as_str())
            });
        if let Some(m) = failed {
            return m.to_string();
        }
        match self.status.code() {
            Some(c) => format!("exited with code {c}"),
            None => format!("killed by signal {}", {
                use std::os::unix::process::ExitStatusExt;
                self.status.signal().unwrap_or(0)
            }),
        }
    }
}

impl Launcher {
    /// The arguments of a job.
    pub fn args(&self, source: &str, kind: Kind, random: bool) -> Vec<String> {
        let mut a = vec![
            "--config".to_string(),
            self.config.display().to_string(),
            "--json".into(),
        ];
        match kind {
            Kind::Backup => a.extend(["protect".into(), "--source".into(), source.into()]),
            Kind::Maintenance => a.extend(["protect".into(), "--retain".into()]),
            Kind::Drill => {
                a.extend(["drill".into(), source.into()]);
                if random {
                    a.push("--random".into());
                }
                if let Some(s) = &self.scratch {
                    a.extend(["--scratch".into(), s.display().to_string()]);
                }
            }
        }
        a
    }

    fn command(&self, args: &[String]) -> Command {
        let mut c = Command::new(&self.exe);
        c.args(args)
            .env("HOLDFAST_STATE_DIR", &self.state_dir)
            // systemd talks to the service, never to its jobs.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; no allocation between fork and exec.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        c
    }

    /// Start a job.
    pub fn start(
        &self,
        source: &str,
        kind: Kind,
        random: bool,
        deadline: Option<Duration>,
    ) -> std::io::Result<Job> {
        let mut c = self.command(&self.args(source, kind, random));
        c.stdout(Stdio::piped());
        let mut child = c.spawn()?;
        let mut stdout = child.stdout.take().expect("piped");
        let out = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut stdout).take(MAX_OUTPUT as u64).read_to_end(&mut buf);
            // Drain the rest so the child never blocks on a full pipe.
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
            buf
        });
        Ok(Job {
            source: source.into(),
            kind,
            started: Utc::now(),
            deadline: deadline.map(|d| Instant::now() + d),
            child,
            out: Some(out),
            stopping: None,
            stopped_because: None,
        })
    }

    /// Start a long-running replication task (`replicate --source S`); its output is its log.
    pub fn replicate(&self, source: &str) -> std::io::Result<Child> {
        let mut a = vec![
            "--config".to_string(),
            self.config.display().to_string(),
            "--quiet".into(),
        ];
        a.extend(["replicate".into(), "--source".into(), source.into()]);
        let mut c = self.command(&a);
        c.stdout(Stdio::null());
        c.spawn()
    }
}

/// Ask a process group to stop (SIGTERM), or kill it (SIGKILL).
pub fn signal_group(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a process group we created.
    unsafe {
        libc::kill(-(pid as i32), sig);
    }
}

/// How long a stopped job gets between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(10);

impl Job {
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop it: SIGTERM now, SIGKILL after [`GRACE`] (see [`Job::poll`]).
    pub fn stop(&mut self, why: String) {
        if self.stopping.is_none() {
            signal_group(self.child.id(), libc::SIGTERM);
            self.stopping = Some(Instant::now());
            self.stopped_because = Some(why);
        }
    }

    /// Whether it ended (its outcome then), after enforcing its deadline and the grace.
    pub fn poll(&mut self) -> Option<Outcome> {
        if let Some(d) = self.deadline {
            if Instant::now() > d && self.stopping.is_none() {
                self.stop("did not complete within its class's complete-window: stopped by the service (what it wrote is kept; the next run continues)".into());
            }
        }
        if self.stopping.is_some_and(|s| s.elapsed() > GRACE) {
            signal_group(self.child.id(), libc::SIGKILL);
        }
        match self.child.try_wait() {
            Ok(Some(status)) => Some(self.outcome(status)),
            Ok(None) => None,
            Err(_) => None,
        }
    }

    fn outcome(&mut self, status: ExitStatus) -> Outcome {
        let out = self
            .out
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&out);
        // The report is the last JSON document on stdout.
        let report = serde_json::from_str(text.trim()).ok().or_else(|| {
            text.lines()
                .rev()
                .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        });
        Outcome {
            source: self.source.clone(),
            kind: self.kind,
            started: self.started,
            seconds: (Utc::now() - self.started).num_milliseconds() as f64 / 1000.0,
            status,
            report,
            stopped_because: self.stopped_because.clone(),
        }
    }
}
