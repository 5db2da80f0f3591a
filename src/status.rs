//! The status snapshot the daemon keeps and `/api/v1/status` serves: which nodes have which templates,
//! what is downloading, what failed or is blocked and why, with kube-style conditions.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::reconcile::apply::Outcome;
use crate::reconcile::plan::{ItemState, Plan};

/// RFC 3339 time, to the second.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The whole snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub config: ConfigStatus,
    /// Config loaded and at least one pass finished.
    pub ready: bool,
    pub pass_running: bool,
    pub last_pass: Option<PassStatus>,
    pub next_pass_at: Option<String>,
    /// Set by `POST /api/v1/reconcile`, cleared when that pass starts.
    pub reconcile_requested_at: Option<String>,
    pub conditions: Vec<Condition>,
    pub clusters: Vec<ClusterStatus>,
}

/// The configuration in force.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConfigStatus {
    pub path: String,
    /// Increments on each successful reload.
    pub generation: u64,
    pub loaded_at: Option<String>,
    pub last_reload_error: Option<String>,
}

/// One finished pass.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PassStatus {
    /// `start`, `interval`, `retry`, `config`, `signal`, `api`.
    pub trigger: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_seconds: Option<f64>,
    /// `converged`, `degraded` (something failed or blocked), or `interrupted`.
    pub outcome: String,
}

/// A kube-style condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    /// `True` or `False`.
    pub status: String,
    pub reason: String,
    pub message: String,
    #[serde(rename = "lastTransitionTime")]
    pub last_transition_time: String,
}

/// One cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub name: String,
    pub error: Option<String>,
    pub nodes: Vec<NodeStatus>,
}

/// One node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub conditions: Vec<Condition>,
    /// Consecutive passes with a failure on this node.
    pub failures: u32,
    pub next_retry: Option<String>,
    pub templates: Vec<TemplateStatus>,
}

/// One template on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateStatus {
    pub template: String,
    /// `cached`, `missing`, `downloading`, `failed` or `blocked`.
    pub state: String,
    pub volid: Option<String>,
    pub storage: Option<String>,
    pub upid: Option<String>,
    pub progress: Option<u8>,
    pub error: Option<String>,
    pub next_retry: Option<String>,
}

impl TemplateStatus {
    fn is(&self, state: &str) -> bool {
        self.state == state
    }
}

/// Builds per-node template states from a plan, and (once applied) its outcomes.
pub fn templates_from(plan: &Plan, outcomes: Option<&[Outcome]>) -> BTreeMap<(String, String), Vec<TemplateStatus>> {
    let mut out: BTreeMap<(String, String), Vec<TemplateStatus>> = BTreeMap::new();
    for item in &plan.items {
        let t = match &item.state {
            ItemState::Cached { volid } => TemplateStatus {
                template: item.template.clone(),
                state: "cached".into(),
                storage: volid.split(':').next().map(String::from),
                volid: Some(volid.clone()),
                ..Default::default()
            },
            ItemState::Download { download } => {
                let d = &plan.downloads[*download];
                match outcomes.and_then(|o| o.get(*download)) {
                    None => TemplateStatus {
                        template: item.template.clone(),
                        state: "missing".into(),
                        storage: Some(d.storage.clone()),
                        ..Default::default()
                    },
                    Some(Outcome::Finished { .. }) => TemplateStatus {
                        template: item.template.clone(),
                        state: "cached".into(),
                        storage: Some(d.storage.clone()),
                        volid: Some(d.volid()),
                        ..Default::default()
                    },
                    Some(Outcome::Failed { upid, error, .. }) => TemplateStatus {
                        template: item.template.clone(),
                        state: "failed".into(),
                        storage: Some(d.storage.clone()),
                        upid: upid.clone(),
                        error: Some(error.clone()),
                        ..Default::default()
                    },
                }
            }
            ItemState::Blocked { reason, .. } => TemplateStatus {
                template: item.template.clone(),
                state: "blocked".into(),
                error: Some(reason.clone()),
                ..Default::default()
            },
        };
        out.entry((item.cluster.clone(), item.node.clone())).or_default().push(t);
    }
    out
}

/// Sets a condition, keeping its transition time when its status did not change.
pub fn set_condition(list: &mut Vec<Condition>, kind: &str, on: bool, reason: &str, message: String, now: &str) {
    let status = if on { "True" } else { "False" };
    match list.iter_mut().find(|c| c.kind == kind) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.to_string();
            }
            c.status = status.into();
            c.reason = reason.into();
            c.message = message;
        }
        None => list.push(Condition {
            kind: kind.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time: now.to_string(),
        }),
    }
}

/// Derives a node's conditions from its templates.
pub fn node_conditions(node: &mut NodeStatus, now: &str) {
    let total = node.templates.len();
    let cached = node.templates.iter().filter(|t| t.is("cached")).count();
    let failed: Vec<&TemplateStatus> = node.templates.iter().filter(|t| t.is("failed")).collect();
    let blocked: Vec<&TemplateStatus> = node.templates.iter().filter(|t| t.is("blocked")).collect();
    let downloading = node.templates.iter().any(|t| t.is("downloading") || t.is("missing"));
    let first_error = |ts: &[&TemplateStatus]| {
        ts.first().map(|t| format!("{}: {}", t.template, t.error.clone().unwrap_or_default())).unwrap_or_default()
    };
    let mut conds = std::mem::take(&mut node.conditions);
    set_condition(
        &mut conds,
        "Ready",
        cached == total,
        "TemplatesCached",
        format!("{cached} of {total} templates cached"),
        now,
    );
    set_condition(&mut conds, "Reconciling", downloading, "Downloading", String::new(), now);
    let degraded = !failed.is_empty() || !blocked.is_empty();
    let message = if failed.is_empty() { first_error(&blocked) } else { first_error(&failed) };
    set_condition(
        &mut conds,
        "Degraded",
        degraded,
        if failed.is_empty() { "Blocked" } else { "DownloadFailed" },
        message,
        now,
    );
    set_condition(
        &mut conds,
        "Stalled",
        !blocked.is_empty() && failed.is_empty(),
        "Blocked",
        first_error(&blocked),
        now,
    );
    node.conditions = conds;
}

impl Status {
    /// Whether a node is degraded.
    pub fn node(&self, cluster: &str, node: &str) -> Option<&NodeStatus> {
        self.clusters.iter().find(|c| c.name == cluster)?.nodes.iter().find(|n| n.name == node)
    }
}
