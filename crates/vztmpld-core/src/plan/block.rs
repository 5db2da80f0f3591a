//! Why the planner cannot provide a (node, template): one variant per cause, each saying what to do, whether it
//! may clear by itself (a node back online, space freed) and a fixed label for metrics.

use std::fmt;

use serde::{Serialize, Serializer};

/// Why something cannot be provided until something changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockReason {
    /// The cluster could not be observed at all (its error as the client worded it).
    ClusterUnobserved { error: String, retryable: bool },
    /// The node could not be observed (its error as the client worded it).
    NodeUnobserved { error: String },
    /// The node is offline.
    NodeOffline { node: String },
    /// No active storage on the node takes container templates.
    NoTemplateStorage { node: String },
    /// A storage of the node could not be listed.
    ListingFailed { storage: String, error: String },
    /// The storage the configuration names cannot take templates on this node.
    WrongStorage { storage: String, node: String, hint: String, usable: Vec<String> },
    /// The named storage has too little room on this node.
    NamedStorageFull { storage: String, node: String, free_mib: u64, need_mib: u64 },
    /// No storage of the node has room.
    NoRoom { node: String, need_mib: u64 },
    /// No node's appliance index offers the template; `detail` says which indexes were read and what to try.
    NotInIndex { detail: String, indexes_unread: bool },
    /// This node's index lacks a build that others offer, and the token may not fetch it directly.
    StaleIndex { template: String, node: String },
    /// A mirror is configured but the index has no sha512 to check the mirror's copy against.
    MirrorUnverifiable { template: String, url: String },
    /// `download-url` needs a privilege the token lacks.
    NoDownloadUrl { node: String, fix: &'static str },
    /// Writing templates to the storage needs a privilege the token lacks.
    NoAllocateTemplate { path: String },
    /// OCI images need Proxmox VE 9.
    OciNeedsPve9 { cluster: String, version: String },
    /// The Proxmox VE version could not be read (OCI pulls need to know it).
    VersionUnknown { error: String },
    /// `oci-registry-pull` needs `Sys.AccessNetwork` on the node.
    OciNoAccessNetwork { node: String },
    /// Deleting (prune) needs `Datastore.Allocate` on the storage.
    NoAllocate { path: String },
}

impl BlockReason {
    /// Whether it may clear by itself (network, a node coming back, space freed) rather than needing a person
    /// (configuration, privileges, the cluster's storages).
    pub fn retryable(&self) -> bool {
        match self {
            BlockReason::ClusterUnobserved { retryable, .. } => *retryable,
            BlockReason::NotInIndex { indexes_unread, .. } => *indexes_unread,
            BlockReason::NodeOffline { .. }
            | BlockReason::ListingFailed { .. }
            | BlockReason::NamedStorageFull { .. }
            | BlockReason::NoRoom { .. }
            | BlockReason::VersionUnknown { .. } => true,
            BlockReason::NodeUnobserved { .. }
            | BlockReason::NoTemplateStorage { .. }
            | BlockReason::WrongStorage { .. }
            | BlockReason::StaleIndex { .. }
            | BlockReason::MirrorUnverifiable { .. }
            | BlockReason::NoDownloadUrl { .. }
            | BlockReason::NoAllocateTemplate { .. }
            | BlockReason::OciNeedsPve9 { .. }
            | BlockReason::OciNoAccessNetwork { .. }
            | BlockReason::NoAllocate { .. } => false,
        }
    }

