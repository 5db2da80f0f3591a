//! The status server: `/healthz`, `/readyz`, `/api/v1/status`, `POST /api/v1/reconcile`, `/metrics`, and the
//! resolve API (`/api/v1/resolve`, `/api/v1/cache`, in `super::resolve`).
//! Loopback by default; it serves the daemon's snapshot and never blocks the reconcile loop.
//!
//! A web page must not drive it: state-changing requests from another origin are refused (CSRF), and on a
//! loopback address only loopback `Host` names are answered (DNS rebinding). With `server.token_file` every
//! endpoint but `/healthz` and `/readyz` needs `Authorization: Bearer <token>`.

use std::sync::Arc;

use super::shared::Shared;
use crate::time::Timestamp;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// Who may talk to the status server.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Bound to a loopback address: only loopback `Host` names are answered.
    pub loopback: bool,
    /// Required as `Authorization: Bearer …` (all but `/healthz` and `/readyz`).
    pub token: Option<crate::config::Secret>,
}

/// The router; the caller binds and serves it.
pub fn router(shared: Arc<Shared>, access: Access) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/status", get(status))
        .route("/api/v1/reconcile", post(reconcile))
        .route("/api/v1/resolve", get(super::resolve_api::resolve))
        .route("/api/v1/cache", get(super::resolve_api::cache))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(Arc::new(access), guard))
        .with_state(shared)
}

/// Refuses what a browser page or a rebinding attack could send, and checks the bearer token.
async fn guard(
    State(access): State<Arc<Access>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let host = header(header::HOST).unwrap_or_default();
    if access.loopback && !is_loopback_host(host) {
        return (StatusCode::MISDIRECTED_REQUEST, "this status server answers loopback names only\n").into_response();
    }
    let changes_state = !matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    let cross_site = header(header::HeaderName::from_static("sec-fetch-site")).is_some_and(|s| s == "cross-site")
        || header(header::ORIGIN).is_some_and(|origin| {
            let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            origin_host != host
        });
    if changes_state && cross_site {
        return (StatusCode::FORBIDDEN, "cross-origin requests may not change state\n").into_response();
    }
    let open = matches!(request.uri().path(), "/healthz" | "/readyz");
    if let (Some(token), false) = (&access.token, open) {
        let given = header(header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default();
        if !token.matches(given) {
            return (StatusCode::UNAUTHORIZED, "a bearer token is required (server.token_file)\n").into_response();
        }
    }
    next.run(request).await
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Ready: the daemon reconciles and a pass has finished. With `ha`, only the leader is ready, so a load
/// balancer's health check finds the daemon whose status is live; a standby answers 503 naming the leader.
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let (ha, ready) = shared.read(|s| (s.ha().cloned(), s.ready));
    let unavailable = |text: String| (StatusCode::SERVICE_UNAVAILABLE, text).into_response();
    match &ha {
        Some(ha) if ha.role == crate::ha::Role::Standby => {
            let leader = ha.leader.as_ref().map_or("unknown", |l| l.id.as_str());
            let at = ha.leader.as_ref().and_then(|l| l.status_url.as_deref()).unwrap_or("unknown");
            return unavailable(format!("not ready: standby; {leader} leads (status at {at})\n"));
        }
        Some(ha) if ha.role == crate::ha::Role::Connecting => {
            let why = ha.etcd_error.as_deref().unwrap_or("the election is not decided yet");
            return unavailable(format!("not ready: not in the HA election: {why}\n"));
        }
        _ => {}
    }
    if ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        unavailable(
            "not ready: no reconcile pass has finished yet, and no saved inventory covers every cluster\n".into(),
        )
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    // A snapshot (the clusters' views are shared, not copied), serialised by serde on a blocking thread into
    // chunks the client reads as they come: megabytes of JSON for a large fleet never sit in one buffer, a slow
    // client slows only that thread (the channel is bounded), and no lock is held while it reads.
    let snapshot = shared.status();
    let (tx, rx) = tokio::sync::mpsc::channel(STATUS_CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter { tx, buf: Vec::with_capacity(STATUS_CHUNK) };
        let written = serde_json::to_writer(&mut out, &snapshot).map_err(std::io::Error::other);
        if let Err(e) = written.and_then(|()| out.send()) {
            // The client went away, or (never expected) the status could not be encoded: the body ends short.
            tracing::debug!(error = %e, "status not sent whole");
        }
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    ([(header::CONTENT_TYPE, "application/json")], axum::body::Body::from_stream(chunks)).into_response()
}

/// How much of the status document is handed to the client at a time, and how many such pieces may wait.
const STATUS_CHUNK: usize = 64 * 1024;
const STATUS_CHUNKS_IN_FLIGHT: usize = 4;

/// Collects serde's output into chunks of [`STATUS_CHUNK`] and sends each to the response body.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(STATUS_CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= STATUS_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn reconcile(State(shared): State<Arc<Shared>>) -> Response {
    let now = std::time::SystemTime::now();
    shared.request_reconcile(now);
    let body = serde_json::json!({"queued": true, "requested_at": Timestamp::from(now)});
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], shared.metrics().encode())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_document_goes_out_in_bounded_chunks_that_add_up_to_serdes_json() {
        let names: Vec<String> = (0..20_000).map(|i| format!("node-{i:05}")).collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel(STATUS_CHUNKS_IN_FLIGHT);
        let reader = std::thread::spawn(move || {
            let mut chunks = Vec::new();
            while let Some(Ok(chunk)) = rx.blocking_recv() {
                chunks.push(chunk);
            }
            chunks
        });
        let mut out = ChunkWriter { tx, buf: Vec::new() };
        serde_json::to_writer(&mut out, &names).unwrap();
        out.send().unwrap();
        drop(out);
        let chunks = reader.join().unwrap();
        assert!(chunks.len() > 2, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| c.len() < 2 * STATUS_CHUNK));
        assert_eq!(chunks.concat(), serde_json::to_vec(&names).unwrap());
    }

    #[test]
    fn a_client_that_went_away_stops_the_writer() {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(rx);
        let mut out = ChunkWriter { tx, buf: Vec::new() };
        let big = vec![0u8; STATUS_CHUNK + 1];
        assert!(std::io::Write::write(&mut out, &big).is_err());
    }
}
