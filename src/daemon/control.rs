//! What drives the daemon from outside: [`Control`] values on a stream. OS signals, the file watcher and the
//! systemd watchdog are producers wired in `cli`; tests send the same values directly.

use tokio::sync::mpsc;

/// One instruction to the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop gracefully (SIGTERM, SIGINT). Proxmox keeps running its tasks; the next start adopts them.
    Stop,
    /// Re-read the configuration even if its bytes did not change (SIGHUP: secrets may have changed).
    Reload,
    /// The configuration file may have changed (a file-watch event): re-read it after a quiet moment.
    ConfigChanged,
    /// Run a pass now, or right after the running one.
    Reconcile(Trigger),
    /// Tell systemd the loop is alive (`WATCHDOG=1`); sent on the watchdog's half period.
    WatchdogTick,
}

pub use vztmpld_core::scheduler::Trigger;

/// A stream of [`Control`] values fed by any number of [`ControlSender`]s; it ends when all are dropped.
pub type ControlStream = futures_util::stream::BoxStream<'static, Control>;

/// Feeds a [`ControlStream`].
pub type ControlSender = mpsc::Sender<Control>;

/// A control channel: give the stream to `super::run`, keep the sender (clone it per producer).
pub fn channel() -> (ControlSender, ControlStream) {
    let (tx, mut rx) = mpsc::channel(16);
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (tx, Box::pin(stream))
}
