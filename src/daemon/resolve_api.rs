//! The deploy-time question, answered from memory: `GET /api/v1/resolve?cluster=C&node=N&template=SPEC` gives
//! the volid to use on that node (or why there is none yet), and `GET /api/v1/cache` each node's files and
//! whether each configured spec would hit. Both read the [`Catalog`]: the inventory the passes keep, never
//! Proxmox, except `fresh=1`, which re-lists that node's storages first.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::shared::Shared;
use super::status::{TemplateState, TemplateStatus};
use crate::config::TemplateSource;
use crate::reconcile::Fleet;
use crate::reconcile::inventory::{Found, Inventory, NodeInventory, Vol};
use crate::template::TemplateSpec;
use crate::time::Timestamp;

/// Longest `wait`: a deploy waits for a download, not forever.
pub const MAX_WAIT: Duration = Duration::from_secs(900);

/// What the passes saw, for the resolve API: the inventory, the configuration in force (for `configured` and
/// `fresh`), and a generation that moves whenever a file appears (long polls wake on it).
#[derive(Debug)]
pub struct Catalog {
    inventory: RwLock<Inventory>,
    /// Shared, not cloned, per request: a fleet's configuration is large.
    fleet: RwLock<Option<Arc<Fleet>>>,
    changed: watch::Sender<u64>,
    /// Per known node, the last `fresh=1` listing: one in flight at a time, shared by every request it serves.
    relists: std::sync::Mutex<std::collections::HashMap<(String, String), Relist>>,
}

/// A node's `fresh=1` listing: when the last one started, and how it ended.
type Relist = Arc<tokio::sync::Mutex<Option<(tokio::time::Instant, Result<(), String>)>>>;

/// A `fresh=1` listing that started this long before a request still counts as fresh for it: a burst of requests
/// for one node costs at most two listings a second, however many there are.
pub const FRESH_REUSE: Duration = Duration::from_secs(1);

impl Default for Catalog {
    fn default() -> Self {
        Self {
            inventory: RwLock::default(),
            fleet: RwLock::default(),
            changed: watch::Sender::new(0),
            relists: std::sync::Mutex::default(),
        }
    }
}

