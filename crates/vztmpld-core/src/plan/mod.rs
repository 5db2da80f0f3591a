//! Plan: a pure function of (desired, observed). No I/O, no clock, no randomness.
//!
//! For each targeted (node, template) the plan says Cached, Download or Blocked. A download to a shared
//! storage is planned once and satisfies every node that sees that storage. With `prune`, older builds on the
//! storage vztmpld fills are planned for deletion (once per shared storage), only once the newest is there.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

mod block;
mod oci_pull;
mod planner;
mod prune;
#[cfg(test)]
mod tests;

pub use block::BlockReason;
use planner::{ClusterPlanner, Decision};

use crate::config::{Config, TemplateConfig};
use crate::observation::ClusterObservation;

/// Room assumed for a template whose size is not known yet (Proxmox's index does not carry sizes).
pub const DEFAULT_SIZE_ESTIMATE: u64 = 512 * 1024 * 1024;

/// The whole plan of a pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub items: Vec<PlanItem>,
    pub downloads: Vec<Download>,
    /// Superseded builds to delete (`prune`); absent from the JSON when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deletions: Vec<Deletion>,
}

/// One superseded build to delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deletion {
    pub cluster: String,
    /// The node whose API deletes it.
    pub node: String,
    pub storage: String,
    pub shared: bool,
    pub volid: String,
    /// The template (label) whose `prune` asks for it.
    pub template: String,
    /// The newer builds kept.
    pub kept: Vec<String>,
    /// Why it cannot be deleted yet (a missing privilege), if so; in JSON its text.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "block_text")]
    pub blocked: Option<BlockReason>,
    /// The download (index in `downloads`) that brings the newest build: deleted only once it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<usize>,
}

/// The state of one template on one node. Its names are shared (one allocation per cluster, node, label and
/// volume, not per item): a fleet's plan has tens of thousands of items, and a converged cluster's is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanItem {
    pub cluster: Arc<str>,
    pub node: Scope,
    /// The template's label (`alpine-3.22`, or a url template's file name).
    pub template: Arc<str>,
    pub state: ItemState,
}

/// What the plan decided for one (node, template).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ItemState {
    /// A matching file is there.
    Cached { volid: Arc<str> },
    /// `plan.downloads[download]` will provide it.
    Download { download: usize },
    /// It cannot be provided until something changes. Boxed: the reasons are large and rare, and a converged
    /// fleet keeps tens of thousands of items (24 bytes each with the box, over 100 without).
    Blocked(Box<BlockReason>),
}

/// What a plan item is about: one node, or the whole cluster when the cluster itself could not be observed.
/// Serialized as the node's name, or `*` for the cluster (the JSON contract of `plan --output json` and
/// `/api/v1/status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every targeted node of the cluster.
    #[default]
    Cluster,
    /// One node.
    Node(Arc<str>),
}

impl Scope {
    /// The node's name, or `*` for the whole cluster.
    pub fn as_str(&self) -> &str {
        match self {
            Scope::Cluster => "*",
            Scope::Node(name) => name,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// `*` is the whole cluster (no node name can be `*`: Proxmox's node names are DNS labels).
impl<'de> serde::Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(d)?;
        Ok(if name == "*" { Scope::Cluster } else { Scope::Node(Arc::from(&*name)) })
    }
}

/// One download to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Download {
    pub cluster: String,
    /// The node whose API runs the task.
    pub node: String,
    pub storage: String,
    pub shared: bool,
    /// The file name it will have.
    pub file: String,
    pub source: Source,
    /// Nodes it satisfies.
    pub for_nodes: Vec<String>,
}

impl Download {
    /// The volume id it will produce.
    pub fn volid(&self) -> String {
        format!("{}:vztmpl/{}", self.storage, self.file)
    }
}

/// How a download is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// `POST /nodes/{node}/aplinfo` with the index's file name; Proxmox verifies the index's sha512.
    Appliance { template: String },
    /// `POST .../download-url` with a checksum.
    Url { url: String, algorithm: String, checksum: String },
    /// `POST .../oci-registry-pull` (Proxmox VE 9); `filename` only when the configuration names one.
    Oci {
        reference: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
    },
}

impl Source {
    /// The Proxmox task type that runs it (`download`, or `ociregistrypull`).
    pub fn task_type(&self) -> &'static str {
        match self {
            Source::Oci { .. } => "ociregistrypull",
            Source::Appliance { .. } | Source::Url { .. } => "download",
        }
    }
}

impl Plan {
    /// Appends another plan (another cluster's), shifting its download indices past this plan's.
    pub fn append(&mut self, other: Plan) {
        let offset = self.downloads.len();
        self.items.extend(other.items.into_iter().map(|mut item| {
            if let ItemState::Download { download } = &mut item.state {
                *download += offset;
            }
            item
        }));
        self.downloads.extend(other.downloads);
        self.deletions.extend(other.deletions.into_iter().map(|mut d| {
            d.after = d.after.map(|a| a + offset);
            d
        }));
    }

    /// Deletions that can run (not blocked).
    pub fn runnable_deletions(&self) -> impl Iterator<Item = (usize, &Deletion)> {
        self.deletions.iter().enumerate().filter(|(_, d)| d.blocked.is_none())
    }

    /// Whether anything is to be downloaded.
    pub fn has_downloads(&self) -> bool {
        !self.downloads.is_empty()
    }

    /// Whether every item is cached, with nothing to download or delete.
    pub fn all_cached(&self) -> bool {
        self.downloads.is_empty()
            && self.deletions.is_empty()
            && self.items.iter().all(|i| matches!(i.state, ItemState::Cached { .. }))
    }

