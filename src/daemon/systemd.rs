//! systemd's notify protocol (`Type=notify`): ready, reloading, stopping, and the watchdog. Every call is a
//! no-op when `NOTIFY_SOCKET` is unset (tests, a terminal).

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// `READY=1`: the configuration is loaded and the status server listens.
pub(super) fn ready() {
    send(&[NotifyState::Ready]);
}

/// `RELOADING=1` with the monotonic time systemd wants beside it.
pub(super) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// `STOPPING=1`.
pub(super) fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// `WATCHDOG=1`: the loop is alive.
pub(super) fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to send `watchdog`: half of `WATCHDOG_USEC`, when systemd asked for it.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}
