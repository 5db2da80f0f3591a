//! The `vztmpld` binary: a thin edge over the library. Errors are printed once, here; a closed stdout
//! (`vztmpld plan | head`) is success, as in ripgrep.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use vztmpld::cli::{Cli, ExitStatus, LogFormat};

fn main() -> ExitCode {
    // reqwest is built without a default crypto provider; ring must be installed before any client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    init_logging(&cli);
    let mut builder = if cli.wants_worker_threads() {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vztmpld: cannot start the async runtime: {e}");
            return ExitStatus::Failure.into();
        }
    };
    match runtime.block_on(vztmpld::cli::run(cli)) {
        Ok(status) => status.into(),
        Err(e) if is_broken_pipe(&e) => ExitStatus::Success.into(),
        Err(e) => {
            eprintln!("vztmpld: {}", one_line(&e));
            ExitStatus::Failure.into()
        }
    }
}

/// The error and its causes on one line, each cause once: library errors say their cause in their own words
/// and also keep it as `source()` (so callers can match it by type), which `{:#}` would print twice.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for part in e.chain().map(ToString::to_string) {
        if !line.contains(part.as_str()) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&part);
        }
    }
    line
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().filter_map(|c| c.downcast_ref::<std::io::Error>()).any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn init_logging(cli: &Cli) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log_level));
    // The file watcher's own per-event logs would loop with a log file beside the configuration.
    let filter = match "notify=info".parse() {
        Ok(quiet) => filter.add_directive(quiet),
        Err(_) => filter,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(vztmpld::cli::LogWriter);
    // journald stamps every line itself.
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    match (cli.log_format, under_journald) {
        (LogFormat::Json, _) => builder.json().flatten_event(true).init(),
        (LogFormat::Text, true) => builder.without_time().with_target(false).with_ansi(false).init(),
        (LogFormat::Text, false) => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
