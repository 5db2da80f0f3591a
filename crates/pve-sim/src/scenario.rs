//! Scenario files: the simulated cluster's nodes, storages, indexes, tokens, quirks and faults.
//!
//! Every field has a default, and the defaults are the built-in cluster: `pve1`..`pve3`, each with
//! `local` (dir, vztmpl) and `local-lvm` (lvmthin), plus one `shared` NFS storage on all three.
//! A scenario file therefore only states what differs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::SimError;

/// The whole simulated world at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Proxmox VE version reported by `GET /version`.
    pub version: String,
    /// Cluster members; the first one is the node this endpoint belongs to.
    pub nodes: Vec<NodeSpec>,
    /// Storage definitions (`storage.cfg`).
    pub storages: Vec<StorageSpec>,
    /// Volumes present before the simulation starts.
    pub templates: Vec<PresetTemplate>,
    /// Default appliance index of every node: `builtin`, `stale`, `empty`, or a `.dat` file path.
    pub index: String,
    /// Keep the checksums of a loaded `.dat` file instead of replacing them with the mirror's; downloads
    /// of such entries then fail with a checksum mismatch, as they would with a tampered mirror.
    pub keep_index_checksums: bool,
    /// Extra files the mirror serves (name → size in bytes), e.g. for download-url tests.
    pub mirror_files: BTreeMap<String, u64>,
    /// Images the OCI registry has (`reference` → size in bytes); others fail as skopeo does.
    pub oci_images: BTreeMap<String, u64>,
    /// Whether `/usr/bin/skopeo` is installed on the nodes (PVE 9 does not install it by default).
    pub skopeo: bool,
    /// Size of every template whose size is not given in `mirror_files` (bytes).
    pub default_template_size: u64,
    /// Download speed of every task (bytes per second).
    pub bandwidth: u64,
    /// Added to every API answer.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// API workers (pveproxy runs 3): requests beyond that wait for a free one.
    pub api_workers: usize,
    /// API tokens; the first one is printed on start-up.
    pub tokens: Vec<TokenSpec>,
    /// Behaviour of real servers that clients must tolerate.
    pub quirks: Quirks,
    /// Injected API failures.
    pub faults: Vec<FaultSpec>,
    /// Injected download failures.
    pub download_faults: Vec<DownloadFaultSpec>,
}

/// One cluster member.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    #[serde(default)]
    pub arch: Arch,
    #[serde(default = "yes")]
    pub online: bool,
    /// Overrides the scenario's `index` for this node.
    #[serde(default)]
    pub index: Option<String>,
}

/// A node's CPU architecture as `/cluster/resources` reports it (`host-arch`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Arch {
    #[default]
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "aarch64")]
    Aarch64,
}

impl Arch {
    /// The kernel's name, as Proxmox prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

/// One entry of `storage.cfg`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSpec {
    pub id: String,
    #[serde(rename = "type", default = "dir")]
    pub kind: String,
    /// Content types, e.g. `[vztmpl, iso, backup]`.
    #[serde(default)]
    pub content: Vec<String>,
    /// Forced on for network types (nfs, cifs, cephfs, rbd, ...), as Proxmox does.
    #[serde(default)]
    pub shared: bool,
    /// Nodes the storage is restricted to (absent: all nodes).
    #[serde(default)]
    pub nodes: Option<Vec<String>>,
    #[serde(default = "default_total")]
    pub total: u64,
    /// Space used by things other than templates.
    #[serde(default)]
    pub used: u64,
    /// `disable 1` in storage.cfg.
    #[serde(default)]
    pub disabled: bool,
    /// False simulates a storage that fails to activate (an NFS server that is down).
    #[serde(default = "yes")]
    pub active: bool,
    /// Mount point; defaults to `/var/lib/vz` for `local` and `/mnt/pve/ID` otherwise.
    #[serde(default)]
    pub path: Option<String>,
}

