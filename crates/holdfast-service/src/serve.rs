//! The service loop: observe, schedule, run, supervise, publish, notify, until SIGTERM.
//!
//! Every turn (a fifth of a second) it reaps finished jobs and records those that failed
//! without a record of their own, takes the newest observation, starts what is due within the
//! limits, restarts dead replication tasks and pings the systemd watchdog. SIGHUP reloads the
//! workload (an invalid file keeps the old one and raises an alert); SIGTERM lets running
//! jobs finish within `[service] stop-timeout`, then stops them and records them as failed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use holdfast_core::records::{self, JobRecord, JobState, Record};
use holdfast_policy::config::Workload;
use holdfast_policy::runtime::Runtime;

use crate::http::{self, Shared};
use crate::journal::{Entry, Journal};
use crate::observer::{self, Observation};
use crate::replication::{Lag, Supervisor};
use crate::runner::{Job, Launcher, Outcome};
use crate::schedule::{self, Kind};
use crate::snapshot::{ConfigState, RunningJob, Snapshot};

/// How `holdfast serve` was asked to run.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The workload file.
    pub config: PathBuf,
    /// The holdfast binary jobs run as.
    pub exe: PathBuf,
    /// The runtime (backends, clock, state directory).
    pub runtime: Runtime,
    /// Listen here instead of `[service] listen`.
    pub listen: Option<String>,
    /// Where drills restore.
    pub scratch: Option<PathBuf>,
}

