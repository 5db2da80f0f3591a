//! The daemon's side of deep verify: when each cached file was last verified (kept across reloads, and across
//! restarts in the state directory; the first verification of each file is spread over its period by a hash of
//! its name, so a fleet is never re-hashed at once), which files are corrupt (shown in status and metrics until
//! a verification finds them good, or they are gone), and the results as metrics and logs.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::shared::Shared;
use crate::config::{Config, TemplateSource};
use crate::reconcile::observation::ClusterObservation;
use crate::reconcile::plan::{Download, ItemState, Plan, Source};
use crate::reconcile::verification::{Verification, Verified, Verifier};

/// (cluster, storage, node for a local storage or empty for a shared one, volid).
type Key = (String, String, String, String);

/// When each file was last verified, and which are corrupt.
#[derive(Debug)]
pub struct Ledger {
    started: Instant,
    last: Mutex<HashMap<Key, Instant>>,
    /// (cluster, volid) → the mismatch.
    corrupt: Mutex<HashMap<(String, String), String>>,
    /// Weak: the shared state holds the fleet, which holds this ledger.
    shared: Weak<Shared>,
    /// Moves on every change, so the state directory is written only when something changed.
    changes: AtomicU64,
}

/// What the state directory keeps of the ledger (the `data` of `ledger.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedLedger {
    pub verified: Vec<SavedVerification>,
    pub corrupt: Vec<SavedCorrupt>,
}

/// When a file was last verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedVerification {
    pub cluster: String,
    pub storage: String,
    /// The node of a local storage; empty for a shared one.
    pub node: String,
    pub volid: String,
    pub at: crate::time::Timestamp,
}

/// A file found corrupt, with the mismatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedCorrupt {
    pub cluster: String,
    pub volid: String,
    pub error: String,
}

impl Ledger {
    /// A ledger reporting into `shared`.
    pub fn new(shared: Weak<Shared>) -> Self {
        Self {
            started: Instant::now(),
            last: Mutex::default(),
            corrupt: Mutex::default(),
            shared,
            changes: AtomicU64::new(0),
        }
    }

    /// A counter that moves whenever a verification or a corrupt mark is recorded or dropped.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// The ledger as the state directory keeps it (monotonic instants as wall-clock times).
    pub fn saved(&self) -> SavedLedger {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut verified: Vec<SavedVerification> = last
            .iter()
            .map(|((cluster, storage, node, volid), at)| SavedVerification {
                cluster: cluster.clone(),
                storage: storage.clone(),
                node: node.clone(),
                volid: volid.clone(),
                at: (wall - now.saturating_duration_since(*at)).into(),
            })
            .collect();
        verified.sort_by(|a, b| (&a.cluster, &a.volid, &a.node).cmp(&(&b.cluster, &b.volid, &b.node)));
        let corrupt = self.corrupt.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut corrupt: Vec<SavedCorrupt> = corrupt
            .iter()
            .map(|((cluster, volid), error)| SavedCorrupt {
                cluster: cluster.clone(),
                volid: volid.clone(),
                error: error.clone(),
            })
            .collect();
        corrupt.sort_by(|a, b| (&a.cluster, &a.volid).cmp(&(&b.cluster, &b.volid)));
        SavedLedger { verified, corrupt }
    }

    /// Takes a saved ledger in (at start): files verified before the restart are next due a period after that,
    /// and corrupt marks show again once their cluster's plan is published.
    pub fn restore(&self, saved: SavedLedger) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for v in saved.verified {
            // A time in the future (a clock set back) counts as now.
            let ago = wall.duration_since(v.at.into()).unwrap_or_default();
            let at = now.checked_sub(ago).unwrap_or(now);
            last.insert((v.cluster, v.storage, v.node, v.volid), at);
        }
        let mut corrupt = self.corrupt.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        corrupt.extend(saved.corrupt.into_iter().map(|c| ((c.cluster, c.volid), c.error)));
    }

    /// Re-applies the corrupt marks to a freshly published cluster, forgetting files no longer cached.
    pub fn remark(&self, plan: &Plan) {
        let Some(shared) = self.shared.upgrade() else { return };
        let cached: HashSet<(&str, &str)> = plan
            .items
            .iter()
            .filter_map(|i| match &i.state {
                ItemState::Cached { volid } => Some((&*i.cluster, &**volid)),
                _ => None,
            })
            .collect();
        let mut corrupt = self.corrupt.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let clusters: HashSet<&str> = plan.items.iter().map(|i| &*i.cluster).collect();
        let before = corrupt.len();
        corrupt.retain(|(c, v), _| !clusters.contains(c.as_str()) || cached.contains(&(c.as_str(), v.as_str())));
        if corrupt.len() != before {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
        let now = SystemTime::now();
        for ((c, volid), error) in corrupt.iter().filter(|((c, _), _)| clusters.contains(c.as_str())) {
            shared.update(|s| s.mark_corrupt(c, volid, error, now));
        }
    }
}

