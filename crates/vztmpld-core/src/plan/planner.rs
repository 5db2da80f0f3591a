//! One cluster's planning: for a (node, template), is a matching file there, where would a miss go (target
//! storage, room, privileges), and through which node (least loaded for shared storages).

use std::collections::BTreeMap;

use super::{BlockReason, DEFAULT_SIZE_ESTIMATE, Download, Source};
use crate::config::{Checksum, Policy, StorageSelector, TemplateConfig, TemplateSource};
use crate::observation::{ClusterObservation, IndexEntry, NodeObservation, StorageObservation, find_cached};
use crate::template::{TemplateSpec, compare_recency};

pub(super) enum Decision {
    Cached(std::sync::Arc<str>),
    Download(Box<Download>),
    Blocked(BlockReason),
}

pub(super) struct ClusterPlanner<'a> {
    pub(super) obs: &'a ClusterObservation,
    pub(super) selector: &'a StorageSelector,
    /// The cluster's `mirrors:` (prefix → replacement), longest prefix first.
    pub(super) mirrors: &'a [(String, String)],
    /// Downloads planned per node so far: shared downloads go to the least-loaded node that can run them.
    pub(super) load: std::cell::RefCell<BTreeMap<String, usize>>,
}

impl ClusterPlanner<'_> {
    pub(super) fn resolve(&self, node: &NodeObservation, t: &TemplateConfig) -> Decision {
        if let Some(err) = &node.error {
            return Decision::Blocked(BlockReason::NodeUnobserved { error: err.clone() });
        }
        if !node.online {
            return Decision::Blocked(BlockReason::NodeOffline { node: node.name.clone() });
        }
        if !self.obs.storages.values().any(|s| s.active_on(&node.name)) {
            return Decision::Blocked(BlockReason::NoTemplateStorage { node: node.name.clone() });
        }
        if let Some(blocked) = self.listing_error(&node.name) {
            return Decision::Blocked(blocked);
        }
        // A storage the configuration names must exist there, even while everything is cached: the mistake
        // would only surface at the next miss otherwise.
        if let Some(blocked) = self.named_storage(t).and_then(|id| self.wrong_storage(&id, &node.name)) {
            return Decision::Blocked(blocked);
        }
        match &t.source {
            TemplateSource::Url { url, checksum, filename } => {
                self.resolve_url(node, t, url.as_str(), checksum, filename)
            }
            TemplateSource::Appliance(spec) => self.resolve_appliance(node, t, spec),
            TemplateSource::Oci { reference, filename, file } => {
                self.resolve_oci(node, t, reference, filename.as_deref(), file)
            }
        }
    }

    /// A listing that failed on a storage the node uses: the cache state is unknown, so nothing is decided.
    fn listing_error(&self, node: &str) -> Option<BlockReason> {
        self.obs.storages.values().filter(|s| s.active_on(node)).find_map(|s| match s.volumes_for(node) {
            Some(Err(e)) => Some(BlockReason::ListingFailed { storage: s.id.clone(), error: e.to_string() }),
            _ => None,
        })
    }

    pub(super) fn has_file(&self, node: &str, file: &str) -> Option<std::sync::Arc<str>> {
        find_cached(self.obs, node, "", &TemplateSpec::File(file.to_string())).map(|v| v.volid.clone())
    }

    fn resolve_url(
        &self,
        node: &NodeObservation,
        t: &TemplateConfig,
        url: &str,
        checksum: &Checksum,
        filename: &str,
    ) -> Decision {
        if let Some(volid) = self.has_file(&node.name, filename) {
            return Decision::Cached(volid);
        }
        // The configured checksum still decides: a mirror only changes where the bytes come from.
        let mirrored = crate::config::rewrite_mirror(self.mirrors, url);
        let url = mirrored.as_deref().unwrap_or(url);
        let (storage, shared) = match self.writable_target(node, t) {
            Ok(target) => target,
            Err(r) => return r,
        };
        let source =
            Source::Url { url: url.to_string(), algorithm: checksum.algorithm.clone(), checksum: checksum.hex.clone() };
        self.url_download(&node.name, storage, shared, filename, source, "grant it to the token")
    }

    fn resolve_appliance(&self, node: &NodeObservation, t: &TemplateConfig, spec: &TemplateSpec) -> Decision {
        let newest = self.newest_entry(spec, &node.arch);
        let cached = find_cached(self.obs, &node.name, &node.arch, spec).map(|v| v.volid.clone());
        match (t.policy, &newest, cached) {
            (Policy::Present, _, Some(volid)) => return Decision::Cached(volid),
            (Policy::Latest, Some(entry), _) => {
                if let Some(volid) = self.has_file(&node.name, &entry.template) {
                    return Decision::Cached(volid);
                }
            }
            // No index knows anything newer: what is there is the latest known.
            (Policy::Latest, None, Some(volid)) => return Decision::Cached(volid),
            _ => {}
        }
        let Some(entry) = newest else {
            return Decision::Blocked(self.not_in_index(node, spec));
        };
        let (storage, shared) = match self.writable_target(node, t) {
            Ok(target) => target,
            Err(r) => return r,
        };
        if let Some(url) = entry.location.as_deref().and_then(|l| crate::config::rewrite_mirror(self.mirrors, l)) {
            return self.via_mirror(node, storage, shared, &entry, url);
        }
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
            return Decision::Download(Box::new(download(via, Source::Appliance { template: entry.template.clone() })));
        }
        // This node's index is stale: fetch the fresh entry's file directly, if the token may.
        match (&entry.location, &entry.sha512) {
            (Some(location), Some(sha512)) if self.obs.permissions.may_download_url(&node.name) => {
                Decision::Download(Box::new(download(
                    node.name.clone(),
                    Source::Url { url: location.clone(), algorithm: "sha512".into(), checksum: sha512.clone() },
                )))
            }
            _ => {
                Decision::Blocked(BlockReason::StaleIndex { template: entry.template.clone(), node: node.name.clone() })
            }
        }
    }

    /// Why no index offers `spec` for `node`'s architecture: which indexes were empty or unreadable, and the
    /// closest name they do offer.
    fn not_in_index(&self, node: &NodeObservation, spec: &TemplateSpec) -> BlockReason {
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
        let unread: Vec<String> =
            self.obs.indexes.iter().filter_map(|(n, idx)| idx.as_ref().err().map(|e| format!("{n}: {e}"))).collect();
        let reason = if unknown && !unread.is_empty() {
            format!("no appliance index could be read on any node of the cluster ({})", unread.join("; "))
        } else if unknown {
            "no appliance index could be read on any node of the cluster".to_string()
        } else if !unread.is_empty() {
            format!(
                "'{spec}' ({}) is in no readable node's appliance index; {hint} (unreadable: {})",
                node.arch,
                unread.join("; ")
            )
        } else {
            let names: Vec<String> = self
                .obs
                .indexes
                .values()
                .filter_map(|i| i.as_ref().ok())
                .flatten()
                .filter_map(|e| e.name.as_ref())
                .flat_map(|n| {
                    let base = match &n.version {
                        Some(v) => format!("{}-{v}", n.os),
                        None => n.os.clone(),
                    };
                    [base, n.package.clone()]
                })
                .collect();
            let typed = spec.to_string();
            let suggestion = crate::suggest::hint(&typed, names.iter().map(String::as_str));
            format!("'{spec}' ({}) is in no node's appliance index{suggestion}; {hint}", node.arch)
        };
        BlockReason::NotInIndex { detail: reason, indexes_unread: unknown }
    }

    /// An index template fetched from the cluster's mirror with `download-url`: the same file name, checked
    /// against the index's sha512, so the mirror cannot substitute other bytes.
    fn via_mirror(
        &self,
        node: &NodeObservation,
        storage: String,
        shared: bool,
        entry: &IndexEntry,
        url: String,
    ) -> Decision {
        let Some(sha512) = &entry.sha512 else {
            return Decision::Blocked(BlockReason::MirrorUnverifiable { template: entry.template.clone(), url });
        };
        let source = Source::Url { url, algorithm: "sha512".into(), checksum: sha512.clone() };
        self.url_download(&node.name, storage, shared, &entry.template, source, "grant it, or remove the mirror")
    }

    /// A `download-url` of `file` for `node`, through the node that may run it; blocked (with `fix`) when none may.
    fn url_download(
        &self,
        node: &str,
        storage: String,
        shared: bool,
        file: &str,
        source: Source,
        fix: &'static str,
    ) -> Decision {
        let Some(via) = self.download_url_via(node, &storage, shared) else {
            return Decision::Blocked(BlockReason::NoDownloadUrl { node: node.to_string(), fix });
        };
        let cluster = self.obs.name.clone();
        let file = file.to_string();
        Decision::Download(Box::new(Download { cluster, node: via, storage, shared, file, source, for_nodes: vec![] }))
    }

    /// The node that runs a `download-url` for `node` (the least loaded one that may, for a shared storage).
    fn download_url_via(&self, node: &str, storage: &str, shared: bool) -> Option<String> {
        let perms = &self.obs.permissions;
        if shared {
            let allowed = self.online_nodes_seeing(storage).into_iter().filter(|n| perms.may_download_url(n));
            self.least_loaded(allowed, node)
        } else {
            perms.may_download_url(node).then(|| node.to_string())
        }
    }

    /// The newest index entry matching the spec for an architecture, across every node's index.
    fn newest_entry(&self, spec: &TemplateSpec, arch: &str) -> Option<IndexEntry> {
        self.obs
            .indexes
            .values()
            .filter_map(|i| i.as_ref().ok())
            .flatten()
            .filter(|e| spec.accepts(&e.template, e.name.as_ref(), arch))
            .max_by(|a, b| match (&a.name, &b.name) {
                (Some(x), Some(y)) => compare_recency(x, y),
                _ => a.template.cmp(&b.template),
            })
            .cloned()
    }

    /// The candidate with the fewest downloads planned so far; ties go to `prefer`, then to cluster order.
    pub(super) fn least_loaded(&self, candidates: impl Iterator<Item = String>, prefer: &str) -> Option<String> {
        let load = self.load.borrow();
        candidates.min_by_key(|n| (load.get(n).copied().unwrap_or(0), n != prefer))
    }

    pub(super) fn is_shared(&self, storage: &str) -> bool {
        self.obs.storages.get(storage).is_some_and(|s| s.shared)
    }

    pub(super) fn online_nodes_seeing(&self, storage: &str) -> Vec<String> {
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
    pub(super) fn writable_target(
        &self,
        node: &NodeObservation,
        t: &TemplateConfig,
    ) -> Result<(String, bool), Decision> {
        let storage = self.target_storage(node, t)?;
        if let Some(r) = self.missing_allocate(&storage) {
            return Err(r);
        }
        let shared = self.is_shared(&storage);
        Ok((storage, shared))
    }

    fn missing_allocate(&self, storage: &str) -> Option<Decision> {
        let path = format!("/storage/{storage}");
        (!self.obs.permissions.has(&path, "Datastore.AllocateTemplate"))
            .then_some(Decision::Blocked(BlockReason::NoAllocateTemplate { path }))
    }

    /// Free bytes of a storage on a node, when Proxmox reported plausible sizes.
    fn avail_on(&self, storage: &str, node: &str) -> Option<u64> {
        self.obs.storages.get(storage).and_then(|s| s.on_nodes.get(node)).and_then(|o| o.avail)
    }

    fn room_on(&self, storage: &str, node: &str) -> bool {
        self.avail_on(storage, node).is_none_or(|avail| avail >= self.size_estimate())
    }

    fn size_estimate(&self) -> u64 {
        DEFAULT_SIZE_ESTIMATE
    }

    /// Why a named storage cannot take templates on a node (with the ones that can), or `None` when it can.
    pub(super) fn wrong_storage(&self, id: &str, node: &str) -> Option<BlockReason> {
        if self.obs.storages.get(id).is_some_and(|s| s.active_on(node)) {
            return None;
        }
        let usable: Vec<&str> =
            self.obs.storages.values().filter(|s| s.active_on(node)).map(|s| s.id.as_str()).collect();
        Some(BlockReason::WrongStorage {
            storage: id.to_string(),
            node: node.to_string(),
            hint: crate::suggest::hint(id, usable.iter().copied()),
            usable: usable.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// The storage the configuration names for a template (its own `storage:`, else the cluster's).
    fn named_storage(&self, t: &TemplateConfig) -> Option<String> {
        t.storage.clone().or_else(|| match self.selector {
            StorageSelector::Named(s) => Some(s.clone()),
            StorageSelector::Auto => None,
        })
    }

    /// The storage a miss is downloaded to (see README: target storage).
    pub(super) fn target_storage(&self, node: &NodeObservation, t: &TemplateConfig) -> Result<String, Decision> {
        let named = self.named_storage(t);
        if let Some(id) = named {
            if let Some(blocked) = self.wrong_storage(&id, &node.name) {
                return Err(Decision::Blocked(blocked));
            }
            if !self.room_on(&id, &node.name) {
                let free = self.avail_on(&id, &node.name).unwrap_or(0);
                return Err(Decision::Blocked(BlockReason::NamedStorageFull {
                    storage: id,
                    node: node.name.clone(),
                    free_mib: free / (1024 * 1024),
                    need_mib: self.size_estimate() / (1024 * 1024),
                }));
            }
            return Ok(id);
        }
        let targeted: Vec<&NodeObservation> = self.obs.nodes.iter().filter(|n| n.online && n.error.is_none()).collect();
        let candidates: Vec<&StorageObservation> =
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
                Decision::Blocked(BlockReason::NoRoom {
                    node: node.name.clone(),
                    need_mib: self.size_estimate() / (1024 * 1024),
                })
            })
    }
}
