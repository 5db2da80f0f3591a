//! The status server: `/healthz`, `/readyz`, `/api/v1/status`, `POST /api/v1/reconcile`, `/metrics`, and the
//! resolve API (`/api/v1/resolve`, `/api/v1/cache`, in `super::resolve`).
//! Loopback by default; it serves the daemon's snapshot and never blocks the reconcile loop.
//!
//! A web page must not drive it: state-changing requests from another origin are refused (CSRF), and on a
//! loopback address only loopback `Host` names are answered (DNS rebinding). With `server.token_file` every
//! endpoint but `/healthz` and `/readyz` needs `Authorization: Bearer <token>`.

use std::sync::Arc;

use super::shared::Shared;
use super::status::Status;
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
        unavailable("not ready: no reconcile pass has finished yet\n".into())
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    // A snapshot under the read lock (the clusters' views are shared, not copied), written out one cluster
    // at a time as the client reads: megabytes of JSON for a large fleet never sit in one buffer, and a slow
    // client holds no lock.
    let mut snapshot = shared.status();
    let clusters = std::mem::take(&mut snapshot.clusters);
    match status_head(&snapshot) {
        Ok(head) => {
            let views = clusters.into_iter().enumerate().map(|(i, c)| {
                let mut piece = if i == 0 { Vec::new() } else { b",".to_vec() };
                serde_json::to_writer(&mut piece, &*c).map(|()| piece)
            });
            let pieces = std::iter::once(Ok(head)).chain(views).chain(std::iter::once(Ok(b"]}".to_vec())));
            (
                [(header::CONTENT_TYPE, "application/json")],
                axum::body::Body::from_stream(futures_util::stream::iter(pieces)),
            )
                .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the status: {e}\n")).into_response(),
    }
}

/// The status document up to its clusters' list, opened: `{..., "clusters":[`. `clusters` is its last field,
/// so it is the status, without clusters, minus the closing `]}`.
fn status_head(without_clusters: &Status) -> Result<Vec<u8>, String> {
    let mut head = serde_json::to_vec(without_clusters).map_err(|e| e.to_string())?;
    if !head.ends_with(b"[]}") {
        return Err("the status document no longer ends with its clusters".into());
    }
    head.truncate(head.len() - 2);
    Ok(head)
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
    use super::status_head;
    use crate::daemon::status::Status;

    #[test]
    fn the_status_head_opens_the_clusters_list_last() {
        let mut status = Status::default();
        status.version = "1.2.3".into();
        let head = status_head(&status).unwrap();
        assert!(head.starts_with(b"{\"version\":\"1.2.3\""), "{}", String::from_utf8_lossy(&head));
        assert!(head.ends_with(b",\"clusters\":["), "{}", String::from_utf8_lossy(&head));
        let mut whole = head;
        whole.extend_from_slice(b"]}");
        let back: Status = serde_json::from_slice(&whole).unwrap();
        assert_eq!(back.version, "1.2.3");
    }
}