impl Catalog {
    /// Changes the inventory and wakes the long polls.
    pub fn update(&self, f: impl FnOnce(&mut Inventory)) {
        f(&mut self.inventory.write().unwrap_or_else(std::sync::PoisonError::into_inner));
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Reads the inventory.
    pub fn read<R>(&self, f: impl FnOnce(&Inventory) -> R) -> R {
        f(&self.inventory.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The configuration and clients in force.
    pub fn set_fleet(&self, fleet: Fleet) {
        *self.fleet.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(fleet));
        // Nodes may have gone with the old configuration.
        self.relists.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

    fn fleet(&self) -> Option<Arc<Fleet>> {
        self.fleet.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// `GET /api/v1/resolve` parameters.
#[derive(Debug, Deserialize)]
pub(super) struct ResolveQuery {
    cluster: Option<String>,
    node: String,
    template: String,
    /// A duration (`60s`): wait until it is cached or the time is up.
    wait: Option<String>,
    /// `1`: re-list the node's storages before answering.
    fresh: Option<String>,
}

/// The answer: 200 with the volid when cached, else 404 with the state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub cluster: String,
    pub node: String,
    pub template: String,
    /// `cached`, `downloading`, `blocked`, `missing`, or `unknown` (no such cluster or node).
    pub state: String,
    /// Whether the configuration keeps this on the node: the file found satisfies a configured template for the
    /// node, or (not cached yet) the spec is a configured one. Else the file is merely present.
    pub configured: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// When the node's storages were last listed (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_done: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
    /// Why it is blocked, or why the question cannot be answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_retry: Option<Timestamp>,
}

fn problem(code: StatusCode, message: String) -> Response {
    (code, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

pub(super) async fn resolve(State(shared): State<Arc<Shared>>, Query(q): Query<ResolveQuery>) -> Response {
    let spec = match TemplateSpec::parse(&q.template) {
        Ok(s) => s,
        Err(e) => match oci_file(&shared, &q.template) {
            Some(file) => TemplateSpec::File(file),
            None => return problem(StatusCode::BAD_REQUEST, format!("template: {e}")),
        },
    };
    let wait = match q.wait.as_deref().map(humantime::parse_duration).transpose() {
        Ok(w) => w.unwrap_or_default().min(MAX_WAIT),
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("wait: {e} (e.g. wait=60s)")),
    };
    let cluster = match &q.cluster {
        Some(c) => c.clone(),
        None => match shared
            .catalog()
            .read(|i| i.clusters_with_node(&q.node).iter().map(|s| s.to_string()).collect::<Vec<_>>())[..]
        {
            [ref one] => one.clone(),
            [] => String::new(),
            ref many => {
                let message = format!("node '{}' is in clusters {}: add cluster=", q.node, many.join(", "));
                return problem(StatusCode::BAD_REQUEST, message);
            }
        },
    };
    if matches!(q.fresh.as_deref(), Some("1" | "true" | "yes")) {
        if let Err(e) = relist_coalesced(&shared, &cluster, &q.node).await {
            return problem(StatusCode::BAD_GATEWAY, e);
        }
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = shared.catalog().changed.subscribe();
    loop {
        changes.borrow_and_update();
        let answer = lookup(&shared, &cluster, &q.node, &spec);
        let code = if answer.state == "cached" { StatusCode::OK } else { StatusCode::NOT_FOUND };
        if code == StatusCode::OK || answer.state == "unknown" || tokio::time::Instant::now() >= deadline {
            return (code, axum::Json(answer)).into_response();
        }
        // A status change (a download finishing) moves the generation; so does a new pass.
        if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
            let answer = lookup(&shared, &cluster, &q.node, &spec);
            let code = if answer.state == "cached" { StatusCode::OK } else { StatusCode::NOT_FOUND };
            return (code, axum::Json(answer)).into_response();
        }
    }
}

/// An OCI image asked for by its configured reference, or by its `NAME.tar` file (template specs never end in a
/// bare `.tar`).
fn oci_file(shared: &Shared, asked: &str) -> Option<String> {
    let fleet = shared.catalog().fleet()?;
    let configured = fleet.config.templates.iter().find_map(|t| match &t.source {
        TemplateSource::Oci { reference, file, .. } if reference == asked || file == asked => Some(file.clone()),
        _ => None,
    });
    let plain_tar = asked.ends_with(".tar") && asked.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    configured.or_else(|| plain_tar.then(|| asked.to_string()))
}

/// One answer from memory.
fn lookup(shared: &Shared, cluster: &str, node: &str, spec: &TemplateSpec) -> Resolution {
    let label = spec.to_string();
    let mut r =
        Resolution { cluster: cluster.into(), node: node.into(), template: label.clone(), ..Default::default() };
    let fleet = shared.catalog().fleet();
    r.configured = fleet
        .as_ref()
        .is_some_and(|f| f.config.templates.iter().any(|t| t.label == label && t.applies_to(cluster, node)));
    // One read of the inventory: the file found, and the node's arch (to tell whether the file is configured).
    let found = shared.catalog().read(|inv| {
        let n = inv.cluster(cluster)?.nodes.get(node)?;
        Some((n.find(spec), n.arch.to_string()))
    });
    match found {
        None => {
            r.state = "unknown".into();
            r.reason = Some(format!("vztmpld has not observed a node '{node}' in cluster '{cluster}'"));
        }
        Some((Some(Found { volid, storage, size, observed_at }), arch)) => {
            // The file is configured when a configured template for this node is satisfied by it (asking
            // `alpine` finds the file `alpine-3.22` keeps: that file stays).
            let file = volid.split_once("vztmpl/").map_or(volid.as_str(), |(_, f)| f);
            let name = crate::template::TemplateName::parse(file);
            r.configured |= fleet.as_ref().is_some_and(|f| {
                let here = f.config.templates.iter().filter(|t| t.applies_to(cluster, node));
                here.into_iter().any(|t| t.source.accepts(file, name.as_ref(), &arch))
            });
            // A file a deep verify found corrupt is not one to deploy from.
            let corrupt = shared.read(|s| {
                let node =
                    s.clusters.iter().find(|c| c.name == cluster)?.nodes.iter().find(|n| n.name.as_str() == node)?;
                let t = node.templates.iter().find(|t| t.volid.as_deref() == Some(volid.as_str()))?;
                (t.state == TemplateState::Corrupt).then(|| t.error().unwrap_or_default().to_string())
            });
            if let Some(error) = corrupt {
                r.state = "blocked".into();
                r.reason = Some(format!("{volid} is corrupt (deep verify): {error}"));
                return r;
            }
            r.state = "cached".into();
            r.volid = Some(volid);
            r.storage = Some(storage);
            r.size = size;
            r.observed_at = Some(Timestamp::from(observed_at));
        }
        Some((None, _)) => {
            r.state = "missing".into();
            if r.configured {
                shared.read(|s| {
                    let t = s
                        .clusters
                        .iter()
                        .find(|c| c.name == cluster)
                        .and_then(|c| c.nodes.iter().find(|n| n.name.as_str() == node))
                        .and_then(|n| n.templates.iter().find(|t| *t.template == *label));
                    if let Some(t) = t {
                        describe(&mut r, t);
                    }
                });
            }
        }
    }
    r
}

/// A configured template's state, from the status.
fn describe(r: &mut Resolution, t: &TemplateStatus) {
    match t.state {
        TemplateState::Downloading | TemplateState::Queued | TemplateState::Verifying => {
            r.state = "downloading".into();
            let d = t.detail();
            r.upid.clone_from(&d.upid);
            r.progress = d.progress;
            r.bytes_done = d.bytes_done;
            r.bytes_total = d.bytes_total;
            r.eta_seconds = d.eta_seconds;
        }
        TemplateState::Failed | TemplateState::Blocked | TemplateState::Corrupt => {
            r.state = "blocked".into();
            r.reason.clone_from(&t.detail().error);
            r.next_retry.clone_from(&t.detail().next_retry);
        }
        TemplateState::Missing | TemplateState::Cached => {}
    }
}

/// [`relist`], coalesced per node: a request waits for the listing in flight, and takes the last one when it
/// started at most [`FRESH_REUSE`] before the request came. Only nodes the inventory knows get an entry (the
/// table does not grow with the names requests make up; an unknown node has no storages to list anyway).
async fn relist_coalesced(shared: &Shared, cluster: &str, node: &str) -> Result<(), String> {
    let requested = tokio::time::Instant::now();
    let known = shared.catalog().read(|inv| inv.cluster(cluster).is_some_and(|c| c.nodes.contains_key(node)));
    if !known {
        return relist(shared, cluster, node).await;
    }
    let cell = {
        let mut relists = shared.catalog().relists.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(relists.entry((cluster.to_string(), node.to_string())).or_default())
    };
    let mut last = cell.lock().await;
    if let Some((started, result)) = &*last {
        if *started + FRESH_REUSE >= requested {
            return result.clone();
        }
    }
    let started = tokio::time::Instant::now();
    let result = relist(shared, cluster, node).await;
    *last = Some((started, result.clone()));
    result
}

/// Re-lists the storages the node sees (one call per storage, usually `local` and one shared).
async fn relist(shared: &Shared, cluster: &str, node: &str) -> Result<(), String> {
    let Some(fleet) = shared.catalog().fleet() else { return Err("no configuration loaded".into()) };
    let Some(c) = fleet.clusters.iter().find(|c| c.config.name == cluster) else {
        return Err(format!("cluster '{cluster}' is not in the configuration"));
    };
    let storages: Vec<String> = shared.catalog().read(|inv| {
        inv.cluster(cluster)
            .and_then(|cl| cl.nodes.get(node))
            .map(|n| n.shelves.iter().map(|s| s.storage.to_string()).collect())
            .unwrap_or_default()
    });
    for storage in storages {
        let volumes = c.client.templates_on(node, &storage).await.map_err(|e| format!("fresh=1: {e}"))?;
        // Only template files: the listing asks for vztmpl content, as the passes do.
        let volumes: Arc<[Vol]> = volumes
            .iter()
            .filter(|v| v.content.as_deref().is_none_or(|c| c == "vztmpl"))
            .map(|v| Vol { volid: v.volid.as_str().into(), size: v.size })
            .collect();
        shared.catalog().update(|inv| inv.relisted(cluster, node, &storage, volumes, SystemTime::now()));
    }
    Ok(())
}

/// `GET /api/v1/cache` parameters: optional filters.
#[derive(Debug, Deserialize)]
pub(super) struct CacheQuery {
    cluster: Option<String>,
    node: Option<String>,
}

/// One node in `/api/v1/cache`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheNode {
    pub cluster: String,
    pub node: String,
    pub observed_at: Timestamp,
    /// Every template file the node sees.
    pub cached: Vec<CachedFile>,
    /// Each configured spec for this node: whether a deploy would hit, and the file.
    pub configured: Vec<ConfiguredHit>,
}

/// A template file on a storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedFile {
    pub volid: String,
    pub storage: String,
    pub size: Option<u64>,
}

/// Whether a configured spec would hit on a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfiguredHit {
    pub template: String,
    pub hit: bool,
    pub volid: Option<String>,
}

pub(super) async fn cache(State(shared): State<Arc<Shared>>, Query(q): Query<CacheQuery>) -> Response {
    let fleet = shared.catalog().fleet();
    let nodes = shared.catalog().read(|inv| {
        let mut out = Vec::new();
        let Some(fleet) = &fleet else { return out };
        for c in fleet.config.clusters.iter().filter(|c| q.cluster.as_ref().is_none_or(|x| *x == c.name)) {
            let Some(ci) = inv.cluster(&c.name) else { continue };
            let mut names: Vec<&str> = ci.nodes.keys().map(|k| &**k).collect();
            names.sort_unstable();
            for name in names.into_iter().filter(|n| q.node.as_deref().is_none_or(|x| x == *n)) {
                if let Some(n) = ci.nodes.get(name) {
                    out.push(cache_node(fleet, &c.name, name, n));
                }
            }
        }
        out
    });
    axum::Json(serde_json::json!({ "nodes": nodes })).into_response()
}

fn cache_node(fleet: &Fleet, cluster: &str, node: &str, n: &NodeInventory) -> CacheNode {
    let cached = n
        .volumes()
        .map(|(storage, v): (&str, &Vol)| CachedFile {
            volid: v.volid.to_string(),
            storage: storage.into(),
            size: v.size,
        })
        .collect();
    let configured = fleet
        .config
        .templates
        .iter()
        .filter(|t| t.applies_to(cluster, node))
        .map(|t| {
            let found = n.find(&t.source.spec());
            ConfiguredHit { template: t.label.clone(), hit: found.is_some(), volid: found.map(|f| f.volid) }
        })
        .collect();
    CacheNode {
        cluster: cluster.into(),
        node: node.into(),
        observed_at: Timestamp::from(n.observed_at),
        cached,
        configured,
    }
}
