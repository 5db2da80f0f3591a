//! Observe: what each targeted node actually has, with as few API calls as answer the question.
//!
//! Per cluster and pass: one `/cluster/resources?type=node`, one `?type=storage`, one content listing per
//! shared storage (not per node) and per local vztmpl storage of each online node. Only when something is
//! not cached (or wants `latest`): `/access/permissions` for the preflight, and the appliance indexes.

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;

use super::observation::{
    ClusterObservation, IndexEntry, NodeObservation, PermissionMap, StorageObservation, StorageOnNode, Volume,
    digester, find_cached,
};
use crate::config::{ClusterConfig, Policy, TemplateConfig, TemplateSource};
use crate::pve::{Client, PveError};
use crate::template::{TemplateName, TemplateSpec, debian_arch};

/// A cluster as observed.
pub(super) enum Observed<K> {
    /// The listings arrived as they were when `K` was kept: the observation stopped after them and left them
    /// undecoded (it holds the cluster's views, no volumes). `K` is handed back.
    AsKept(ClusterObservation, K),
    /// Observed in full, with [`ClusterObservation::steady_key`] taken once the listings were in.
    Fresh { observation: ClusterObservation, key: Option<u64> },
}

/// Observes one cluster for the given desired templates. With `kept` (something kept with the key of the
/// inputs it was made from), an equal key ends the observation after the listings: the same inputs would need
/// nothing more and plan the same.
pub(super) async fn observe_cluster<K>(
    cfg: &ClusterConfig,
    client: &Client,
    templates: &[TemplateConfig],
    kept: Option<(u64, K)>,
) -> Observed<K> {
    let (mut obs, online, listings) = observe_views_and_listings(cfg, client).await;
    let key = obs.steady_key();
    match kept {
        Some((k, kept)) if key == Some(k) => Observed::AsKept(obs, kept),
        _ => {
            decode_listings(&mut obs, client, listings);
            Observed::Fresh { observation: observe_the_rest(obs, online, client, templates).await, key }
        }
    }
}

/// The cluster's views (nodes, storages) and every vztmpl listing a targeted node sees, as it arrived (its
/// digest in the observation); with the cluster's online members (targeted or not: any of them may serve an
/// appliance index).
async fn observe_views_and_listings(
    cfg: &ClusterConfig,
    client: &Client,
) -> (ClusterObservation, Vec<String>, Vec<Fetched>) {
    let mut obs = ClusterObservation { name: cfg.name.clone(), ..Default::default() };
    if client.has_failover() {
        // Pinned clusters learn the other nodes' certificates while a pinned node answers (hourly), so a
        // failover finds them trusted. Nothing is lost when it fails: the pins stay as they are.
        if let Err(e) = client.learn_node_fingerprints(std::time::Duration::from_secs(3600)).await {
            tracing::debug!(cluster = %cfg.name, error = %e, "cannot learn the nodes' certificate fingerprints");
        }
    }
    let (nodes, storages) = match tokio::join!(client.cluster_nodes(), client.cluster_storages()) {
        (Ok(n), Ok(s)) => (n, s),
        (Err(e), _) | (_, Err(e)) => {
            obs.error_retryable = e.is_retryable();
            obs.error = Some(e.to_string());
            return (obs, Vec::new(), Vec::new());
        }
    };

    for n in &nodes {
        if cfg.nodes.includes(&n.node) {
            obs.nodes.push(NodeObservation {
                name: n.node.clone(),
                online: n.online,
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
                    "node '{wanted}' is not a member of cluster {}{} (members: {}; names are case-sensitive)",
                    cfg.name,
                    crate::suggest::hint(wanted, nodes.iter().map(|n| n.node.as_str())),
                    nodes.iter().map(|n| n.node.as_str()).collect::<Vec<_>>().join(", ")
                )),
            });
        }
    }

    for row in storages.into_iter().filter(|r| r.vztmpl) {
        let s = obs
            .storages
            .entry(row.storage)
            .or_insert_with_key(|id| StorageObservation { id: id.clone(), ..Default::default() });
        s.shared |= row.shared.unwrap_or(false);
        // Sizes only count when they make sense (a total, and no more used than that): a mistyped or odd
        // value means "unknown", never "no room".
        let avail =
            row.maxdisk.zip(row.disk).filter(|(max, used)| *max > 0 && used <= max).map(|(max, used)| max - used);
        s.on_nodes.insert(row.node, StorageOnNode { active: row.available, avail });
    }

    let listings = list_contents(&mut obs, client).await;
    let online = nodes.into_iter().filter(|n| n.online).map(|n| n.node).collect();
    (obs, online, listings)
}

