//! One reconcile pass: observe every cluster, plan (pure), apply, and report.
//!
//! - [`observation`]: the observation model, plain data.
//! - `observe`: API → [`observation::ClusterObservation`], with the fewest calls.
//! - [`plan`]: desired × observed → [`plan::Plan`]; pure, imports nothing that does I/O.
//! - [`apply`]: runs a plan's downloads, then prune's deletions, within the cluster's limits.
//! - [`task`]: the one seam that starts, adopts, follows and deletes Proxmox tasks; [`outcome`]: how each ended.
//! - [`fence`]: the start gate HA fencing closes.
//! - [`lookups`]: the `CACHE HIT` / `CACHE MISS` log lines, on change only.
//! - [`inventory`]: every node's vztmpl volumes, kept between passes for the resolve API.
//! - `steady`: the plan cache behind the observe step, which makes a converged cluster's pass cheap.

pub mod apply;
pub mod fence;
pub mod inventory;
pub mod lookups;
mod observe;
pub mod outcome;
pub mod progress;
mod steady;
pub mod task;
pub mod verification;

pub use fence::{Fence, Fenced, StartGate};
pub use outcome::{Failure, Outcome};
pub use vztmpld_core::{observation, plan};

use std::sync::Arc;

use futures_util::future::join_all;

use crate::config::{ClusterConfig, Config, TlsMode};
use crate::pve;
use crate::pve::{Client, ClientOptions, PveError};

/// How many clusters a pass observes at once. Observing is short (a stalled cluster is bounded by the client's
/// timeouts), and this bounds the observations and connections alive together; applying is not limited by it.
pub const OBSERVING_CLUSTERS: usize = 64;

/// One configured cluster and the client that talks to it, built together so neither exists without the other.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub config: ClusterConfig,
    pub client: Arc<Client>,
    /// The last plan, while the cluster stays as it was made from (see `steady`).
    plans: Arc<steady::PlanCache>,
}

/// One cluster's part of a pass.
#[derive(Debug)]
pub struct ClusterPass {
    /// The cluster's plan (download indices are this plan's). The same `Arc` as the previous pass's when
    /// nothing about the cluster changed (the plan was reused).
    pub plan: Arc<plan::Plan>,
    /// One outcome per download of `plan`.
    pub outcomes: Vec<Outcome>,
}

/// Joins clusters' passes into one plan (download indices shifted) and one list of outcomes.
pub fn merge(passes: &[ClusterPass]) -> (plan::Plan, Vec<Outcome>) {
    let mut whole = plan::Plan::default();
    let mut outcomes = Vec::new();
    for p in passes {
        whole.append(plan::Plan::clone(&p.plan));
        outcomes.extend(p.outcomes.iter().cloned());
    }
    (whole, outcomes)
}

/// A validated configuration with a client per cluster: everything a pass needs.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub config: Arc<Config>,
    pub clusters: Vec<Cluster>,
    /// Asked before each download starts (HA fencing); open by default.
    pub gate: StartGate,
    /// Which cached files to re-hash (`verify`), and where the results go; none by default.
    pub verifier: Option<Arc<dyn verification::Verifier>>,
}

/// What the Proxmox client needs of a cluster's configuration.
pub fn connection(c: &ClusterConfig) -> pve::Connection {
    let trust = match &c.tls {
        TlsMode::Pinned(pins) => pve::Trust::Pinned(pins.clone()),
        TlsMode::CaFile { path, pem } => pve::Trust::Ca { path: path.clone(), pem: pem.clone() },
        TlsMode::Insecure => pve::Trust::Insecure,
    };
    pve::Connection {
        cluster: c.name.clone(),
        endpoints: c.endpoints.clone(),
        token_id: c.token_id.clone(),
        secret: c.secret.expose().to_string(),
        trust,
    }
}

impl Fleet {
    /// Builds one client per configured cluster (pinned ones learn their nodes' fingerprints afresh).
    pub fn new(config: Config, options: ClientOptions) -> Result<Self, PveError> {
        Self::with_pins(config, options, &pve::PinBook::default())
    }

    /// Builds one client per configured cluster; a pinned cluster keeps the node fingerprints `book` learned
    /// under the same anchors (across a reload, or restored from the state directory), and learns into it.
    pub fn with_pins(config: Config, options: ClientOptions, book: &pve::PinBook) -> Result<Self, PveError> {
        let clusters = config
            .clusters
            .iter()
            .map(|c| {
                let client = Arc::new(Client::with_pins(connection(c), options, book)?);
                Ok(Cluster { config: c.clone(), client, plans: Arc::default() })
            })
            .collect::<Result<Vec<_>, PveError>>()?;
        Ok(Self { config: Arc::new(config), clusters, gate: StartGate::default(), verifier: None })
    }

