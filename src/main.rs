//! The `vztmpld` binary: a thin edge over the library.

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    // reqwest is built without a default crypto provider; ring must be installed before any client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = vztmpld::cli::Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vztmpld: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(vztmpld::cli::run(cli)) {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("vztmpld: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn init_logging(cli: &vztmpld::cli::Cli) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // journald stamps every line itself.
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    match (cli.log_format, under_journald) {
        (vztmpld::cli::LogFormat::Json, _) => builder.json().flatten_event(true).init(),
        (vztmpld::cli::LogFormat::Text, true) => builder.without_time().with_ansi(false).init(),
        (vztmpld::cli::LogFormat::Text, false) => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