/// What only a miss (or `latest`) needs: the token's privileges, the appliance indexes, the version.
async fn observe_the_rest(
    mut obs: ClusterObservation,
    online: Vec<String>,
    client: &Client,
    templates: &[TemplateConfig],
) -> ClusterObservation {
    if obs.error.is_some() {
        return obs;
    }
    // The token's privileges and the appliance indexes only matter for what is not cached (or `latest`):
    // a converged cluster costs no call for them.
    let needs = needs(&obs, templates);
    if needs == Needs::Nothing {
        return obs;
    }
    let indexes = async {
        if needs == Needs::Indexes {
            in_order(online.iter(), client.max_in_flight(), |n| client.appliances(n)).await
        } else {
            Vec::new()
        }
    };
    // OCI pulls need Proxmox VE 9: the version is read only when an OCI template is missing.
    let version = async { if oci_missing(&obs, templates) { Some(client.version().await) } else { None } };
    let (perms, fetched, version) = tokio::join!(client.permissions(), indexes, version);
    obs.pve_version = version.map(|answer| {
        let answer = answer.map_err(|e| e.to_string())?;
        answer["version"].as_str().map(String::from).ok_or_else(|| "GET /version gave no version".to_string())
    });
    obs.permissions = match perms {
        Ok(map) => {
            PermissionMap::new(map.into_iter().map(|(path, privs)| (path, privs.into_keys().collect())).collect())
        }
        Err(e) => {
            tracing::warn!(cluster = %obs.name, error = %e, "cannot read the token's permissions; skipping the preflight");
            PermissionMap::unknown()
        }
    };
    for (node, result) in online.into_iter().zip(fetched) {
        if let Err(e) = &result {
            tracing::warn!(cluster = %obs.name, %node, error = %e, "cannot read the node's appliance index; its templates are unknown this pass");
        }
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
    obs
}

/// A listing as it arrived: the storage, the node it is kept under (`None`: shared), the node asked, and its
/// undecoded body.
struct Fetched {
    storage: String,
    key: Option<String>,
    via: String,
    body: Result<Vec<u8>, PveError>,
}

/// Lists each shared storage once (through a node that has it active) and each local one per online node;
/// records their digest in the observation and returns them undecoded.
async fn list_contents(obs: &mut ClusterObservation, client: &Client) -> Vec<Fetched> {
    use std::hash::{Hash, Hasher};
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
    let bodies = in_order(jobs.iter(), client.max_in_flight(), |(storage, _, via)| client.listing(via, storage)).await;
    let mut digest = digester();
    let fetched: Vec<Fetched> = jobs
        .into_iter()
        .zip(bodies)
        .map(|((storage, key, via), body)| {
            (&storage, &key).hash(&mut digest);
            match &body {
                Ok(bytes) => bytes.hash(&mut digest),
                Err(e) => e.to_string().hash(&mut digest),
            }
            Fetched { storage, key, via, body }
        })
        .collect();
    obs.listings_digest = Some(digest.finish());
    fetched
}

/// Decodes the listings into the observation's volumes (vztmpl content only).
fn decode_listings(obs: &mut ClusterObservation, client: &Client, listings: Vec<Fetched>) {
    for Fetched { storage, key, via, body } in listings {
        let volumes =
            body.and_then(|bytes| client.volumes(&via, &storage, &bytes)).map_err(|e| e.to_string()).map(|list| {
                list.into_iter()
                    .filter(|v| v.content.as_deref().is_none_or(|c| c == "vztmpl"))
                    .filter_map(|v| {
                        let file = v.volid.split_once(":vztmpl/").map(|(_, f)| f.to_string())?;
                        Some(Volume::new(v.volid, file, v.size))
                    })
                    .collect()
            });
        if let Some(s) = obs.storages.get_mut(&storage) {
            match key {
                Some(node) => {
                    s.node_volumes.insert(node, volumes);
                }
                None => s.shared_volumes = Some(volumes),
            }
        }
    }
}

/// What a pass must read beyond the storages' contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Needs {
    /// Everything wanted is cached: nothing.
    Nothing,
    /// A url template is missing: the token's privileges (the download preflight).
    Permissions,
    /// An appliance template is missing, or wants `latest`: the privileges and every online node's index.
    Indexes,
}