    /// Whether anything is blocked (a deletion too).
    pub fn has_blocked(&self) -> bool {
        self.items.iter().any(|i| matches!(i.state, ItemState::Blocked(_)))
            || self.deletions.iter().any(|d| d.blocked.is_some())
    }
}

/// Computes the plan for every configured cluster from its observation.
pub fn plan(config: &Config, observed: &[ClusterObservation]) -> Plan {
    let mut out = Plan::default();
    let mut joinable = HashMap::new();
    for cluster in &config.clusters {
        let Some(obs) = observed.iter().find(|o| o.name == cluster.name) else { continue };
        let templates: Vec<&TemplateConfig> =
            config.templates.iter().filter(|t| t.clusters.as_ref().is_none_or(|c| c.contains(&cluster.name))).collect();
        let name: Arc<str> = Arc::from(cluster.name.as_str());
        let labels: HashMap<&str, Arc<str>> =
            templates.iter().map(|t| (t.label.as_str(), Arc::from(t.label.as_str()))).collect();
        let label =
            |t: &TemplateConfig| labels.get(t.label.as_str()).cloned().unwrap_or_else(|| t.label.as_str().into());
        if let Some(err) = &obs.error {
            for t in &templates {
                out.items.push(PlanItem {
                    cluster: Arc::clone(&name),
                    node: Scope::Cluster,
                    template: label(t),
                    state: ItemState::Blocked(Box::new(BlockReason::ClusterUnobserved {
                        error: err.clone(),
                        retryable: obs.error_retryable,
                    })),
                });
            }
            continue;
        }
        let ctx =
            ClusterPlanner { obs, selector: &cluster.storage, mirrors: &cluster.mirrors, load: Default::default() };
        let mut pruned: HashSet<(String, String, String)> = HashSet::new();
        for node in &obs.nodes {
            let node_name: Arc<str> = Arc::from(node.name.as_str());
            let here: Vec<&TemplateConfig> =
                templates.iter().copied().filter(|t| t.applies_to(&cluster.name, &node.name)).collect();
            for t in &here {
                let state = match ctx.resolve(node, t) {
                    Decision::Cached(volid) => {
                        out.add_deletions(&mut pruned, ctx.prune(node, t, &volid, None, &templates));
                        ItemState::Cached { volid }
                    }
                    Decision::Blocked(blocked) => ItemState::Blocked(Box::new(blocked)),
                    Decision::Download(d) => {
                        let before = out.downloads.len();
                        let via = d.node.clone();
                        let download = out.add_download(&mut joinable, *d, &node.name);
                        if out.downloads.len() > before {
                            *ctx.load.borrow_mut().entry(via).or_default() += 1;
                        }
                        // Planned now, run once the download succeeded: one apply converges.
                        let volid = out.downloads[download].volid();
                        out.add_deletions(&mut pruned, ctx.prune(node, t, &volid, Some(download), &templates));
                        ItemState::Download { download }
                    }
                };
                out.items.push(PlanItem {
                    cluster: Arc::clone(&name),
                    node: Scope::Node(Arc::clone(&node_name)),
                    template: label(t),
                    state,
                });
            }
        }
    }
    out
}

/// What makes two downloads the same: cluster, storage, file, and — for a node-local storage — the node (a
/// shared storage is one instance for every node).
type DownloadKey = (String, String, String, Option<String>);

impl Plan {
    /// Adds deletions not planned yet (a shared storage's file once, through the first node that plans it).
    fn add_deletions(&mut self, planned: &mut HashSet<(String, String, String)>, deletions: Vec<Deletion>) {
        for d in deletions {
            let instance = if d.shared { String::new() } else { d.node.clone() };
            if planned.insert((d.storage.clone(), instance, d.volid.clone())) {
                self.deletions.push(d);
            }
        }
    }

    /// Adds a download, or joins an identical one (same cluster, storage, storage instance and file); `joinable`
    /// indexes the downloads so far, so planning stays linear in the number of items.
    fn add_download(&mut self, joinable: &mut HashMap<DownloadKey, usize>, d: Download, node: &str) -> usize {
        let key = (d.cluster.clone(), d.storage.clone(), d.file.clone(), (!d.shared).then(|| d.node.clone()));
        if let Some(&i) = joinable.get(&key) {
            if !self.downloads[i].for_nodes.iter().any(|n| n == node) {
                self.downloads[i].for_nodes.push(node.to_string());
            }
            return i;
        }
        self.downloads.push(Download { for_nodes: vec![node.to_string()], ..d });
        joinable.insert(key, self.downloads.len() - 1);
        self.downloads.len() - 1
    }
}

/// A short text of the plan's totals, e.g. `3 cached, 2 to download (1 shared), 1 blocked`.
pub fn summary(plan: &Plan) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for item in &plan.items {
        let key = match item.state {
            ItemState::Cached { .. } => "cached",
            ItemState::Download { .. } => "missing",
            ItemState::Blocked(_) => "blocked",
        };
        *counts.entry(key).or_default() += 1;
    }
    let pruned = match plan.deletions.len() {
        0 => String::new(),
        n => format!(", {n} superseded to delete"),
    };
    format!(
        "{} cached, {} missing ({} downloads), {} blocked{pruned}",
        counts.get("cached").unwrap_or(&0),
        counts.get("missing").unwrap_or(&0),
        plan.downloads.len(),
        counts.get("blocked").unwrap_or(&0)
    )
}

/// A deletion's block in JSON: its text, as before the reasons were typed.
fn block_text<S: serde::Serializer>(blocked: &Option<BlockReason>, serializer: S) -> Result<S::Ok, S::Error> {
    match blocked {
        Some(reason) => serializer.collect_str(reason),
        None => serializer.serialize_none(),
    }
}
