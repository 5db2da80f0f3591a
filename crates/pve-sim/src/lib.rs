//! A Proxmox VE API simulator: the world every test, benchmark and the demo run against.
//!
//! It serves `/api2/json/...` over HTTPS with a certificate made at start-up, answering with the
//! shapes, status codes and quirks of real Proxmox VE 8/9 (see `shared/pve-api.md`). Downloads are
//! real transfers from its own mirror (`/_mirror/`), and `/_sim/` controls faults and reports
//! counts. **It shares no types with the Proxmox client** (vztmpld's `pve` module): it emits JSON, so a
//! wire-format mistake on either side fails a test instead of being mirrored by the other.
//!
//! - [`scenario`]: the YAML that describes the simulated cluster.
//! - `state`: nodes, storages, volumes, tasks and counters behind one mutex.
//! - `api`: routing, auth, permissions, proxy semantics and the endpoint handlers.
//! - `http`: envelopes, error statuses, parameter parsing and validation.
//! - `acl`: tokens, roles, privilege inheritance and separation.
//! - `aplinfo`: the `.dat` appliance index format and the built-in indexes.
//! - `tasks`: UPIDs and the download worker (Proxmox's `download_file_from_url` + wget).
//! - `content`: deterministic template bytes and their digests.
//! - `mirror`, `control`, [`tls`]: the mirror, `/_sim/`, and the certificate.

mod acl;
mod api;
mod aplinfo;
mod content;
mod control;
mod http;
mod listeners;
mod mirror;
mod names;
pub mod scenario;
mod state;
mod tasks;
pub mod testing;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, Response};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

pub use scenario::Scenario;
use state::World;

/// Largest request body accepted (pveproxy: 512 KiB).
pub const MAX_BODY: usize = 512 * 1024;

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("TLS: {0}")]
    Tls(String),
    #[error("scenario: {0}")]
    Scenario(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot build the download client: {0}")]
    Client(String),
}

/// Shared state of a running simulator.
pub(crate) struct Sim {
    world: Mutex<World>,
    /// Each node's certificate fingerprint (its `ssl_fingerprint` in `/nodes`).
    pub fingerprints: std::collections::BTreeMap<String, String>,
    /// The HTTPS listeners (one per node, and the mirror's).
    pub listeners: listeners::Listeners,
    /// pveproxy's worker limit.
    pub api_workers: Semaphore,
    /// Download client that trusts only the simulator's certificate (wget's default verification).
    pub fetch_verified: reqwest::Client,
    /// Download client for `verify-certificates=0`.
    pub fetch_unverified: reqwest::Client,
    /// Running worker tasks.
    pub tracker: TaskTracker,
}

impl Sim {
    /// Runs `f` with the world locked; never hold the lock across an `.await`.
    pub(crate) fn with_world<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        let mut guard = self.world.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }
}

/// A running simulator: its address, credentials, and a handle to stop it.
pub struct SimServer {
    /// The first node's endpoint, `https://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Every node's endpoint and certificate fingerprint, in scenario order.
    pub nodes: Vec<NodeEndpoint>,
    /// A listener that is never taken down (the mirror's), for `/_sim/` control while node endpoints are down.
    pub control: String,
    /// The first scenario token's id.
    pub token_id: String,
    /// That token's secret.
    pub token_secret: String,
    /// `AA:BB:...` SHA-256 of the first node's certificate.
    pub fingerprint: String,
    /// The cluster CA as PEM (`/etc/pve/pve-root-ca.pem`; for clients that take a CA file).
    pub cert_pem: String,
    /// The cluster CA as DER (a trust anchor for every node's certificate).
    pub cert_der: Vec<u8>,
    sim: Arc<Sim>,
}

/// One node's API endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEndpoint {
    pub node: String,
    /// `https://127.0.0.1:PORT`.
    pub endpoint: String,
    /// SHA-256 of the node's own certificate.
    pub fingerprint: String,
}

