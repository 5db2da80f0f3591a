//! The status snapshot the daemon keeps and `/api/v1/status` serves: which nodes have which templates,
//! what is downloading, what failed or is blocked and why, with kube-style conditions.
//!
//! The loop changes it only through the methods here (`start_pass`, `publish_plan`, `finish_pass`, ...);
//! the JSON shape is a contract (`tests/json_shape.rs` pins it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

mod template;

pub use template::{TemplateDetail, TemplateState, TemplateStatus, templates_from};

use super::control::Trigger;
use crate::reconcile::Outcome;
use crate::reconcile::plan::{Plan, Scope};
use crate::reconcile::progress::{Phase, Progress};
use crate::time::Timestamp;

/// The whole snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub config: ConfigStatus,
    /// Config loaded and at least one pass finished.
    pub ready: bool,
    pub pass_running: bool,
    pub last_pass: Option<PassStatus>,
    pub next_pass_at: Option<Timestamp>,
    /// Set by `POST /api/v1/reconcile`, cleared when that pass starts.
    pub reconcile_requested_at: Option<Timestamp>,
    pub conditions: Vec<Condition>,
    /// The HA election, with `ha` configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ha: Option<crate::ha::HaStatus>,
    /// Shared, copied on write: `/api/v1/status` serialises a snapshot of them while passes go on.
    pub clusters: Vec<Arc<ClusterStatus>>,
}

/// The configuration in force.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConfigStatus {
    pub path: String,
    /// Increments on each successful reload.
    pub generation: u64,
    pub loaded_at: Option<Timestamp>,
    pub last_reload_error: Option<String>,
}

/// How a pass ended (or that it is still running).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PassOutcome {
    #[default]
    Running,
    /// Every targeted template is cached.
    Converged,
    /// Something failed or is blocked.
    Degraded,
    /// The daemon stopped while the pass ran.
    Interrupted,
}

impl PassOutcome {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            PassOutcome::Running => "running",
            PassOutcome::Converged => "converged",
            PassOutcome::Degraded => "degraded",
            PassOutcome::Interrupted => "interrupted",
        }
    }
}

/// One pass.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PassStatus {
    pub trigger: Trigger,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub duration_seconds: Option<f64>,
    pub outcome: PassOutcome,
}

/// The kinds of condition, as Kubernetes controllers name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionType {
    Ready,
    Reconciling,
    Degraded,
    Stalled,
    /// The daemon only: the configuration file can be read (False: deleted, a directory, too large; the
    /// configuration in force stays).
    ConfigReadable,
    /// The daemon with a state directory only: what it learned is being saved there (False: the directory is
    /// read-only, full or gone; the daemon keeps running, only persistence is lost).
    StatePersisted,
}

/// `True` or `False`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    False,
}

impl From<bool> for ConditionStatus {
    fn from(on: bool) -> Self {
        if on { ConditionStatus::True } else { ConditionStatus::False }
    }
}

/// A kube-style condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: ConditionType,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
    #[serde(rename = "lastTransitionTime")]
    pub last_transition_time: Timestamp,
}

/// One cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub name: String,
    pub error: Option<String>,
    pub nodes: Vec<NodeStatus>,
}

/// One node (or `*`: the whole cluster, when it could not be observed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node, or the whole cluster when it could not be observed (`*` on the wire).
    pub name: Scope,
    pub conditions: Vec<Condition>,
    /// Consecutive passes with a failure on this node.
    pub failures: u32,
    pub next_retry: Option<Timestamp>,
    pub templates: Vec<TemplateStatus>,
}

pub use vztmpld_core::scheduler::NodeRetry;

/// Sets a condition, keeping its transition time when its status did not change.
pub fn set_condition(
    list: &mut Vec<Condition>,
    kind: ConditionType,
    on: bool,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    let status = ConditionStatus::from(on);
    match list.iter_mut().find(|c| c.kind == kind) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
            }
            c.status = status;
            // A steady pass sets the same conditions again: allocate only for a change.
            if c.reason != reason {
                c.reason = reason.into();
            }
            if c.message != message {
                c.message = message;
            }
        }
        None => list.push(Condition { kind, status, reason: reason.into(), message, last_transition_time: now }),
    }
}

