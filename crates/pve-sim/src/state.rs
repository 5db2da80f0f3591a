//! The simulated cluster's state: nodes, storages, volumes, tasks, faults and accounting.
//!
//! One `World` sits behind a mutex in [`super::Sim`]; handlers lock it briefly and never across an
//! `.await`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::SimError;
use super::acl::Token;
use super::aplinfo::{self, AplEntry, BuiltinIndex};
use super::content::Digests;
use super::scenario::{Arch, DownloadFaultKind, DownloadFaultSpec, FaultSpec, Quirks, Scenario, StorageSpec};

/// Seconds since the Unix epoch.
pub(crate) fn now_epoch() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One cluster member.
#[derive(Debug, Clone)]
pub(crate) struct NodeState {
    pub name: String,
    pub arch: Arch,
    pub online: bool,
    /// This node's appliance index (each node has its own, as in Proxmox).
    pub index: Arc<Vec<AplEntry>>,
}

/// Where a volume lives: a shared storage has one volume set, a local one a set per node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct VolumeKey {
    pub storage: String,
    /// `None` for shared storages.
    pub node: Option<String>,
}

/// A template file on a storage: only what the API exposes or re-checks.
#[derive(Debug, Clone)]
pub(crate) struct Volume {
    pub size: u64,
    /// Inode ctime: the rename time for downloaded files.
    pub ctime: u64,
    pub digests: Arc<Digests>,
}

/// A worker task (`download`, `imgdel`) with its log.
#[derive(Debug)]
pub(crate) struct Task {
    pub upid: String,
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: u64,
    pub kind: String,
    pub id: String,
    /// Full token id (`user@realm!name`).
    pub user: String,
    pub log: Vec<String>,
    /// `(endtime, exitstatus)` once stopped.
    pub end: Option<(u64, String)>,
    /// Cancelled by `DELETE /nodes/{node}/tasks/{upid}`.
    pub cancel: CancellationToken,
}

/// Download counts for one (node, storage, template).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct DownloadCount {
    pub started: u64,
    pub succeeded: u64,
    pub failed: u64,
}

/// What happened, for benchmarks and tests (`GET /_sim/stats`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Stats {
    /// API requests per `METHOD /pattern`.
    pub requests: BTreeMap<String, u64>,
    /// Download tasks per (node, storage, template).
    pub downloads: BTreeMap<(String, String, String), DownloadCount>,
    /// Bytes the mirror sent.
    pub bytes_transferred: u64,
}

impl Stats {
    /// The JSON shape of `GET /_sim/stats`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let downloads: Vec<_> = self
            .downloads
            .iter()
            .map(|((node, storage, template), c)| {
                serde_json::json!({"node": node, "storage": storage, "template": template,
                    "started": c.started, "succeeded": c.succeeded, "failed": c.failed})
            })
            .collect();
        let sum = |f: fn(&DownloadCount) -> u64| self.downloads.values().map(f).sum::<u64>();
        serde_json::json!({
            "requests": self.requests,
            "requests_total": self.requests.values().sum::<u64>(),
            "downloads": downloads,
            "downloads_started": sum(|c| c.started),
            "downloads_succeeded": sum(|c| c.succeeded),
            "downloads_failed": sum(|c| c.failed),
            "bytes_transferred": self.bytes_transferred,
        })
    }
}

/// The mutable state of the whole simulated cluster.
#[derive(Debug)]
pub(crate) struct World {
    pub version: String,
    /// `oci_images` of the scenario: what the registry has.
    pub oci_images: BTreeMap<String, u64>,
    /// Whether skopeo is installed (`POST /_sim/settings {"skopeo": false}` removes it).
    pub skopeo: bool,
    pub nodes: Vec<NodeState>,
    pub storages: Vec<StorageSpec>,
    pub volumes: BTreeMap<VolumeKey, BTreeMap<String, Volume>>,
    pub tasks: Vec<Task>,
    pub tokens: Vec<Token>,
    pub faults: Vec<FaultSpec>,
    pub download_faults: Vec<DownloadFaultSpec>,
    pub latency: Duration,
    pub bandwidth: u64,
    pub quirks: Quirks,
    pub stats: Stats,
    /// Mirror base URL (`https://127.0.0.1:PORT/_mirror`).
    pub mirror: String,
    mirror_sizes: BTreeMap<String, u64>,
    default_size: u64,
    keep_index_checksums: bool,
    digest_cache: HashMap<(String, u64, bool), Arc<Digests>>,
    index_digest_cache: HashMap<(String, u64), (String, String)>,
    /// Indexes read from files at start, by the name the scenario gave them: the only files control requests
    /// may switch a node to (they never read files themselves).
    file_indexes: BTreeMap<String, Arc<Vec<AplEntry>>>,
    boot_epoch: u64,
    next_pid: u32,
}

