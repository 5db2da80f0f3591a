//! The simulator's HTTPS listeners: one per node, each presenting that node's own certificate (signed by the
//! cluster CA), as a real cluster's `pveproxy`s do, plus one for the mirror (the internet's stand-in, never
//! taken down). Every listener serves the whole API, as any Proxmox node does. A node's endpoint can be taken
//! down and brought back through `/_sim/endpoints/{node}` while the node stays in the cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};

use crate::{Sim, SimError};

/// pveproxy's idle/read timeout: a keep-alive connection idle this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Key of the mirror's listener.
pub(crate) const MIRROR: &str = "_mirror";

struct Listener {
    addr: SocketAddr,
    config: RustlsConfig,
    /// `None` while the endpoint is down.
    handle: Option<axum_server::Handle>,
}

/// Every listener, by node name (and [`MIRROR`]).
#[derive(Default)]
pub(crate) struct Listeners {
    by_name: Mutex<BTreeMap<String, Listener>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<std::io::Result<()>>>>,
}

/// Binds `addr` (port 0 picks one) for a listener that is served later.
pub(crate) fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, SimError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| SimError::Listen { addr, source })?;
    listener.set_nonblocking(true).map_err(|source| SimError::Listen { addr, source })?;
    Ok(listener)
}

/// `https://HOST:PORT` for a bound address (an unspecified address is reached through loopback).
pub(crate) fn url_of(local: SocketAddr) -> String {
    let host = match local.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("https://{host}:{}", local.port())
}

impl Listeners {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Listener>> {
        self.by_name.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts serving `listener` under `name` with the TLS identity `config`.
    pub(crate) fn serve(
        &self,
        sim: &Arc<Sim>,
        name: &str,
        listener: std::net::TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<(), SimError> {
        let addr = listener
            .local_addr()
            .map_err(|source| SimError::Listen { addr: SocketAddr::from(([0, 0, 0, 0], 0)), source })?;
        let config = RustlsConfig::from_config(config);
        let handle = self.spawn(sim, listener, config.clone());
        self.map().insert(name.to_string(), Listener { addr, config, handle: Some(handle) });
        Ok(())
    }

    fn spawn(&self, sim: &Arc<Sim>, listener: std::net::TcpListener, config: RustlsConfig) -> axum_server::Handle {
        let router = Router::new().fallback(crate::dispatch).with_state(Arc::clone(sim));
        let handle = axum_server::Handle::new();
        // Like pveproxy: small answers go out at once (TCP_NODELAY; otherwise a delayed ACK holds the first
        // answer on a resumed TLS session for ~40 ms), and an idle keep-alive connection is closed after 5 s.
        let acceptor = RustlsAcceptor::new(config).acceptor(NoDelayAcceptor::new());
        let mut server = axum_server::from_tcp(listener).acceptor(acceptor).handle(handle.clone());
        server.http_builder().http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(IDLE_TIMEOUT);
        let task = tokio::spawn(server.serve(router.into_make_service()));
        self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(task);
        handle
    }

    /// Takes a node's endpoint down (connections refused) or brings it back on the same address.
    pub(crate) fn set_up(&self, sim: &Arc<Sim>, node: &str, up: bool) -> Result<(), String> {
        let mut map = self.map();
        let Some(l) = map.get_mut(node).filter(|_| node != MIRROR) else {
            return Err(format!("no endpoint for node '{node}'"));
        };
        match (up, l.handle.take()) {
            (false, Some(handle)) => handle.shutdown(),
            (true, None) => {
                let listener = bind(l.addr).map_err(|e| e.to_string())?;
                let config = l.config.clone();
                drop(map);
                let handle = self.spawn(sim, listener, config);
                if let Some(l) = self.map().get_mut(node) {
                    l.handle = Some(handle);
                }
                return Ok(());
            }
            (_, handle) => l.handle = handle,
        }
        Ok(())
    }

    /// Stops every listener, letting requests in flight finish for up to a second.
    pub(crate) async fn shutdown(&self) {
        for l in self.map().values_mut() {
            if let Some(h) = l.handle.take() {
                h.graceful_shutdown(Some(Duration::from_secs(1)));
            }
        }
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
    }
}