    /// Observes every cluster concurrently; one observation per cluster, in configuration order.
    pub async fn observe(&self) -> Vec<observation::ClusterObservation> {
        let templates = &self.config.templates;
        let observing =
            self.clusters.iter().map(|c| observe::observe_cluster::<()>(&c.config, &c.client, templates, None));
        join_all(observing)
            .await
            .into_iter()
            .map(|o| match o {
                observe::Observed::Fresh { observation, .. } | observe::Observed::AsKept(observation, ()) => {
                    observation
                }
            })
            .collect()
    }

    /// Observes and plans.
    pub async fn plan(&self) -> plan::Plan {
        let observed = self.observe().await;
        plan::plan(&self.config, &observed)
    }

    /// The planned downloads that a task on their node is already running (another writer, or an interrupted
    /// `apply`), by download index, with the task's UPID: what `plan` shows as `in progress`.
    pub async fn running_downloads(&self, plan: &plan::Plan) -> std::collections::BTreeMap<usize, String> {
        let mut nodes: Vec<(&Cluster, &str)> = Vec::new();
        for d in &plan.downloads {
            if let Some(c) = self.clusters.iter().find(|c| c.config.name == d.cluster) {
                if !nodes.iter().any(|(nc, n)| nc.config.name == c.config.name && *n == d.node) {
                    nodes.push((c, d.node.as_str()));
                }
            }
        }
        let lists = join_all(nodes.iter().map(|(c, n)| c.client.active_downloads(n))).await;
        let mut running = std::collections::BTreeMap::new();
        for ((c, node), list) in nodes.iter().zip(lists) {
            let Ok(list) = list else { continue };
            for (i, d) in plan.downloads.iter().enumerate() {
                if d.cluster != c.config.name || d.node != *node {
                    continue;
                }
                let task = list.iter().find(|t| {
                    t.id.as_deref() == Some(d.file.as_str()) && t.kind.as_deref() == Some(d.source.task_type())
                });
                if let Some(t) = task {
                    running.insert(i, t.upid.clone());
                }
            }
        }
        running
    }

    /// One pass: each cluster observes, plans and applies on its own, so a stalled or failing cluster holds
    /// back nothing but itself. `on_plan` sees each cluster's plan and observation as soon as the plan is made
    /// (to publish or log it, or keep the volumes seen), and returns where that plan's download progress goes;
    /// `on_applied` sees the plan again with its outcomes when that cluster is done. A plan that is the same
    /// `Arc` as the cluster's last one was reused (nothing changed there; its observation holds no volumes, the
    /// listings left undecoded). Returns each cluster's part, in configuration order.
    pub async fn reconcile<P, A>(&self, on_plan: P, on_applied: A) -> Vec<ClusterPass>
    where
        P: Fn(&Arc<plan::Plan>, &observation::ClusterObservation) -> Option<progress::ProgressSink>,
        A: Fn(&Arc<plan::Plan>, &[Outcome]),
    {
        let (on_plan, on_applied) = (&on_plan, &on_applied);
        let observing = &tokio::sync::Semaphore::new(OBSERVING_CLUSTERS);
        let per_cluster = self.clusters.iter().map(|c| async move {
            // The observation (volumes, appliance indexes) is dropped once planned: a cold pass follows its
            // downloads for minutes, and a hundred clusters' observations must not stay alive meanwhile.
            let (plan, progress, due) = {
                // Never closed; the permit bounds only how many clusters are observed at once, not apply.
                let _permit = observing.acquire().await.ok();
                let (plan, observed) = c.plans.observe_and_plan(&c.config, &c.client, &self.config).await;
                let progress = on_plan(&plan, &observed);
                let due = self.verifier.as_ref().map(|v| v.due(&self.config, &plan, &observed)).unwrap_or_default();
                if !due.is_empty() {
                    // A verification may mark a file corrupt or repair it in place (same volid, same listing):
                    // the next pass plans and publishes afresh, and the verify marks are applied again.
                    c.plans.forget();
                }
                (plan, progress, due)
            };
            let settings = &self.config.downloads;
            let verifications = self.verifier.as_deref().map(|verifier| apply::Verifications { due, verifier });
            let outcomes = apply::apply_cluster(c, &plan, settings, progress, &self.gate, verifications).await;
            c.client.close_idle_connections();
            on_applied(&plan, &outcomes);
            ClusterPass { plan, outcomes }
        });
        join_all(per_cluster).await
    }
}