/// When a file is first due: its period's spread, by a hash of its key (stable across restarts).
fn offset(key: &Key, period: Duration) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let nanos = period.as_nanos().max(1);
    Duration::from_nanos((u128::from(h.finish()) % nanos) as u64)
}

impl Verifier for Ledger {
    fn due(&self, config: &Config, plan: &Plan, observed: &ClusterObservation) -> Vec<Verification> {
        // The common case costs nothing per item: no template asks for verification.
        if config.templates.iter().all(|t| t.verify.is_none()) {
            return Vec::new();
        }
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::new();
        for item in &plan.items {
            let ItemState::Cached { volid } = &item.state else { continue };
            let node = item.node.as_str();
            let Some(t) =
                config.templates.iter().find(|t| *t.label == *item.template && t.applies_to(&item.cluster, node))
            else {
                continue;
            };
            let Some(period) = t.verify else { continue };
            let (Some((storage, _)), Some(file)) = (volid.split_once(':'), volid.split_once("vztmpl/").map(|(_, f)| f))
            else {
                continue;
            };
            let source = match &t.source {
                TemplateSource::Appliance(_) => Source::Appliance { template: file.to_string() },
                TemplateSource::Url { url, checksum, .. } => Source::Url {
                    url: url.to_string(),
                    algorithm: checksum.algorithm.clone(),
                    checksum: checksum.hex.clone(),
                },
                // Proxmox keeps no checksum of an OCI image: nothing to verify against.
                TemplateSource::Oci { .. } => continue,
            };
            let shared = observed.storages.get(storage).is_some_and(|s| s.shared);
            let key: Key = (
                item.cluster.to_string(),
                storage.to_string(),
                if shared { String::new() } else { node.to_string() },
                volid.to_string(),
            );
            let first = self.started + offset(&key, period);
            let since = last.get(&key).copied();
            let due_at = since.map_or(first, |t| t + period);
            if now < due_at {
                continue;
            }
            last.insert(key, now);
            self.changes.fetch_add(1, Ordering::Relaxed);
            // The preflight of `repair`: deleting needs Datastore.Allocate (when this pass read the privileges).
            let path = format!("/storage/{storage}");
            let may_delete = observed.permissions.has(&path, "Datastore.Allocate");
            if t.repair && !may_delete {
                tracing::warn!(cluster = %item.cluster, %storage, "repair: true needs Datastore.Allocate on {path}; a corrupt file there is only marked, not repaired");
            }
            out.push(Verification {
                download: Download {
                    cluster: item.cluster.to_string(),
                    node: node.to_string(),
                    storage: storage.to_string(),
                    shared,
                    file: file.to_string(),
                    source,
                    for_nodes: vec![node.to_string()],
                },
                template: t.label.clone(),
                repair: t.repair && may_delete,
            });
        }
        out
    }

    fn record(&self, v: &Verification, outcome: &Verified) {
        let d = &v.download;
        let (cluster, volid) = (d.cluster.clone(), d.volid());
        let Some(shared) = self.shared.upgrade() else { return };
        shared.metrics().record_verification(&cluster, outcome.as_str());
        let mut corrupt = self.corrupt.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.changes.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Verified::Good => {
                tracing::debug!(%volid, "verified: the checksum matches");
                corrupt.remove(&(cluster, volid));
            }
            Verified::Repaired => {
                tracing::info!(%volid, "repaired: the corrupt file was downloaded again");
                corrupt.remove(&(cluster, volid));
            }
            Verified::Corrupt { .. } => {
                let error = outcome.message().unwrap_or_default();
                shared.update(|s| s.mark_corrupt(&cluster, &volid, &error, SystemTime::now()));
                corrupt.insert((cluster, volid), error);
            }
            Verified::Failed(error) => tracing::warn!(%volid, %error, "could not verify"),
        }
    }
}
