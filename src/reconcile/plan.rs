//! Plan: a pure function of (desired, observed). No I/O, no clock, no randomness.
//!
//! For each targeted (node, template) the plan says Cached, Download or Blocked. A download to a shared
//! storage is planned once and satisfies every node that sees that storage.

use std::collections::BTreeMap;

use serde::Serialize;

use super::observe::{ClusterObservation, IndexEntry, NodeObservation, find_cached};
use crate::config::{Checksum, Config, Policy, StorageSelector, TemplateConfig, TemplateSource};
use crate::template::{TemplateSpec, compare_recency};

/// Room assumed for a template whose size is not known yet (Proxmox's index does not carry sizes).
pub const DEFAULT_SIZE_ESTIMATE: u64 = 512 * 1024 * 1024;

/// The whole plan of a pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub items: Vec<PlanItem>,
    pub downloads: Vec<Download>,
}

/// The state of one template on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanItem {
    pub cluster: String,
    pub node: String,
    /// The template's label (`alpine-3.22`, or a url template's file name).
    pub template: String,
    pub state: ItemState,
}

/// What the plan decided for one (node, template).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ItemState {
    /// A matching file is there.
    Cached { volid: String },
    /// `plan.downloads[download]` will provide it.
    Download { download: usize },
    /// It cannot be provided until something changes.
    Blocked { reason: String, retryable: bool },
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
}

impl Plan {
    /// Whether anything is to be downloaded.
    pub fn has_downloads(&self) -> bool {
        !self.downloads.is_empty()
    }

    /// Whether anything is blocked.
    pub fn has_blocked(&self) -> bool {
        self.items.iter().any(|i| matches!(i.state, ItemState::Blocked { .. }))
    }
}

/// Computes the plan for every configured cluster from its observation.
pub fn plan(config: &Config, observed: &[ClusterObservation]) -> Plan {
    let mut out = Plan::default();
    for cluster in &config.clusters {
        let Some(obs) = observed.iter().find(|o| o.name == cluster.name) else { continue };
        let templates: Vec<&TemplateConfig> =
            config.templates.iter().filter(|t| t.clusters.as_ref().is_none_or(|c| c.contains(&cluster.name))).collect();
        if let Some(err) = &obs.error {
            for t in &templates {
                out.items.push(PlanItem {
                    cluster: cluster.name.clone(),
                    node: "*".into(),
                    template: t.label.clone(),
                    state: ItemState::Blocked { reason: err.clone(), retryable: obs.error_retryable },
                });
            }
            continue;
        }
        let ctx = ClusterPlanner { obs, selector: &cluster.storage, load: Default::default() };
        for node in &obs.nodes {
            for t in templates.iter().filter(|t| t.applies_to(&cluster.name, &node.name)) {
                let state = match ctx.resolve(node, t) {
                    Resolution::Cached(volid) => ItemState::Cached { volid },
                    Resolution::Blocked(reason, retryable) => ItemState::Blocked { reason, retryable },
                    Resolution::Download(d) => {
                        let before = out.downloads.len();
                        let via = d.node.clone();
                        let download = out.add_download(*d, &node.name);
                        if out.downloads.len() > before {
                            *ctx.load.borrow_mut().entry(via).or_default() += 1;
                        }
                        ItemState::Download { download }
                    }
                };
                out.items.push(PlanItem {
                    cluster: cluster.name.clone(),
                    node: node.name.clone(),
                    template: t.label.clone(),
                    state,
                });
            }
        }
    }
    out
}

impl Plan {
    /// Adds a download, or joins an identical one (same cluster, storage, storage instance and file).
    fn add_download(&mut self, d: Download, node: &str) -> usize {
        let same = |o: &Download| {
            o.cluster == d.cluster
                && o.storage == d.storage
                && o.file == d.file
                && (d.shared || o.node == d.node)
                && o.shared == d.shared
        };
        if let Some(i) = self.downloads.iter().position(same) {
            if !self.downloads[i].for_nodes.iter().any(|n| n == node) {
                self.downloads[i].for_nodes.push(node.to_string());
            }
            return i;
        }
        self.downloads.push(Download { for_nodes: vec![node.to_string()], ..d });
        self.downloads.len() - 1
    }
}

enum Resolution {
    Cached(String),
    Download(Box<Download>),
    Blocked(String, bool),
}

struct ClusterPlanner<'a> {
    obs: &'a ClusterObservation,
    selector: &'a StorageSelector,
    /// Downloads planned per node so far: shared downloads go to the least-loaded node that can run them.
    load: std::cell::RefCell<BTreeMap<String, usize>>,
}

