//! The observation model: what a cluster looked like in one pass. Plain data, built by `super::observe`
//! and read by [`super::plan`]; nothing here does I/O.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::template::{TemplateName, TemplateSpec, compare_recency};

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
    /// `GET /version`'s `version` (only fetched when an OCI template is missing).
    pub pve_version: Option<Result<String, String>>,
    /// A digest of every listing as it arrived (bytes or error), when observed over the API: the steady key
    /// uses it instead of the decoded volumes, so an unchanged cluster's listings are never decoded.
    pub listings_digest: Option<u64>,
}

/// The hasher of steady keys and listing digests.
pub type Digester = foldhash::quality::FoldHasher<'static>;

/// A hasher for keys compared across passes: foldhash, not SipHash (a steady pass digests every listing's bytes,
/// megabytes a pass at fleet scale, and SipHash cost about what decoding them did), with a fixed seed (a key
/// must mean the same in the next pass).
pub fn digester() -> Digester {
    static SEED: foldhash::quality::FixedState = foldhash::quality::FixedState::with_seed(0x767a_746d_706c_6421);
    std::hash::BuildHasher::build_hasher(&SEED)
}

impl ClusterObservation {
    /// A key of everything an all-cached plan reads: the targeted nodes (name, online, arch, error), each
    /// vztmpl storage (id, shared, on which nodes active) and each listing (its digest as it arrived, or else
    /// its volume ids), or its error. Free
    /// space is left out on purpose: it changes all the time and only a miss reads it. `None` for a cluster
    /// that could not be observed. (A 64-bit [`digester`] hash: two different inputs share a key with odds of
    /// about 2⁻⁶⁴.)
    pub fn steady_key(&self) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        if self.error.is_some() {
            return None;
        }
        let mut h = digester();
        for n in &self.nodes {
            (&n.name, n.online, &n.arch, &n.error).hash(&mut h);
        }
        h.write_u8(0xff);
        let listing = |h: &mut Digester, l: &Listing| match l {
            Ok(volumes) => {
                h.write_u8(1);
                h.write_usize(volumes.len());
                volumes.iter().for_each(|v| v.volid.hash(h));
            }
            Err(e) => {
                h.write_u8(2);
                e.hash(h);
            }
        };
        for s in self.storages.values() {
            (&s.id, s.shared).hash(&mut h);
            for (node, on) in &s.on_nodes {
                (node, on.active).hash(&mut h);
            }
            h.write_u8(0xfe);
            if self.listings_digest.is_some() {
                continue;
            }
            match &s.shared_volumes {
                Some(l) => listing(&mut h, l),
                None => h.write_u8(0),
            }
            for (node, l) in &s.node_volumes {
                node.hash(&mut h);
                listing(&mut h, l);
            }
            h.write_u8(0xfd);
        }
        if let Some(digest) = self.listings_digest {
            h.write_u64(digest);
        }
        Some(h.finish())
    }

    /// Whether the observation went beyond the views and listings (privileges, indexes, the version): what a
    /// miss or `latest` needs, and what [`ClusterObservation::steady_key`] does not cover.
    pub fn fetched_beyond_listings(&self) -> bool {
        self.permissions.known || !self.indexes.is_empty() || self.pve_version.is_some()
    }
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
    /// A shared storage's volumes (one listing serves every node).
    pub shared_volumes: Option<Listing>,
    /// A local storage's volumes, by node (looked up by `&str`: planning asks this for every node × template).
    pub node_volumes: BTreeMap<String, Listing>,
}

/// One storage listing: its vztmpl volumes, or why it could not be read.
pub type Listing = Result<Vec<Volume>, String>;

/// A storage as one node sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct StorageOnNode {
    pub active: bool,
    pub avail: Option<u64>,
}

impl StorageObservation {
    /// The volumes `node` sees here (shared ones for every node).
    pub fn volumes_for(&self, node: &str) -> Option<&Listing> {
        if self.shared { self.shared_volumes.as_ref() } else { self.node_volumes.get(node) }
    }

    /// Whether `node` has the storage active.
    pub fn active_on(&self, node: &str) -> bool {
        self.on_nodes.get(node).is_some_and(|s| s.active)
    }
}

/// A template file on a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Shared with the plan items (and status entries) that find it cached.
    pub volid: Arc<str>,
    pub file: String,
    pub size: Option<u64>,
    /// The file name parsed once, when observed (`None` for names that are not template names).
    pub name: Option<TemplateName>,
}

impl Volume {
    /// A volume, its file name parsed.
    pub fn new(volid: String, file: String, size: Option<u64>) -> Self {
        let name = TemplateName::parse(&file);
        Self { volid: volid.into(), file, size, name }
    }
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

/// The newest volume matching `spec` on any active vztmpl storage `node` sees (the first storage, by id, wins a tie).
pub fn find_cached<'a>(obs: &'a ClusterObservation, node: &str, arch: &str, spec: &TemplateSpec) -> Option<&'a Volume> {
    let mut best: Option<(&Volume, Option<&TemplateName>)> = None;
    let candidates = obs
        .storages
        .values()
        .filter(|s| s.active_on(node))
        .filter_map(|s| s.volumes_for(node)?.as_ref().ok())
        .flatten();
    for v in candidates {
        let name = v.name.as_ref();
        if !spec.accepts(&v.file, name, arch) {
            continue;
        }
        let newer = match (&best, name) {
            (None, _) => true,
            (Some((_, Some(b))), Some(n)) => compare_recency(n, b).is_gt(),
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
