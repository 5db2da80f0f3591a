//! The daemon's schedule in virtual time (`tokio::time::pause`): backoff of a failing cluster capped at the
//! interval, reconcile-now, and the debounce of config-change hints — minutes of daemon life in
//! milliseconds, with no sleeps. The cluster's endpoint is a closed loopback port, so every pass fails
//! fast and retryably without a simulator.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use vztmpld::daemon::shared::Shared;
use vztmpld::daemon::status::PassOutcome;
use vztmpld::daemon::{ConfigSource, Control, Daemon, Trigger, channel};

fn config(interval: &str) -> std::path::PathBuf {
    let dir = common::temp_dir("schedule");
    std::fs::write(dir.join("s"), "d6a1f0b2-1111-2222-3333-444455556666").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("s"), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let path = dir.join("vztmpld.yaml");
    std::fs::write(&path, text(interval)).unwrap();
    path
}

fn text(interval: &str) -> String {
    // Port 1 on loopback: connection refused at once.
    format!(
        "interval: {interval}\nclusters:\n  - name: lab\n    endpoints: [https://127.0.0.1:1]\n    auth: {{token_id: \"vztmpld@pve!cache\", secret_file: s}}\n    tls: {{insecure: true}}\ntemplates:\n  - template: alpine-3.22\n"
    )
}

/// Passes finished so far: (trigger, outcome).
fn finished(shared: &Shared) -> Option<(Trigger, PassOutcome, bool)> {
    shared.read(|s| s.last_pass.as_ref().map(|p| (p.trigger, p.outcome, p.finished_at.is_some())))
}

/// Waits in virtual time for the next finished pass, which must have `trigger`; returns when it finished.
async fn next_pass(shared: &Shared, seen: &mut usize, trigger: Trigger) -> Instant {
    for _ in 0..100_000 {
        let count = shared.read(passes);
        if count > *seen {
            let (t, outcome, done) = finished(shared).unwrap();
            if done {
                *seen = count;
                assert_eq!(t, trigger, "pass #{count}");
                assert_eq!(outcome, PassOutcome::Degraded);
                return Instant::now();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no {trigger} pass within 1000 virtual seconds");
}

/// Finished passes so far: here every pass fails, and the cluster entry's failure counter grows by one per
/// failing pass (wall-clock timestamps cannot tell passes apart in virtual time).
fn passes(s: &vztmpld::daemon::status::Status) -> usize {
    s.clusters.iter().flat_map(|c| &c.nodes).map(|n| n.failures as usize).max().unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn a_failing_cluster_backs_off_to_the_interval_and_requests_and_edits_run_soon() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let path = config("40s");
    let daemon = Daemon::new(ConfigSource::file(&path, common::fast_options())).unwrap().with_seed(11);
    let shared: Arc<Shared> = Arc::clone(daemon.shared());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (controls, stream) = channel();
    let task = tokio::spawn(daemon.run(listener, stream));

    let t0 = Instant::now();
    let mut seen = 0;
    let mut at = next_pass(&shared, &mut seen, Trigger::Start).await;
    assert!(at - t0 < Duration::from_secs(1), "the first pass runs at once");
    let cluster = shared.read(|s| s.clusters[0].clone());
    assert_eq!(cluster.nodes[0].name, vztmpld::reconcile::plan::Scope::Cluster, "the whole cluster is blocked");
    assert!(cluster.error.as_deref().unwrap().contains("cannot reach"), "{:?}", cluster.error);

    // 5 s, 10 s, 20 s (each up to +20 %), then capped at the 40 s interval.
    let mut waits = Vec::new();
    for _ in 0..5 {
        let next = next_pass(&shared, &mut seen, Trigger::Retry).await;
        waits.push(next - at);
        at = next;
    }
    eprintln!("retry waits in virtual time: {waits:?}");
    for (wait, base) in waits.iter().zip([5u64, 10, 20, 40, 40]) {
        let base = Duration::from_secs(base);
        let most = if base == Duration::from_secs(40) { base } else { base.mul_f64(1.2) };
        assert!(*wait >= base && *wait <= most + Duration::from_secs(1), "{wait:?} vs {base:?}");
    }
    let failures = shared.read(|s| s.clusters[0].nodes[0].failures);
    assert_eq!(failures, 6);

    // Reconcile now: runs at once, not at the next retry.
    controls.send(Control::Reconcile(Trigger::Api)).await.unwrap();
    let ran = next_pass(&shared, &mut seen, Trigger::Api).await;
    assert!(ran - at < Duration::from_secs(1), "{:?}", ran - at);

    // An edit: hints are debounced (300 ms of quiet), then the new config runs a pass.
    std::fs::write(&path, text("1h")).unwrap();
    controls.send(Control::ConfigChanged).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    controls.send(Control::ConfigChanged).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(shared.read(|s| s.config.generation), 1, "still within the debounce");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(shared.read(|s| s.config.generation), 2, "re-read 300 ms after the last hint");
    next_pass(&shared, &mut seen, Trigger::Config).await;
    assert!(shared.read(|s| s.clusters[0].nodes[0].next_retry.is_some() && s.next_pass_at.is_some()));

    controls.send(Control::Stop).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_closed_control_stream_stops_the_daemon() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let daemon = Daemon::new(ConfigSource::file(config("1h"), common::fast_options())).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (controls, stream) = channel();
    let task = tokio::spawn(daemon.run(listener, stream));
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(controls);
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap().unwrap();
}
