//! The status server: `/healthz`, `/readyz`, `/api/v1/status`, `POST /api/v1/reconcile` and `/metrics`.
//! Loopback by default; it serves the daemon's snapshot and never blocks the reconcile loop.

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::mpsc;

use super::control::{Control, Trigger};
use super::metrics::Metrics;
use super::status::{Status, timestamp};

/// What the daemon shares with the server.
#[derive(Debug)]
pub struct Shared {
    status: RwLock<Status>,
    /// The metrics registry.
    pub metrics: Metrics,
    /// "Reconcile now" requests, to the loop.
    controls: mpsc::Sender<Control>,
}

impl Shared {
    /// A fresh snapshot and registry; requests go to `controls`.
    pub fn new(status: Status, controls: mpsc::Sender<Control>) -> Self {
        Self { status: RwLock::new(status), metrics: Metrics::new(), controls }
    }

    /// Reads the status (a poisoned lock still holds the last good snapshot).
    pub fn status(&self) -> Status {
        self.status.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Reads the status in place.
    pub fn read<R>(&self, f: impl FnOnce(&Status) -> R) -> R {
        f(&self.status.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Changes the status in place.
    pub fn update<R>(&self, f: impl FnOnce(&mut Status) -> R) -> R {
        let mut guard = self.status.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
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
    if shared.status.read().unwrap_or_else(std::sync::PoisonError::into_inner).ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: no reconcile pass has finished yet\n").into_response()
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    // Serialized under the read lock: no clone of a snapshot that grows with the fleet.
    let body = {
        let guard = shared.status.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        serde_json::to_vec(&*guard)
    };
    match body {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the status: {e}\n")).into_response(),
    }
}

async fn reconcile(State(shared): State<Arc<Shared>>) -> Response {
    let now = std::time::SystemTime::now();
    // A full channel means requests are already queued: the pass they start serves this one too.
    let _ = shared.controls.try_send(Control::Reconcile(Trigger::Api));
    shared.update(|s| s.reconcile_requested(now));
    let body = serde_json::json!({"queued": true, "requested_at": timestamp(now)});
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], shared.metrics.encode())
        .into_response()
}
