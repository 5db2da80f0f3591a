//! The resolve API under load: open-loop requests at a fixed rate (each one its own task, so a slow answer never
//! delays the ones due after it), random (cluster, node, spec) over the whole fleet: configured specs that hit,
//! version-agnostic specs, and specs that miss. Each is timed from its send to its last byte: the generator's
//! timer wakes up to a millisecond late (tokio's timer resolution), which is the generator's, not the daemon's.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::sims;

/// Latencies and counts of one load run.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub requests: usize,
    pub errors: usize,
    pub hits: usize,
    pub achieved_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What deploy tools ask: configured specs, looser specs the same files satisfy, and specs nothing satisfies.
const ASKED: &[&str] = &["debian-12-standard", "alpine", "ubuntu-24.04", "debian", "fedora-44", "centos-9", "gentoo"];

/// `rate` requests per second for `duration` against the daemon at `addr`.
pub async fn load(addr: SocketAddr, clusters: usize, nodes: usize, rate: u32, duration: Duration) -> Load {
    // One keep-alive pool, as a deploy tool's HTTP client (Terraform's http provider, Ansible's uri) has.
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().expect("client");
    let total = (rate as f64 * duration.as_secs_f64()) as usize;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let start = Instant::now();
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + period * i as u32;
        tokio::time::sleep_until(due.into()).await;
        // xorshift: spread, not secrecy.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let cluster = sims::cluster_name(seed as usize % clusters);
        let node = format!("pve{}", (seed >> 20) as usize % nodes + 1);
        let spec = ASKED[(seed >> 40) as usize % ASKED.len()];
        let url = format!("http://{addr}/api/v1/resolve?cluster={cluster}&node={node}&template={spec}");
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let answer = http.get(url).send().await;
            let code = answer.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
            if let Ok(r) = answer {
                let _ = r.bytes().await;
            }
            (sent.elapsed(), code)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let (mut errors, mut hits) = (0, 0);
    for t in tasks {
        let (took, code) = t.await.expect("load task");
        match code {
            200 => hits += 1,
            404 => {}
            _ => errors += 1,
        }
        latencies.push(took.as_secs_f64() * 1000.0);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)));
    Load {
        requests: total,
        errors,
        hits,
        achieved_rps: total as f64 / elapsed,
        p50_ms: at(0.50).copied().unwrap_or(0.0),
        p99_ms: at(0.99).copied().unwrap_or(0.0),
        max_ms: latencies.last().copied().unwrap_or(0.0),
    }
}