impl World {
    /// Builds the world from a scenario; `endpoint` is the server's base URL (for the mirror).
    pub(crate) fn new(scenario: &Scenario, scenario_dir: &Path, endpoint: &str) -> Result<Self, SimError> {
        let now = now_epoch();
        let mut world = World {
            version: scenario.version.clone(),
            nodes: Vec::new(),
            storages: scenario.storages.clone(),
            volumes: BTreeMap::new(),
            tasks: Vec::new(),
            tokens: scenario.tokens.iter().map(Token::from_spec).collect(),
            faults: scenario.faults.clone(),
            download_faults: scenario.download_faults.clone(),
            latency: scenario.latency,
            bandwidth: scenario.bandwidth,
            quirks: scenario.quirks.clone(),
            stats: Stats::default(),
            mirror: format!("{endpoint}/_mirror"),
            oci_images: scenario.oci_images.clone(),
            skopeo: scenario.skopeo,
            mirror_sizes: scenario.mirror_files.clone(),
            default_size: scenario.default_template_size,
            keep_index_checksums: scenario.keep_index_checksums,
            digest_cache: HashMap::new(),
            index_digest_cache: HashMap::new(),
            file_indexes: BTreeMap::new(),
            boot_epoch: now.saturating_sub(86_400 * 3),
            next_pid: 0x0002_F1A3,
        };
        for spec in &scenario.nodes {
            let source = spec.index.as_deref().unwrap_or(&scenario.index);
            let index = Arc::new(world.load_index(source, scenario_dir)?);
            if !matches!(source, "builtin" | "stale" | "empty") {
                world.file_indexes.insert(source.to_string(), Arc::clone(&index));
            }
            world.nodes.push(NodeState { name: spec.name.clone(), arch: spec.arch, online: spec.online, index });
        }
        for t in &scenario.templates {
            let key = world.volume_key(&t.storage, t.node.as_deref().unwrap_or_default());
            let size = t.size.unwrap_or_else(|| world.size_of(&t.file));
            let digests = world.digests(&t.file, size, t.corrupt);
            world.volumes.entry(key).or_default().insert(t.file.clone(), Volume { size, ctime: now - 3600, digests });
        }
        Ok(world)
    }

    /// An index for a control request: a built-in one, or one the scenario read from a file at start. Control
    /// requests never read files: a path is only a name here.
    pub(crate) fn named_index(&mut self, source: &str) -> Result<Arc<Vec<AplEntry>>, String> {
        if let Some(index) = self.file_indexes.get(source) {
            return Ok(Arc::clone(index));
        }
        match source {
            "builtin" | "stale" | "empty" => {
                self.load_index(source, Path::new("")).map(Arc::new).map_err(|e| e.to_string())
            }
            other => Err(format!(
                "index '{other}' is not builtin, stale, empty, or an index file named in the scenario (control requests read no files)"
            )),
        }
    }

    /// Reads an index by name (`builtin`, `stale`, `empty`) or from a `.dat` file (at start only), with the
    /// mirror's checksums and locations filled in.
    pub(crate) fn load_index(&mut self, source: &str, base_dir: &Path) -> Result<Vec<AplEntry>, SimError> {
        let text = match source {
            "builtin" => aplinfo::builtin_dat(BuiltinIndex::Current),
            "stale" => aplinfo::builtin_dat(BuiltinIndex::Stale),
            "empty" => String::new(),
            path => {
                let full = base_dir.join(path);
                crate::scenario::read_regular_file(&full, crate::scenario::INDEX_LIMIT)
                    .map_err(|e| SimError::Scenario(format!("index file {}: {e}", full.display())))?
            }
        };
        let images = format!("{}/images", self.mirror);
        let parsed = aplinfo::parse_dat(&text, &images);
        for w in &parsed.warnings {
            tracing::warn!(index = source, "{w}");
        }
        let mut entries = parsed.entries;
        for entry in &mut entries {
            let location = entry.get("location").cloned().unwrap_or_default();
            if !location.starts_with(&images) {
                // Absolute third-party locations (TurnKey) are re-homed on the mirror: never fetch outside.
                let rest = location.split_once("://").map_or(location.as_str(), |(_, r)| r);
                entry.insert("location".into(), format!("{}/external/{rest}", self.mirror));
            }
            if !self.keep_index_checksums {
                let template = entry["template"].clone();
                let size = self.size_of(&template);
                let (md5, sha512) = self
                    .index_digest_cache
                    .entry((template.clone(), size))
                    .or_insert_with(|| Digests::index_pair(&template, size))
                    .clone();
                entry.insert("md5sum".into(), md5);
                entry.insert("sha512sum".into(), sha512);
            }
        }
        Ok(entries)
    }