/// A node of a cluster's view: nodes are sorted (`*` first, then by name), so a binary search finds it; a
/// linear search covers any name that sorts otherwise.
fn find_node<'a>(nodes: &'a mut [NodeStatus], name: &str) -> Option<&'a mut NodeStatus> {
    let i = match nodes.binary_search_by(|n| n.name.as_str().cmp(name)) {
        Ok(i) => i,
        Err(_) => nodes.iter().position(|n| n.name.as_str() == name)?,
    };
    nodes.get_mut(i)
}

fn is_on(list: &[Condition], kind: ConditionType) -> bool {
    list.iter().any(|c| c.kind == kind && c.status == ConditionStatus::True)
}

impl NodeStatus {
    /// Whether the node's `Ready` condition holds (every template cached).
    pub fn is_ready(&self) -> bool {
        is_on(&self.conditions, ConditionType::Ready)
    }

    /// Derives the node's conditions from its templates.
    fn derive_conditions(&mut self, now: Timestamp) {
        let count = |s: TemplateState| self.templates.iter().filter(|t| t.state == s).count();
        let first_error = |s: TemplateState| {
            self.templates
                .iter()
                .find(|t| t.state == s)
                .map(|t| format!("{}: {}", t.template, t.error().unwrap_or_default()))
                .unwrap_or_default()
        };
        let total = self.templates.len();
        let cached = count(TemplateState::Cached);
        let failed = count(TemplateState::Failed) + count(TemplateState::Corrupt);
        let blocked = count(TemplateState::Blocked);
        let moving = count(TemplateState::Downloading)
            + count(TemplateState::Missing)
            + count(TemplateState::Queued)
            + count(TemplateState::Verifying)
            > 0;
        let message = [TemplateState::Failed, TemplateState::Corrupt, TemplateState::Blocked]
            .into_iter()
            .map(first_error)
            .find(|m| !m.is_empty())
            .unwrap_or_default();
        let stalled_message = first_error(TemplateState::Blocked);
        let conds = &mut self.conditions;
        let ready_message = format!("{cached} of {total} templates cached");
        set_condition(conds, ConditionType::Ready, cached == total, "TemplatesCached", ready_message, now);
        set_condition(conds, ConditionType::Reconciling, moving, "Downloading", String::new(), now);
        let reason = if failed == 0 { "Blocked" } else { "DownloadFailed" };
        set_condition(conds, ConditionType::Degraded, failed + blocked > 0, reason, message, now);
        let stalled = blocked > 0 && failed == 0;
        set_condition(conds, ConditionType::Stalled, stalled, "Blocked", stalled_message, now);
    }
}

