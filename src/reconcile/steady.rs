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

use std::sync::{Arc, Mutex, PoisonError};

use super::observation::ClusterObservation;
use super::observe::{Observed, observe_cluster};
use super::plan::{self, Plan};
use crate::config::{ClusterConfig, Config};
use crate::pve::Client;

/// One cluster's kept plan, if any.
#[derive(Debug, Default)]
pub(super) struct PlanCache {
    kept: Mutex<Option<Kept>>,
}

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
        match observe_cluster(cfg, client, &config.templates, kept).await {
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