    /// Size of a file on the mirror.
    pub(crate) fn size_of(&self, file: &str) -> u64 {
        self.mirror_sizes.get(file).copied().unwrap_or(self.default_size)
    }

    /// Whether the mirror has a file of that name (in some index, or listed in `mirror_files`).
    pub(crate) fn mirror_has(&self, file: &str) -> bool {
        self.mirror_sizes.contains_key(file)
            || self.nodes.iter().any(|n| n.index.iter().any(|e| e.get("template").map(String::as_str) == Some(file)))
    }

    /// Digests of a mirror payload, cached (hashing is the simulator's only real cost).
    pub(crate) fn digests(&mut self, file: &str, size: u64, corrupt: bool) -> Arc<Digests> {
        self.digest_cache
            .entry((file.to_string(), size, corrupt))
            .or_insert_with(|| Arc::new(Digests::of_payload(file, size, corrupt)))
            .clone()
    }

    /// The node this endpoint belongs to (`localhost` in paths).
    pub(crate) fn entry_node(&self) -> &str {
        self.nodes.first().map_or("", |n| n.name.as_str())
    }

    /// A node by its exact (case-sensitive) name.
    pub(crate) fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// A node by name, mutable.
    pub(crate) fn node_mut(&mut self, name: &str) -> Option<&mut NodeState> {
        self.nodes.iter_mut().find(|n| n.name == name)
    }

    /// A storage definition by ID.
    pub(crate) fn storage(&self, id: &str) -> Option<&StorageSpec> {
        self.storages.iter().find(|s| s.id == id)
    }

    /// Which volume set `node` sees for storage `id`.
    pub(crate) fn volume_key(&self, id: &str, node: &str) -> VolumeKey {
        let shared = self.storage(id).is_some_and(StorageSpec::is_shared);
        VolumeKey { storage: id.to_string(), node: if shared { None } else { Some(node.to_string()) } }
    }

    /// Bytes in use on a storage as seen from `node` (configured usage plus templates).
    pub(crate) fn used_bytes(&self, spec: &StorageSpec, node: &str) -> u64 {
        let key = self.volume_key(&spec.id, node);
        let templates: u64 = self.volumes.get(&key).map_or(0, |v| v.values().map(|v| v.size).sum());
        spec.used.saturating_add(templates).min(spec.total)
    }

    /// Whether `node` can use the storage: allowed there and not disabled.
    pub(crate) fn storage_enabled_on(&self, spec: &StorageSpec, node: &str) -> bool {
        !spec.disabled && spec.allowed_on(node)
    }

    /// Proxmox's `storage_check_enabled` plus activation, with its error texts.
    pub(crate) fn check_storage_usable(&self, id: &str, node: &str) -> Result<&StorageSpec, String> {
        let spec = self.storage(id).ok_or_else(|| format!("storage '{id}' does not exist"))?;
        if spec.disabled {
            return Err(format!("storage '{id}' is disabled"));
        }
        if !spec.allowed_on(node) {
            return Err(format!("storage '{id}' is not available on node '{node}'"));
        }
        Ok(spec)
    }

    /// Allocates a worker pid and builds a UPID in Proxmox's format.
    pub(crate) fn new_task(&mut self, node: &str, kind: &str, id: &str, user: &str) -> (String, CancellationToken) {
        let now = now_epoch();
        self.next_pid = self.next_pid.wrapping_add(0x11);
        let pid = self.next_pid;
        // pstart counts clock ticks (100 Hz) since boot.
        let pstart = now.saturating_sub(self.boot_epoch) * 100;
        let upid = format!("UPID:{node}:{pid:08X}:{pstart:08X}:{now:08X}:{kind}:{id}:{user}:");
        let cancel = CancellationToken::new();
        self.tasks.push(Task {
            upid: upid.clone(),
            node: node.to_string(),
            pid,
            pstart,
            starttime: now,
            kind: kind.to_string(),
            id: id.to_string(),
            user: user.to_string(),
            log: Vec::new(),
            end: None,
            cancel: cancel.clone(),
        });
        (upid, cancel)
    }