impl Status {
    /// A fresh snapshot for a daemon reading `config_path`.
    pub fn new(config_path: String) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").into(),
            config: ConfigStatus { path: config_path, ..Default::default() },
            ..Default::default()
        }
    }

    /// A node's status.
    pub fn node(&self, cluster: &str, node: &str) -> Option<&NodeStatus> {
        self.clusters.iter().find(|c| c.name == cluster)?.nodes.iter().find(|n| n.name.as_str() == node)
    }

    /// Whether every template on every node is cached.
    pub fn all_cached(&self) -> bool {
        self.templates().all(|t| t.state == TemplateState::Cached)
    }

    /// Every template entry.
    pub fn templates(&self) -> impl Iterator<Item = &TemplateStatus> {
        self.clusters.iter().flat_map(|c| &c.nodes).flat_map(|n| &n.templates)
    }

    /// A configuration generation took effect.
    pub fn config_loaded(&mut self, generation: u64, now: SystemTime) {
        self.config.generation = generation;
        self.config.loaded_at = Some(Timestamp::from(now));
        self.config.last_reload_error = None;
    }

    /// The configuration file cannot be read now; the configuration in force stays.
    pub fn config_unreadable(&mut self, error: String, now: SystemTime) {
        let stamp = Timestamp::from(now);
        set_condition(&mut self.conditions, ConditionType::ConfigReadable, false, "Unreadable", error, stamp);
    }

    /// The configuration file can be read again.
    pub fn config_readable(&mut self, now: SystemTime) {
        let stamp = Timestamp::from(now);
        let message = String::new();
        set_condition(&mut self.conditions, ConditionType::ConfigReadable, true, "Readable", message, stamp);
    }

    /// The inventory saved in the state directory covers every configured cluster: the daemon can answer the
    /// resolve API before its first pass, so it is ready (each answer carries when it was observed).
    pub fn ready_from_saved_inventory(&mut self) {
        self.ready = true;
    }

    /// Whether the last save to the state directory failed.
    pub fn state_failing(&self) -> bool {
        self.conditions.iter().any(|c| c.kind == ConditionType::StatePersisted && c.status == ConditionStatus::False)
    }

    /// A save to the state directory went through (`Ok`) or failed (the error names the file and what to do).
    pub fn state_saved(&mut self, result: Result<(), String>, now: SystemTime) {
        let stamp = Timestamp::from(now);
        let (on, reason, message) = match result {
            Ok(()) => (true, "Saved", String::new()),
            Err(e) => (false, "WriteFailed", e),
        };
        set_condition(&mut self.conditions, ConditionType::StatePersisted, on, reason, message, stamp);
    }

    /// An edit was rejected; the running configuration stays.
    pub fn reload_rejected(&mut self, error: String) {
        self.config.last_reload_error = Some(error);
    }

    /// The HA election as status shows it, with `ha` configured.
    pub fn ha(&self) -> Option<&crate::ha::HaStatus> {
        self.ha.as_ref()
    }

    /// The election changed (role, leader, etcd error).
    pub fn set_ha(&mut self, ha: crate::ha::HaStatus) {
        self.ha = Some(ha);
    }

    /// `POST /api/v1/reconcile` arrived.
    pub fn reconcile_requested(&mut self, now: SystemTime) {
        self.reconcile_requested_at = Some(Timestamp::from(now));
    }

    /// A pass began.
    pub fn start_pass(&mut self, trigger: Trigger, now: SystemTime) {
        let stamp = Timestamp::from(now);
        self.pass_running = true;
        self.reconcile_requested_at = None;
        let message = format!("trigger {}", trigger.as_str());
        set_condition(&mut self.conditions, ConditionType::Reconciling, true, "PassRunning", message, stamp);
        self.last_pass = Some(PassStatus {
            trigger,
            started_at: stamp,
            finished_at: None,
            duration_seconds: None,
            outcome: PassOutcome::Running,
        });
    }

    /// Replaces the cluster/node/template part with a plan's view (and, once applied, its outcomes).
    pub fn publish_plan(&mut self, plan: &Plan, outcomes: Option<&[Outcome]>, now: SystemTime) {
        self.clusters = self.views(plan, outcomes, now).into_iter().map(Arc::new).collect();
    }

    /// Replaces only the clusters a plan covers (one cluster's plan, as soon as it is made); the others keep
    /// their last view.
    pub fn publish_cluster_plan(&mut self, plan: &Plan, outcomes: Option<&[Outcome]>, now: SystemTime) {
        for view in self.views(plan, outcomes, now) {
            match self.clusters.binary_search_by(|c| c.name.cmp(&view.name)) {
                Ok(i) => self.clusters[i] = Arc::new(view),
                Err(i) => self.clusters.insert(i, Arc::new(view)),
            }
        }
    }

    /// The status of the clusters a plan covers, sorted by name, keeping each node's conditions and backoff
    /// (moved out of the previous view, which the caller replaces).
    fn views(&mut self, plan: &Plan, outcomes: Option<&[Outcome]>, now: SystemTime) -> Vec<ClusterStatus> {
        let stamp = Timestamp::from(now);
        let mut clusters: Vec<ClusterStatus> = Vec::new();
        for ((cluster, scope), templates) in templates_from(plan, outcomes) {
            let prev = self.take_node(cluster, scope.as_str());
            if clusters.last().is_none_or(|c| c.name != cluster) {
                clusters.push(ClusterStatus { name: cluster.to_string(), ..Default::default() });
            }
            let Some(c) = clusters.last_mut() else { continue };
            if *scope == Scope::Cluster {
                c.error = templates.first().and_then(|t| t.error()).map(String::from);
            }
            let mut n = NodeStatus { name: scope.clone(), templates, ..prev };
            n.derive_conditions(stamp);
            c.nodes.push(n);
        }
        clusters
    }

    /// Marks every (node, template) of `cluster` whose file is `volid` as corrupt (a deep verify's finding).
    pub fn mark_corrupt(&mut self, cluster: &str, volid: &str, error: &str, now: SystemTime) {
        let stamp = Timestamp::from(now);
        let Some(c) = self.cluster_mut(cluster) else { return };
        for n in &mut c.nodes {
            let mut hit = false;
            for t in n.templates.iter_mut().filter(|t| t.volid.as_deref() == Some(volid)) {
                t.state = TemplateState::Corrupt;
                t.detail_mut().error = Some(error.to_string());
                hit = true;
            }
            if hit {
                n.derive_conditions(stamp);
            }
        }
    }

    fn cluster_mut(&mut self, name: &str) -> Option<&mut ClusterStatus> {
        // Clusters are kept sorted by name.
        let i = self.clusters.binary_search_by(|c| c.name.as_str().cmp(name)).ok()?;
        self.clusters.get_mut(i).map(Arc::make_mut)
    }

    /// A node's conditions and retry state, moved out (its templates are about to be replaced).
    fn take_node(&mut self, cluster: &str, node: &str) -> NodeStatus {
        let Some(c) = self.cluster_mut(cluster) else { return NodeStatus::default() };
        match find_node(&mut c.nodes, node) {
            Some(n) => NodeStatus { templates: Vec::new(), ..std::mem::take(n) },
            None => NodeStatus::default(),
        }
    }

    /// Drops the clusters a pass's plans did not cover (no longer configured, or without templates); each
    /// covered cluster was published as it finished.
    pub fn retain_clusters<'p>(&mut self, plans: impl IntoIterator<Item = &'p Plan>) {
        let covered: std::collections::HashSet<&str> =
            plans.into_iter().flat_map(|p| p.items.first()).map(|i| &*i.cluster).collect();
        self.clusters.retain(|c| covered.contains(c.name.as_str()));
    }

    /// Whether a cluster has a view.
    pub fn has_cluster(&self, name: &str) -> bool {
        self.clusters.binary_search_by(|c| c.name.as_str().cmp(name)).is_ok()
    }

    /// A download of `(node, template)` items made progress (or waits for a slot).
    pub fn record_progress(&mut self, cluster: &str, items: &[(String, String)], p: &Progress) {
        let state = match p.phase {
            Phase::Queued => TemplateState::Queued,
            Phase::Downloading => TemplateState::Downloading,
            Phase::Verifying => TemplateState::Verifying,
        };
        let Some(c) = self.cluster_mut(cluster) else { return };
        for (node, template) in items {
            let Some(n) = find_node(&mut c.nodes, node) else { continue };
            for t in n.templates.iter_mut().filter(|t| *t.template == **template) {
                t.state = state;
                let d = t.detail_mut();
                d.upid.clone_from(&p.upid);
                d.progress = p.percent();
                d.bytes_done = p.done;
                d.bytes_total = p.total;
                d.rate_bytes_per_second = p.rate.map(|r| r as u64);
                d.eta_seconds = p.eta().map(|d| d.as_secs());
            }
        }
    }

    /// A pass ended: records its outcome, each node's retry schedule, and the daemon's conditions.
    pub fn finish_pass(
        &mut self,
        elapsed: Duration,
        retries: &BTreeMap<(String, String), NodeRetry>,
        now: SystemTime,
    ) -> PassOutcome {
        let stamp = Timestamp::from(now);
        let outcome = if self.all_cached() { PassOutcome::Converged } else { PassOutcome::Degraded };
        self.pass_running = false;
        self.ready = true;
        if let Some(last) = self.last_pass.as_mut() {
            last.finished_at = Some(stamp);
            last.duration_seconds = Some((elapsed.as_secs_f64() * 1000.0).round() / 1000.0);
            last.outcome = outcome;
        }
        // Most passes schedule no retry: a node with none before and none now is left as it is, and its
        // cluster's view is not copied away from a status read in progress.
        let retrying: std::collections::HashSet<(&str, &str)> =
            retries.keys().map(|(c, n)| (c.as_str(), n.as_str())).collect();
        let touched = |c: &ClusterStatus, n: &NodeStatus| {
            n.failures > 0 || n.next_retry.is_some() || retrying.contains(&(c.name.as_str(), n.name.as_str()))
        };
        for c in self.clusters.iter_mut().filter(|c| c.nodes.iter().any(|n| touched(c, n))).map(Arc::make_mut) {
            for n in c.nodes.iter_mut() {
                let retry = retries.get(&(c.name.clone(), n.name.to_string()));
                n.failures = retry.map_or(0, |r| r.failures);
                n.next_retry = retry.map(|r| Timestamp::from(now + r.after));
                for t in n.templates.iter_mut() {
                    if matches!(t.state, TemplateState::Failed | TemplateState::Blocked) {
                        t.detail_mut().next_retry.clone_from(&n.next_retry);
                    }
                }
            }
        }
        let nodes = || self.clusters.iter().flat_map(|c| c.nodes.iter().map(move |n| (c, n)));
        let degraded: Vec<String> = nodes()
            .filter(|(_, n)| is_on(&n.conditions, ConditionType::Degraded))
            .map(|(c, n)| {
                if n.name == Scope::Cluster { format!("cluster {}", c.name) } else { format!("{}/{}", c.name, n.name) }
            })
            .collect();
        let stalled = nodes().any(|(_, n)| is_on(&n.conditions, ConditionType::Stalled));
        let conds = &mut self.conditions;
        let message = format!("last pass {}", outcome.as_str());
        let converged = outcome == PassOutcome::Converged;
        set_condition(conds, ConditionType::Ready, converged, "PassFinished", message, stamp);
        set_condition(conds, ConditionType::Reconciling, false, "Idle", String::new(), stamp);
        let any_degraded = !degraded.is_empty();
        set_condition(conds, ConditionType::Degraded, any_degraded, "NodesDegraded", degraded.join(", "), stamp);
        set_condition(conds, ConditionType::Stalled, stalled, "Blocked", String::new(), stamp);
        outcome
    }

    /// The daemon stopped during a pass.
    pub fn interrupt_pass(&mut self) {
        self.pass_running = false;
        if let Some(last) = self.last_pass.as_mut().filter(|l| l.finished_at.is_none()) {
            last.outcome = PassOutcome::Interrupted;
        }
    }

    /// When the next pass is due.
    pub fn set_next_pass(&mut self, at: SystemTime) {
        self.next_pass_at = Some(Timestamp::from(at));
    }

    /// Templates (node × template) per (cluster, state), for the metrics gauge.
    pub fn counts(&self) -> BTreeMap<(&str, TemplateState), i64> {
        let mut counts = BTreeMap::new();
        for c in &self.clusters {
            // Counted per cluster first: one map entry per state, not a keyed lookup per template.
            let mut per_state: Vec<(TemplateState, i64)> = Vec::new();
            for t in c.nodes.iter().flat_map(|n| &n.templates) {
                match per_state.iter_mut().find(|(s, _)| *s == t.state) {
                    Some((_, n)) => *n += 1,
                    None => per_state.push((t.state, 1)),
                }
            }
            counts.extend(per_state.into_iter().map(|(state, n)| ((c.name.as_str(), state), n)));
        }
        counts
    }
}
