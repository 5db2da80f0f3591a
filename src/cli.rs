//! The command line: clap definitions and dispatch to the library's commands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config;
use crate::reconcile::{self, apply::Outcome, plan::ItemState};
use crate::report;
use crate::sim::{Scenario, SimServer};

/// Keeps Proxmox VE container-template caches warm, declaratively, across whole clusters.
#[derive(Debug, Parser)]
#[command(name = "vztmpld", version, about)]
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
        #[arg(short, long, default_value = "/etc/vztmpld/config.yaml")]
        config: PathBuf,
    },
    /// Observe the clusters and print what would be downloaded (exit 0: all cached, 2: downloads pending,
    /// 1: something is blocked).
    Plan {
        #[arg(short, long, default_value = "/etc/vztmpld/config.yaml")]
        config: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Run one reconcile pass: download what is missing and follow it to the end (exit 0 when converged).
    Apply {
        #[arg(short, long, default_value = "/etc/vztmpld/config.yaml")]
        config: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Run the daemon: reconcile on an interval, hot-reload the config, serve status and metrics.
    Run {
        #[arg(short, long, default_value = "/etc/vztmpld/config.yaml")]
        config: PathBuf,
        /// Status server address (default: server.listen from the config, else 127.0.0.1:9811).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Show a running daemon's status: nodes × templates.
    Status {
        #[arg(long, default_value = crate::daemon::DEFAULT_LISTEN)]
        addr: String,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Start the built-in simulated cluster and the daemon against it (examples/demo.yaml). Ctrl-C stops both.
    Demo {
        /// Status server address.
        #[arg(long, default_value = crate::daemon::DEFAULT_LISTEN)]
        listen: SocketAddr,
    },
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
        Command::Check { config } => Ok(check(&config)),
        Command::Run { config, listen } => run_daemon(config, listen).await,
        Command::Status { addr, output } => crate::status_cmd::run(&addr, output == Output::Json).await,
        Command::Demo { listen } => crate::demo::run(listen).await,
        Command::Plan { config, output } => plan_or_apply(&config, output, false).await,
        Command::Apply { config, output } => plan_or_apply(&config, output, true).await,
    }
}

async fn run_daemon(config: PathBuf, listen: Option<SocketAddr>) -> anyhow::Result<i32> {
    let opts = crate::daemon::DaemonOptions { config_path: config, listen, client_options: Default::default() };
    match crate::daemon::run(opts).await {
        Ok(()) => Ok(0),
        Err(e) => {
            eprintln!("{e}");
            Ok(1)
        }
    }
}

fn load_config(path: &std::path::Path) -> Option<config::Config> {
    match config::load(path) {
        Ok(c) => {
            for w in &c.warnings {
                tracing::warn!("{w}");
            }
            Some(c)
        }
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

fn check(path: &std::path::Path) -> i32 {
    let Some(c) = load_config(path) else { return 1 };
    println!(
        "{}: OK ({} cluster(s), {} template(s), interval {})",
        path.display(),
        c.clusters.len(),
        c.templates.len(),
        humantime::format_duration(c.interval)
    );
    0
}

async fn plan_or_apply(path: &std::path::Path, output: Output, apply: bool) -> anyhow::Result<i32> {
    let Some(cfg) = load_config(path) else { return Ok(1) };
    let clients = reconcile::clients(&cfg, Default::default())?;
    let observed = reconcile::observe_all(&cfg, &clients).await;
    let plan = reconcile::plan::plan(&cfg, &observed);
    if !apply {
        print!("{}", render(&plan, None, output));
        return Ok(if plan.has_downloads() {
            2
        } else if plan.has_blocked() {
            1
        } else {
            0
        });
    }
    reconcile::log_lookups(&plan);
    let bars =
        (output == Output::Text && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| progress_bars(&plan));
    let sink = bars.as_ref().map(|(_, sink)| sink.clone());
    let outcomes = reconcile::apply::apply(&cfg, &clients, &plan, sink).await;
    if let Some((multi, _)) = bars {
        let _ = multi.clear();
    }
    print!("{}", render(&plan, Some(&outcomes), output));
    let failed = outcomes.iter().any(|o| matches!(o, Outcome::Failed { .. }));
    let blocked = plan.items.iter().any(|i| matches!(i.state, ItemState::Blocked { .. }));
    Ok(i32::from(failed || blocked))
}

/// One bar per download, fed from the task logs' wget progress.
fn progress_bars(plan: &reconcile::plan::Plan) -> (indicatif::MultiProgress, reconcile::apply::ProgressSink) {
    let multi = indicatif::MultiProgress::new();
    let style = indicatif::ProgressStyle::with_template("{prefix:>40} [{bar:30}] {pos:>3}%")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bars: Vec<indicatif::ProgressBar> = plan
        .downloads
        .iter()
        .map(|d| {
            let bar = multi.add(indicatif::ProgressBar::new(100));
            bar.set_style(style.clone());
            bar.set_prefix(format!("{} → {}/{}", d.file, d.node, d.storage));
            bar
        })
        .collect();
    let sink: reconcile::apply::ProgressSink = std::sync::Arc::new(move |p: reconcile::apply::Progress| {
        if let (Some(bar), Some(pct)) = (bars.get(p.download), p.percent) {
            bar.set_position(u64::from(pct));
        }
    });
    (multi, sink)
}

fn render(plan: &reconcile::plan::Plan, outcomes: Option<&[Outcome]>, output: Output) -> String {
    match output {
        Output::Text => report::render_text(plan, outcomes),
        Output::Json => report::render_json(plan, outcomes) + "\n",
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
