//! The Proxmox client against the simulator over real HTTPS: TLS modes, auth errors, retries, failover,
//! lenient decoding.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

use common::{ALPINE, TestSim, cluster_config, fast_options};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use vztmpld::config::TlsMode;
use vztmpld::pve::{Client, PveError};
use vztmpld::reconcile::connection;

#[tokio::test]
async fn pinned_fingerprint_is_accepted_and_a_wrong_pin_refused() {
    let sim = TestSim::start().await;
    let client = Client::new(connection(&cluster_config(&sim.server, "lab")), fast_options()).unwrap();
    assert_eq!(client.version().await.unwrap()["version"], "9.1.4");

    let mut cfg = cluster_config(&sim.server, "lab");
    cfg.tls = TlsMode::Pinned(vec![[0xAB; 32]]);
    let err = Client::new(connection(&cfg), fast_options()).unwrap().version().await.unwrap_err();
    let PveError::Tls { detail, .. } = &err else { panic!("expected a TLS error, got {err}") };
    assert!(detail.contains(&sim.server.fingerprint), "shows what the server presented: {detail}");
    assert!(detail.contains("does not match tls.fingerprint"), "{detail}");
    assert!(!err.is_retryable());
    assert_eq!(sim.stats().await["requests"]["GET /version"], 1, "the pinned-out request never reached the API");
}

#[tokio::test]
async fn ca_file_and_insecure_modes() {
    let sim = TestSim::start().await;
    let mut cfg = cluster_config(&sim.server, "lab");
    cfg.tls = TlsMode::CaFile { path: "sim.pem".into(), pem: sim.server.cert_pem.clone().into_bytes() };
    assert!(Client::new(connection(&cfg), fast_options()).unwrap().version().await.is_ok());

    let other = pve_sim::tls::SimIdentity::generate(&[]).unwrap();
    cfg.tls = TlsMode::CaFile { path: "other.pem".into(), pem: other.cert_pem.into_bytes() };
    let err = Client::new(connection(&cfg), fast_options()).unwrap().version().await.unwrap_err();
    assert!(matches!(err, PveError::Tls { .. }), "{err}");

    cfg.tls = TlsMode::Insecure;
    assert!(Client::new(connection(&cfg), fast_options()).unwrap().version().await.is_ok());
}

#[tokio::test]
async fn wrong_token_gives_a_clear_401() {
    let sim = TestSim::start().await;
    let mut cfg = cluster_config(&sim.server, "lab");
    cfg.secret = vztmpld::config::Secret::new("zz-not-the-secret-zz".into());
    let err = Client::new(connection(&cfg), fast_options()).unwrap().version().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    let text = err.to_string();
    assert!(text.starts_with("cluster lab: GET /version: HTTP 401:"), "{text}");
    assert!(text.contains("'Authentication failed!'"), "the reason phrase is shown: {text}");
    assert!(text.contains("check auth.token_id and the secret"), "{text}");
    assert!(!text.contains("zz-not-the-secret"), "never the secret: {text}");
}

#[tokio::test]
async fn errors_show_the_body_message_or_explain_the_status() {
    let sim = TestSim::start().await;
    let client = Client::new(connection(&cluster_config(&sim.server, "lab")), fast_options()).unwrap();
    let err = client.download_appliance("pve1", "local", "nope_1_amd64.tar.xz").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "cluster lab: POST /nodes/pve1/aplinfo: HTTP 400: Parameter verification failed. (template: no such template)"
    );

    let old = TestSim::with("quirks: {no_error_message: true}").await;
    let client = Client::new(connection(&cluster_config(&old.server, "old")), fast_options()).unwrap();
    let err = client.templates_on("pve1", "nope").await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("HTTP 500: 'storage 'nope' does not exist': the Proxmox handler failed"), "{text}");
}

#[tokio::test]
async fn retries_proxy_errors_but_not_handler_errors() {
    let sim = TestSim::start().await;
    let client = Client::new(connection(&cluster_config(&sim.server, "lab")), fast_options()).unwrap();
    sim.control(Method::POST, "faults", Some(json!({"path": "/nodes/{node}/aplinfo", "status": 595, "count": 2})))
        .await;
    assert!(client.appliances("pve1").await.is_ok(), "two 595s, then success on the third try");
    sim.control(Method::POST, "faults", Some(json!({"path": "/version", "status": 500, "count": 1}))).await;
    let err = client.version().await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert!(!err.is_retryable());
    let stats = sim.stats().await;
    assert_eq!(stats["requests"]["GET /nodes/{node}/aplinfo"], 3);
    assert_eq!(stats["requests"]["GET /version"], 1);
}

