//! What the daemon last saw on every node's vztmpl storages, kept between passes so the resolve API can answer
//! "which file do I use on node X?" for any spec without asking Proxmox. Pure data and lookups, no I/O.
//!
//! Compact on purpose: per volume only its volid and size (names are parsed when asked, a microsecond each),
//! and a shared storage's listing is one `Arc` that every node of the cluster points at.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use super::observation::ClusterObservation;
use crate::template::{TemplateName, TemplateSpec, compare_recency};

mod saved;
pub use saved::SavedInventory;

/// A template file on a storage, as kept between passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vol {
    /// Shared with the observation's volume (and the plan items that find it cached).
    pub volid: Arc<str>,
    pub size: Option<u64>,
}

impl Vol {
    /// The file name (after `STORAGE:vztmpl/`).
    pub fn file(&self) -> &str {
        self.volid.split_once("vztmpl/").map_or(&self.volid, |(_, f)| f)
    }
}

/// A kept listing; a shared storage's is one allocation for all its nodes.
pub type Listing = Arc<[Vol]>;

/// One storage's listing as one node sees it.
#[derive(Debug, Clone)]
pub struct Shelf {
    pub storage: Box<str>,
    pub shared: bool,
    pub volumes: Arc<[Vol]>,
}

/// One node: its architecture, and the active vztmpl storages it sees, by storage id.
#[derive(Debug, Clone)]
pub struct NodeInventory {
    pub arch: Box<str>,
    pub online: bool,
    pub observed_at: SystemTime,
    pub shelves: Vec<Shelf>,
}

/// One cluster's nodes.
#[derive(Debug, Clone, Default)]
pub struct ClusterInventory {
    pub nodes: HashMap<Box<str>, NodeInventory>,
}

/// A volume found for a spec on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub volid: String,
    pub storage: String,
    pub size: Option<u64>,
    pub observed_at: SystemTime,
}

/// Every cluster's nodes, as last observed.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    clusters: HashMap<Box<str>, ClusterInventory>,
    /// Moves whenever what is kept changes (not when only observation times move): the state directory is
    /// written when it moved.
    changes: u64,
}

impl Inventory {
    /// Replaces a cluster's nodes with what an observation saw. Nodes that could not be listed keep what the
    /// previous pass saw (a node that is briefly unreachable still has its files).
    pub fn record(&mut self, obs: &ClusterObservation, at: SystemTime) {
        if obs.error.is_some() {
            return;
        }
        let cluster = self.clusters.entry(obs.name.as_str().into()).or_default();
        // A shared storage's listing, converted once and shared by every node (or the last pass's, unchanged).
        let shared: BTreeMap<&str, Listing> = obs
            .storages
            .values()
            .filter_map(|s| {
                let listed = s.shared_volumes.as_ref()?.as_ref().ok()?;
                let before =
                    cluster.nodes.values().flat_map(|n| &n.shelves).find(|sh| sh.shared && *sh.storage == *s.id);
                Some((s.id.as_str(), reuse(before.map(|sh| &sh.volumes), listed)))
            })
            .collect();
        let mut seen: HashMap<Box<str>, NodeInventory> = HashMap::with_capacity(obs.nodes.len());
        let mut changed = false;
        for n in &obs.nodes {
            let previous = cluster.nodes.remove(n.name.as_str());
            if n.error.is_some() || !n.online {
                changed |= previous.as_ref().is_none_or(|p| p.online != n.online);
                // Known but not listed: its files as last seen (none yet), so a question about it is answered
                // with its state (offline, blocked) rather than "no such node".
                let mut p = previous.unwrap_or_else(|| NodeInventory {
                    arch: n.arch.as_str().into(),
                    online: false,
                    observed_at: at,
                    shelves: Vec::new(),
                });
                p.online = n.online;
                seen.insert(n.name.as_str().into(), p);
                continue;
            }
            let mut shelves = Vec::new();
            for s in obs.storages.values().filter(|s| s.active_on(&n.name)) {
                let before = previous.as_ref().and_then(|p| p.shelves.iter().find(|sh| *sh.storage == *s.id));
                let listed = if s.shared {
                    shared.get(s.id.as_str()).cloned()
                } else {
                    let listed = s.node_volumes.get(&n.name).and_then(|l| l.as_ref().ok());
                    listed.map(|v| reuse(before.map(|sh| &sh.volumes), v))
                };
                // A listing that failed this time keeps what the last one saw.
                if let Some(volumes) = listed.or_else(|| before.map(|sh| Arc::clone(&sh.volumes))) {
                    shelves.push(Shelf { storage: s.id.as_str().into(), shared: s.shared, volumes });
                }
            }
            let node = NodeInventory { arch: n.arch.as_str().into(), online: true, observed_at: at, shelves };
            changed |= previous.is_none_or(|p| !p.same_content(&node));
            seen.insert(n.name.as_str().into(), node);
        }
        changed |= !cluster.nodes.is_empty();
        cluster.nodes = seen;
        self.changes += u64::from(changed);
    }

