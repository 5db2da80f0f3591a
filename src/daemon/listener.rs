//! Serving the status server's connections, bounded: at most [`MAX_CONNECTIONS`] at once (the rest wait in
//! the kernel's backlog, holding no descriptor of ours), each closed when it does not send a request's headers
//! within [`HEADER_TIMEOUT`] — so slow clients can neither starve the server nor take the descriptors that a
//! reload and the Proxmox clients need. `axum::serve` has neither bound.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a connection may take to send a request's headers (also an idle kept-alive one).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `stop`; then asks each open connection to finish its request and close.
pub async fn serve(listener: TcpListener, app: axum::Router, stop: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = stop.cancelled() => break,
        };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection reset before it was taken: pause, go on.
                    tracing::warn!(error = %e, "the status server cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        // Finished connections are reaped as new ones come, so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        let (service, stop) = (TowerToHyperService::new(app.clone()), stop.clone());
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    while connections.join_next().await.is_some() {}
}