impl ClusterPlanner<'_> {
    fn resolve(&self, node: &NodeObservation, t: &TemplateConfig) -> Resolution {
        if let Some(err) = &node.error {
            return Resolution::Blocked(err.clone(), false);
        }
        if !node.online {
            return Resolution::Blocked(format!("node {} is offline", node.name), true);
        }
        let visible: Vec<&str> =
            self.obs.storages.values().filter(|s| s.active_on(&node.name)).map(|s| s.id.as_str()).collect();
        if visible.is_empty() {
            return Resolution::Blocked(
                format!(
                    "node {} has no active storage with vztmpl content; enable 'Container template' on a storage (Datacenter → Storage)",
                    node.name
                ),
                false,
            );
        }
        if let Some(err) = self.listing_error(&node.name) {
            return Resolution::Blocked(err, true);
        }
        match &t.source {
            TemplateSource::Url { url, checksum, filename } => {
                self.resolve_url(node, t, url.as_str(), checksum, filename)
            }
            TemplateSource::Appliance(spec) => self.resolve_appliance(node, t, spec),
        }
    }

    /// A listing that failed on a storage the node uses: the cache state is unknown, so nothing is decided.
    fn listing_error(&self, node: &str) -> Option<String> {
        self.obs.storages.values().filter(|s| s.active_on(node)).find_map(|s| match s.volumes_for(node) {
            Some(Err(e)) => Some(format!("cannot list storage {}: {e}", s.id)),
            _ => None,
        })
    }

    fn has_file(&self, node: &str, file: &str) -> Option<String> {
        find_cached(self.obs, node, "", &TemplateSpec::File(file.to_string())).map(|v| v.volid.clone())
    }

    fn resolve_url(
        &self,
        node: &NodeObservation,
        t: &TemplateConfig,
        url: &str,
        checksum: &Checksum,
        filename: &str,
    ) -> Resolution {
        if let Some(volid) = self.has_file(&node.name, filename) {
            return Resolution::Cached(volid);
        }
        let (storage, shared) = match self.writable_target(node, t) {
            Ok(target) => target,
            Err(r) => return r,
        };
        let perms = &self.obs.permissions;
        let via = if shared {
            self.least_loaded(
                self.online_nodes_seeing(&storage).into_iter().filter(|n| perms.may_download_url(n)),
                &node.name,
            )
        } else if perms.may_download_url(&node.name) {
            Some(node.name.clone())
        } else {
            None
        };
        let Some(via) = via else {
            return Resolution::Blocked(
                format!(
                    "download-url needs Sys.AccessNetwork on /nodes/{} (or Sys.Audit+Sys.Modify on /); grant it to the token",
                    node.name
                ),
                false,
            );
        };
        Resolution::Download(Box::new(Download {
            cluster: self.obs.name.clone(),
            node: via,
            storage,
            shared,
            file: filename.to_string(),
            source: Source::Url {
                url: url.to_string(),
                algorithm: checksum.algorithm.clone(),
                checksum: checksum.hex.clone(),
            },
            for_nodes: Vec::new(),
        }))
    }

    fn resolve_appliance(&self, node: &NodeObservation, t: &TemplateConfig, spec: &TemplateSpec) -> Resolution {
        let newest = self.newest_entry(spec, &node.arch);
        let cached = find_cached(self.obs, &node.name, &node.arch, spec).map(|v| v.volid.clone());
        match (t.policy, &newest, cached) {
            (Policy::Present, _, Some(volid)) => return Resolution::Cached(volid),
            (Policy::Latest, Some(entry), _) => {
                if let Some(volid) = self.has_file(&node.name, &entry.template) {
                    return Resolution::Cached(volid);
                }
            }
            // No index knows anything newer: what is there is the latest known.
            (Policy::Latest, None, Some(volid)) => return Resolution::Cached(volid),
            _ => {}
        }
        let Some(entry) = newest else {
            let stale: Vec<&str> = self
                .obs
                .indexes
                .iter()
                .filter(|(_, idx)| idx.as_ref().is_ok_and(|e| e.is_empty()))
                .map(|(n, _)| n.as_str())
                .collect();
            let hint = if stale.is_empty() {
                "check the spelling, or run `pveam update` on the nodes (the index may be stale)".to_string()
            } else {
                format!("the index is empty on {}: run `pveam update` there", stale.join(", "))
            };
            let unknown = self.obs.indexes.is_empty() || self.obs.indexes.values().all(|i| i.is_err());
            let reason = if unknown {
                "no appliance index could be read on any node of the cluster".to_string()
            } else {
                format!("'{spec}' ({}) is in no node's appliance index; {hint}", node.arch)
            };
            return Resolution::Blocked(reason, unknown);
        };
        let (storage, shared) = match self.writable_target(node, t) {
            Ok(target) => target,
            Err(r) => return r,
        };
        let in_index = |n: &str| {
            self.obs
                .indexes
                .get(n)
                .is_some_and(|i| i.as_ref().is_ok_and(|e| e.iter().any(|x| x.template == entry.template)))
        };
        let via = if shared {
            self.least_loaded(self.online_nodes_seeing(&storage).into_iter().filter(|n| in_index(n)), &node.name)
        } else if in_index(&node.name) {
            Some(node.name.clone())
        } else {
            None
        };
        let download = |via: String, source: Source| Download {
            cluster: self.obs.name.clone(),
            node: via,
            storage: storage.clone(),
            shared,
            file: entry.template.clone(),
            source,
            for_nodes: Vec::new(),
        };
        if let Some(via) = via {
            return Resolution::Download(Box::new(download(
                via,
                Source::Appliance { template: entry.template.clone() },
            )));
        }
        // This node's index is stale: fetch the fresh entry's file directly, if the token may.
        match (&entry.location, &entry.sha512) {
            (Some(location), Some(sha512)) if self.obs.permissions.may_download_url(&node.name) => {
                Resolution::Download(Box::new(download(
                    node.name.clone(),
                    Source::Url { url: location.clone(), algorithm: "sha512".into(), checksum: sha512.clone() },
                )))
            }
            _ => Resolution::Blocked(
                format!(
                    "{} is not in node {}'s appliance index (stale): run `pveam update` on {}, or grant the token Sys.AccessNetwork on /nodes/{} so vztmpld can download it directly",
                    entry.template, node.name, node.name, node.name
                ),
                false,
            ),
        }
    }

    /// The newest index entry matching the spec for an architecture, across every node's index.
    fn newest_entry(&self, spec: &TemplateSpec, arch: &str) -> Option<IndexEntry> {
        self.obs
            .indexes
            .values()
            .filter_map(|i| i.as_ref().ok())
            .flatten()
            .filter(|e| {
                e.name.as_ref().is_some_and(|n| spec.matches(n, arch)) || spec.exact_file() == Some(e.template.as_str())
            })
            .max_by(|a, b| match (&a.name, &b.name) {
                (Some(x), Some(y)) => compare_recency(x, y),
                _ => a.template.cmp(&b.template),
            })
            .cloned()
    }

    /// The candidate with the fewest downloads planned so far; ties go to `prefer`, then to cluster order.
    fn least_loaded(&self, candidates: impl Iterator<Item = String>, prefer: &str) -> Option<String> {
        let load = self.load.borrow();
        candidates.min_by_key(|n| (load.get(n).copied().unwrap_or(0), n != prefer))
    }

    fn is_shared(&self, storage: &str) -> bool {
        self.obs.storages.get(storage).is_some_and(|s| s.shared)
    }

    fn online_nodes_seeing(&self, storage: &str) -> Vec<String> {
        let Some(s) = self.obs.storages.get(storage) else { return Vec::new() };
        // Targeted nodes first (their order), then other cluster members that have it active.
        let mut nodes: Vec<String> = self
            .obs
            .nodes
            .iter()
            .filter(|n| n.online && n.error.is_none() && s.active_on(&n.name))
            .map(|n| n.name.clone())
            .collect();
        for (n, on) in &s.on_nodes {
            if on.active && !nodes.contains(n) && self.obs.indexes.contains_key(n) {
                nodes.push(n.clone());
            }
        }
        nodes
    }

    /// The target storage for a miss, checked for the privilege to write templates there; and whether it is shared.
    fn writable_target(&self, node: &NodeObservation, t: &TemplateConfig) -> Result<(String, bool), Resolution> {
        let storage = self.target_storage(node, t)?;
        if let Some(r) = self.missing_allocate(&storage) {
            return Err(r);
        }
        let shared = self.is_shared(&storage);
        Ok((storage, shared))
    }

    fn missing_allocate(&self, storage: &str) -> Option<Resolution> {
        let path = format!("/storage/{storage}");
        (!self.obs.permissions.has(&path, "Datastore.AllocateTemplate")).then(|| {
            Resolution::Blocked(
                format!("the token lacks Datastore.AllocateTemplate on {path}; grant it (see README: minimal role)"),
                false,
            )
        })
    }

    fn room_on(&self, storage: &str, node: &str) -> bool {
        self.obs
            .storages
            .get(storage)
            .and_then(|s| s.on_nodes.get(node))
            .and_then(|o| o.avail)
            .is_none_or(|avail| avail >= self.size_estimate())
    }

    fn size_estimate(&self) -> u64 {
        DEFAULT_SIZE_ESTIMATE
    }

    /// The storage a miss is downloaded to (see README: target storage).
    fn target_storage(&self, node: &NodeObservation, t: &TemplateConfig) -> Result<String, Resolution> {
        let named = t.storage.clone().or_else(|| match self.selector {
            StorageSelector::Named(s) => Some(s.clone()),
            StorageSelector::Auto => None,
        });
        if let Some(id) = named {
            if !self.obs.storages.get(&id).is_some_and(|s| s.active_on(&node.name)) {
                return Err(Resolution::Blocked(
                    format!("storage {id} is not an active storage with vztmpl content on node {}", node.name),
                    false,
                ));
            }
            if !self.room_on(&id, &node.name) {
                return Err(Resolution::Blocked(
                    format!("storage {id} on node {} has no room for the template", node.name),
                    true,
                ));
            }
            return Ok(id);
        }
        let targeted: Vec<&NodeObservation> = self.obs.nodes.iter().filter(|n| n.online && n.error.is_none()).collect();
        let candidates: Vec<&super::observe::StorageObservation> =
            self.obs.storages.values().filter(|s| s.active_on(&node.name) && self.room_on(&s.id, &node.name)).collect();
        let shared_everywhere = candidates
            .iter()
            .filter(|s| s.shared && targeted.iter().all(|n| s.active_on(&n.name)))
            .max_by_key(|s| (s.on_nodes.get(&node.name).and_then(|o| o.avail), std::cmp::Reverse(s.id.clone())));
        if let Some(s) = shared_everywhere {
            return Ok(s.id.clone());
        }
        if candidates.iter().any(|s| s.id == "local") {
            return Ok("local".into());
        }
        candidates
            .iter()
            .max_by_key(|s| (s.on_nodes.get(&node.name).and_then(|o| o.avail), std::cmp::Reverse(s.id.clone())))
            .map(|s| s.id.clone())
            .ok_or_else(|| {
                Resolution::Blocked(format!("no vztmpl storage on node {} has room for the template", node.name), true)
            })
    }
}