/// Storage types Proxmox always marks shared (`@SHARED_STORAGE`).
const SHARED_TYPES: &[&str] = &["iscsi", "nfs", "cifs", "rbd", "cephfs", "iscsidirect", "zfs", "drbd", "pbs"];
/// Storage types with a file system path, the only ones that can hold vztmpl.
const FILE_TYPES: &[&str] = &["dir", "nfs", "cifs", "cephfs", "btrfs", "glusterfs"];

impl StorageSpec {
    /// Whether Proxmox reports the storage as shared.
    pub fn is_shared(&self) -> bool {
        self.shared || SHARED_TYPES.contains(&self.kind.as_str())
    }

    /// The mount point, or `None` for block storages (lvmthin, rbd, zfspool, ...).
    pub fn mount_path(&self) -> Option<String> {
        if !FILE_TYPES.contains(&self.kind.as_str()) {
            return None;
        }
        Some(self.path.clone().unwrap_or_else(|| {
            if self.id == "local" { "/var/lib/vz".to_string() } else { format!("/mnt/pve/{}", self.id) }
        }))
    }

    /// Whether the storage's `nodes` option allows `node` (`local` is never restricted).
    pub fn allowed_on(&self, node: &str) -> bool {
        self.id == "local" || self.nodes.as_ref().is_none_or(|list| list.iter().any(|n| n == node))
    }

    /// Whether the storage holds content type `kind`.
    pub fn has_content(&self, kind: &str) -> bool {
        self.content.iter().any(|c| c == kind)
    }
}

/// A template file that exists before the simulation starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetTemplate {
    pub storage: String,
    /// Required for a storage that is not shared.
    #[serde(default)]
    pub node: Option<String>,
    pub file: String,
    #[serde(default)]
    pub size: Option<u64>,
    /// Its bytes differ from the mirror's, so a checksum check of it fails.
    #[serde(default)]
    pub corrupt: bool,
}

/// An API token and what it may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// `USER@REALM!TOKENID`.
    pub id: String,
    /// Defaults to a random UUID, as `pveum user token add` makes.
    #[serde(default)]
    pub secret: Option<String>,
    /// Privilege separation (Proxmox's default): the token has only its own ACLs, intersected with the user's.
    #[serde(default = "yes")]
    pub privsep: bool,
    /// ACL entries for the token.
    #[serde(default = "admin_acl")]
    pub acl: Vec<AclSpec>,
    /// ACL entries for the token's user (default: Administrator on `/`).
    #[serde(default = "admin_acl")]
    pub user_acl: Vec<AclSpec>,
}

/// One ACL entry: a role or an explicit privilege list on a path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclSpec {
    pub path: String,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub privs: Vec<String>,
    #[serde(default = "yes")]
    pub propagate: bool,
}

/// Behaviour of real Proxmox servers that a client must survive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quirks {
    /// Send every integer in `data` as a JSON string (Perl is untyped).
    pub numbers_as_strings: bool,
    /// Leave `message` out of error bodies, as Proxmox before 8.3 did.
    pub no_error_message: bool,
    /// Delay before every 401 (Proxmox: 3 s).
    #[serde(with = "humantime_serde")]
    pub auth_failure_delay: Duration,
}

impl Default for Quirks {
    fn default() -> Self {
        Self { numbers_as_strings: false, no_error_message: false, auth_failure_delay: Duration::from_secs(3) }
    }
}

/// Makes matching API requests fail.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// HTTP method to match (any when absent).
    #[serde(default)]
    pub method: Option<String>,
    /// A path below `/api2/json`, either concrete (`/nodes/pve2/aplinfo`) or a pattern (`/nodes/{node}/aplinfo`).
    pub path: String,
    /// Status to answer with, e.g. 500, 503, 595.
    pub status: u16,
    /// How many requests fail (absent: all of them until cleared).
    #[serde(default)]
    pub count: Option<u32>,
    /// The error message (defaults to a generic one per status).
    #[serde(default)]
    pub message: Option<String>,
}

/// Makes the next downloads of a template fail.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadFaultSpec {
    /// File name of the template (the index's `template` field or download-url's filename).
    pub template: String,
    pub kind: DownloadFaultKind,
    /// How many downloads are affected (default 1).
    #[serde(default = "one")]
    pub count: u32,
}

