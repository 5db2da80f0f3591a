//! The simulated fleet: one `pve-sim` server per cluster, all in this process, and the daemon's config for it.

use std::path::Path;
use std::time::Duration;

use pve_sim::{Scenario, SimServer};

/// The shape of every simulated cluster.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub clusters: usize,
    pub nodes: usize,
    pub latency: Duration,
}

/// The ten templates every node is to have: each resolves in the built-in index.
pub const SPECS: &[&str] = &[
    "almalinux-10",
    "alpine-3.22",
    "alpine-3.23",
    "archlinux-base",
    "debian-12-standard",
    "debian-13-standard",
    "fedora-44",
    "rockylinux-10",
    "ubuntu-22.04",
    "ubuntu-24.04",
];

/// One cluster's scenario: `local` on every node plus one shared NFS storage, both with vztmpl content.
pub fn scenario(shape: Shape) -> Scenario {
    let mut yaml = String::from("nodes:\n");
    for i in 1..=shape.nodes {
        yaml.push_str(&format!("  - {{name: pve{i}}}\n"));
    }
    yaml.push_str(
        "storages:\n  - {id: local, content: [vztmpl, iso, backup]}\n  - {id: local-lvm, type: lvmthin, content: [images, rootdir]}\n  - {id: nfs, type: nfs, content: [vztmpl, iso]}\n",
    );
    // Small files and fast links: the cold start measures planning and task following, not bytes.
    yaml.push_str("default_template_size: 65536\nbandwidth: 1000000000\n");
    let mut s = Scenario::parse(&yaml).expect("bench scenario");
    s.latency = shape.latency;
    s.quirks.auth_failure_delay = Duration::ZERO;
    s
}

/// Starts `shape.clusters` simulators.
pub async fn start(shape: Shape, dir: &Path) -> Vec<SimServer> {
    let mut sims = Vec::with_capacity(shape.clusters);
    for _ in 0..shape.clusters {
        let sim = SimServer::start(scenario(shape), dir.to_path_buf(), "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("simulator");
        sims.push(sim);
    }
    sims
}

/// The cluster's name in the daemon's config.
pub fn cluster_name(i: usize) -> String {
    format!("c{i:03}")
}

/// Writes the daemon's config (and one secret file per cluster) for the fleet; returns its path.
pub fn write_config(sims: &[SimServer], dir: &Path) -> std::path::PathBuf {
    let mut text = String::from("interval: 1h\ndownloads: {poll_interval: 200ms}\nclusters:\n");
    for (i, sim) in sims.iter().enumerate() {
        let name = cluster_name(i);
        let secret = dir.join(format!("{name}.secret"));
        std::fs::write(&secret, &sim.token_secret).expect("secret");
        text.push_str(&format!(
            "  - name: {name}\n    endpoints: [{}]\n    auth: {{token_id: \"{}\", secret_file: {}}}\n    tls: {{fingerprint: \"{}\"}}\n",
            sim.endpoint,
            sim.token_id,
            secret.display(),
            sim.fingerprint
        ));
    }
    text.push_str("templates:\n");
    for spec in SPECS {
        text.push_str(&format!("  - template: {spec}\n"));
    }
    let path = dir.join("fleet.yaml");
    std::fs::write(&path, text).expect("config");
    path
}

/// Reads `/_sim/stats` of every simulator.
pub struct Stats {
    client: reqwest::Client,
}

/// Totals over the fleet.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub requests: u64,
    pub downloads_started: u64,
    pub downloads_succeeded: u64,
}

impl Stats {
    pub fn new() -> Self {
        // The bench's own control requests to its own simulators on loopback.
        let tls = pve_sim::tls::client_config_unverified().expect("tls");
        Self { client: reqwest::Client::builder().tls_backend_preconfigured(tls).build().expect("client") }
    }

    /// `/_sim/` requests are not API requests: they are not counted.
    pub async fn totals(&self, sims: &[SimServer]) -> Totals {
        let mut t = Totals::default();
        for sim in sims {
            let v: serde_json::Value = self
                .client
                .get(format!("{}/_sim/stats", sim.control))
                .header("Authorization", sim.auth_header())
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .expect("stats")
                .json()
                .await
                .expect("stats json");
            t.requests += v["requests_total"].as_u64().unwrap_or(0);
            t.downloads_started += v["downloads_started"].as_u64().unwrap_or(0);
            t.downloads_succeeded += v["downloads_succeeded"].as_u64().unwrap_or(0);
        }
        t
    }
}