/// Why the service could not start (once running, it reports problems and goes on).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The workload file is invalid.
    #[error(transparent)]
    Config(#[from] holdfast_policy::config::ConfigError),
    /// The listen address or TLS files are unusable.
    #[error(transparent)]
    Http(#[from] http::HttpError),
    /// The state directory cannot be used.
    #[error("state directory {path}: {source}")]
    State {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--listen` or `[service] listen` is no address.
    #[error("{0}")]
    Listen(String),
}

/// Signals, as flags the loop reads (set by the front end's signal handlers).
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// SIGTERM or SIGINT: stop.
    pub stop: Arc<AtomicBool>,
    /// SIGHUP: reload the workload file.
    pub reload: Arc<AtomicBool>,
}

struct Service {
    opts: ServeOptions,
    workload: Arc<Workload>,
    config: ConfigState,
    launcher: Launcher,
    journal: Journal,
    shared: Arc<Shared>,
    started: DateTime<Utc>,
    host: String,
    jobs: Vec<Job>,
    /// The newest observation.
    seen: Option<Observation>,
    /// Jobs that ended after the newest observation was made: not started again before the
    /// next one shows what they did.
    ended: BTreeMap<(String, Kind), DateTime<Utc>>,
    /// Jobs not to start before an instant: after a failure (backoff) or an expiry (their
    /// next regular slot); with the number of failures in a row.
    hold: BTreeMap<(String, Kind), (DateTime<Utc>, u32)>,
    /// This service's own outcomes per source (the repository may be unreachable).
    local_failures: BTreeMap<String, (DateTime<Utc>, String)>,
    supervisor: Supervisor,
    /// The newest fleet view.
    fleet: Option<holdfast_policy::fleet::FleetReport>,
    notifier: crate::notify::Notifier,
    ask: mpsc::Sender<Arc<Workload>>,
    answers: mpsc::Receiver<Observation>,
    last_refresh: Instant,
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

/// Run the service until `signals.stop` is set.
pub fn serve(opts: ServeOptions, signals: Signals) -> Result<(), ServeError> {
    let workload = Arc::new(Workload::load(&opts.config)?);
    let state_dir = opts.runtime.state_dir.clone();
    let journal = Journal::open(&state_dir).map_err(|source| ServeError::State {
        path: state_dir.clone(),
        source,
    })?;
    let svc_cfg = workload.service.clone();
    let listen = match &opts.listen {
        Some(l) => holdfast_policy::config::ServiceConfig {
            listen: l.clone(),
            ..svc_cfg.clone()
        },
        None => svc_cfg.clone(),
    };
    listen.validate().map_err(ServeError::Listen)?;
    let token = svc_cfg
        .token_file
        .as_deref()
        .map(http::read_token)
        .transpose()?;
    let host = holdfast_core::util::hostname();
    let started = now();
    let config = ConfigState {
        path: workload.path.clone(),
        loaded_at: started,
        error: None,
    };
    let shared = Arc::new(Shared {
        metrics: RwLock::new(Arc::new(String::new())),
        snapshot: RwLock::new(Arc::new(Snapshot {
            at: started,
            host: host.clone(),
            started,
            version: env!("CARGO_PKG_VERSION").into(),
            config: config.clone(),
            status: None,
            sources: vec![],
            jobs: vec![],
            drills: vec![],
            running: vec![],
            tasks: vec![],
            repositories: vec![],
            fleet: None,
        })),
        token: RwLock::new(token),
        alive: RwLock::new(Instant::now()),
    });
    // Render the first (empty) snapshot's metrics: the service is up before it has looked.
    let first = shared.snapshot();
    shared.publish(first.as_ref().clone());
    let server = match listen.listen_addr().map_err(ServeError::Listen)? {
        Some(addr) => {
            let tls = match (&svc_cfg.tls_cert, &svc_cfg.tls_key) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                _ => None,
            };
            let s = http::start(addr, shared.clone(), tls)?;
            tracing::info!(addr = %s.addr, tls = tls.is_some(), "serving status, API and metrics");
            Some(s)
        }
        None => None,
    };
    let (ask, asked) = mpsc::channel::<Arc<Workload>>();
    let (tell, answers) = mpsc::channel::<Observation>();
    let rt = opts.runtime.clone();
    std::thread::Builder::new()
        .name("holdfast-observer".into())
        .spawn(move || {
            let mut last_beat: Option<Instant> = None;
            let mut last_fleet: Option<Instant> = None;
            while let Ok(mut w) = asked.recv() {
                // Coalesce: only the newest request counts.
                while let Ok(newer) = asked.try_recv() {
                    w = newer;
                }
                let every = w
                    .service
                    .heartbeat()
                    .to_std()
                    .unwrap_or(Duration::from_secs(300));
                let beat = last_beat.is_none_or(|t| t.elapsed() >= every);
                if beat {
                    last_beat = Some(Instant::now());
                }
                let fleet = last_fleet.is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
                if fleet {
                    last_fleet = Some(Instant::now());
                }
                if tell.send(observer::observe(&rt, &w, beat, fleet)).is_err() {
                    break;
                }
            }
        })
        .expect("spawn observer");
    let launcher = Launcher {
        exe: opts.exe.clone(),
        config: workload.path.clone(),
        state_dir: state_dir.clone(),
        scratch: opts.scratch.clone(),
    };
    let notifier = crate::notify::Notifier::new(&svc_cfg.notify, &state_dir, &host);
    let mut s = Service {
        opts,
        workload,
        config,
        launcher,
        journal,
        shared,
        started,
        host,
        jobs: Vec::new(),
        seen: None,
        ended: BTreeMap::new(),
        hold: BTreeMap::new(),
        local_failures: BTreeMap::new(),
        supervisor: Supervisor::default(),
        fleet: None,
        notifier,
        ask,
        answers,
        last_refresh: Instant::now(),
    };
    s.recover_journal();
    s.refresh();
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut usec);
    // Ping at least twice per watchdog interval.
    let ping_every = Duration::from_micros(usec / 2).min(Duration::from_secs(1));
    let mut last_ping = Instant::now();
    tracing::info!(workload = %s.workload.path.display(), host = %s.host, "holdfast service started");
    while !signals.stop.load(Ordering::Relaxed) {
        if signals.reload.swap(false, Ordering::Relaxed) {
            s.reload();
        }
        s.turn();
        *s.shared.alive.write().expect("not poisoned") = Instant::now();
        if watchdog && last_ping.elapsed() >= ping_every {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            last_ping = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    s.shutdown();
    if let Some(server) = server {
        server.stop();
    }
    Ok(())
}

impl Service {
    /// Ask the observer for a new observation.
    fn refresh(&mut self) {
        self.last_refresh = Instant::now();
        let _ = self.ask.send(self.workload.clone());
    }

    /// Record a job the service ran (or lost) in the source's repository; log if it cannot.
    fn record(&self, rec: JobRecord) {
        let w = &self.workload;
        let stored = w
            .source(&rec.source)
            .and_then(|s| w.repository_of(s))
            .ok_or_else(|| "the source has no repository".to_string())
            .and_then(|(name, cfg)| {
                self.opts
                    .runtime
                    .open_workload_repository(w, name, cfg, false)
                    .map_err(|e| e.to_string())
            })
            .and_then(|repo| {
                records::save(&repo, &Record::Job(rec.clone())).map_err(|e| e.to_string())
            });
        match stored {
            Ok(_) => {
                tracing::info!(source = %rec.source, job = %rec.job, state = ?rec.state, "recorded")
            }
            Err(e) => {
                tracing::error!(source = %rec.source, job = %rec.job, "cannot record the job in the repository: {e}")
            }
        }
    }

    fn failed(
        &self,
        source: &str,
        kind: Kind,
        started: DateTime<Utc>,
        seconds: f64,
        why: String,
    ) -> JobRecord {
        JobRecord {
            source: source.into(),
            job: match kind {
                Kind::Maintenance => "retention".into(),
                k => k.as_str().into(),
            },
            started,
            seconds,
            state: JobState::Failed,
            snapshot: None,
            messages: vec![why],
            host: self.host.clone(),
        }
    }

    /// Jobs a previous service lost (killed, crashed, host lost power): record each as failed.
    fn recover_journal(&mut self) {
        for e in self.journal.leftovers() {
            match e {
                Ok(e) => {
                    if e.pid != 0 && alive(e.pid) {
                        crate::runner::signal_group(e.pid, libc::SIGKILL);
                    }
                    let kind = match e.kind.as_str() {
                        "drill" => Kind::Drill,
                        "maintenance" => Kind::Maintenance,
                        _ => Kind::Backup,
                    };
                    tracing::warn!(source = %e.source, kind = %e.kind, "a job was interrupted when the service stopped; recording it as failed");
                    if e.source != "*" {
                        self.record(self.failed(
                            &e.source,
                            kind,
                            e.started,
                            (now() - e.started).num_milliseconds() as f64 / 1000.0,
                            format!("interrupted: the service (pid {}) stopped while this job ran (killed, crashed or the host went down); what it finished is kept, the repository stays consistent, and the job runs again when due", e.service_pid),
                        ));
                    }
                    self.journal.end(&e.source, &e.kind);
                }
                Err((p, why)) => {
                    tracing::error!(path = %p.display(), "unreadable journal entry removed: {why}");
                    self.journal.discard(&p);
                }
            }
        }
    }

    fn reload(&mut self) {
        match Workload::load(&self.opts.config) {
            Ok(w) => {
                if let Err(e) = w.service.validate() {
                    self.config.error = Some(e);
                } else {
                    tracing::info!("workload reloaded");
                    if w.service.listen != self.workload.service.listen {
                        tracing::warn!(
                            "[service] listen changed: it takes effect when the service restarts"
                        );
                    }
                    let token = w
                        .service
                        .token_file
                        .as_deref()
                        .map(http::read_token)
                        .transpose();
                    match token {
                        Ok(t) => {
                            *self.shared.token.write().expect("not poisoned") = t;
                            self.workload = Arc::new(w);
                            self.config.error = None;
                            self.config.loaded_at = now();
                            self.launcher.config = self.workload.path.clone();
                            self.seen = None;
                        }
                        Err(e) => self.config.error = Some(e.to_string()),
                    }
                }
            }
            Err(e) => self.config.error = Some(e.to_string()),
        }
        if let Some(e) = &self.config.error {
            tracing::error!("the new workload file is invalid; the previous one stays in use: {e}");
        }
        self.refresh();
    }

    fn turn(&mut self) {
        // 1. Jobs that ended.
        let mut i = 0;
        let mut any_ended = false;
        while i < self.jobs.len() {
            if let Some(out) = self.jobs[i].poll() {
                self.jobs.remove(i);
                self.finish(out);
                any_ended = true;
            } else {
                i += 1;
            }
        }
        if any_ended {
            self.refresh();
        }
        // 2. The newest observation.
        let mut fresh = false;
        while let Ok(mut o) = self.answers.try_recv() {
            if let Some(f) = o.fleet.take() {
                self.fleet = Some(f);
            }
            // Only an observation made after a job ended shows what it did.
            self.ended.retain(|_, end| *end >= o.at);
            self.seen = Some(o);
            fresh = true;
        }
        // 3. Replication tasks.
        if let Some(o) = &self.seen {
            let lag: Lag = o
                .sources
                .iter()
                .map(|s| (s.name.clone(), (s.replication_lag_seconds, s.rpo_seconds)))
                .collect();
            let wanted = o.replicated.clone();
            self.supervisor.sync(&wanted, &self.launcher);
            if !self.supervisor.poll(&self.launcher, &lag).is_empty() {
                fresh = true;
            }
        }
        // 4. Start what is due.
        self.schedule();
        if fresh || any_ended {
            self.publish();
        }
        if self.last_refresh.elapsed().as_secs() as i64
            >= self.workload.service.refresh().num_seconds().max(1)
        {
            self.refresh();
        }
    }

    fn schedule(&mut self) {
        let Some(o) = &self.seen else { return };
        let t = now();
        let running: Vec<(String, Kind)> = self
            .jobs
            .iter()
            .map(|j| (j.source.clone(), j.kind))
            .collect();
        let due: Vec<_> = o
            .wanted
            .iter()
            .filter(|w| !self.ended.contains_key(&(w.due.source.clone(), w.due.kind)))
            .filter(|w| {
                self.hold
                    .get(&(w.due.source.clone(), w.due.kind))
                    .is_none_or(|(until, _)| *until <= t)
            })
            .map(|w| w.due.clone())
            .collect();
        let d = schedule::decide(
            t,
            self.started,
            due,
            &running,
            self.workload.service.max_jobs,
            self.workload.service.jitter,
        );
        let wanted = o.wanted.clone();
        for e in d.expire {
            // Not tried again before its next regular slot.
            let interval = wanted
                .iter()
                .find(|w| w.due.source == e.source && w.due.kind == e.kind)
                .map(|w| w.interval)
                .unwrap_or_else(|| chrono::Duration::hours(1));
            let next = (e.due_at + interval).max(t + chrono::Duration::seconds(1));
            let n = self
                .hold
                .get(&(e.source.clone(), e.kind))
                .map(|h| h.1)
                .unwrap_or(0);
            self.hold.insert((e.source.clone(), e.kind), (next, n));
            tracing::warn!(source = %e.source, kind = e.kind.as_str(), "could not start within its start window: expired");
            if e.source != "*" {
                self.record(JobRecord {
                    source: e.source.clone(),
                    job: e.kind.as_str().into(),
                    started: e.due_at,
                    seconds: 0.0,
                    state: JobState::Expired,
                    snapshot: None,
                    messages: vec![format!(
                        "could not start within the class's start-window ({}) after it fell due: every job slot ([service] max-jobs = {}) was busy",
                        e.start_window.map(holdfast_policy::duration::show).unwrap_or_default(),
                        self.workload.service.max_jobs
                    )],
                    host: self.host.clone(),
                });
            }
        }
        for st in d.start {
            let w = wanted
                .iter()
                .find(|w| w.due.source == st.source && w.due.kind == st.kind)
                .cloned();
            let (random, window) = w
                .map(|w| (w.random, w.complete_window))
                .unwrap_or((false, None));
            self.start(&st.source, st.kind, random, window);
        }
    }

    fn start(&mut self, source: &str, kind: Kind, random: bool, window: Option<chrono::Duration>) {
        let entry = Entry {
            source: source.into(),
            kind: kind.as_str().into(),
            started: now(),
            pid: 0,
            service_pid: std::process::id(),
        };
        if let Err(e) = self.journal.begin(&entry) {
            tracing::error!("cannot write the job journal, not starting {source}: {e}");
            return;
        }
        let deadline = window.and_then(|w| w.to_std().ok());
        match self.launcher.start(source, kind, random, deadline) {
            Ok(job) => {
                let _ = self.journal.begin(&Entry {
                    pid: job.pid(),
                    ..entry
                });
                tracing::info!(source, kind = kind.as_str(), pid = job.pid(), "job started");
                self.jobs.push(job);
                self.publish();
            }
            Err(e) => {
                self.journal.end(source, kind.as_str());
                let why = format!(
                    "cannot start the job ({}): {e}",
                    self.launcher.exe.display()
                );
                tracing::error!("{why}");
                self.local_failures
                    .insert(source.into(), (now(), why.clone()));
                if source != "*" {
                    self.record(self.failed(source, kind, now(), 0.0, why));
                }
                self.ended.insert((source.into(), kind), now());
            }
        }
    }

    fn finish(&mut self, out: Outcome) {
        self.ended.insert((out.source.clone(), out.kind), now());
        let key = (out.source.clone(), out.kind);
        if out.worked() {
            self.hold.remove(&key);
        } else {
            // Retry with backoff: 30 s, 1 min, 2 min, ... at most 1 h.
            let n = self.hold.get(&key).map(|h| h.1).unwrap_or(0) + 1;
            let wait = chrono::Duration::seconds((30i64 << (n - 1).min(7)).min(3600));
            self.hold.insert(key, (now() + wait, n));
        }
        if out.worked() {
            tracing::info!(source = %out.source, kind = out.kind.as_str(), seconds = out.seconds, code = ?out.code(), "job ended");
            if out.kind == Kind::Backup {
                self.local_failures.remove(&out.source);
            }
        } else {
            let why = out.error();
            tracing::error!(source = %out.source, kind = out.kind.as_str(), "job failed: {why}");
            if out.kind == Kind::Backup {
                self.local_failures
                    .insert(out.source.clone(), (out.started, why.clone()));
            }
            // A job that reported (protect's lines, drill records) wrote its own records;
            // the service records only what no record says: an error before any job, a job
            // it stopped, a child that died.
            if out.source != "*" && !out.reported() {
                self.record(self.failed(&out.source, out.kind, out.started, out.seconds, why));
            }
        }
        self.journal.end(&out.source, out.kind.as_str());
    }

    fn publish(&mut self) {
        let mut snap = Snapshot {
            at: now(),
            host: self.host.clone(),
            started: self.started,
            version: env!("CARGO_PKG_VERSION").into(),
            config: self.config.clone(),
            status: None,
            sources: vec![],
            jobs: vec![],
            drills: vec![],
            running: self
                .jobs
                .iter()
                .map(|j| RunningJob {
                    source: j.source.clone(),
                    kind: j.kind.as_str().into(),
                    started: j.started,
                    pid: j.pid(),
                })
                .collect(),
            tasks: self.supervisor.states(),
            repositories: vec![],
            fleet: self.fleet.clone(),
        };
        if let Some(o) = &self.seen {
            snap.at = o.at;
            snap.status = Some(o.report.clone());
            snap.sources = o.sources.clone();
            snap.jobs = o.jobs.clone();
            snap.drills = o.drills.clone();
            snap.repositories = o.repositories.clone();
        }
        for s in &mut snap.sources {
            if let Some((at, why)) = self.local_failures.get(&s.name) {
                if s.last_success.is_none_or(|ok| ok < *at) {
                    s.failing = true;
                    if s.last_failure.is_none_or(|f| f < *at) {
                        s.last_failure = Some(*at);
                        s.last_failure_message = Some(why.clone());
                    }
                }
            }
        }
        // Before the first observation (and right after a reload) the sources are unknown,
        // not well: the notifier waits rather than resolve what still fires.
        if snap.status.is_some() {
            let alerts = crate::alerts::evaluate(&snap);
            self.notifier.observe(&alerts, now());
        }
        self.shared.publish(snap);
    }

    fn shutdown(&mut self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        let timeout = self.workload.service.stop_timeout();
        tracing::info!(
            running = self.jobs.len(),
            "stopping: running jobs get {}",
            holdfast_policy::duration::show(timeout)
        );
        let until = Instant::now() + timeout.to_std().unwrap_or(Duration::from_secs(60));
        while !self.jobs.is_empty() {
            if Instant::now() >= until {
                for j in &mut self.jobs {
                    j.stop(format!(
                        "stopped: the service shut down and the job did not finish within [service] stop-timeout ({}); what it finished is kept and it runs again when due",
                        holdfast_policy::duration::show(timeout)
                    ));
                }
            }
            let mut i = 0;
            while i < self.jobs.len() {
                if let Some(out) = self.jobs[i].poll() {
                    self.jobs.remove(i);
                    self.finish(out);
                } else {
                    i += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.supervisor.stop_all();
        tracing::info!("holdfast service stopped");
    }
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}
