//! `vztmpld demo`: the built-in simulated cluster and the daemon against it, with `examples/demo.yaml`.
//! The simulator's endpoint, token and fingerprint are filled in; TLS stays verified (pinned).

use std::net::SocketAddr;

use pve_sim::{Scenario, SimServer};

use super::ExitStatus;
use crate::daemon::ConfigSource;

/// The demo configuration, built into the binary.
pub(super) const DEMO_YAML: &str = include_str!("../../examples/demo.yaml");

/// Runs the demo until Ctrl-C.
pub(super) async fn run(listen: SocketAddr) -> anyhow::Result<ExitStatus> {
    // Bigger templates and a slower mirror than the test default, so downloads and progress are visible.
    let scenario = Scenario { default_template_size: 48 * 1024 * 1024, bandwidth: 16_000_000, ..Scenario::default() };
    let dir = std::env::temp_dir().join(format!("vztmpld-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sim = SimServer::start(scenario, dir.clone(), "127.0.0.1:0".parse()?).await?;
    let config_path = dir.join("demo.yaml");
    std::fs::write(dir.join("demo.secret"), &sim.token_secret)?;
    set_private(&dir.join("demo.secret"));
    std::fs::write(&config_path, inject(DEMO_YAML, &sim)?)?;
    eprintln!(
        "vztmpld demo: simulated Proxmox VE cluster at {} (pve1, pve2, pve3)\n              status: http://{listen}/api/v1/status   metrics: http://{listen}/metrics\n              try: vztmpld status --addr {listen}      stop: Ctrl-C",
        sim.endpoint
    );
    let result = super::run::run_daemon(ConfigSource::file(config_path, Default::default()), Some(listen)).await;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    Ok(ExitStatus::Success)
}

/// Points the demo config's first cluster at the simulator.
pub(super) fn inject(yaml: &str, sim: &SimServer) -> anyhow::Result<String> {
    let mut doc: yaml_serde::Value = yaml_serde::from_str(yaml)?;
    let cluster = doc
        .get_mut("clusters")
        .and_then(|c| c.get_mut(0))
        .ok_or_else(|| anyhow::anyhow!("examples/demo.yaml has no cluster"))?;
    cluster["endpoints"] = yaml_serde::Value::Sequence(vec![sim.endpoint.clone().into()]);
    cluster["auth"] = yaml_serde::from_str(&format!("{{token_id: \"{}\", secret_file: demo.secret}}", sim.token_id))?;
    cluster["tls"] = yaml_serde::from_str(&format!("{{fingerprint: \"{}\"}}", sim.fingerprint))?;
    Ok(yaml_serde::to_string(&doc)?)
}

#[cfg(unix)]
fn set_private(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn set_private(_path: &std::path::Path) {}
