//! The status server: `/healthz`, `/readyz`, `/api/v1/status`, `POST /api/v1/reconcile` and `/metrics`.
//! Loopback by default; it serves the daemon's snapshot and never blocks the reconcile loop.

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::status::{Status, timestamp};

/// What the daemon shares with the server.
pub struct Shared {
    pub status: RwLock<Status>,
    pub metrics: Metrics,
    /// "Reconcile now" requests.
    pub reconcile: mpsc::Sender<()>,
}

impl Shared {
    /// Reads the status (a poisoned lock still holds the last good snapshot).
    pub fn status(&self) -> Status {
        self.status.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Changes the status in place.
    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        let mut guard = self.status.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard);
    }
}

/// The router; the caller binds and serves it.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/status", get(status))
        .route("/api/v1/reconcile", post(reconcile))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.status().ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: no reconcile pass has finished yet\n").into_response()
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.status()).into_response()
}

async fn reconcile(State(shared): State<Arc<Shared>>) -> Response {
    let now = timestamp(std::time::SystemTime::now());
    // A full channel means a pass is already queued: the request is served by it.
    let _ = shared.reconcile.try_send(());
    shared.update(|s| s.reconcile_requested_at = Some(now.clone()));
    (StatusCode::ACCEPTED, axum::Json(serde_json::json!({"queued": true, "requested_at": now}))).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], shared.metrics.encode())
        .into_response()
}
