//! The status server's connections are bounded: clients that never finish their headers are closed after the
//! header timeout, at most `MAX_CONNECTIONS` are served at once, and a well-behaved request still gets its
//! answer while hundreds of slow ones hold on (real sockets, paused time: the timeouts pass without waiting).
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vztmpld::daemon::listener::{HEADER_TIMEOUT, MAX_CONNECTIONS, serve};

#[tokio::test(start_paused = true)]
async fn slow_clients_are_closed_and_a_real_request_is_still_served() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/healthz", get(|| async { "ok\n" }));
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(serve(listener, app, stop.clone()));

    // More slow clients than the server serves at once, each stuck half-way through its headers.
    let mut slow = Vec::new();
    for _ in 0..MAX_CONNECTIONS + 44 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
        slow.push(s);
    }
    let started = tokio::time::Instant::now();
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("ok\n"), "{answer}");
    let waited = started.elapsed();
    assert!(waited <= HEADER_TIMEOUT * 3, "served once the slow ones timed out, not never: {waited:?}");

    // Every slow client was closed, none answered.
    for mut s in slow {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(HEADER_TIMEOUT * 3, s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a slow connection still open after the header timeout");
        assert!(!String::from_utf8_lossy(&buf).contains("200 OK"), "{}", String::from_utf8_lossy(&buf));
    }

    // An idle kept-alive connection is closed too, and a stop ends the server.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"));
    let closed = tokio::time::timeout(HEADER_TIMEOUT * 3, idle.read_to_end(&mut Vec::new())).await;
    assert!(closed.is_ok(), "an idle kept-alive connection is closed after the header timeout");
    stop.cancel();
    tokio::time::timeout(HEADER_TIMEOUT, server).await.unwrap().unwrap();
}
