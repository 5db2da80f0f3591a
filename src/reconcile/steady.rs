//! The plan cache behind the observe step: what makes a steady pass cheap.
//!
//! A converged cluster's plan is kept with the key of what it was made from (the cluster's nodes, storages and
//! the digest of every listing as it arrived). When the next pass's listings arrive with the same key, they are
//! not decoded, nothing more is read, and the kept plan — the same `Arc` — is the pass's plan. Consumers tell
//! a reused plan by identity (`Arc::ptr_eq`), as a reflector's watchers tell an unchanged object: no flag says
//! so.
//!
//! What invalidates it: a changed listing or view (the key differs); a task this daemon starts on the cluster
//! (only a plan with nothing to do is kept, and a verification due drops it); a reload (a new configuration
//! builds new clusters, each with an empty cache).
//!
//! The observe step is also bounded here: a cluster's observation that does not finish within
//! [`OBSERVE_DEADLINE`] ends the cluster's pass with a retryable error, and opens a circuit: the next passes
//! send one probe (`GET /version`, no retries, within [`PROBE_DEADLINE`]) before observing, until it answers —
//! so an API that never answers costs one probe per pass, not minutes of timeouts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::observation::ClusterObservation;
use super::observe::{Observed, observe_cluster};
use super::plan::{self, Plan};
use crate::config::{ClusterConfig, Config};
use crate::pve::Client;

/// One cluster's kept plan, if any.
#[derive(Debug, Default)]
pub(super) struct PlanCache {
    kept: Mutex<Option<Kept>>,
    /// The last observation ran past its deadline: probe before observing again.
    stalled: AtomicBool,
}

/// The longest a cluster's observation may take in one pass (a healthy one takes well under a second; the
/// client's own timeouts and retries alone could take minutes against an API that never answers).
pub(super) const OBSERVE_DEADLINE: Duration = Duration::from_secs(60);
/// The longest the probe of a stalled cluster may take.
pub(super) const PROBE_DEADLINE: Duration = Duration::from_secs(10);

/// A plan whose every item is cached, made from an observation that read nothing beyond the cluster's views
/// and listings: such a plan reads only what the key covers (nodes, storages' activity, listed volume ids),
/// never free space, indexes or privileges, so the same key plans the same.
#[derive(Debug)]
struct Kept {
    key: u64,
    plan: Arc<Plan>,
}

impl PlanCache {
    /// Observes the cluster and plans it, or finds its listings as the kept plan's were and returns that plan.
    /// The observation of a reused plan holds the cluster's views but no volumes (its listings left undecoded).
    pub(super) async fn observe_and_plan(
        &self,
        cfg: &ClusterConfig,
        client: &Client,
        config: &Config,
    ) -> (Arc<Plan>, ClusterObservation) {
        // Taken, not borrowed: a pass that fails half-way leaves the cache empty, never stale.
        let kept = self.lock().take().map(|k| (k.key, k));
        if self.stalled.load(Ordering::Relaxed) {
            if let Err(e) = client.probe(PROBE_DEADLINE).await {
                let error =
                    format!("{e}; the API stalled in an earlier pass, so each pass sends one probe until it answers");
                let observation = unobserved(cfg, error);
                return (Arc::new(plan::plan(config, std::slice::from_ref(&observation))), observation);
            }
            tracing::info!(cluster = %cfg.name, "the cluster answers again");
            self.stalled.store(false, Ordering::Relaxed);
        }
        let observing = observe_cluster(cfg, client, &config.templates, kept);
        let Ok(observed) = tokio::time::timeout(OBSERVE_DEADLINE, observing).await else {
            self.stalled.store(true, Ordering::Relaxed);
            let secs = OBSERVE_DEADLINE.as_secs();
            let error = format!(
                "cluster {}: not observed within {secs}s: its API stalls; the next passes probe it once each until it answers",
                cfg.name
            );
            tracing::warn!(cluster = %cfg.name, "{error}");
            let observation = unobserved(cfg, error);
            return (Arc::new(plan::plan(config, std::slice::from_ref(&observation))), observation);
        };
        match observed {
            Observed::AsKept(observation, kept) => {
                tracing::debug!(cluster = %cfg.name, "nothing changed since the last pass: its plan stands");
                let plan = Arc::clone(&kept.plan);
                *self.lock() = Some(kept);
                (plan, observation)
            }
            Observed::Fresh { observation, key } => {
                let plan = Arc::new(plan::plan(config, std::slice::from_ref(&observation)));
                let keep = key.filter(|_| plan.all_cached() && !observation.fetched_beyond_listings());
                *self.lock() = keep.map(|key| Kept { key, plan: Arc::clone(&plan) });
                (plan, observation)
            }
        }
    }

    /// Forgets the kept plan: something this daemon does may change the cluster in ways its listings do not
    /// show (a verification marks a file corrupt, or repairs it in place under the same volid).
    pub(super) fn forget(&self) {
        self.lock().take();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Kept>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A cluster that could not be observed this pass, and why (retryable: a stall can end by itself).
fn unobserved(cfg: &ClusterConfig, error: String) -> ClusterObservation {
    ClusterObservation { name: cfg.name.clone(), error: Some(error), error_retryable: true, ..Default::default() }
}
