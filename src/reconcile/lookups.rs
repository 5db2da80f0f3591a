//! Logs an admin can live with: each pass logs, per cluster, one summary line; a `CACHE HIT` / `CACHE MISS`
//! line only appears when a (node, template) changes state — and for everything the first time (all of a
//! one-shot `apply`) — so `journalctl -u vztmpld | grep 'CACHE MISS'` still tells the story without 20,000 lines
//! per pass. A cluster that could not be observed is one line, not one per template.

use std::collections::HashMap;
use std::time::Duration;

use super::apply::Outcome;
use super::plan::{ItemState, Plan, Scope};

/// What was last logged for a (node, template): enough to notice a change, nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Logged {
    Hit(String),
    Miss(String),
    Blocked(String),
}

/// The last logged state of every (cluster, node, template), replaced cluster by cluster each pass.
#[derive(Debug, Default)]
pub struct LookupLog {
    last: HashMap<String, HashMap<(Scope, String), Logged>>,
}

impl LookupLog {
    /// Logs the items of one cluster's plan whose state changed since the last pass (all of them the first time).
    pub fn log_changes(&mut self, plan: &Plan) {
        let mut clusters: HashMap<&str, HashMap<(Scope, String), Logged>> = HashMap::new();
        let mut unobserved_logged: Vec<&str> = Vec::new();
        for item in &plan.items {
            let (cluster, node, template) = (&item.cluster, &item.node, &item.template);
            let now = match &item.state {
                ItemState::Cached { volid } => Logged::Hit(volid.clone()),
                ItemState::Download { download } => Logged::Miss(plan.downloads[*download].volid()),
                ItemState::Blocked(b) => Logged::Blocked(b.reason.clone()),
            };
            let key = (node.clone(), template.clone());
            let before = self.last.get(cluster.as_str()).and_then(|m| m.get(&key));
            if before != Some(&now) {
                match (&item.state, node) {
                    (ItemState::Blocked(b), Scope::Cluster) => {
                        if !unobserved_logged.contains(&cluster.as_str()) {
                            unobserved_logged.push(cluster);
                            tracing::warn!(%cluster, reason = %b.reason, retryable = b.retryable, "cluster not observed; nothing decided for it this pass");
                        }
                    }
                    (ItemState::Cached { volid }, _) => tracing::info!(%cluster, %node, %template, %volid, "CACHE HIT"),
                    (ItemState::Download { download }, _) => {
                        let d = &plan.downloads[*download];
                        tracing::info!(%cluster, %node, %template, storage = %d.storage, file = %d.file, "CACHE MISS");
                    }
                    (ItemState::Blocked(b), _) => {
                        tracing::warn!(%cluster, %node, %template, reason = %b.reason, "CACHE MISS (blocked)");
                    }
                }
            }
            clusters.entry(cluster).or_default().insert(key, now);
        }
        for (cluster, items) in clusters {
            self.last.insert(cluster.to_string(), items);
        }
    }

    /// After a cluster's downloads: what finished is a hit now (its `download finished` line told the story),
    /// so the next pass does not log it again.
    pub fn record_outcomes(&mut self, plan: &Plan, outcomes: &[Outcome]) {
        for item in &plan.items {
            let ItemState::Download { download } = item.state else { continue };
            if outcomes.get(download).is_some_and(Outcome::succeeded) {
                let volid = plan.downloads[download].volid();
                if let Some(m) = self.last.get_mut(item.cluster.as_str()) {
                    m.insert((item.node.clone(), item.template.clone()), Logged::Hit(volid));
                }
            }
        }
    }

    /// Forgets clusters no longer configured.
    pub fn retain(&mut self, clusters: &[String]) {
        self.last.retain(|c, _| clusters.contains(c));
    }
}

/// One line per cluster and pass: counts and duration.
pub fn log_summary(plan: &Plan, outcomes: &[Outcome], elapsed: Duration) {
    let Some(cluster) = plan.items.first().map(|i| i.cluster.as_str()) else { return };
    let (mut cached, mut downloaded, mut failed, mut blocked) = (0usize, 0usize, 0usize, 0usize);
    for item in &plan.items {
        match &item.state {
            ItemState::Cached { .. } => cached += 1,
            ItemState::Download { download } => match outcomes.get(*download) {
                Some(o) if o.succeeded() => downloaded += 1,
                _ => failed += 1,
            },
            ItemState::Blocked(_) => blocked += 1,
        }
    }
    let seconds = (elapsed.as_secs_f64() * 1000.0).round() / 1000.0;
    tracing::info!(%cluster, cached, downloaded, failed, blocked, downloads = plan.downloads.len(), seconds, "cluster reconciled");
}
