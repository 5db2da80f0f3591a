//! The command line: clap definitions and dispatch to the library's commands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::sim::{Scenario, SimServer};

/// Keeps Proxmox VE container-template caches warm, declaratively, across whole clusters.
#[derive(Debug, Parser)]
#[command(name = "vztmpld", version, about)]
pub struct Cli {
    /// Log level (overridden by RUST_LOG).
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a simulated Proxmox VE cluster over HTTPS (for tests, benchmarks and demos).
    Sim {
        /// Address to listen on; port 0 picks a free port. Binds loopback unless told otherwise.
        #[arg(long, default_value = "127.0.0.1:8006")]
        listen: SocketAddr,
        /// Scenario YAML (default: the built-in 3-node cluster).
        #[arg(long)]
        scenario: Option<PathBuf>,
    },
}

/// Runs the parsed command; the binary maps the result to an exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Sim { listen, scenario } => run_sim(listen, scenario).await,
    }
}

async fn run_sim(listen: SocketAddr, scenario: Option<PathBuf>) -> anyhow::Result<i32> {
    let (scenario, dir) = match scenario {
        Some(path) => Scenario::load(&path)?,
        None => (Scenario::default(), std::env::current_dir().unwrap_or_default()),
    };
    let server = SimServer::start(scenario, dir, listen).await?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", server.ready_line())?;
        out.flush()?;
    }
    wait_for_stop_signal().await?;
    server.shutdown().await;
    Ok(0)
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