    /// A counter that moves whenever what is kept changes.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// A pass that found a cluster as it was (its steady key unchanged, its listings left undecoded): the nodes
    /// it listed were observed now, and nothing else moves. (The pass before recorded the cluster: a fleet
    /// built anew, on a reload, starts without steady keys.)
    pub fn touch(&mut self, obs: &ClusterObservation, at: SystemTime) {
        let Some(cluster) = self.clusters.get_mut(obs.name.as_str()) else { return };
        for n in obs.nodes.iter().filter(|n| n.online && n.error.is_none()) {
            if let Some(node) = cluster.nodes.get_mut(n.name.as_str()) {
                node.observed_at = at;
            }
        }
    }

    /// Forgets clusters no longer configured.
    pub fn retain(&mut self, configured: &[String]) {
        let before = self.clusters.len();
        self.clusters.retain(|name, _| configured.iter().any(|c| **c == **name));
        self.changes += u64::from(self.clusters.len() != before);
    }

    /// A cluster's nodes.
    pub fn cluster(&self, name: &str) -> Option<&ClusterInventory> {
        self.clusters.get(name)
    }

    /// The clusters that have a node of this name.
    pub fn clusters_with_node(&self, node: &str) -> Vec<&str> {
        let mut names: Vec<&str> =
            self.clusters.iter().filter(|(_, c)| c.nodes.contains_key(node)).map(|(n, _)| &**n).collect();
        names.sort_unstable();
        names
    }

    /// A file now on `storage` (a finished download): added for `node`, or for every node of the cluster
    /// that sees the storage when it is shared.
    pub fn add(&mut self, cluster: &str, node: &str, storage: &str, vol: Vol, at: SystemTime) {
        let Some(c) = self.clusters.get_mut(cluster) else { return };
        // A shared listing is extended once, and every node that pointed at the old one points at the new one.
        let mut extended: Option<(Listing, Listing)> = None;
        for (name, n) in &mut c.nodes {
            for shelf in &mut n.shelves {
                let here = *shelf.storage == *storage && (shelf.shared || **name == *node);
                if !here || shelf.volumes.iter().any(|v| v.volid == vol.volid) {
                    continue;
                }
                shelf.volumes = match &extended {
                    Some((old, new)) if Arc::ptr_eq(old, &shelf.volumes) => Arc::clone(new),
                    _ => {
                        let new: Arc<[Vol]> = shelf.volumes.iter().cloned().chain([vol.clone()]).collect();
                        if shelf.shared {
                            extended = Some((Arc::clone(&shelf.volumes), Arc::clone(&new)));
                        }
                        new
                    }
                };
                n.observed_at = at;
                self.changes += 1;
            }
        }
    }

