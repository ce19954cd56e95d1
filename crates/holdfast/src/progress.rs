//! Progress on a terminal (indicatif) or as plain log lines.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use holdfast_core::progress::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// Reports progress to stderr: a bar on a terminal, a line per phase otherwise.
pub struct CliProgress {
    bar: Option<ProgressBar>,
    quiet: bool,
    state: Mutex<(String, Instant, u64, u64)>,
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
            state: Mutex::new((String::new(), Instant::now(), 0, 0)),
        }
    }
}

impl Progress for CliProgress {
    fn phase(&self, name: &str) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *s = (name.to_string(), Instant::now(), 0, 0);
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
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.2 += files;
            s.3 += bytes;
            if let Some(b) = &self.bar {
                b.set_prefix(format!("{} files", s.2));
            }
        }
        if let Some(b) = &self.bar {
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
                s.2,
                s.3,
                s.1.elapsed()
            );
        }
    }
}
