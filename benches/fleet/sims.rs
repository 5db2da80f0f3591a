//! The simulated fleet: one `pve-sim` server per cluster — in this process, or all of them in a child process
//! (`--fleet-process`, this bench re-run with `--serve-fleet`) — and the daemon's config for it.

use std::path::Path;
use std::time::Duration;

use pve_sim::{Scenario, SimServer};
use serde::{Deserialize, Serialize};

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

/// What the bench needs of one simulated cluster, wherever it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cluster {
    pub endpoint: String,
    pub token_id: String,
    pub token_secret: String,
    pub fingerprint: String,
    pub control: String,
    /// The cluster CA, hex DER.
    pub ca_hex: String,
    pub nodes: Vec<String>,
}

impl Cluster {
    fn of(sim: &SimServer) -> Self {
        Self {
            endpoint: sim.endpoint.clone(),
            token_id: sim.token_id.clone(),
            token_secret: sim.token_secret.clone(),
            fingerprint: sim.fingerprint.clone(),
            control: sim.control.clone(),
            ca_hex: hex::encode(&sim.cert_der),
            nodes: sim.nodes.iter().map(|n| n.node.clone()).collect(),
        }
    }

    pub fn auth_header(&self) -> String {
        format!("PVEAPIToken={}={}", self.token_id, self.token_secret)
    }

    pub fn ca_der(&self) -> Vec<u8> {
        hex::decode(&self.ca_hex).expect("CA hex")
    }
}

/// The running fleet.
pub struct Fleet {
    pub clusters: Vec<Cluster>,
    host: Host,
}

enum Host {
    InProcess(Vec<SimServer>),
    Child(std::process::Child),
}

async fn start_servers(shape: Shape, dir: &Path) -> Vec<SimServer> {
    let mut sims = Vec::with_capacity(shape.clusters);
    for _ in 0..shape.clusters {
        let sim = SimServer::start(scenario(shape), dir.to_path_buf(), "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("simulator");
        sims.push(sim);
    }
    sims
}

/// Starts `shape.clusters` simulators in this process.
pub async fn start(shape: Shape, dir: &Path) -> Fleet {
    let sims = start_servers(shape, dir).await;
    Fleet { clusters: sims.iter().map(Cluster::of).collect(), host: Host::InProcess(sims) }
}

/// Starts them in a child process (this bench with `--serve-fleet`), which prints them as one JSON line.
pub fn start_in_child(shape: Shape) -> Fleet {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .args(["--serve-fleet", "--clusters", &shape.clusters.to_string(), "--nodes", &shape.nodes.to_string()])
        .args(["--latency", &humantime::format_duration(shape.latency).to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the fleet process");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).expect("the fleet's line");
    let clusters = serde_json::from_str(&line).expect("the fleet's JSON");
    Fleet { clusters, host: Host::Child(child) }
}

/// `--serve-fleet`: serves the simulators until stdin closes (the bench ended, however it ended).
pub async fn serve(shape: Shape, dir: &Path) {
    let sims = start_servers(shape, dir).await;
    let clusters: Vec<Cluster> = sims.iter().map(Cluster::of).collect();
    println!("{}", serde_json::to_string(&clusters).expect("JSON"));
    let _ = tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink())).await;
    for sim in sims {
        sim.shutdown().await;
    }
}

impl Fleet {
    /// The process's id when the fleet runs in a child.
    pub fn child_pid(&self) -> Option<u32> {
        match &self.host {
            Host::Child(c) => Some(c.id()),
            Host::InProcess(_) => None,
        }
    }

    pub async fn stop(self) {
        match self.host {
            Host::InProcess(sims) => {
                for sim in sims {
                    sim.shutdown().await;
                }
            }
            Host::Child(mut child) => {
                drop(child.stdin.take());
                let _ = child.wait();
            }
        }
    }
}

/// The cluster's name in the daemon's config.
pub fn cluster_name(i: usize) -> String {
    format!("c{i:03}")
}

/// Writes the daemon's config (and one secret file per cluster) for the fleet; returns its path.
pub fn write_config(sims: &[Cluster], dir: &Path) -> std::path::PathBuf {
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
    pub async fn totals(&self, sims: &[Cluster]) -> Totals {
        let mut t = Totals::default();
        for sim in sims {
            let v = pve_sim::testing::stats_of(&self.client, &sim.control, &sim.auth_header()).await;
            t.requests += v["requests_total"].as_u64().unwrap_or(0);
            t.downloads_started += v["downloads_started"].as_u64().unwrap_or(0);
            t.downloads_succeeded += v["downloads_succeeded"].as_u64().unwrap_or(0);
        }
        t
    }
}