/// How an injected download fault shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DownloadFaultKind {
    /// The transfer breaks off half-way (wget error).
    Fail,
    /// The bytes arrive altered, so the checksum check fails.
    Corrupt,
    /// The transfer hangs until the task is stopped.
    Hang,
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn dir() -> String {
    "dir".into()
}
fn default_total() -> u64 {
    100 * 1024 * 1024 * 1024
}
fn admin_acl() -> Vec<AclSpec> {
    vec![AclSpec { path: "/".into(), role: Some("Administrator".into()), privs: vec![], propagate: true }]
}

/// The token the built-in scenario prints.
pub const DEFAULT_TOKEN_ID: &str = "vztmpld@pve!cache";

impl Default for Scenario {
    fn default() -> Self {
        let node = |name: &str| NodeSpec { name: name.into(), arch: Arch::X86_64, online: true, index: None };
        let storage = |id: &str, kind: &str, content: &[&str], shared: bool, total: u64| StorageSpec {
            id: id.into(),
            kind: kind.into(),
            content: content.iter().map(|c| c.to_string()).collect(),
            shared,
            nodes: None,
            total,
            used: total / 10,
            disabled: false,
            active: true,
            path: None,
        };
        const GIB: u64 = 1024 * 1024 * 1024;
        Self {
            version: "9.1.4".into(),
            nodes: vec![node("pve1"), node("pve2"), node("pve3")],
            storages: vec![
                storage("local", "dir", &["iso", "vztmpl", "backup"], false, 100 * GIB),
                storage("local-lvm", "lvmthin", &["images", "rootdir"], false, 400 * GIB),
                storage("shared", "nfs", &["vztmpl", "iso"], true, 1024 * GIB),
            ],
            templates: vec![],
            index: "builtin".into(),
            keep_index_checksums: false,
            mirror_files: BTreeMap::new(),
            oci_images: BTreeMap::new(),
            skopeo: true,
            default_template_size: 1024 * 1024,
            bandwidth: 50_000_000,
            latency: Duration::ZERO,
            api_workers: 3,
            tokens: vec![TokenSpec {
                id: DEFAULT_TOKEN_ID.into(),
                secret: None,
                privsep: true,
                acl: admin_acl(),
                user_acl: admin_acl(),
            }],
            quirks: Quirks::default(),
            faults: vec![],
            download_faults: vec![],
        }
    }
}

impl Scenario {
    /// Reads a scenario file; relative index paths in it are resolved against its directory.
    pub fn load(path: &Path) -> Result<(Self, PathBuf), SimError> {
        let text = read_regular_file(path, SCENARIO_LIMIT)
            .map_err(|e| SimError::Scenario(format!("{}: cannot read: {e}", path.display())))?;
        let scenario = Self::parse(&text).map_err(|e| SimError::Scenario(format!("{}: {e}", path.display())))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok((scenario, dir))
    }

    /// Parses scenario YAML and checks that its parts refer to each other correctly.
    pub fn parse(text: &str) -> Result<Self, String> {
        let scenario: Scenario = yaml_serde::from_str(text).map_err(|e| e.to_string())?;
        scenario.validate()?;
        Ok(scenario)
    }

