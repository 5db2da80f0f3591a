//! Observe: what each targeted node actually has, with as few API calls as answer the question.
//!
//! Per cluster and pass: one `/access/permissions`, one `/cluster/resources?type=node`, one
//! `?type=storage`, one content listing per shared storage (not per node) and per local vztmpl storage of
//! each online node, and the appliance indexes only when something must be resolved (a miss, or `latest`).

use std::collections::BTreeMap;

use futures_util::future::join_all;

use crate::config::{ClusterConfig, Policy, TemplateConfig, TemplateSource};
use crate::pve::{Client, PveError};
use crate::template::{TemplateName, TemplateSpec, debian_arch};

/// The token's effective privileges as `/access/permissions` lists them.
#[derive(Debug, Clone, Default)]
pub struct PermissionMap {
    paths: BTreeMap<String, Vec<String>>,
    /// False when the map could not be read: checks then pass, and Proxmox's own 403s speak instead.
    known: bool,
}

impl PermissionMap {
    /// A map from `path → privileges`.
    pub fn new(paths: BTreeMap<String, Vec<String>>) -> Self {
        Self { paths, known: true }
    }

    /// A map that allows everything (preflight unavailable).
    pub fn unknown() -> Self {
        Self::default()
    }

    /// Whether the token holds `privilege` at `path`. The listing omits inherited paths, so the deepest
    /// listed ancestor decides, as Proxmox's own inheritance does.
    pub fn has(&self, path: &str, privilege: &str) -> bool {
        if !self.known {
            return true;
        }
        let mut p = path.trim_end_matches('/').to_string();
        loop {
            let key = if p.is_empty() { "/".to_string() } else { p.clone() };
            if let Some(privs) = self.paths.get(&key) {
                return privs.iter().any(|x| x == privilege);
            }
            if key == "/" {
                return false;
            }
            match p.rfind('/') {
                Some(i) => p.truncate(i),
                None => p.clear(),
            }
        }
    }

    /// Whether download-url is allowed on a node: `Sys.AccessNetwork` there, or `Sys.Audit`+`Sys.Modify` on `/`.
    pub fn may_download_url(&self, node: &str) -> bool {
        self.has(&format!("/nodes/{node}"), "Sys.AccessNetwork")
            || (self.has("/", "Sys.Audit") && self.has("/", "Sys.Modify"))
    }
}

/// One cluster as observed.
#[derive(Debug, Clone, Default)]
pub struct ClusterObservation {
    pub name: String,
    /// Set when the cluster as a whole could not be observed (unreachable, bad token, TLS).
    pub error: Option<String>,
    /// Whether that error can go away by itself (network) or needs a config change (TLS, auth).
    pub error_retryable: bool,
    pub permissions: PermissionMap,
    /// Targeted nodes, in cluster order.
    pub nodes: Vec<NodeObservation>,
    /// Storages with vztmpl content, by id.
    pub storages: BTreeMap<String, StorageObservation>,
    /// Appliance indexes by node (only fetched when needed).
    pub indexes: BTreeMap<String, Result<Vec<IndexEntry>, String>>,
}

/// One targeted node.
#[derive(Debug, Clone)]
pub struct NodeObservation {
    pub name: String,
    pub online: bool,
    /// Debian architecture name (`amd64`, `arm64`).
    pub arch: String,
    /// Why the node could not be observed, if so.
    pub error: Option<String>,
}

/// A storage with vztmpl content.
#[derive(Debug, Clone, Default)]
pub struct StorageObservation {
    pub id: String,
    pub shared: bool,
    /// Per node that has it enabled: active, and free bytes.
    pub on_nodes: BTreeMap<String, StorageOnNode>,
    /// Volumes, keyed by node for local storages and by `None` for shared ones.
    pub volumes: BTreeMap<Option<String>, Result<Vec<Volume>, String>>,
}

/// A storage as one node sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct StorageOnNode {
    pub active: bool,
    pub avail: Option<u64>,
}

