//! `vztmpld sim`: the simulator alone, printing its ready line, until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;

use pve_sim::{Scenario, SimServer};

use super::{ExitStatus, print};

pub(super) async fn run(listen: SocketAddr, scenario: Option<PathBuf>) -> anyhow::Result<ExitStatus> {
    let (scenario, dir) = match scenario {
        Some(path) => Scenario::load(&path)?,
        None => (Scenario::default(), std::env::current_dir().unwrap_or_default()),
    };
    let server = SimServer::start(scenario, dir, listen).await?;
    print(&format!("{}\n", server.ready_line()))?;
    super::run::stop_signal().await?;
    server.shutdown().await;
    Ok(ExitStatus::Success)
}
