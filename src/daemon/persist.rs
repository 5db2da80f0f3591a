//! The daemon's side of the state directory: what it restores at start (learned pins before the first clients
//! are built, the verify ledger, the last inventory) and what it saves after each pass (each part only when it
//! changed, the inventory at least every [`INVENTORY_REFRESH`] so its observation times stay near the truth) —
//! on a blocking thread, one save at a time, never holding a pass back. A save that fails sets
//! `StatePersisted=False` and is tried again after the next pass; nothing but the persistence is lost.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::ledger::{Ledger, SavedLedger};
use super::shared::Shared;
use crate::pve::SavedPins;
use crate::reconcile::inventory::SavedInventory;
use crate::state::{self, Part, StateDir, StateError};

/// How long the saved inventory may lag behind while only its observation times move.
pub(super) const INVENTORY_REFRESH: Duration = Duration::from_secs(600);
/// How long a stop waits for the last save.
const FLUSH_GRACE: Duration = Duration::from_secs(5);

/// Where the state directory is when the configuration does not say: `--state-dir`, else systemd's
/// `$STATE_DIRECTORY` (its first entry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateDirChoice {
    /// `--state-dir`: wins over the configuration.
    pub flag: Option<PathBuf>,
    /// `$STATE_DIRECTORY`: used when neither the flag nor the configuration names one.
    pub environment: Option<PathBuf>,
}

impl StateDirChoice {
    /// The flag, else the configuration's `state_dir`, else the environment's.
    pub fn resolve(&self, configured: Option<&Path>) -> Option<PathBuf> {
        self.flag.clone().or_else(|| configured.map(Path::to_path_buf)).or_else(|| self.environment.clone())
    }
}

/// The state directory in use, and what was saved last.
#[derive(Debug)]
pub(super) struct Persistence {
    dir: Option<StateDir>,
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// A save is under way on a blocking thread.
    busy: AtomicBool,
    saved: Mutex<Saved>,
}

/// Each part's change counter as last saved (`None`: not saved yet).
#[derive(Debug, Default)]
struct Saved {
    pins: Option<u64>,
    ledger: Option<u64>,
    inventory: Option<(u64, Instant)>,
}

/// The parts to write in one save, taken on the loop and written off it.
struct Batch {
    pins: Option<(u64, SavedPins)>,
    ledger: Option<(u64, SavedLedger)>,
    inventory: Option<(u64, SavedInventory)>,
}

impl Persistence {
    /// Opens the state directory at `path` (none: nothing persists). One that cannot be opened costs a warning
    /// and a `StatePersisted=False` condition; the daemon runs on without it.
    pub(super) fn open(path: Option<&Path>, shared: &Shared) -> Self {
        let dir = path.and_then(|p| match StateDir::open(p) {
            Ok(dir) => {
                tracing::info!(state_dir = %p.display(), "keeping what the daemon learns in the state directory");
                Some(dir)
            }
            Err(e) => {
                tracing::warn!(state_dir = %p.display(), error = %e, "cannot use the state directory; running without it");
                shared.update(|s| s.state_saved(Err(e.to_string()), SystemTime::now()));
                None
            }
        });
        Self { dir, inner: Arc::default() }
    }

