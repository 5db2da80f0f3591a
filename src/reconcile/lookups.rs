//! Logs an admin can live with: each pass logs, per cluster, one summary line; a `CACHE HIT` / `CACHE MISS`
//! line only appears when a (node, template) changes state — and for everything the first time (all of a
//! one-shot `apply`) — so `journalctl -u vztmpld | grep 'CACHE MISS'` still tells the story without 20,000 lines
//! per pass. A cluster that could not be observed is one line, not one per template.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::outcome::Outcome;
use super::plan::{BlockReason, ItemState, Plan, Scope};

/// What was last logged for a (node, template): enough to notice a change, nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Logged {
    Hit(Arc<str>),
    Miss { storage: String, file: String },
    Blocked(Box<BlockReason>),
}

impl Logged {
    fn of(state: &ItemState, plan: &Plan) -> Self {
        match state {
            ItemState::Cached { volid } => Logged::Hit(volid.clone()),
            ItemState::Download { download } => {
                let d = &plan.downloads[*download];
                Logged::Miss { storage: d.storage.clone(), file: d.file.clone() }
            }
            ItemState::Blocked(b) => Logged::Blocked(b.clone()),
        }
    }

    /// Whether `state` is what was logged; compares in place, allocating nothing (the steady case).
    fn is(&self, state: &ItemState, plan: &Plan) -> bool {
        match (self, state) {
            (Logged::Hit(v), ItemState::Cached { volid }) => v == volid,
            (Logged::Miss { storage, file }, ItemState::Download { download }) => {
                plan.downloads.get(*download).is_some_and(|d| d.storage == *storage && d.file == *file)
            }
            (Logged::Blocked(r), ItemState::Blocked(b)) => r == b,
            _ => false,
        }
    }
}

/// One cluster's last logged states: node (`*` for the whole cluster) → template → state. Nested maps so a
/// steady pass looks every item up by `&str`, without building a key.
#[derive(Debug, Default)]
struct ClusterLog {
    nodes: HashMap<Arc<str>, HashMap<Arc<str>, Logged>>,
}

/// The last logged state of every (cluster, node, template), updated cluster by cluster each pass.
#[derive(Debug, Default)]
pub struct LookupLog {
    last: HashMap<String, ClusterLog>,
}