#[tokio::test]
async fn offline_node_is_retryable_595() {
    let sim = TestSim::start().await;
    sim.control(Method::POST, "nodes/pve3", Some(json!({"online": false}))).await;
    let client = Client::new(connection(&cluster_config(&sim.server, "lab")), fast_options()).unwrap();
    let err = client.appliances("pve3").await.unwrap_err();
    assert_eq!(err.status(), Some(595));
    assert!(err.is_retryable());
    assert!(err.to_string().contains("/nodes/pve3/aplinfo"), "{err}");
    assert!(err.to_string().contains("unreachable"), "{err}");
}

#[tokio::test]
async fn fails_over_to_the_next_endpoint() {
    let sim = TestSim::start().await;
    // A port that was free a moment ago: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut cfg = cluster_config(&sim.server, "lab");
    cfg.endpoints.insert(0, reqwest::Url::parse(&format!("https://{dead}")).unwrap());
    let client = Client::new(connection(&cfg), fast_options()).unwrap();
    assert!(client.version().await.is_ok());
    assert!(client.version().await.is_ok(), "sticks to the endpoint that answered");

    cfg.endpoints.remove(1);
    let err = Client::new(connection(&cfg), fast_options()).unwrap().version().await.unwrap_err();
    assert!(matches!(err, PveError::Connect { .. }), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn decodes_numbers_sent_as_strings() {
    let sim = TestSim::with(&format!(
        "quirks: {{numbers_as_strings: true}}\ntemplates: [{{storage: shared, file: {ALPINE}}}]"
    ))
    .await;
    let client = Client::new(connection(&cluster_config(&sim.server, "lab")), fast_options()).unwrap();
    let storages = client.cluster_storages().await.unwrap();
    assert!(storages.iter().any(|s| s.shared == Some(true) && s.maxdisk.is_some_and(|m| m > 0)));
    let volumes = client.templates_on("pve2", "shared").await.unwrap();
    assert_eq!(volumes[0].size, Some(1024 * 1024));
}

#[tokio::test]
async fn task_calls_go_to_the_upids_node() {
    let sim = TestSim::start().await;
    let client = Client::new(connection(&cluster_config(&sim.server, "lab")), fast_options()).unwrap();
    let upid = client.download_appliance("pve2", "local", ALPINE).await.unwrap();
    let status = loop {
        let s = client.task_status(&upid).await.unwrap();
        if s.is_stopped() {
            break s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(status.succeeded(), "{status:?}");
    let (lines, total) = client.task_log(&upid, 0).await.unwrap();
    assert_eq!(lines.len() as u64, total);
    assert_eq!(lines.last().unwrap().t, "TASK OK");
    assert!(client.active_downloads("pve2").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_redirect_is_an_error_that_names_where_it_pointed() {
    use pve_sim::testing::{RawBehaviour, RawServer};
    let answer =
        b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere.example/api2/json/version\r\nContent-Length: 0\r\n\r\n";
    let server = RawServer::start(RawBehaviour::Answer(answer.to_vec())).await;
    let sim = TestSim::start().await;
    let mut cfg = cluster_config(&sim.server, "lab");
    cfg.endpoints = vec![reqwest::Url::parse(&server.endpoint).unwrap()];
    cfg.tls = TlsMode::Pinned(vec![vztmpld::config::parse_fingerprint(&server.fingerprint).unwrap()]);
    let err = Client::new(connection(&cfg), fast_options()).unwrap().version().await.unwrap_err();
    assert_eq!(err.status(), Some(302), "{err}");
    let text = err.to_string();
    assert!(text.contains("redirected to http://elsewhere.example/api2/json/version"), "{text}");
    assert!(text.contains("Proxmox never redirects"), "{text}");
    assert!(!err.is_retryable());
    assert_eq!(server.requests.load(std::sync::atomic::Ordering::Relaxed), 1, "asked once, never followed");
}

#[tokio::test]
async fn a_secret_a_header_cannot_carry_is_not_blamed_on_tls() {
    let sim = TestSim::start().await;
    let mut cfg = cluster_config(&sim.server, "lab");
    cfg.secret = vztmpld::config::Secret::new("abc\ndef".into());
    let err = Client::new(connection(&cfg), fast_options()).unwrap_err();
    assert!(matches!(err, PveError::Setup { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("secret") && !text.contains("TLS") && !text.contains("abc"), "{text}");
}

#[tokio::test]
async fn the_connect_hint_names_the_real_endpoint() {
    let sim = TestSim::start().await;
    let mut cfg = cluster_config(&sim.server, "lab");
    cfg.endpoints = vec![reqwest::Url::parse("https://127.0.0.1:1").unwrap()];
    let err = Client::new(connection(&cfg), fast_options()).unwrap().version().await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("https://127.0.0.1:1 reachable from here"), "{text}");
    assert!(!text.contains("8006"), "{text}");
}

/// A config for the simulator's pve1 and pve2 endpoints, with `tls`.
fn two_endpoints(sim: &TestSim, tls: TlsMode) -> vztmpld::config::ClusterConfig {
    let mut cfg = cluster_config(&sim.server, "lab");
    cfg.endpoints = sim.server.nodes[..2].iter().map(|n| reqwest::Url::parse(&n.endpoint).unwrap()).collect();
    cfg.tls = tls;
    cfg
}

fn pin(fp: &str) -> [u8; 32] {
    vztmpld::config::parse_fingerprint(fp).unwrap()
}

async fn endpoint(sim: &TestSim, node: &str, up: bool) {
    let a = sim.control(Method::POST, &format!("endpoints/{node}"), Some(json!({"up": up}))).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn one_pinned_node_is_enough_once_the_others_are_learned() {
    let sim = TestSim::start().await;
    let pve1 = pin(&sim.server.nodes[0].fingerprint);

    // Without learning, failing over to pve2 meets a certificate nobody pinned, and the error says why.
    let unlearned = Client::new(connection(&two_endpoints(&sim, TlsMode::Pinned(vec![pve1]))), fast_options()).unwrap();
    endpoint(&sim, "pve1", false).await;
    let err = unlearned.version().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PveError::Tls { .. }), "{text}");
    assert!(text.contains("Each Proxmox node has its own certificate") && text.contains("tls.fingerprints"), "{text}");
    assert!(text.contains(&sim.server.nodes[1].fingerprint), "shows what pve2 presented: {text}");
    endpoint(&sim, "pve1", true).await;

    // Learned over the pinned connection while pve1 answers: then pve2 is trusted.
    let client = Client::new(connection(&two_endpoints(&sim, TlsMode::Pinned(vec![pve1]))), fast_options()).unwrap();
    assert_eq!(client.learn_node_fingerprints(std::time::Duration::from_secs(3600)).await.unwrap(), 2);
    endpoint(&sim, "pve1", false).await;
    assert_eq!(client.version().await.unwrap()["version"], "9.1.4", "failed over to pve2");
}

#[tokio::test]
async fn every_node_pinned_or_the_cluster_ca_survive_a_dead_first_endpoint() {
    let sim = TestSim::start().await;
    endpoint(&sim, "pve1", false).await;
    let all = sim.server.nodes.iter().map(|n| pin(&n.fingerprint)).collect();
    let pinned = Client::new(connection(&two_endpoints(&sim, TlsMode::Pinned(all))), fast_options()).unwrap();
    assert!(pinned.version().await.is_ok());
    let ca = TlsMode::CaFile { path: "pve-root-ca.pem".into(), pem: sim.server.cert_pem.clone().into_bytes() };
    let with_ca = Client::new(connection(&two_endpoints(&sim, ca)), fast_options()).unwrap();
    assert!(with_ca.version().await.is_ok());
}

/// A cluster whose only endpoint is a closed loopback port: every connection is refused at once.
fn closed_port() -> vztmpld::pve::Connection {
    vztmpld::pve::Connection {
        cluster: "lab".into(),
        endpoints: vec!["https://127.0.0.1:1".parse().unwrap()],
        token_id: "vztmpld@pve!cache".into(),
        secret: "s".into(),
        trust: vztmpld::pve::Trust::Insecure,
    }
}

/// The client's retries follow the shared backoff policy: under paused time, a call to a closed port takes
/// exactly the policy's waits (300 ms, then 600 ms, each with up to 100 ms of jitter) — no sleeps, no clock.
#[tokio::test(start_paused = true)]
async fn retries_wait_as_the_backoff_policy_says() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = vztmpld::pve::ClientOptions { attempts: 3, backoff: Duration::from_millis(300), ..fast_options() };
    let client = Client::new(closed_port(), options).unwrap();
    let started = tokio::time::Instant::now();
    let err = client.version().await.unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, PveError::Connect { .. }), "{err}");
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_millis(1100), "{waited:?}");
}

/// A failed call keeps what failed underneath as its source: a caller can walk the chain by type.
#[tokio::test]
async fn a_connect_error_keeps_the_socket_error_as_its_source() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::new(closed_port(), vztmpld::pve::ClientOptions { attempts: 1, ..fast_options() }).unwrap();
    let err = client.version().await.unwrap_err();
    assert!(matches!(err, PveError::Connect { .. }), "{err}");
    let mut chain: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&err);
    let mut refused = false;
    while let Some(e) = chain {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        chain = e.source();
    }
    assert!(refused, "the chain reaches the refused connection: {err:?}");
}