impl StorageObservation {
    /// The volumes `node` sees here (shared ones for every node).
    pub fn volumes_for(&self, node: &str) -> Option<&Result<Vec<Volume>, String>> {
        if self.shared { self.volumes.get(&None) } else { self.volumes.get(&Some(node.to_string())) }
    }

    /// Whether `node` has the storage active.
    pub fn active_on(&self, node: &str) -> bool {
        self.on_nodes.get(node).is_some_and(|s| s.active)
    }
}

/// A template file on a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub volid: String,
    pub file: String,
    pub size: Option<u64>,
}

/// An appliance-index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The file name from the index's `template` field.
    pub template: String,
    pub name: Option<TemplateName>,
    pub location: Option<String>,
    pub sha512: Option<String>,
}

/// Observes one cluster for the given desired templates.
pub async fn observe_cluster(cfg: &ClusterConfig, client: &Client, templates: &[TemplateConfig]) -> ClusterObservation {
    let mut obs = ClusterObservation { name: cfg.name.clone(), ..Default::default() };
    let (perms, nodes, storages) =
        tokio::join!(client.permissions(), client.cluster_nodes(), client.cluster_storages());
    let (nodes, storages) = match (nodes, storages) {
        (Ok(n), Ok(s)) => (n, s),
        (Err(e), _) | (_, Err(e)) => {
            obs.error_retryable = e.is_retryable();
            obs.error = Some(e.to_string());
            return obs;
        }
    };
    obs.permissions = match perms {
        Ok(map) => {
            PermissionMap::new(map.into_iter().map(|(path, privs)| (path, privs.into_keys().collect())).collect())
        }
        Err(e) => {
            tracing::warn!(cluster = %cfg.name, error = %e, "cannot read the token's permissions; skipping the preflight");
            PermissionMap::unknown()
        }
    };

    for n in &nodes {
        if cfg.nodes.includes(&n.node) {
            obs.nodes.push(NodeObservation {
                name: n.node.clone(),
                online: n.status.as_deref() == Some("online"),
                arch: debian_arch(n.host_arch.as_deref().unwrap_or("x86_64")),
                error: None,
            });
        }
    }
    if let crate::config::NodeSelector::Only(list) = &cfg.nodes {
        for wanted in list.iter().filter(|w| !nodes.iter().any(|n| n.node == **w)) {
            obs.nodes.push(NodeObservation {
                name: wanted.clone(),
                online: false,
                arch: "amd64".into(),
                error: Some(format!(
                    "node '{wanted}' is not a member of cluster {} (names are case-sensitive)",
                    cfg.name
                )),
            });
        }
    }

    for row in
        storages.iter().filter(|r| r.content.as_deref().is_some_and(|c| c.split(',').any(|c| c.trim() == "vztmpl")))
    {
        let s = obs
            .storages
            .entry(row.storage.clone())
            .or_insert_with(|| StorageObservation { id: row.storage.clone(), ..Default::default() });
        s.shared |= row.shared.unwrap_or(false);
        let avail = row.maxdisk.zip(row.disk).map(|(max, used)| max.saturating_sub(used));
        s.on_nodes
            .insert(row.node.clone(), StorageOnNode { active: row.status.as_deref() == Some("available"), avail });
    }

    list_contents(&mut obs, client).await;
    if needs_indexes(&obs, templates) {
        let online: Vec<String> =
            nodes.iter().filter(|n| n.status.as_deref() == Some("online")).map(|n| n.node.clone()).collect();
        let fetched = join_all(online.iter().map(|n| client.appliances(n))).await;
        for (node, result) in online.into_iter().zip(fetched) {
            let entries = result.map_err(|e| e.to_string()).map(|list| {
                list.into_iter()
                    .filter(|a| a.kind.as_deref().is_none_or(|k| k == "lxc"))
                    .map(|a| IndexEntry {
                        name: TemplateName::parse(&a.template),
                        template: a.template,
                        location: a.location,
                        sha512: a.sha512sum,
                    })
                    .collect()
            });
            obs.indexes.insert(node, entries);
        }
    }
    obs
}