impl LookupLog {
    /// Logs the items of a plan whose state changed since the last pass (all of them the first time), and
    /// forgets (node, template)s the plan no longer has.
    pub fn log_changes(&mut self, plan: &Plan) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for item in &plan.items {
            *seen.entry(&*item.cluster).or_default() += 1;
        }
        for cluster in seen.keys() {
            if !self.last.contains_key(*cluster) {
                self.last.insert(cluster.to_string(), ClusterLog::default());
            }
        }
        let mut unobserved_logged: Vec<&str> = Vec::new();
        for item in &plan.items {
            let (cluster, node, template) = (&*item.cluster, &item.node, &*item.template);
            let Some(log) = self.last.get_mut(cluster) else { continue };
            let templates = match log.nodes.get_mut(node.as_str()) {
                Some(t) => t,
                None => log.nodes.entry(node_key(node)).or_default(),
            };
            match templates.get_mut(template) {
                Some(before) if before.is(&item.state, plan) => continue,
                Some(before) => *before = Logged::of(&item.state, plan),
                None => {
                    templates.insert(Arc::clone(&item.template), Logged::of(&item.state, plan));
                }
            }
            match (&item.state, node) {
                (ItemState::Blocked(b), Scope::Cluster) => {
                    if !unobserved_logged.contains(&cluster) {
                        unobserved_logged.push(cluster);
                        tracing::warn!(%cluster, reason = %b, retryable = b.retryable(), "cluster not observed; nothing decided for it this pass");
                    }
                }
                (ItemState::Cached { volid }, _) => tracing::info!(%cluster, %node, %template, %volid, "CACHE HIT"),
                (ItemState::Download { download }, _) => {
                    let d = &plan.downloads[*download];
                    tracing::info!(%cluster, %node, %template, storage = %d.storage, file = %d.file, "CACHE MISS");
                }
                (ItemState::Blocked(b), _) => {
                    tracing::warn!(%cluster, %node, %template, reason = %b, kind = b.metric_label(), "CACHE MISS (blocked)");
                }
            }
        }
        // Entries the plan did not visit (a template or node no longer targeted): rare, so found by counting.
        for (cluster, count) in seen {
            let Some(log) = self.last.get_mut(cluster) else { continue };
            if log.nodes.values().map(HashMap::len).sum::<usize>() == count {
                continue;
            }
            let mut keep: HashMap<&str, Vec<&str>> = HashMap::new();
            for item in plan.items.iter().filter(|i| &*i.cluster == cluster) {
                keep.entry(item.node.as_str()).or_default().push(&item.template);
            }
            log.nodes.retain(|node, templates| {
                let Some(wanted) = keep.get(&**node) else { return false };
                templates.retain(|t, _| wanted.contains(&&**t));
                true
            });
        }
    }

    /// After a cluster's downloads: what finished is a hit now (its `download finished` line told the story),
    /// so the next pass does not log it again.
    pub fn record_outcomes(&mut self, plan: &Plan, outcomes: &[Outcome]) {
        for item in &plan.items {
            let ItemState::Download { download } = item.state else { continue };
            if outcomes.get(download).is_some_and(Outcome::succeeded) {
                let volid = plan.downloads[download].volid();
                let logged = self
                    .last
                    .get_mut(&*item.cluster)
                    .and_then(|c| c.nodes.get_mut(item.node.as_str()))
                    .and_then(|n| n.get_mut(&*item.template));
                if let Some(logged) = logged {
                    *logged = Logged::Hit(volid.into());
                }
            }
        }
    }

    /// Forgets clusters no longer configured.
    pub fn retain(&mut self, clusters: &[String]) {
        self.last.retain(|c, _| clusters.contains(c));
    }
}

/// The log's key for a node: its shared name, or `*` for the whole cluster.
fn node_key(node: &Scope) -> Arc<str> {
    match node {
        Scope::Node(name) => Arc::clone(name),
        Scope::Cluster => Arc::from(node.as_str()),
    }
}

/// One line per cluster and pass: counts and duration.
pub fn log_summary(plan: &Plan, outcomes: &[Outcome], elapsed: Duration) {
    let Some(cluster) = plan.items.first().map(|i| &*i.cluster) else { return };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::plan::PlanItem;

    fn cached(node: &str, template: &str, volid: &str) -> PlanItem {
        PlanItem {
            cluster: "lab".into(),
            node: Scope::Node(node.into()),
            template: template.into(),
            state: ItemState::Cached { volid: volid.into() },
        }
    }

    fn entries(log: &LookupLog) -> usize {
        log.last.values().flat_map(|c| c.nodes.values()).map(HashMap::len).sum()
    }

    #[test]
    fn a_steady_plan_changes_nothing_and_dropped_items_are_forgotten() {
        let mut log = LookupLog::default();
        let both = Plan {
            items: vec![cached("pve1", "alpine", "local:vztmpl/a"), cached("pve1", "debian", "local:vztmpl/d")],
            ..Plan::default()
        };
        log.log_changes(&both);
        assert_eq!(entries(&log), 2);
        let logged = |log: &LookupLog, t: &str| log.last["lab"].nodes["pve1"].get(t).cloned();
        log.log_changes(&both);
        assert_eq!(logged(&log, "alpine"), Some(Logged::Hit("local:vztmpl/a".into())));

        let changed = Plan { items: vec![cached("pve1", "alpine", "nfs:vztmpl/a")], ..Plan::default() };
        log.log_changes(&changed);
        assert_eq!(entries(&log), 1, "debian is no longer planned: forgotten");
        assert_eq!(logged(&log, "alpine"), Some(Logged::Hit("nfs:vztmpl/a".into())), "the change is recorded");
        assert_eq!(logged(&log, "debian"), None);
    }
}