/// A short text of the plan's totals, e.g. `3 cached, 2 to download (1 shared), 1 blocked`.
pub fn summary(plan: &Plan) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for item in &plan.items {
        let key = match item.state {
            ItemState::Cached { .. } => "cached",
            ItemState::Download { .. } => "missing",
            ItemState::Blocked { .. } => "blocked",
        };
        *counts.entry(key).or_default() += 1;
    }
    format!(
        "{} cached, {} missing ({} downloads), {} blocked",
        counts.get("cached").unwrap_or(&0),
        counts.get("missing").unwrap_or(&0),
        plan.downloads.len(),
        counts.get("blocked").unwrap_or(&0)
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::config::{ClusterConfig, DownloadSettings, NodeSelector, Secret, TlsMode};
    use crate::reconcile::observe::{IndexEntry, PermissionMap, StorageObservation, StorageOnNode, Volume};

    const ALPINE: &str = "alpine-3.22-default_20250617_amd64.tar.xz";

    fn config(storage: StorageSelector, templates: &[&str]) -> Config {
        Config {
            path: PathBuf::from("t.yaml"),
            interval: Duration::from_secs(600),
            clusters: vec![ClusterConfig {
                name: "lab".into(),
                endpoints: vec![],
                token_id: "a@pve!t".into(),
                secret: Secret::default(),
                tls: TlsMode::Insecure,
                nodes: NodeSelector::All,
                storage,
                max_parallel_downloads: 4,
                max_downloads_per_node: 1,
            }],
            templates: templates
                .iter()
                .map(|t| TemplateConfig {
                    label: t.to_string(),
                    source: TemplateSource::Appliance(TemplateSpec::parse(t).unwrap()),
                    policy: Policy::Present,
                    clusters: None,
                    nodes: None,
                    storage: None,
                })
                .collect(),
            server_listen: None,
            downloads: DownloadSettings::default(),
            warnings: vec![],
        }
    }

    fn node(name: &str) -> NodeObservation {
        NodeObservation { name: name.into(), online: true, arch: "amd64".into(), error: None }
    }

    fn storage(id: &str, shared: bool, nodes: &[&str], avail: u64, files: &[&str]) -> StorageObservation {
        let on_nodes =
            nodes.iter().map(|n| (n.to_string(), StorageOnNode { active: true, avail: Some(avail) })).collect();
        let vols = |_: Option<&str>| {
            Ok(files
                .iter()
                .map(|f| Volume { volid: format!("{id}:vztmpl/{f}"), file: f.to_string(), size: Some(1) })
                .collect())
        };
        let volumes = if shared {
            BTreeMap::from([(None, vols(None))])
        } else {
            nodes.iter().map(|n| (Some(n.to_string()), vols(Some(n)))).collect()
        };
        StorageObservation { id: id.into(), shared, on_nodes, volumes }
    }

    fn observed(nodes: &[&str], storages: Vec<StorageObservation>) -> ClusterObservation {
        let entry = IndexEntry {
            template: ALPINE.into(),
            name: crate::template::TemplateName::parse(ALPINE),
            location: Some(format!("http://mirror/{ALPINE}")),
            sha512: Some("ab".repeat(64)),
        };
        ClusterObservation {
            name: "lab".into(),
            nodes: nodes.iter().map(|n| node(n)).collect(),
            storages: storages.into_iter().map(|s| (s.id.clone(), s)).collect(),
            indexes: nodes.iter().map(|n| (n.to_string(), Ok(vec![entry.clone()]))).collect(),
            permissions: PermissionMap::unknown(),
            ..Default::default()
        }
    }

    const GB: u64 = 1 << 30;

    #[test]
    fn auto_prefers_a_shared_storage_all_nodes_see_and_plans_it_once() {
        let obs = observed(
            &["a", "b", "c"],
            vec![
                storage("local", false, &["a", "b", "c"], 10 * GB, &[]),
                storage("nfs", true, &["a", "b", "c"], 10 * GB, &[]),
            ],
        );
        let p = plan(&config(StorageSelector::Auto, &["alpine-3.22"]), &[obs]);
        assert_eq!(p.downloads.len(), 1);
        assert_eq!(p.downloads[0].storage, "nfs");
        assert_eq!(p.downloads[0].for_nodes, ["a", "b", "c"]);
        assert!(p.items.iter().all(|i| i.state == ItemState::Download { download: 0 }));
    }

    #[test]
    fn auto_falls_back_to_local_when_the_shared_storage_misses_a_node() {
        let obs = observed(
            &["a", "b"],
            vec![storage("local", false, &["a", "b"], 10 * GB, &[]), storage("nfs", true, &["a"], 10 * GB, &[])],
        );
        let p = plan(&config(StorageSelector::Auto, &["alpine-3.22"]), &[obs]);
        assert_eq!(p.downloads.len(), 2);
        assert!(p.downloads.iter().all(|d| d.storage == "local" && !d.shared));
    }

    #[test]
    fn a_storage_without_room_is_never_chosen() {
        let obs = observed(
            &["a"],
            vec![storage("local", false, &["a"], 10 * 1024 * 1024, &[]), storage("big", false, &["a"], 10 * GB, &[])],
        );
        let p = plan(&config(StorageSelector::Auto, &["alpine-3.22"]), std::slice::from_ref(&obs));
        assert_eq!(p.downloads[0].storage, "big");
        let p = plan(&config(StorageSelector::Named("local".into()), &["alpine-3.22"]), &[obs]);
        assert!(matches!(&p.items[0].state, ItemState::Blocked { reason, .. } if reason.contains("no room")), "{p:?}");
    }

    #[test]
    fn a_file_on_any_visible_storage_satisfies_the_spec() {
        let obs = observed(
            &["a"],
            vec![storage("local", false, &["a"], GB, &[]), storage("other", false, &["a"], GB, &[ALPINE])],
        );
        let p = plan(&config(StorageSelector::Auto, &["alpine"]), &[obs]);
        assert_eq!(p.items[0].state, ItemState::Cached { volid: format!("other:vztmpl/{ALPINE}") });
        assert!(p.downloads.is_empty());
    }

    #[test]
    fn no_vztmpl_storage_is_blocked_with_the_fix() {
        let obs = observed(&["a"], vec![]);
        let p = plan(&config(StorageSelector::Auto, &["alpine"]), &[obs]);
        assert!(
            matches!(&p.items[0].state, ItemState::Blocked { reason, retryable: false } if reason.contains("enable 'Container template'"))
        );
    }

    #[test]
    fn plan_is_deterministic() {
        let obs = observed(&["a", "b"], vec![storage("nfs", true, &["a", "b"], GB, &[])]);
        let cfg = config(StorageSelector::Auto, &["alpine", "alpine-3.22"]);
        assert_eq!(plan(&cfg, std::slice::from_ref(&obs)), plan(&cfg, &[obs]));
    }
}
