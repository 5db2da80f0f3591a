//! What drives the daemon from outside: [`Control`] values on a stream. OS signals, the file watcher and the
//! systemd watchdog are producers wired in `cli`; tests send the same values directly.

use serde::{Deserialize, Serialize};
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

/// Why a pass runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The daemon's first pass.
    #[default]
    Start,
    /// The regular interval.
    Interval,
    /// A failing node's backoff came due.
    Retry,
    /// The configuration changed.
    Config,
    /// SIGHUP.
    Signal,
    /// `POST /api/v1/reconcile`.
    Api,
    /// This daemon became the HA leader.
    Leader,
}

impl Trigger {
    /// The label used in logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Interval => "interval",
            Trigger::Retry => "retry",
            Trigger::Config => "config",
            Trigger::Signal => "signal",
            Trigger::Api => "api",
            Trigger::Leader => "leader",
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
