//! The `holdfast` command line.

#[macro_use]
mod output;
mod cli;
mod commands;
mod password;
mod progress;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes (documented in the README).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A fatal error.
    pub const ERROR: u8 = 1;
    /// Invalid usage (clap also uses 2).
    pub const USAGE: u8 = 2;
    /// Completed with warnings: something was skipped or could not be restored.
    pub const WARNINGS: u8 = 3;
    /// The repository does not exist.
    pub const NO_REPOSITORY: u8 = 10;
    /// A compliance control fails (`status`, `protect`), or `plan` found high-severity
    /// anti-patterns, or a drill failed.
    pub const NONCOMPLIANT: u8 = 4;
    /// Wrong password.
    pub const WRONG_PASSWORD: u8 = 12;
}

fn code_for(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause
            .downcast_ref::<holdfast_policy::config::ConfigError>()
            .is_some()
        {
            return exit::USAGE;
        }
        // `serve` with an invalid workload (its ConfigError is transparent, so it is not in
        // the chain itself) or a `--listen` the workload would refuse (e.g. not loopback and
        // no token-file): a usage error, like every other command's.
        if let Some(
            holdfast_service::ServeError::Config(_) | holdfast_service::ServeError::Listen(_),
        ) = cause.downcast_ref::<holdfast_service::ServeError>()
        {
            return exit::USAGE;
        }
        if let Some(holdfast_policy::jobs::JobError::UnknownSource { .. }) =
            cause.downcast_ref::<holdfast_policy::jobs::JobError>()
        {
            return exit::USAGE;
        }
        let runtime = cause.downcast_ref::<holdfast_policy::runtime::RuntimeError>();
        if let Some(holdfast_policy::jobs::JobError::UnknownSource { .. }) =
            runtime.and_then(|r| r.job())
        {
            return exit::USAGE;
        }
        let job = cause
            .downcast_ref::<holdfast_policy::jobs::JobError>()
            .or_else(|| runtime.and_then(|r| r.job()));
        let from_job = match job {
            Some(holdfast_policy::jobs::JobError::Engine(e)) => Some(e),
            _ => None,
        };
        if let Some(err) = cause
            .downcast_ref::<holdfast_core::Error>()
            .or_else(|| runtime.and_then(|r| r.engine()))
            .or(from_job)
        {
            return match err {
                holdfast_core::Error::NoRepository { .. } => exit::NO_REPOSITORY,
                holdfast_core::Error::WrongPassword { .. } => exit::WRONG_PASSWORD,
                holdfast_core::Error::Invalid(_) => exit::USAGE,
                _ => exit::ERROR,
            };
        }
    }
    exit::ERROR
}

/// At most two malloc arenas per core (glibc). glibc makes up to eight per core, and a restore
/// from object storage runs 32 reading threads: each thread's arena kept its freed pack
/// buffers, about 110 MB more peak memory (kernel sources from Garage: 316 -> 233 MB) for no
/// gain in speed. `MALLOC_ARENA_MAX` in the environment still decides, if set.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = i32::try_from(2 * cores).unwrap_or(i32::MAX);
        // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let args = cli::Cli::parse();
    let filter = match args.global.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // The service logs what it does (info) with times; a command only warnings, without.
    let service = matches!(args.command, cli::Command::Serve { .. });
    let filter = if service && args.global.verbose == 0 {
        "info"
    } else {
        filter
    };
    let env_filter = tracing_subscriber::EnvFilter::try_from_env("HOLDFAST_LOG")
        .unwrap_or_else(|_| filter.into());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match (args.global.log_format == "json", service) {
        (true, _) => fmt.json().flatten_event(true).init(),
        (false, true) => fmt.init(),
        (false, false) => fmt.without_time().init(),
    }
    let json = args.global.json;
    let result = commands::run(args);
    output::flush();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = code_for(&e);
            if json {
                let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
                let v = serde_json::json!({ "error": chain.join(": "), "causes": chain, "exit_code": code });
                outln!("{v}");
            }
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(code)
        }
    }
}
