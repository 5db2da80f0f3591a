//! The inventory as the state directory keeps it (`inventory.json`), so the resolve API answers right after a
//! restart — each node marked with when it was observed until the first pass refreshes it. A listing that nodes
//! share in memory (a shared storage's) is written once and shared again when read.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{ClusterInventory, Inventory, Listing, NodeInventory, Shelf, Vol};
use crate::time::Timestamp;

/// A saved inventory whose shelf points at no listing (a corrupt file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster {cluster}, node {node}: storage {storage} points at no listing")]
pub struct DanglingListing {
    pub cluster: String,
    pub node: String,
    pub storage: String,
}

/// Every cluster's nodes, as saved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedInventory {
    pub clusters: BTreeMap<String, SavedCluster>,
}

/// One cluster: its distinct listings, and its nodes pointing into them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedCluster {
    pub listings: Vec<Vec<SavedVol>>,
    pub nodes: BTreeMap<String, SavedNode>,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedNode {
    pub arch: String,
    pub online: bool,
    pub observed_at: Timestamp,
    pub shelves: Vec<SavedShelf>,
}

/// A storage as a node sees it: the index of its listing in [`SavedCluster::listings`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedShelf {
    pub storage: String,
    pub shared: bool,
    pub listing: usize,
}

/// A file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedVol {
    pub volid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl Inventory {
    /// What the state directory keeps.
    pub fn saved(&self) -> SavedInventory {
        let mut saved = SavedInventory::default();
        for (name, cluster) in &self.clusters {
            let mut out = SavedCluster::default();
            // By the listing's address: a listing shared in memory is written once.
            let mut index: HashMap<*const [Vol], usize> = HashMap::new();
            // In name order: the same inventory always gives the same file.
            let mut nodes: Vec<_> = cluster.nodes.iter().collect();
            nodes.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (node, n) in nodes {
                let shelves = n
                    .shelves
                    .iter()
                    .map(|shelf| {
                        let listing = *index.entry(Arc::as_ptr(&shelf.volumes)).or_insert_with(|| {
                            out.listings.push(
                                shelf
                                    .volumes
                                    .iter()
                                    .map(|v| SavedVol { volid: v.volid.to_string(), size: v.size })
                                    .collect(),
                            );
                            out.listings.len() - 1
                        });
                        SavedShelf { storage: shelf.storage.to_string(), shared: shelf.shared, listing }
                    })
                    .collect();
                let saved_node = SavedNode {
                    arch: n.arch.to_string(),
                    online: n.online,
                    observed_at: n.observed_at.into(),
                    shelves,
                };
                out.nodes.insert(node.to_string(), saved_node);
            }
            saved.clusters.insert(name.to_string(), out);
        }
        saved
    }

    /// Takes a saved inventory in (at start, before the first pass) for the clusters configured; a shelf that
    /// points at no listing is a corrupt file, and the error says which.
    pub fn restore(&mut self, saved: SavedInventory, configured: &[String]) -> Result<(), DanglingListing> {
        let mut clusters = HashMap::new();
        for (name, cluster) in saved.clusters {
            if !configured.contains(&name) {
                continue;
            }
            let listings: Vec<Listing> = cluster
                .listings
                .into_iter()
                .map(|l| l.into_iter().map(|v| Vol { volid: v.volid.into(), size: v.size }).collect())
                .collect();
            let mut nodes = HashMap::with_capacity(cluster.nodes.len());
            for (node, n) in cluster.nodes {
                let shelves = n
                    .shelves
                    .into_iter()
                    .map(|s| {
                        let volumes = listings.get(s.listing).cloned().ok_or_else(|| DanglingListing {
                            cluster: name.clone(),
                            node: node.clone(),
                            storage: s.storage.clone(),
                        })?;
                        Ok(Shelf { storage: s.storage.into(), shared: s.shared, volumes })
                    })
                    .collect::<Result<Vec<_>, DanglingListing>>()?;
                let inventory =
                    NodeInventory { arch: n.arch.into(), online: n.online, observed_at: n.observed_at.into(), shelves };
                nodes.insert(node.into_boxed_str(), inventory);
            }
            clusters.insert(name.into_boxed_str(), ClusterInventory { nodes });
        }
        self.clusters = clusters;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::template::TemplateSpec;

    fn inventory() -> Inventory {
        let shared: Listing = Arc::from(vec![Vol {
            volid: "nfs:vztmpl/alpine-3.22-default_20250617_amd64.tar.xz".into(),
            size: Some(3),
        }]);
        let local =
            |f: &str| -> Listing { Arc::from(vec![Vol { volid: format!("local:vztmpl/{f}").into(), size: None }]) };
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let node = |f: &str| NodeInventory {
            arch: "amd64".into(),
            online: true,
            observed_at: at,
            shelves: vec![
                Shelf { storage: "local".into(), shared: false, volumes: local(f) },
                Shelf { storage: "nfs".into(), shared: true, volumes: Arc::clone(&shared) },
            ],
        };
        let nodes = HashMap::from([
            ("pve1".into(), node("debian-12-standard_12.7-1_amd64.tar.zst")),
            ("pve2".into(), node("debian-13-standard_13.1-1_amd64.tar.zst")),
        ]);
        Inventory { clusters: HashMap::from([("lab".into(), ClusterInventory { nodes })]), changes: 0 }
    }

    #[test]
    fn a_saved_inventory_answers_as_before_and_shares_its_shared_listings_again() {
        let saved = inventory().saved();
        assert_eq!(saved.clusters["lab"].listings.len(), 3, "the shared listing once, each local one");
        let text = serde_json::to_string(&saved).unwrap();
        let mut back = Inventory::default();
        back.restore(serde_json::from_str(&text).unwrap(), &["lab".into()]).unwrap();
        let lab = back.cluster("lab").unwrap();
        let spec = TemplateSpec::parse("debian-13").unwrap();
        let found = lab.nodes["pve2"].find(&spec).unwrap();
        assert_eq!(found.volid, "local:vztmpl/debian-13-standard_13.1-1_amd64.tar.zst");
        assert_eq!(found.observed_at, SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000), "as observed");
        assert!(lab.nodes["pve1"].find(&spec).is_none());
        assert!(Arc::ptr_eq(&lab.nodes["pve1"].shelves[1].volumes, &lab.nodes["pve2"].shelves[1].volumes));
        assert_eq!(back.saved(), saved);
    }

    #[test]
    fn a_cluster_no_longer_configured_is_not_restored_and_a_dangling_listing_is_an_error() {
        let mut saved = inventory().saved();
        let mut back = Inventory::default();
        back.restore(saved.clone(), &["other".into()]).unwrap();
        assert!(back.cluster("lab").is_none());
        saved.clusters.get_mut("lab").unwrap().listings.truncate(1);
        let err = back.restore(saved, &["lab".into()]).unwrap_err();
        assert_eq!((err.cluster.as_str(), err.storage.as_str()), ("lab", "nfs"), "{err}");
    }
}
