//! The Proxmox client's connections, against servers that do what pveproxy and the network do to them: keep a
//! connection alive, end it while the client holds it idle, send too much, stop sending.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{TestSim, cluster_config, fast_options};
use pve_sim::testing::{RawBehaviour, RawServer};
use vztmpld::config::TlsMode;
use vztmpld::pve::{ApiAnswer, Client, ClientOptions, PveError};

const VERSION: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 28\r\n\r\n{\"data\":{\"version\":\"9.1.4\"}}";

/// A client for `server` (pinned to its certificate) that counts its failed attempts.
async fn client_for(server: &RawServer, options: ClientOptions) -> (Client, Arc<AtomicUsize>) {
    let sim = TestSim::start().await;
    let mut cfg = cluster_config(&sim.server, "lab");
    cfg.endpoints = vec![reqwest::Url::parse(&server.endpoint).unwrap()];
    cfg.tls = TlsMode::Pinned(vec![vztmpld::config::parse_fingerprint(&server.fingerprint).unwrap()]);
    let client = Client::new(vztmpld::reconcile::connection(&cfg), options).unwrap();
    let failed = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&failed);
    client.set_observer(Arc::new(move |answer| {
        if let ApiAnswer::Failed(_) = answer {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }));
    (client, failed)
}

#[tokio::test]
async fn a_kept_connection_serves_the_next_request_until_the_pass_closes_it() {
    let server = RawServer::start(RawBehaviour::KeepAlive(VERSION.to_vec())).await;
    let (client, failed) = client_for(&server, fast_options()).await;
    for _ in 0..3 {
        assert_eq!(client.version().await.unwrap()["version"], "9.1.4");
    }
    assert_eq!(server.requests.load(Ordering::Relaxed), 3);
    assert_eq!(server.connections.load(Ordering::Relaxed), 1, "one TLS handshake for three requests");
    client.close_idle_connections();
    assert_eq!(client.version().await.unwrap()["version"], "9.1.4");
    assert_eq!(server.connections.load(Ordering::Relaxed), 2, "a new connection after the pass let go of the old");
    assert_eq!(failed.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_get_on_a_connection_the_server_ended_goes_out_again_on_a_new_one() {
    // The server answers as if it kept the connection, then ends it while the client holds it idle (pveproxy
    // does this after 5 s; a restart does it at any time).
    let server = RawServer::start(RawBehaviour::HangUpAfter(VERSION.to_vec(), Duration::from_millis(30))).await;
    let (client, failed) = client_for(&server, fast_options()).await;
    for round in 1..=3 {
        assert_eq!(client.version().await.unwrap()["version"], "9.1.4", "round {round}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(server.requests.load(Ordering::Relaxed), 3, "each request answered once");
    assert_eq!(server.connections.load(Ordering::Relaxed), 3);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no failed attempt, no retry after a backoff");
}

#[tokio::test]
async fn an_answer_larger_than_allowed_is_refused_declared_or_not() {
    let options = ClientOptions { max_body: 16, ..fast_options() };
    let server = RawServer::start(RawBehaviour::KeepAlive(VERSION.to_vec())).await;
    let (client, _) = client_for(&server, options).await;
    let err = client.version().await.unwrap_err();
    assert!(matches!(err, PveError::Decode { .. }), "{err}");
    assert!(err.to_string().contains("answer larger than 16 bytes"), "{err}");
    assert!(!err.is_retryable());

    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"data\":{\"versio\r\n10\r\nn\":\"9.1.4\"}}    \r\n0\r\n\r\n";
    let server = RawServer::start(RawBehaviour::KeepAlive(chunked.to_vec())).await;
    let (client, _) = client_for(&server, options).await;
    let err = client.version().await.unwrap_err();
    assert!(err.to_string().contains("answer larger than 16 bytes"), "{err}");
    let (client, _) = client_for(&server, fast_options()).await;
    assert_eq!(client.version().await.unwrap()["version"], "9.1.4", "the same body is read whole under the cap");
}

#[tokio::test]
async fn a_server_that_stops_sending_is_a_timeout_naming_the_call() {
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 28\r\n\r\n{\"data\"";
    let server = RawServer::start(RawBehaviour::Stall(head.to_vec())).await;
    let options = ClientOptions { timeout: Duration::from_millis(300), attempts: 1, ..fast_options() };
    let (client, failed) = client_for(&server, options).await;
    let err = client.version().await.unwrap_err();
    assert!(matches!(err, PveError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("GET /version: no answer within"), "{err}");
    assert!(err.is_retryable());
    assert_eq!(failed.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn an_answer_cut_off_is_named_so() {
    let cut = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 28\r\n\r\n{\"data\"";
    let server = RawServer::start(RawBehaviour::Answer(cut.to_vec())).await;
    let options = ClientOptions { attempts: 1, ..fast_options() };
    let (client, _) = client_for(&server, options).await;
    let err = client.version().await.unwrap_err();
    assert!(err.to_string().contains("answer cut off"), "{err}");
}
