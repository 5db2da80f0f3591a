//! The command line: clap definitions, dispatch, and the exit statuses every command maps to.
//!
//! - `oneshot`: `check`, `plan`, `apply`. `report`: their table and JSON.
//! - `run`: the daemon with its real edges (OS signals, file watcher, watchdog) wired in.
//! - `status`: `vztmpld status`. `resolve`: `vztmpld resolve`. `demo`, `sim`: the simulator (feature `sim`).

mod available;
#[cfg(feature = "sim")]
mod demo;
mod logs;
mod oneshot;
mod report;
mod resolve;
mod run;
#[cfg(feature = "sim")]
mod sim;
mod status;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
pub use logs::LogWriter;

/// Keeps Proxmox VE container-template caches warm, declaratively, across whole clusters.
#[derive(Debug, Parser)]
#[command(name = "vztmpld", version = env!("VZTMPLD_VERSION"), about)]
pub struct Cli {
    /// Log level (overridden by RUST_LOG).
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    /// Log format: human-readable text, or one JSON object per line for shipping.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Whether the command wants worker threads: the simulator generates and hashes template bytes, which
    /// would hold up everything else on one thread. The daemon and the one-shots wait on the network almost
    /// all the time, and run on one thread: measured at fleet scale, 15–20 % less CPU per pass than on two
    /// workers (no wake-ups across threads), and one allocator arena fewer.
    pub fn wants_worker_threads(&self) -> bool {
        #[cfg(feature = "sim")]
        if matches!(self.command, Command::Demo { .. } | Command::Sim { .. }) {
            return true;
        }
        false
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a configuration offline (exit 0 when valid, 1 with the problems otherwise).
    Check {
        /// The configuration file.
        #[arg(short, long, default_value = "/etc/vztmpld/config.yaml")]
        config: PathBuf,
    },
    /// Observe the clusters and print what would be downloaded (exit 0: all cached, 2: downloads pending,
    /// 1: something is blocked).
    Plan {
        /// The configuration file.
        #[arg(short, long, default_value = "/etc/vztmpld/config.yaml")]
        config: PathBuf,
        /// Print a table (text) or JSON for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        /// Read the daemon's learned node fingerprints from this state directory (default: the config's
        /// state_dir); only read, never needed.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// List what the clusters' appliance indexes offer, and on which nodes (like `pveam available`).
    Available {
        /// The configuration file.
        #[arg(short, long, default_value = "/etc/vztmpld/config.yaml")]
        config: PathBuf,
        /// Only this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// A spec (`debian-12`) or a word in the file name.
        filter: Option<String>,
        /// Print a table (text) or JSON for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Run one reconcile pass: download what is missing and follow it to the end (exit 0 when converged).
    Apply {
        /// The configuration file.
        #[arg(short, long, default_value = "/etc/vztmpld/config.yaml")]
        config: PathBuf,
        /// Print a table (text) or JSON for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        /// Read the daemon's learned node fingerprints from this state directory (default: the config's
        /// state_dir); only read, never needed.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Run the daemon: reconcile on an interval, hot-reload the config, serve status and metrics.
    Run {
        /// The configuration file.
        #[arg(short, long, default_value = "/etc/vztmpld/config.yaml")]
        config: PathBuf,
        /// Status server address (default: server.listen from the config, else 127.0.0.1:9811).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Where to keep what the daemon learns (default: the config's state_dir, else $STATE_DIRECTORY as
        /// systemd sets it; without any, nothing persists).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Show a running daemon's status: nodes × templates.
    Status {
        /// The daemon's status server.
        #[arg(long, default_value = crate::daemon::DEFAULT_LISTEN)]
        addr: String,
        /// The status server's bearer token (server.token_file), when it has one.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print a table (text) or JSON for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Ask a running daemon which file to use for a template on a node, e.g. `pct create 101 $(vztmpld resolve
    /// pve1 debian-12)`. Prints the volid; exit 0 cached, 1 missing (or downloading, or unknown), 2 blocked.
    Resolve {
        /// The node.
        node: String,
        /// A spec (`debian-12`, `alpine-3.22`) or a file name, matched as in the configuration.
        template: String,
        /// The cluster, when the node's name is in more than one.
        #[arg(long)]
        cluster: Option<String>,
        /// Wait up to this long for it to be cached (e.g. `60s`; at most 15m).
        #[arg(long)]
        wait: Option<String>,
        /// Re-list the node's storages first (one or two API calls) instead of answering from the last pass.
        #[arg(long)]
        fresh: bool,
        /// The daemon's status server.
        #[arg(long, default_value = crate::daemon::DEFAULT_LISTEN)]
        addr: String,
        /// The status server's bearer token (server.token_file), when it has one.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Start the built-in simulated cluster and the daemon against it (examples/demo.yaml). Ctrl-C stops both.
    #[cfg(feature = "sim")]
    Demo {
        /// Status server address.
        #[arg(long, default_value = crate::daemon::DEFAULT_LISTEN)]
        listen: SocketAddr,
    },
    /// Print a shell completion script (e.g. `vztmpld completions bash > /etc/bash_completion.d/vztmpld`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page in roff (e.g. `vztmpld man | man -l -`).
    Man,
    /// Serve a simulated Proxmox VE cluster over HTTPS (for tests, benchmarks and demos).
    #[cfg(feature = "sim")]
    Sim {
        /// Address to listen on; port 0 picks a free port. Binds loopback unless told otherwise.
        #[arg(long, default_value = "127.0.0.1:8006")]
        listen: SocketAddr,
        /// Scenario YAML (default: the built-in 3-node cluster).
        #[arg(long)]
        scenario: Option<PathBuf>,
    },
}

/// How a command ended, as the process's exit status (documented in README: exit statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: valid, converged, every template cached.
    Success,
    /// 1: invalid configuration, something failed or is blocked, or an error.
    Failure,
    /// 2: `plan`: downloads are pending (as `terraform plan -detailed-exitcode`); `resolve`: blocked.
    Pending,
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(status: ExitStatus) -> Self {
        match status {
            ExitStatus::Success => Self::SUCCESS,
            ExitStatus::Failure => Self::from(1),
            ExitStatus::Pending => Self::from(2),
        }
    }
}

/// Runs the parsed command. Errors are returned, not printed: the binary prints them once.
pub async fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    match cli.command {
        #[cfg(feature = "sim")]
        Command::Sim { listen, scenario } => sim::run(listen, scenario).await,
        Command::Check { config } => oneshot::check(&config),
        Command::Run { config, listen, state_dir } => run::daemon(config, listen, state_dir).await,
        Command::Status { addr, token_file, output } => {
            status::run(&addr, token_file.as_deref(), output == Output::Json).await
        }
        Command::Resolve { node, template, cluster, wait, fresh, addr, token_file } => {
            let ask = resolve::Ask { node, template, cluster, wait, fresh };
            resolve::run(&addr, token_file.as_deref(), ask).await
        }
        #[cfg(feature = "sim")]
        Command::Demo { listen } => demo::run(listen).await,
        Command::Plan { config, output, state_dir } => oneshot::plan(&config, output, state_dir).await,
        Command::Available { config, cluster, filter, output } => {
            available::run(&config, cluster.as_deref(), filter.as_deref(), output).await
        }
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "vztmpld", &mut out);
            print(&String::from_utf8_lossy(&out))?;
            Ok(ExitStatus::Success)
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut out)?;
            print(&String::from_utf8_lossy(&out))?;
            Ok(ExitStatus::Success)
        }
        Command::Apply { config, output, state_dir } => oneshot::apply(&config, output, state_dir).await,
    }
}

/// Writes a command's result to stdout. A closed pipe (`vztmpld plan | head`) surfaces as a `BrokenPipe`
/// error, which the binary treats as success.
fn print(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn every_flag_and_command_has_help() {
        fn walk(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{path} --{id} has no help text");
            }
            for sub in cmd.get_subcommands() {
                assert!(sub.get_about().is_some(), "{path} {} has no help text", sub.get_name());
                walk(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        Cli::command().debug_assert();
        walk(&Cli::command(), "vztmpld");
    }
}