/// Lists each shared storage once (through a node that has it active) and each local one per online node.
async fn list_contents(obs: &mut ClusterObservation, client: &Client) {
    let online: Vec<&str> =
        obs.nodes.iter().filter(|n| n.online && n.error.is_none()).map(|n| n.name.as_str()).collect();
    let mut jobs: Vec<(String, Option<String>, String)> = Vec::new();
    for s in obs.storages.values() {
        if s.shared {
            // Any cluster node may list it; prefer a targeted one.
            if let Some(node) = online.iter().find(|n| s.active_on(n)) {
                jobs.push((s.id.clone(), None, node.to_string()));
            }
        } else {
            for node in online.iter().filter(|n| s.active_on(n)) {
                jobs.push((s.id.clone(), Some(node.to_string()), node.to_string()));
            }
        }
    }
    let results = join_all(jobs.iter().map(|(storage, _, via)| client.templates_on(via, storage))).await;
    for ((storage, key, _), result) in jobs.into_iter().zip(results) {
        let volumes = result.map_err(|e: PveError| e.to_string()).map(|list| {
            list.into_iter()
                .filter(|v| v.content.as_deref().is_none_or(|c| c == "vztmpl"))
                .filter_map(|v| {
                    let file = v.volid.split_once(":vztmpl/").map(|(_, f)| f.to_string())?;
                    Some(Volume { volid: v.volid, file, size: v.size })
                })
                .collect()
        });
        if let Some(s) = obs.storages.get_mut(&storage) {
            s.volumes.insert(key, volumes);
        }
    }
}

/// Whether any targeted node needs an appliance index: `latest`, or an appliance spec with no matching file.
fn needs_indexes(obs: &ClusterObservation, templates: &[TemplateConfig]) -> bool {
    obs.nodes.iter().filter(|n| n.online && n.error.is_none()).any(|node| {
        templates.iter().filter(|t| t.applies_to(&obs.name, &node.name)).any(|t| match &t.source {
            TemplateSource::Url { .. } => false,
            TemplateSource::Appliance(_) if t.policy == Policy::Latest => true,
            TemplateSource::Appliance(spec) => find_cached(obs, &node.name, &node.arch, spec).is_none(),
        })
    })
}

/// The newest volume matching `spec` on any active vztmpl storage `node` sees (the first storage, by id, wins a tie).
pub fn find_cached<'a>(obs: &'a ClusterObservation, node: &str, arch: &str, spec: &TemplateSpec) -> Option<&'a Volume> {
    let mut best: Option<(&Volume, Option<TemplateName>)> = None;
    let candidates = obs
        .storages
        .values()
        .filter(|s| s.active_on(node))
        .filter_map(|s| s.volumes_for(node)?.as_ref().ok())
        .flatten();
    for v in candidates {
        let name = TemplateName::parse(&v.file);
        let matches =
            spec.exact_file() == Some(v.file.as_str()) || name.as_ref().is_some_and(|n| spec.matches(n, arch));
        if !matches {
            continue;
        }
        let newer = match (&best, &name) {
            (None, _) => true,
            (Some((_, Some(b))), Some(n)) => crate::template::compare_recency(n, b).is_gt(),
            _ => false,
        };
        if newer {
            best = Some((v, name));
        }
    }
    best.map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_inherit_from_the_deepest_listed_path() {
        let map = PermissionMap::new(BTreeMap::from([
            ("/storage".to_string(), vec!["Datastore.Audit".to_string(), "Datastore.AllocateTemplate".to_string()]),
            ("/storage/nfs".to_string(), vec!["Datastore.Audit".to_string()]),
            ("/nodes".to_string(), vec!["Sys.AccessNetwork".to_string()]),
        ]));
        assert!(map.has("/storage/local", "Datastore.AllocateTemplate"));
        assert!(!map.has("/storage/nfs", "Datastore.AllocateTemplate"));
        assert!(map.may_download_url("pve1"));
        assert!(!map.has("/", "Sys.Audit"));
        assert!(PermissionMap::unknown().has("/x", "Anything"));
    }
}
