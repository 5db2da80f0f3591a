//! A cluster whose API never answers is bounded per pass: its observation ends at the observe deadline (not after
//! the client's timeouts and retries on every call), and from then on each pass sends one probe until it answers.
//! Real sockets, paused time: the deadlines pass without waiting.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use pve_sim::testing::{RawBehaviour, RawServer};
use vztmpld::reconcile::Fleet;

#[tokio::test(start_paused = true)]
async fn a_stalled_cluster_costs_one_deadline_then_one_probe_per_pass() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Headers, then silence: every request waits for its timeout.
    let stall = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"data\":";
    let stuck = RawServer::start(RawBehaviour::Stall(stall.to_vec())).await;
    let dir = common::temp_dir("stalled");
    std::fs::write(dir.join("s.secret"), "secret").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("s.secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let text = format!(
        "clusters:\n  - name: stuck\n    endpoints: [{}]\n    auth: {{token_id: \"vztmpld@pve!cache\", secret_file: s.secret}}\n    tls: {{fingerprint: \"{}\"}}\ntemplates:\n  - template: alpine-3.22\n",
        stuck.endpoint, stuck.fingerprint
    );
    std::fs::write(dir.join("c.yaml"), text).unwrap();
    // The default client options: 35 s per request, 3 attempts — minutes per pass without a deadline.
    let fleet = Fleet::new(vztmpld::config::load(&dir.join("c.yaml")).unwrap(), Default::default()).unwrap();

    let started = tokio::time::Instant::now();
    let first = fleet.reconcile(|_, _| None, |_, _| {}).await;
    let took = started.elapsed();
    let error = format!("{:?}", first[0].plan.items);
    assert!(error.contains("not observed within 60s"), "{error}");
    assert!(took <= Duration::from_secs(61), "ended at the observe deadline: {took:?}");

    let before = stuck.requests.load(Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let second = fleet.reconcile(|_, _| None, |_, _| {}).await;
    let took = started.elapsed();
    let error = format!("{:?}", second[0].plan.items);
    assert!(error.contains("each pass sends one probe"), "{error}");
    assert!(took <= Duration::from_secs(11), "one probe, bounded: {took:?}");
    assert_eq!(stuck.requests.load(Ordering::SeqCst) - before, 1, "one request: the probe");
}
