//! `vztmpld run`: the daemon with its real edges wired in — OS signals, the file watcher and the systemd
//! watchdog become [`Control`] producers; the status listener is bound here.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::signal::unix::{SignalKind, signal};

use super::ExitStatus;
use crate::daemon::{ConfigSource, Control, ControlSender, Daemon, DaemonError, StateDirChoice, channel, watch};
use crate::pve::ClientOptions;

pub(super) async fn daemon(
    config: PathBuf,
    listen: Option<SocketAddr>,
    state_dir: Option<PathBuf>,
) -> anyhow::Result<ExitStatus> {
    // systemd's `StateDirectory=` sets `$STATE_DIRECTORY` (a colon-separated list when it names several).
    let environment = std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| std::env::split_paths(&v).next())
        .filter(|p| !p.as_os_str().is_empty());
    let choice = StateDirChoice { flag: state_dir, environment };
    run_daemon(ConfigSource::file(config, ClientOptions::default()).with_state_dir(choice), listen).await?;
    Ok(ExitStatus::Success)
}

/// Loads the configuration, binds the status listener, wires signals, watcher and watchdog, and runs until
/// SIGTERM or SIGINT.
pub(super) async fn run_daemon(source: ConfigSource, listen: Option<SocketAddr>) -> Result<(), DaemonError> {
    let (tx, controls) = channel();
    // Signal handlers first: from here on a signal is queued, never the default action.
    signals(tx.clone())?;
    let daemon = Daemon::new(source.clone())?;
    let addr = daemon.listen_addr(listen);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| DaemonError::Listen { addr, source })?;
    let watcher = watch::watch(source.path(), tx.clone())?;
    tracing::debug!(dirs = ?watcher.dirs, "watching the configuration");
    if let Some(period) = crate::daemon::watchdog_period() {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            while tx.send(Control::WatchdogTick).await.is_ok() {
                tick.tick().await;
            }
        });
    }
    drop(tx);
    let result = daemon.run(listener, controls).await;
    drop(watcher);
    result
}

/// SIGTERM and SIGINT stop, SIGHUP reloads.
fn signals(tx: ControlSender) -> Result<(), DaemonError> {
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    tokio::spawn(async move {
        loop {
            let control = tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM"); Control::Stop }
                _ = int.recv() => { tracing::info!("SIGINT"); Control::Stop }
                _ = hup.recv() => { tracing::info!("SIGHUP"); Control::Reload }
            };
            if tx.send(control).await.is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// Waits for SIGTERM or SIGINT (the commands that are not the daemon).
#[cfg_attr(not(feature = "sim"), allow(dead_code))]
pub(super) async fn stop_signal() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