/// Whether an `oci:` template is missing on a targeted node.
fn oci_missing(obs: &ClusterObservation, templates: &[TemplateConfig]) -> bool {
    obs.nodes.iter().filter(|n| n.online && n.error.is_none()).any(|node| {
        templates.iter().filter(|t| t.applies_to(&obs.name, &node.name)).any(|t| match &t.source {
            TemplateSource::Oci { file, .. } => {
                find_cached(obs, &node.name, "", &TemplateSpec::File(file.clone())).is_none()
            }
            _ => false,
        })
    })
}

/// What any targeted node's templates need read; a superset of what planning consults, never less.
fn needs(obs: &ClusterObservation, templates: &[TemplateConfig]) -> Needs {
    let mut needs = Needs::Nothing;
    for node in obs.nodes.iter().filter(|n| n.online && n.error.is_none()) {
        for t in templates.iter().filter(|t| t.applies_to(&obs.name, &node.name)) {
            let this = match &t.source {
                TemplateSource::Url { filename: file, .. } | TemplateSource::Oci { file, .. } => {
                    let file = TemplateSpec::File(file.clone());
                    if find_cached(obs, &node.name, "", &file).is_none() { Needs::Permissions } else { Needs::Nothing }
                }
                TemplateSource::Appliance(_) if t.policy == Policy::Latest => Needs::Indexes,
                TemplateSource::Appliance(spec) => {
                    if find_cached(obs, &node.name, &node.arch, spec).is_none() {
                        Needs::Indexes
                    } else {
                        Needs::Nothing
                    }
                }
            };
            needs = needs.max(this);
            if needs == Needs::Indexes {
                return needs;
            }
        }
    }
    needs
}

/// `call` on each item, at most `limit` at a time, the results in the items' order. Only the calls under
/// way exist: a future per call waiting for its turn would hold a whole request's state (kilobytes) for
/// nothing, in every cluster observed at once. (`stream::iter(..).map(call).buffered(limit)` says the same, but
/// rustc cannot then prove the pass's spawned future `Send`: "implementation of `FnOnce` is not general enough".)
async fn in_order<T, F: Future>(
    items: impl IntoIterator<Item = T>,
    limit: usize,
    mut call: impl FnMut(T) -> F,
) -> Vec<F::Output> {
    let (mut waiting, mut running, mut done) = (items.into_iter(), FuturesOrdered::new(), Vec::new());
    if limit <= 1 {
        // One at a time (the client's default: one request in flight per cluster): plainly in turn, without a task
        // per call to wake through.
        for item in waiting {
            done.push(call(item).await);
        }
        return done;
    }
    loop {
        while running.len() < limit.max(1) {
            let Some(item) = waiting.next() else { break };
            running.push_back(call(item));
        }
        let Some(output) = running.next().await else { return done };
        done.push(output);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    use super::in_order;

    #[tokio::test(start_paused = true)]
    async fn in_order_keeps_the_order_and_runs_at_most_the_limit_at_once() {
        let (running, most) = (Cell::new(0), Cell::new(0));
        let call = |(i, ms): (usize, u64)| {
            let (running, most) = (&running, &most);
            async move {
                running.set(running.get() + 1);
                most.set(most.get().max(running.get()));
                tokio::time::sleep(Duration::from_millis(ms)).await;
                running.set(running.get() - 1);
                i
            }
        };
        let items = [30, 10, 20, 5, 1].into_iter().enumerate();
        assert_eq!(in_order(items.clone(), 2, call).await, vec![0, 1, 2, 3, 4]);
        assert_eq!(most.get(), 2);
        most.set(0);
        assert_eq!(in_order(items, 1, call).await, vec![0, 1, 2, 3, 4]);
        assert_eq!(most.get(), 1, "one at a time");
        assert!(in_order(std::iter::empty::<(usize, u64)>(), 1, call).await.is_empty());
    }
}