    fn validate(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("nodes: a cluster needs at least one node".into());
        }
        if self.tokens.is_empty() {
            return Err("tokens: at least one API token is needed".into());
        }
        if self.api_workers == 0 {
            return Err("api_workers: must be at least 1".into());
        }
        if self.bandwidth == 0 {
            return Err("bandwidth: must be at least 1 byte per second".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for n in &self.nodes {
            if !valid_node_name(&n.name) {
                return Err(format!("nodes: '{}' is not a valid node name", n.name));
            }
            if !seen.insert(n.name.as_str()) {
                return Err(format!("nodes: '{}' appears twice", n.name));
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for s in &self.storages {
            if !valid_storage_id(&s.id) {
                return Err(format!("storages: '{}' is not a valid storage ID", s.id));
            }
            if !ids.insert(s.id.as_str()) {
                return Err(format!("storages: '{}' appears twice", s.id));
            }
            for n in s.nodes.iter().flatten() {
                if !seen.contains(n.as_str()) {
                    return Err(format!("storages: '{}' names unknown node '{n}'", s.id));
                }
            }
        }
        for t in &self.templates {
            let Some(s) = self.storages.iter().find(|s| s.id == t.storage) else {
                return Err(format!("templates: '{}' is on unknown storage '{}'", t.file, t.storage));
            };
            if s.mount_path().is_none() || !s.has_content("vztmpl") {
                return Err(format!("templates: storage '{}' does not hold vztmpl content", s.id));
            }
            if !s.is_shared() {
                match &t.node {
                    Some(n) if seen.contains(n.as_str()) => {}
                    Some(n) => return Err(format!("templates: '{}' names unknown node '{n}'", t.file)),
                    None => return Err(format!("templates: '{}' on local storage '{}' needs a node", t.file, s.id)),
                }
            }
            if !super::aplinfo::has_vztmpl_extension(&t.file) || t.file.contains('/') {
                return Err(format!("templates: '{}' is not a template file name", t.file));
            }
        }
        for t in &self.tokens {
            if !valid_token_id(&t.id) {
                return Err(format!("tokens: '{}' is not USER@REALM!TOKENID", t.id));
            }
            for role in t.acl.iter().chain(&t.user_acl).filter_map(|a| a.role.as_deref()) {
                if super::acl::role_privs(role).is_none() {
                    return Err(format!("tokens: '{}' uses unknown role '{role}'", t.id));
                }
            }
        }
        Ok(())
    }
}

pub use crate::names::{valid_node_name, valid_storage_id, valid_token_id};

/// Largest scenario file read.
const SCENARIO_LIMIT: u64 = 1024 * 1024;
/// Largest `.dat` index file read (Proxmox's real ones are about 50 KiB).
pub(crate) const INDEX_LIMIT: u64 = 16 * 1024 * 1024;

/// Reads a file named by the scenario: a regular file (never a FIFO or device) of at most `limit` bytes.
pub(crate) fn read_regular_file(path: &Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() || meta.len() > limit {
        let why = if meta.is_file() { format!("larger than {limit} bytes") } else { "not a regular file".into() };
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, why));
    }
    let mut text = String::new();
    std::fs::File::open(path)?.take(limit).read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_scenario_is_the_builtin_cluster() {
        let s = Scenario::default();
        s.validate().unwrap();
        assert_eq!(s.nodes.len(), 3);
        let shared = s.storages.iter().find(|s| s.id == "shared").unwrap();
        assert!(shared.is_shared());
        assert!(shared.has_content("vztmpl"));
        assert!(s.storages.iter().find(|s| s.id == "local-lvm").unwrap().mount_path().is_none());
    }

    #[test]
    fn partial_file_keeps_defaults() {
        let s = Scenario::parse("quirks:\n  numbers_as_strings: true\n  auth_failure_delay: 0s\n").unwrap();
        assert!(s.quirks.numbers_as_strings);
        assert_eq!(s.nodes.len(), 3);
    }

    #[test]
    fn bad_references_are_rejected() {
        assert!(Scenario::parse("nodes: []").is_err());
        assert!(
            Scenario::parse("templates: [{storage: local, file: a_1_amd64.tar.xz}]")
                .unwrap_err()
                .contains("needs a node")
        );
        assert!(Scenario::parse("templates: [{storage: nope, file: a.tar.xz}]").is_err());
        assert!(Scenario::parse("bogus: 1").unwrap_err().contains("unknown field"));
        assert!(Scenario::parse("tokens: [{id: nobang}]").is_err());
    }

    #[test]
    fn name_formats() {
        assert!(valid_node_name("pve1") && valid_node_name("a") && !valid_node_name("pve_1") && !valid_node_name("-a"));
        assert!(valid_storage_id("local-lvm") && !valid_storage_id("Local") && !valid_storage_id("a"));
        assert!(valid_token_id("vztmpld@pve!cache") && !valid_token_id("root@pam") && !valid_token_id("a@b!1x"));
    }
}
