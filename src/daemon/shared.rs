//! What the daemon's loop, its passes, the status server and the resolve API share: the status snapshot, the
//! metrics registry, the catalog of what the passes saw, and the way to ask the loop for a pass. Every field is
//! private; each is changed through the methods here (and the status only through its own methods), so a
//! reader of this file sees every way the shared state moves.

use std::sync::RwLock;
use std::time::SystemTime;

use tokio::sync::mpsc;

use super::control::{Control, Trigger};
use super::metrics::Metrics;
use super::resolve_api::Catalog;
use super::status::Status;
use crate::pve::PinBook;

/// The daemon's shared state.
#[derive(Debug)]
pub struct Shared {
    status: RwLock<Status>,
    metrics: Metrics,
    /// "Reconcile now" requests, to the loop.
    controls: mpsc::Sender<Control>,
    /// What the passes saw on every node, for the resolve API.
    catalog: Catalog,
    /// Pinned clusters' learned node fingerprints, kept across reloads.
    pins: PinBook,
}

impl Shared {
    /// A fresh snapshot and registry; requests go to `controls`.
    pub fn new(status: Status, controls: mpsc::Sender<Control>) -> Self {
        Self {
            status: RwLock::new(status),
            metrics: Metrics::new(),
            controls,
            catalog: Catalog::default(),
            pins: PinBook::default(),
        }
    }

    /// A copy of the status (its clusters' views are shared, not copied; a poisoned lock still holds the last
    /// good snapshot).
    pub fn status(&self) -> Status {
        self.status.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Reads the status in place.
    pub fn read<R>(&self, f: impl FnOnce(&Status) -> R) -> R {
        f(&self.status.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Changes the status in place, through its methods.
    pub fn update<R>(&self, f: impl FnOnce(&mut Status) -> R) -> R {
        let mut guard = self.status.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// What the passes saw, for the resolve API.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Pinned clusters' learned node fingerprints (each client learns into its cluster's set).
    pub fn pins(&self) -> &PinBook {
        &self.pins
    }

    /// Asks the loop for a pass (`POST /api/v1/reconcile`) and notes the request in the status.
    pub fn request_reconcile(&self, now: SystemTime) {
        // A full channel means requests are already queued: the pass they start serves this one too.
        let _ = self.controls.try_send(Control::Reconcile(Trigger::Api));
        self.update(|s| s.reconcile_requested(now));
    }
}