    /// The directory in use.
    pub(super) fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(StateDir::path)
    }

    /// Restores the learned pins into the shared book (before the first clients are built).
    pub(super) fn restore_pins(&self, shared: &Shared) {
        if let Some(pins) = self.load::<SavedPins>(state::PINS) {
            let count: usize = pins.clusters.values().map(|c| c.learned.len()).sum();
            tracing::info!(learned = count, "restored the learned node certificate fingerprints");
            shared.pins().restore(pins);
        }
        // What was just read is what is on disk.
        self.inner.saved.lock().unwrap_or_else(PoisonError::into_inner).pins = Some(shared.pins().changes());
    }

    /// Restores the verify ledger and the last inventory (for the clusters configured).
    pub(super) fn restore_rest(&self, shared: &Shared, ledger: &Ledger, configured: &[String]) {
        if let Some(saved) = self.load::<SavedLedger>(state::LEDGER) {
            ledger.restore(saved);
        }
        if let Some(saved) = self.load::<SavedInventory>(state::INVENTORY) {
            let mut restored = Ok(());
            shared.catalog().update(|inv| restored = inv.restore(saved, configured));
            match restored {
                Ok(()) => {
                    let all = shared.catalog().read(|inv| configured.iter().all(|c| inv.cluster(c).is_some()));
                    if all {
                        shared.update(|s| s.ready_from_saved_inventory());
                    }
                }
                Err(detail) => {
                    let file = self.dir.as_ref().map(|d| d.file(state::INVENTORY)).unwrap_or_default();
                    tracing::warn!(file = %file.display(), %detail, "the saved inventory is not usable; the first pass observes afresh");
                }
            }
        }
        // What was just read is what is on disk.
        let mut saved = self.inner.saved.lock().unwrap_or_else(PoisonError::into_inner);
        saved.ledger = Some(ledger.changes());
        saved.inventory = Some((shared.catalog().read(|inv| inv.changes()), Instant::now()));
    }

    fn load<T: serde::de::DeserializeOwned>(&self, part: Part) -> Option<T> {
        let dir = self.dir.as_ref()?;
        match dir.load::<T>(part) {
            Ok(loaded) => loaded.map(|(data, _)| data),
            Err(e) => {
                tracing::warn!(file = %dir.file(part).display(), error = %e, "a state file is not usable: that part starts afresh (the file is kept aside as .bad)");
                None
            }
        }
    }

    /// Saves what changed since the last save, on a blocking thread; skipped while a save is under way (the
    /// next call picks the changes up).
    pub(super) fn save_changed(&self, shared: &Arc<Shared>, ledger: &Ledger) {
        let Some(dir) = self.dir.clone() else { return };
        if self.inner.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let batch = self.inner.batch(shared, ledger, Instant::now());
        if batch.is_empty() {
            self.inner.busy.store(false, Ordering::Release);
            return;
        }
        let (inner, shared) = (Arc::clone(&self.inner), Arc::clone(shared));
        // The blocking thread logs where the loop logs (a subscriber set for this thread only, as in tests).
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        tokio::task::spawn_blocking(move || {
            tracing::dispatcher::with_default(&dispatch, || inner.write(&dir, batch, &shared));
            inner.busy.store(false, Ordering::Release);
        });
    }

    /// Saves what changed before the daemon stops: waits for a save under way, then writes the rest, within
    /// [`FLUSH_GRACE`] (a stalled disk does not hold the stop longer).
    pub(super) async fn flush(&self, shared: &Arc<Shared>, ledger: &Ledger) {
        let Some(dir) = self.dir.clone() else { return };
        let flushing = async {
            while self.inner.busy.swap(true, Ordering::AcqRel) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let batch = self.inner.batch(shared, ledger, Instant::now());
            let (inner, shared) = (Arc::clone(&self.inner), Arc::clone(shared));
            let dispatch = tracing::dispatcher::get_default(Clone::clone);
            let _ = tokio::task::spawn_blocking(move || {
                if !batch.is_empty() {
                    tracing::dispatcher::with_default(&dispatch, || inner.write(&dir, batch, &shared));
                }
                inner.busy.store(false, Ordering::Release);
            })
            .await;
        };
        if tokio::time::timeout(FLUSH_GRACE, flushing).await.is_err() {
            tracing::warn!("saving to the state directory did not finish in time; stopping without the last changes");
        }
    }
}

impl Inner {
    /// The parts whose change counter moved since the last save (the inventory also when its last save is
    /// older than [`INVENTORY_REFRESH`]).
    fn batch(&self, shared: &Shared, ledger: &Ledger, now: Instant) -> Batch {
        let saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        let pins = shared.pins().changes();
        let pins = (saved.pins != Some(pins)).then(|| (pins, shared.pins().saved()));
        let ledger_changes = ledger.changes();
        let ledger = (saved.ledger != Some(ledger_changes)).then(|| (ledger_changes, ledger.saved()));
        let inventory = shared.catalog().read(|inv| {
            let due = match saved.inventory {
                Some((changes, at)) => changes != inv.changes() || now.duration_since(at) >= INVENTORY_REFRESH,
                None => true,
            };
            due.then(|| (inv.changes(), inv.saved()))
        });
        Batch { pins, ledger, inventory }
    }

    /// Writes a batch; records what went through, and the outcome as the `StatePersisted` condition.
    fn write(&self, dir: &StateDir, batch: Batch, shared: &Shared) {
        let mut failed: Option<StateError> = None;
        let mut note = |result: Result<(), StateError>| match result {
            Ok(()) => true,
            Err(e) => {
                failed.get_or_insert(e);
                false
            }
        };
        let mut done = Saved::default();
        if let Some((changes, pins)) = batch.pins {
            done.pins = note(dir.save(state::PINS, &pins)).then_some(changes);
        }
        if let Some((changes, ledger)) = batch.ledger {
            done.ledger = note(dir.save(state::LEDGER, &ledger)).then_some(changes);
        }
        if let Some((changes, inventory)) = batch.inventory {
            done.inventory = note(dir.save(state::INVENTORY, &inventory)).then_some((changes, Instant::now()));
        }
        {
            let mut saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
            saved.pins = done.pins.or(saved.pins);
            saved.ledger = done.ledger.or(saved.ledger);
            saved.inventory = done.inventory.or(saved.inventory);
        }
        let was_failing = shared.read(|s| s.state_failing());
        match failed {
            Some(e) => {
                if !was_failing {
                    tracing::warn!(error = %e, "cannot save to the state directory; the daemon runs on, and tries again after the next pass");
                }
                shared.update(|s| s.state_saved(Err(e.to_string()), SystemTime::now()));
            }
            None => {
                if was_failing {
                    tracing::info!("saving to the state directory works again");
                }
                shared.update(|s| s.state_saved(Ok(()), SystemTime::now()));
            }
        }
    }
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.pins.is_none() && self.ledger.is_none() && self.inventory.is_none()
    }
}