    /// A short, fixed label for metrics and JSON (`node_offline`, `privilege`, …).
    pub fn metric_label(&self) -> &'static str {
        match self {
            BlockReason::ClusterUnobserved { .. } => "cluster_unobserved",
            BlockReason::NodeUnobserved { .. } => "node_unobserved",
            BlockReason::NodeOffline { .. } => "node_offline",
            BlockReason::NoTemplateStorage { .. } | BlockReason::WrongStorage { .. } => "storage",
            BlockReason::ListingFailed { .. } => "listing_failed",
            BlockReason::NamedStorageFull { .. } | BlockReason::NoRoom { .. } => "no_space",
            BlockReason::NotInIndex { .. } => "not_in_index",
            BlockReason::StaleIndex { .. } => "stale_index",
            BlockReason::MirrorUnverifiable { .. } => "mirror_unverifiable",
            BlockReason::NoDownloadUrl { .. }
            | BlockReason::NoAllocateTemplate { .. }
            | BlockReason::OciNoAccessNetwork { .. }
            | BlockReason::NoAllocate { .. } => "privilege",
            BlockReason::OciNeedsPve9 { .. } | BlockReason::VersionUnknown { .. } => "version",
        }
    }
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockReason::ClusterUnobserved { error, .. } | BlockReason::NodeUnobserved { error } => f.write_str(error),
            BlockReason::NodeOffline { node } => write!(f, "node {node} is offline"),
            BlockReason::NoTemplateStorage { node } => write!(
                f,
                "node {node} has no active storage with vztmpl content; enable 'Container template' on a storage (Datacenter → Storage)"
            ),
            BlockReason::ListingFailed { storage, error } => write!(f, "cannot list storage {storage}: {error}"),
            BlockReason::WrongStorage { storage, node, hint, usable } => write!(
                f,
                "storage {storage} is not an active storage with vztmpl content on node {node}{hint} (usable there: {})",
                if usable.is_empty() { "none".to_string() } else { usable.join(", ") }
            ),
            BlockReason::NamedStorageFull { storage, node, free_mib, need_mib } => write!(
                f,
                "storage {storage} on node {node} has {free_mib} MiB free; a template may need up to {need_mib} MiB: free space there, or set another storage"
            ),
            BlockReason::NoRoom { node, need_mib } => {
                write!(f, "no vztmpl storage on node {node} has {need_mib} MiB free for the template")
            }
            BlockReason::NotInIndex { detail, .. } => f.write_str(detail),
            BlockReason::StaleIndex { template, node } => write!(
                f,
                "{template} is not in node {node}'s appliance index (stale): run `pveam update` on {node}, or grant the token Sys.AccessNetwork on /nodes/{node} so vztmpld can download it directly"
            ),
            BlockReason::MirrorUnverifiable { template, url } => write!(
                f,
                "{template} has no sha512 in the appliance index, so a mirror's copy could not be verified; vztmpld does not fetch it from {url}"
            ),
            BlockReason::NoDownloadUrl { node, fix } => {
                write!(f, "download-url needs Sys.AccessNetwork on /nodes/{node} (or Sys.Audit+Sys.Modify on /); {fix}")
            }
            BlockReason::NoAllocateTemplate { path } => {
                write!(f, "the token lacks Datastore.AllocateTemplate on {path}; grant it (see README: minimal role)")
            }
            BlockReason::OciNeedsPve9 { cluster, version } => write!(
                f,
                "OCI images need Proxmox VE 9.0 or later (oci-registry-pull); cluster {cluster} runs {version}: upgrade it, or remove this template"
            ),
            BlockReason::VersionUnknown { error } => {
                write!(f, "cannot read the Proxmox VE version ({error}); OCI pulls need 9.0 or later")
            }
            BlockReason::OciNoAccessNetwork { node } => write!(
                f,
                "oci-registry-pull needs Sys.AccessNetwork on /nodes/{node} (Sys.Audit+Sys.Modify on / does not do, unlike download-url); grant it to the token"
            ),
            BlockReason::NoAllocate { path } => write!(
                f,
                "deleting needs Datastore.Allocate on {path} (AllocateTemplate is not enough); grant it, or remove prune"
            ),
        }
    }
}

impl std::error::Error for BlockReason {}

/// The JSON of a blocked item (`plan --output json`, the plan in status): the text a person reads (`reason`),
/// whether it may clear by itself, and the fixed label (`kind`).
impl Serialize for BlockReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire {
            reason: String,
            retryable: bool,
            kind: &'static str,
        }
        Wire { reason: self.to_string(), retryable: self.retryable(), kind: self.metric_label() }.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_person_fixes_privileges_and_storages_time_fixes_nodes_and_space() {
        assert!(BlockReason::NodeOffline { node: "pve1".into() }.retryable());
        assert!(BlockReason::NoRoom { node: "pve1".into(), need_mib: 512 }.retryable());
        assert!(!BlockReason::NoAllocateTemplate { path: "/storage/local".into() }.retryable());
        assert!(!BlockReason::NoTemplateStorage { node: "pve1".into() }.retryable());
        let unread = BlockReason::NotInIndex { detail: "x".into(), indexes_unread: true };
        assert!(unread.retryable());
    }

    #[test]
    fn json_has_the_text_the_flag_and_the_label() {
        let b = BlockReason::NodeOffline { node: "pve3".into() };
        assert_eq!(
            serde_json::to_value(&b).ok(),
            Some(serde_json::json!({"reason": "node pve3 is offline", "retryable": true, "kind": "node_offline"}))
        );
    }
}