    /// A task by UPID.
    pub(crate) fn task_mut(&mut self, upid: &str) -> Option<&mut Task> {
        self.tasks.iter_mut().find(|t| t.upid == upid)
    }

    /// Appends a line to a task's log.
    pub(crate) fn log(&mut self, upid: &str, line: impl Into<String>) {
        if let Some(t) = self.task_mut(upid) {
            t.log.push(line.into());
        }
    }

    /// Ends a task: `Ok(())` logs `TASK OK`, an error logs `TASK ERROR: msg`.
    pub(crate) fn finish(&mut self, upid: &str, outcome: Result<(), String>) {
        if let Some(t) = self.task_mut(upid) {
            let status = match outcome {
                Ok(()) => {
                    t.log.push("TASK OK".into());
                    "OK".to_string()
                }
                Err(msg) => {
                    let msg = msg.trim_end().to_string();
                    t.log.push(format!("TASK ERROR: {msg}"));
                    msg.replace('\n', " ")
                }
            };
            t.end = Some((now_epoch(), status));
        }
    }

    /// Takes one matching API fault, if any is armed.
    pub(crate) fn take_fault(&mut self, method: &str, path: &str, pattern: &str) -> Option<FaultSpec> {
        let idx = self.faults.iter().position(|f| {
            f.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method)) && (f.path == path || f.path == pattern)
        })?;
        let fault = self.faults[idx].clone();
        match self.faults[idx].count {
            Some(1) => {
                self.faults.remove(idx);
            }
            Some(n) => self.faults[idx].count = Some(n - 1),
            None => {}
        }
        Some(fault)
    }

    /// Takes one armed download fault for a template.
    pub(crate) fn take_download_fault(&mut self, template: &str) -> Option<DownloadFaultKind> {
        let idx = self.download_faults.iter().position(|f| f.template == template && f.count > 0)?;
        let kind = self.download_faults[idx].kind;
        self.download_faults[idx].count -= 1;
        if self.download_faults[idx].count == 0 {
            self.download_faults.remove(idx);
        }
        Some(kind)
    }

    /// Seconds the node has been up (for stats).
    pub(crate) fn uptime(&self) -> u64 {
        now_epoch().saturating_sub(self.boot_epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> World {
        World::new(&Scenario::default(), Path::new("."), "https://127.0.0.1:1").unwrap()
    }

    #[test]
    fn upids_have_proxmox_format() {
        let mut w = world();
        let (upid, _) = w.new_task("pve2", "download", "alpine.tar.xz", "a@pve!t");
        let parts: Vec<&str> = upid.split(':').collect();
        assert_eq!(parts.len(), 9, "{upid}");
        assert_eq!((parts[0], parts[1], parts[5], parts[8]), ("UPID", "pve2", "download", ""));
        for hex in &parts[2..5] {
            assert!(hex.len() >= 8 && hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
        }
    }

    #[test]
    fn indexes_carry_mirror_checksums() {
        let w = world();
        let entry = w.nodes[0].index.iter().find(|e| e["package"] == "alpine-3.22-default").unwrap();
        assert!(entry["location"].starts_with("https://127.0.0.1:1/_mirror/images/system/"));
        let expect = Digests::of_payload(&entry["template"], w.size_of(&entry["template"]), false);
        assert_eq!(entry["sha512sum"], expect.sha512);
        assert!(w.mirror_has("alpine-3.22-default_20250617_amd64.tar.xz"));
        assert!(!w.mirror_has("nope.tar.xz"));
    }

    #[test]
    fn faults_count_down() {
        let mut w = world();
        w.faults.push(FaultSpec { method: None, path: "/version".into(), status: 503, count: Some(2), message: None });
        assert!(w.take_fault("GET", "/version", "/version").is_some());
        assert!(w.take_fault("GET", "/version", "/version").is_some());
        assert!(w.take_fault("GET", "/version", "/version").is_none());
    }
}
