//! Apply: start the planned downloads within the per-cluster and per-node limits, adopt downloads that
//! are already running, follow each task to its end, and check that the file shows up.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::join_all;
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::fence::StartGate;
use super::outcome::{Failure, Outcome};
use super::plan::{Download, Plan};
use super::progress::{Progress, ProgressSink};
use super::{Cluster, Fleet, task};
use crate::config::DownloadSettings;

/// Runs every download of a plan, then its deletions (`prune`); returns one outcome per `plan.downloads` entry,
/// then one per `plan.deletions` entry. Each cluster runs under its own limits, concurrently with the others.
pub async fn apply(fleet: &Fleet, plan: &Plan, progress: Option<ProgressSink>) -> Vec<Outcome> {
    let settings = &fleet.config.downloads;
    let gate = &fleet.gate;
    let per_cluster = fleet.clusters.iter().map(|c| run_cluster(c, plan, settings, progress.clone(), gate, None));
    let mut outcomes: Vec<Option<Outcome>> = vec![None; plan.downloads.len() + plan.deletions.len()];
    for (index, outcome) in join_all(per_cluster).await.into_iter().flatten() {
        outcomes[index] = Some(outcome);
    }
    let clusters = plan.downloads.iter().map(|d| &d.cluster).chain(plan.deletions.iter().map(|d| &d.cluster));
    outcomes
        .into_iter()
        .zip(clusters)
        .map(|(o, cluster)| {
            o.unwrap_or_else(|| Outcome::failed(Failure::UnknownCluster { cluster: cluster.to_string() }))
        })
        .collect()
}

/// Runs the downloads, then the deletions, of one cluster's plan (a plan of that cluster alone); one outcome
/// per download, then one per deletion.
pub async fn apply_cluster(
    cluster: &Cluster,
    plan: &Plan,
    settings: &DownloadSettings,
    progress: Option<ProgressSink>,
    gate: &StartGate,
    verifications: Option<Verifications<'_>>,
) -> Vec<Outcome> {
    run_cluster(cluster, plan, settings, progress, gate, verifications).await.into_iter().map(|(_, o)| o).collect()
}

/// Deep verifications due in a cluster, run within its download slots, and where their results go.
pub struct Verifications<'a> {
    pub due: Vec<super::verification::Verification>,
    pub verifier: &'a dyn super::verification::Verifier,
}

/// The downloads of `plan` that belong to `cluster`, within its `max_parallel_downloads` and
/// `max_downloads_per_node`; each outcome with its index in `plan.downloads`.
async fn run_cluster(
    cluster: &Cluster,
    plan: &Plan,
    settings: &DownloadSettings,
    progress: Option<ProgressSink>,
    gate: &StartGate,
    verifications: Option<Verifications<'_>>,
) -> Vec<(usize, Outcome)> {
    let downloads: Vec<(usize, &Download)> =
        plan.downloads.iter().enumerate().filter(|(_, d)| d.cluster == cluster.config.name).collect();
    let cluster_limit = Semaphore::new(cluster.config.max_parallel_downloads.max(1));
    let mut node_limits: HashMap<&str, Arc<Semaphore>> = HashMap::new();
    let per_node = cluster.config.max_downloads_per_node.max(1);
    let (due, verifier) = match &verifications {
        Some(v) => (v.due.as_slice(), Some(v.verifier)),
        None => (&[][..], None),
    };
    // Verifications take the same slots as downloads: each makes a node read and hash a whole file.
    let checks: Vec<_> = due
        .iter()
        .map(|v| {
            let d = &v.download;
            let node_limit =
                Arc::clone(node_limits.entry(d.node.as_str()).or_insert_with(|| Arc::new(Semaphore::new(per_node))));
            let cluster_limit = &cluster_limit;
            let span = tracing::info_span!("verify", cluster = %d.cluster, node = %d.node, storage = %d.storage, volid = %d.volid());
            async move {
                let _n = node_limit.acquire().await.ok();
                let _c = cluster_limit.acquire().await.ok();
                let outcome = super::verification::verify(&cluster.client, v, settings, gate).await;
                if let Some(verifier) = verifier {
                    verifier.record(v, &outcome);
                }
            }
            .instrument(span)
        })
        .collect();
    let jobs: Vec<_> = downloads.into_iter().map(|(i, d)| {
        let node_limit =
            Arc::clone(node_limits.entry(d.node.as_str()).or_insert_with(|| Arc::new(Semaphore::new(per_node))));
        let progress = progress.clone();
        let cluster_limit = &cluster_limit;
        let span = tracing::info_span!("download", cluster = %d.cluster, node = %d.node, storage = %d.storage, template = %d.file);
        async move {
            if let Some(sink) = &progress {
                sink(Progress::queued(i));
            }
            // The node's slot first: a download waiting for its busy node must not hold a cluster slot that an
            // idle node could use.
            let _n = node_limit.acquire().await.ok();
            let _c = cluster_limit.acquire().await.ok();
            (i, task::download(&cluster.client, i, d, settings, progress.as_ref(), gate).await)
        }
        .instrument(span)
    }).collect();
    let (mut outcomes, _) = tokio::join!(join_all(jobs), join_all(checks));
    // Deletions only ever remove builds older than one that is there: they wait for nothing and nothing waits
    // for them, so they run one after another once the downloads are done.
    let first = plan.downloads.len();
    for (i, d) in plan.deletions.iter().enumerate().filter(|(_, d)| d.cluster == cluster.config.name) {
        let arrived = d.after.is_none_or(|a| outcomes.iter().any(|(i, o)| *i == a && o.succeeded()));
        let outcome = match &d.blocked {
            Some(reason) => Outcome::failed(Failure::Blocked(reason.clone())),
            None if !arrived => Outcome::failed(Failure::AwaitedDownloadFailed),
            None => {
                let span = tracing::info_span!("prune", cluster = %d.cluster, node = %d.node, storage = %d.storage, volid = %d.volid);
                let deleted = task::delete(&cluster.client, &d.node, &d.storage, &d.volid, settings, gate);
                let outcome = deleted.instrument(span.clone()).await;
                if outcome.succeeded() {
                    span.in_scope(|| tracing::info!(kept = %d.kept.join(","), "pruned a superseded build"));
                }
                outcome
            }
        };
        outcomes.push((first + i, outcome));
    }
    outcomes
}
