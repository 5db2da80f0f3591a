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
    // The demo's templates are big and the mirror slow (96 MiB at 6 MB/s: about 17 s each, two rounds per node),
    // long enough to open a second terminal and watch the percentages move (wget logs every 32 MiB; vztmpld
    // interpolates between). Only these three are big: the simulator hashes every index entry at start.
    let big = 96 * 1024 * 1024;
    let mirror_files = [
        "alpine-3.22-default_20250617_amd64.tar.xz",
        "debian-13-standard_13.6-1_amd64.tar.zst",
        "ubuntu-24.04-standard_24.04-2_amd64.tar.zst",
    ]
    .into_iter()
    .map(|f| (f.to_string(), big))
    .collect();
    let scenario = Scenario { mirror_files, bandwidth: 6_000_000, ..Scenario::default() };
    let dir = std::env::temp_dir().join(format!("vztmpld-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sim = SimServer::start(scenario, dir.clone(), "127.0.0.1:0".parse()?).await?;
    let config_path = dir.join("demo.yaml");
    std::fs::write(dir.join("demo.secret"), &sim.token_secret)?;
    set_private(&dir.join("demo.secret"));
    std::fs::write(&config_path, inject(DEMO_YAML, &sim)?)?;
    eprintln!(
        "vztmpld demo: simulated Proxmox VE cluster at {} (pve1, pve2, pve3)\n              status: http://{listen}/api/v1/status   metrics: http://{listen}/metrics\n              in another terminal: {} status --addr {listen}\n              stop: Ctrl-C",
        sim.endpoint,
        own_command()
    );
    let result = super::run::run_daemon(ConfigSource::file(config_path, Default::default()), Some(listen)).await;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    Ok(ExitStatus::Success)
}

/// How the person who started the demo runs vztmpld: through cargo when cargo started it (it sets
/// `CARGO_MANIFEST_DIR`), else as this very binary.
fn own_command() -> String {
    if std::env::var_os("CARGO_MANIFEST_DIR").is_some() {
        let release = std::env::current_exe().is_ok_and(|p| p.components().any(|c| c.as_os_str() == "release"));
        return if release { "cargo run --release --".into() } else { "cargo run --".into() };
    }
    match std::env::current_exe() {
        Ok(p)
            if p.file_name().is_some_and(|n| n == "vztmpld")
                && std::env::var_os("PATH")
                    .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("vztmpld") == p)) =>
        {
            "vztmpld".into()
        }
        Ok(p) => p.display().to_string(),
        Err(_) => "vztmpld".into(),
    }
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