    /// A storage re-listed for one node (`fresh=1`).
    pub fn relisted(&mut self, cluster: &str, node: &str, storage: &str, volumes: Arc<[Vol]>, at: SystemTime) {
        let Some(n) = self.clusters.get_mut(cluster).and_then(|c| c.nodes.get_mut(node)) else { return };
        if let Some(shelf) = n.shelves.iter_mut().find(|s| *s.storage == *storage) {
            self.changes += u64::from(!Arc::ptr_eq(&shelf.volumes, &volumes) && shelf.volumes != volumes);
            shelf.volumes = volumes;
            n.observed_at = at;
        }
    }
}

impl NodeInventory {
    /// The same files, storages, architecture and reachability (observation times aside).
    fn same_content(&self, other: &Self) -> bool {
        self.arch == other.arch
            && self.online == other.online
            && self.shelves.len() == other.shelves.len()
            && self.shelves.iter().zip(&other.shelves).all(|(a, b)| {
                a.storage == b.storage
                    && a.shared == b.shared
                    && (Arc::ptr_eq(&a.volumes, &b.volumes) || a.volumes == b.volumes)
            })
    }

    /// The newest file on this node that satisfies `spec` (matching as configured specs do: exact file name,
    /// or a pattern for the node's architecture); on a tie, the first storage by id.
    pub fn find(&self, spec: &TemplateSpec) -> Option<Found> {
        let mut best: Option<(&Vol, &Shelf, Option<TemplateName>)> = None;
        for shelf in &self.shelves {
            for v in shelf.volumes.iter() {
                let file = v.file();
                let name = TemplateName::parse(file);
                if !spec.accepts(file, name.as_ref(), &self.arch) {
                    continue;
                }
                let newer = match (&best, &name) {
                    (None, _) => true,
                    (Some((_, _, Some(b))), Some(n)) => compare_recency(n, b).is_gt(),
                    _ => false,
                };
                if newer {
                    best = Some((v, shelf, name));
                }
            }
        }
        best.map(|(v, shelf, _)| Found {
            volid: v.volid.to_string(),
            storage: shelf.storage.to_string(),
            size: v.size,
            observed_at: self.observed_at,
        })
    }

    /// Every file this node sees, by storage.
    pub fn volumes(&self) -> impl Iterator<Item = (&str, &Vol)> {
        self.shelves.iter().flat_map(|s| s.volumes.iter().map(move |v| (&*s.storage, v)))
    }
}

/// The last pass's listing when nothing changed (a steady pass allocates nothing here), else the new one.
fn reuse(before: Option<&Listing>, volumes: &[super::observation::Volume]) -> Listing {
    match before {
        Some(b)
            if b.len() == volumes.len()
                && b.iter().zip(volumes).all(|(k, v)| *k.volid == *v.volid && k.size == v.size) =>
        {
            Arc::clone(b)
        }
        _ => to_vols(volumes),
    }
}

/// A listing in the kept form.
pub fn to_vols(volumes: &[super::observation::Volume]) -> Arc<[Vol]> {
    volumes.iter().map(|v| Vol { volid: Arc::clone(&v.volid), size: v.size }).collect()
}

#[cfg(test)]
mod tests {
    use super::super::observation::{NodeObservation, StorageObservation, StorageOnNode, Volume};
    use super::*;

    const OLD: &str = "debian-12-standard_12.2-1_amd64.tar.zst";
    const NEW: &str = "debian-12-standard_12.7-1_amd64.tar.zst";