impl SimServer {
    /// Binds `listen` for the first node (port 0 picks a free one) and a free port on the same address for
    /// every other node and the mirror, builds the world and starts serving.
    pub async fn start(scenario: Scenario, scenario_dir: PathBuf, listen: SocketAddr) -> Result<Self, SimError> {
        let ca = tls::ClusterCa::generate()?;
        let any_port = SocketAddr::new(listen.ip(), 0);
        let mut bound = Vec::new();
        for (i, spec) in scenario.nodes.iter().enumerate() {
            let listener = listeners::bind(if i == 0 { listen } else { any_port })?;
            let local = listener.local_addr().map_err(|source| SimError::Listen { addr: listen, source })?;
            let identity = ca.issue(&spec.name)?;
            let endpoint = NodeEndpoint {
                node: spec.name.clone(),
                endpoint: listeners::url_of(local),
                fingerprint: identity.fingerprint.clone(),
            };
            bound.push((endpoint, identity, listener));
        }
        let mirror_listener = listeners::bind(any_port)?;
        let mirror_local = mirror_listener.local_addr().map_err(|source| SimError::Listen { addr: listen, source })?;
        let mirror_identity = ca.issue("mirror")?;
        let control = listeners::url_of(mirror_local);
        let world = World::new(&scenario, &scenario_dir, &control)?;
        let token = world.tokens.first().cloned().ok_or_else(|| SimError::Scenario("no token".into()))?;

        let build = |config: rustls::ClientConfig| {
            reqwest::Client::builder()
                .tls_backend_preconfigured(config)
                .no_proxy()
                .connect_timeout(Duration::from_secs(10))
                .read_timeout(Duration::from_secs(900))
                .build()
                .map_err(|e| SimError::Client(e.to_string()))
        };
        let sim = Arc::new(Sim {
            world: Mutex::new(world),
            fingerprints: bound.iter().map(|(e, _, _)| (e.node.clone(), e.fingerprint.clone())).collect(),
            listeners: listeners::Listeners::default(),
            api_workers: Semaphore::new(scenario.api_workers),
            fetch_verified: build(tls::client_config_trusting(&ca.cert_der)?)?,
            fetch_unverified: build(tls::client_config_unverified()?)?,
            tracker: TaskTracker::new(),
        });
        let mut nodes = Vec::new();
        for (endpoint, identity, listener) in bound {
            sim.listeners.serve(&sim, &endpoint.node, listener, identity.server_config()?)?;
            nodes.push(endpoint);
        }
        sim.listeners.serve(&sim, listeners::MIRROR, mirror_listener, mirror_identity.server_config()?)?;
        let first = nodes.first().cloned().ok_or_else(|| SimError::Scenario("no node".into()))?;
        tracing::info!(endpoint = %first.endpoint, nodes = nodes.len(), "simulator listening");
        Ok(Self {
            endpoint: first.endpoint,
            fingerprint: first.fingerprint,
            nodes,
            control,
            token_id: token.id.clone(),
            token_secret: token.secret.clone(),
            cert_pem: ca.cert_pem.clone(),
            cert_der: ca.cert_der.clone(),
            sim,
        })
    }

    /// The one JSON line `vztmpld sim` prints when ready.
    pub fn ready_line(&self) -> String {
        let nodes: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|n| serde_json::json!({"node": n.node, "endpoint": n.endpoint, "fingerprint": n.fingerprint}))
            .collect();
        serde_json::json!({
            "endpoint": self.endpoint,
            "token_id": self.token_id,
            "token_secret": self.token_secret,
            "fingerprint": self.fingerprint,
            "nodes": nodes,
            "control": self.control,
            "ca_pem": self.cert_pem,
        })
        .to_string()
    }

    /// The `Authorization` header value for the printed token.
    pub fn auth_header(&self) -> String {
        format!("PVEAPIToken={}={}", self.token_id, self.token_secret)
    }

    /// Stops accepting requests and cancels running tasks.
    pub async fn shutdown(self) {
        self.sim.with_world(|w| w.tasks.iter().for_each(|t| t.cancel.cancel()));
        self.sim.tracker.close();
        self.sim.listeners.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(3), self.sim.tracker.wait()).await;
    }
}

pub(crate) async fn dispatch(State(sim): State<Arc<Sim>>, request: Request) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    if let Some(rest) = path.strip_prefix("/_mirror/") {
        if parts.method == Method::GET || parts.method == Method::HEAD {
            return mirror::serve(&sim, rest, parts.method == Method::HEAD);
        }
    }
    let with_message = sim.with_world(|w| !w.quirks.no_error_message);
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return http::failure(&http::ApiError::with_status(501, "for data too large"), with_message);
    };
    if let Some(rest) = path.strip_prefix("/api2/json") {
        let req = api::ApiRequest {
            method: &parts.method,
            path: rest,
            query: parts.uri.query(),
            headers: &parts.headers,
            body: &body,
        };
        return api::handle(&sim, req).await;
    }
    if let Some(rest) = path.strip_prefix("/_sim/") {
        return match api::authenticate(&sim, &parts.headers) {
            Ok(_) => control::handle(&sim, &parts.method, rest, &body),
            Err(err) => http::failure(&err, with_message),
        };
    }
    http::failure(&http::ApiError::not_implemented(parts.method.as_str(), &path), with_message)
}
