//! How many Proxmox API calls, and how much time, one reconcile pass costs on a converged cluster.
//! Run: `cargo bench --bench observe`. Prints figures; asserts nothing (machines here are shared and noisy).
#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark that cannot set up fails, loudly.

use std::time::{Duration, Instant};

use pve_sim::{Scenario, SimServer};
use vztmpld::reconcile::{self, Fleet};

fn scenario(nodes: usize, shared: bool) -> Scenario {
    let mut yaml = String::from("nodes:\n");
    for i in 1..=nodes {
        yaml.push_str(&format!("  - {{name: pve{i}}}\n"));
    }
    yaml.push_str("storages:\n  - {id: local, content: [vztmpl]}\n");
    if shared {
        yaml.push_str("  - {id: nfs, type: nfs, content: [vztmpl]}\n");
    }
    let mut s = Scenario::parse(&yaml).expect("bench scenario");
    s.quirks.auth_failure_delay = Duration::ZERO;
    s
}

fn config(server: &SimServer, dir: &std::path::Path) -> vztmpld::config::Config {
    std::fs::write(dir.join("s"), &server.token_secret).expect("secret");
    let text = format!(
        "clusters:\n  - name: lab\n    endpoints: [{}]\n    auth: {{token_id: \"{}\", secret_file: s}}\n    tls: {{fingerprint: \"{}\"}}\ndownloads: {{poll_interval: 100ms}}\ntemplates:\n  - template: alpine-3.22\n  - template: debian-13-standard\n  - template: ubuntu-24.04\n",
        server.endpoint, server.token_id, server.fingerprint
    );
    vztmpld::config::parse(&text, &dir.join("c.yaml")).expect("bench config")
}

async fn requests(server: &SimServer, client: &reqwest::Client) -> u64 {
    let v = pve_sim::testing::stats_of(client, &server.endpoint, &server.auth_header()).await;
    v["requests_total"].as_u64().unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    println!("{:>6} {:>7} {:>14} {:>16} {:>14}", "nodes", "shared", "calls/apply", "calls/idle pass", "ms/idle pass");
    for (nodes, shared) in [(3, true), (3, false), (10, true), (10, false), (30, true), (30, false)] {
        let dir = std::env::temp_dir().join(format!("vztmpld-bench-{}-{nodes}-{shared}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let server = SimServer::start(scenario(nodes, shared), dir.clone(), "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("sim");
        let tls = pve_sim::tls::client_config_trusting(&server.cert_der).expect("tls");
        let http = reqwest::Client::builder().tls_backend_preconfigured(tls).build().expect("client");
        let cfg = config(&server, &dir);
        let fleet = Fleet::new(cfg, Default::default()).expect("clients");

        let before = requests(&server, &http).await;
        let plan = fleet.plan().await;
        let _ = reconcile::apply::apply(&fleet, &plan, None).await;
        let apply_calls = requests(&server, &http).await - before;

        // Converged: each further pass only observes. Average a few.
        let rounds = 5;
        let before = requests(&server, &http).await;
        let started = Instant::now();
        for _ in 0..rounds {
            let plan = fleet.plan().await;
            assert!(plan.downloads.is_empty(), "converged");
        }
        let elapsed = started.elapsed() / rounds;
        let idle_calls = (requests(&server, &http).await - before) / u64::from(rounds);
        println!("{nodes:>6} {shared:>7} {apply_calls:>14} {idle_calls:>16} {:>14.1}", elapsed.as_secs_f64() * 1000.0);
        server.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