    fn obs(node_error: Option<&str>) -> ClusterObservation {
        let on = |n: &str| (n.to_string(), StorageOnNode { active: true, avail: None });
        let vol = |s: &str, f: &str| Volume::new(format!("{s}:vztmpl/{f}"), f.to_string(), Some(7));
        let shared = StorageObservation {
            id: "nfs".into(),
            shared: true,
            on_nodes: BTreeMap::from([on("pve1"), on("pve2")]),
            shared_volumes: Some(Ok(vec![vol("nfs", OLD)])),
            node_volumes: BTreeMap::new(),
        };
        let local = StorageObservation {
            id: "local".into(),
            shared: false,
            on_nodes: BTreeMap::from([on("pve1"), on("pve2")]),
            shared_volumes: None,
            node_volumes: BTreeMap::from([
                ("pve1".to_string(), Ok(vec![vol("local", NEW)])),
                ("pve2".into(), Ok(vec![])),
            ]),
        };
        let node = |n: &str, error: Option<&str>| NodeObservation {
            name: n.into(),
            online: true,
            arch: "amd64".into(),
            error: error.map(String::from),
        };
        ClusterObservation {
            name: "lab".into(),
            nodes: vec![node("pve1", None), node("pve2", node_error)],
            storages: BTreeMap::from([("local".to_string(), local), ("nfs".to_string(), shared)]),
            ..Default::default()
        }
    }

    #[test]
    fn finds_the_newest_match_on_any_storage_the_node_sees() {
        let mut inv = Inventory::default();
        inv.record(&obs(None), SystemTime::UNIX_EPOCH);
        let spec = TemplateSpec::parse("debian-12").unwrap();
        let lab = inv.cluster("lab").unwrap();
        assert_eq!(lab.nodes["pve1"].find(&spec).unwrap().volid, format!("local:vztmpl/{NEW}"));
        assert_eq!(lab.nodes["pve2"].find(&spec).unwrap().volid, format!("nfs:vztmpl/{OLD}"));
        assert!(lab.nodes["pve2"].find(&TemplateSpec::parse("debian-12_arm64").unwrap()).is_none());
        assert!(Arc::ptr_eq(&lab.nodes["pve1"].shelves[1].volumes, &lab.nodes["pve2"].shelves[1].volumes));
        assert_eq!(inv.clusters_with_node("pve2"), ["lab"]);
    }

    #[test]
    fn a_steady_pass_reuses_the_listings_it_already_holds() {
        let mut inv = Inventory::default();
        inv.record(&obs(None), SystemTime::UNIX_EPOCH);
        let before = inv.cluster("lab").unwrap().nodes["pve1"].shelves.clone();
        inv.record(&obs(None), SystemTime::UNIX_EPOCH);
        let after = &inv.cluster("lab").unwrap().nodes["pve1"].shelves;
        assert!(before.iter().zip(after).all(|(a, b)| Arc::ptr_eq(&a.volumes, &b.volumes)), "no new allocation");
        let mut changed = obs(None);
        if let Some(Ok(v)) = changed.storages.get_mut("local").and_then(|s| s.node_volumes.get_mut("pve1")) {
            v.clear();
        }
        inv.record(&changed, SystemTime::UNIX_EPOCH);
        assert!(inv.cluster("lab").unwrap().nodes["pve1"].shelves[0].volumes.is_empty(), "a change is taken");
    }

    #[test]
    fn a_download_shows_on_every_node_of_a_shared_storage_and_an_unlisted_node_keeps_its_files() {
        let mut inv = Inventory::default();
        inv.record(&obs(None), SystemTime::UNIX_EPOCH);
        let vol = Vol { volid: format!("nfs:vztmpl/{NEW}").into(), size: None };
        inv.add("lab", "pve1", "nfs", vol, SystemTime::UNIX_EPOCH);
        let spec = TemplateSpec::parse(NEW).unwrap();
        let lab = inv.cluster("lab").unwrap();
        assert_eq!(lab.nodes["pve2"].find(&spec).unwrap().storage, "nfs");
        assert!(Arc::ptr_eq(&lab.nodes["pve1"].shelves[1].volumes, &lab.nodes["pve2"].shelves[1].volumes), "still one");
        inv.record(&obs(Some("node pve2 timed out")), SystemTime::UNIX_EPOCH);
        assert!(inv.cluster("lab").unwrap().nodes["pve2"].find(&spec).is_some(), "kept from before");
        inv.retain(&[]);
        assert!(inv.cluster("lab").is_none());
    }
}
