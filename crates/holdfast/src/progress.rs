//! Progress on a terminal (indicatif) or as plain log lines.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use holdfast_core::progress::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// Reports progress to stderr: a bar on a terminal, a line per phase otherwise.
pub struct CliProgress {
    bar: Option<ProgressBar>,
    quiet: bool,
    /// The phase and when it began.
    state: Mutex<(String, Instant)>,
    /// Files and bytes done in this phase: counted without a lock, since dozens of restore
    /// workers report every file.
    files: AtomicU64,
    bytes: AtomicU64,
}

impl CliProgress {
    pub fn new(quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg:>10} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {prefix}",
                )
                .expect("valid template"),
            );
            b
        });
        CliProgress {
            bar,
            quiet,
            state: Mutex::new((String::new(), Instant::now())),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }
}

impl Progress for CliProgress {
    fn phase(&self, name: &str) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *s = (name.to_string(), Instant::now());
        self.files.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.reset();
            b.set_length(0);
            b.set_message(name.to_string());
        }
    }
    fn add_total(&self, _files: u64, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc_length(bytes);
        }
    }
    fn inc(&self, files: u64, bytes: u64) {
        let done = self.files.fetch_add(files, Ordering::Relaxed) + files;
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            // The count is redrawn every 128 files (formatting it for each one was a cost).
            if files > 0 && done % 128 < files {
                b.set_prefix(format!("{done} files"));
            }
            b.inc(bytes);
        }
    }
    fn warn(&self, message: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("warning: {message}")),
            None => eprintln!("warning: {message}"),
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !self.quiet && self.bar.is_none() && !s.0.is_empty() {
            tracing::info!(
                "{}: {} files, {} bytes in {:.2?}",
                s.0,
                self.files.load(Ordering::Relaxed),
                self.bytes.load(Ordering::Relaxed),
                s.1.elapsed()
            );
        }
    }
}
