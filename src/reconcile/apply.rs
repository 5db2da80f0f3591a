//! Apply: start the planned downloads within the per-cluster and per-node limits, adopt downloads that
//! are already running, follow each task to its end, and check that the file shows up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::plan::{Download, Plan, Source};
use tracing::Instrument;

use super::{Cluster, Fleet};
use crate::config::{Checksum, DownloadSettings};
use crate::pve::{Client, PveError};

/// How one download ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The task ran (or was adopted) to success and the file is listed.
    Finished {
        upid: String,
        seconds: u64,
        bytes: Option<u64>,
        adopted: bool,
    },
    /// Another writer (a second daemon, a manual download) put the file there after the plan was made.
    AlreadyPresent,
    Failed {
        upid: Option<String>,
        error: String,
        retryable: bool,
    },
}

impl Outcome {
    /// Whether the file is there now.
    pub fn succeeded(&self) -> bool {
        matches!(self, Outcome::Finished { .. } | Outcome::AlreadyPresent)
    }
}

use super::progress::Tracker;
pub use super::progress::{Phase, Progress, ProgressSink};

/// Asked right before each download starts (not once per pass): `Err(reason)` holds the start back. HA
/// fencing closes it when the etcd lease may have ended; without HA it is always open.
#[derive(Clone, Default)]
pub struct StartGate(Option<Arc<dyn Fn() -> Result<(), String> + Send + Sync>>);

impl StartGate {
    /// A gate that asks `check`.
    pub fn new(check: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(check)))
    }

    /// Whether a download may start now.
    pub fn check(&self) -> Result<(), String> {
        self.0.as_ref().map_or(Ok(()), |check| check())
    }
}

impl std::fmt::Debug for StartGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "StartGate(fenced)" } else { "StartGate(open)" })
    }
}

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
            o.unwrap_or_else(|| Outcome::Failed {
                upid: None,
                error: format!("cluster {cluster} is not in the configuration this plan was applied with"),
                retryable: false,
            })
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
    pub due: Vec<super::verify::Verification>,
    pub verifier: &'a dyn super::verify::Verifier,
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
                let outcome = super::verify::verify(&cluster.client, v, settings, gate).await;
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
            (i, run_download(&cluster.client, i, d, settings, progress.as_ref(), gate).await)
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
            Some(reason) => Outcome::Failed { upid: None, error: reason.clone(), retryable: false },
            None if !arrived => Outcome::Failed {
                upid: None,
                error: "not deleted: the newer build it makes room for did not arrive".into(),
                retryable: true,
            },
            None => {
                let span = tracing::info_span!("prune", cluster = %d.cluster, node = %d.node, storage = %d.storage, volid = %d.volid);
                let deleted = super::prune::delete(&cluster.client, &d.node, &d.storage, &d.volid, settings, gate);
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

pub(super) async fn run_download(
    client: &Client,
    index: usize,
    d: &Download,
    settings: &DownloadSettings,
    progress: Option<&ProgressSink>,
    gate: &StartGate,
) -> Outcome {
    let started = Instant::now();
    let fail = |upid: Option<String>, e: &PveError| Outcome::Failed {
        upid,
        error: e.to_string(),
        retryable: e.is_retryable(),
    };
    // Another writer (a second daemon, a manual apply) plans the same downloads in the same order. A random
    // pause of up to one poll interval keeps two writers from checking in the same instant, and the checks
    // below, made right before the start (not when the plan was made), then see the other's task or file.
    tokio::time::sleep(settings.poll_interval.mul_f64(jitter_fraction())).await;
    // A download of the same file already running on that node (another writer, or a run that was killed) is
    // adopted.
    let running = match client.active_downloads(&d.node).await {
        Ok(list) => list
            .into_iter()
            .find(|t| t.id.as_deref() == Some(d.file.as_str()) && t.kind.as_deref() == Some(d.source.task_type())),
        Err(e) => return fail(None, &e),
    };
    if running.is_none() {
        match client.templates_on(&d.node, &d.storage).await {
            Ok(list) if list.iter().any(|v| v.volid == d.volid()) => {
                tracing::info!("already present (another writer downloaded it)");
                return Outcome::AlreadyPresent;
            }
            Ok(_) => {}
            Err(e) => return fail(None, &e),
        }
    }
    let (upid, adopted) = match running {
        Some(task) => {
            if let Some(sink) = progress {
                sink(Tracker::new().progress(index, &task.upid, Instant::now()));
            }
            tracing::info!(upid = %task.upid, "download adopted (already running)");
            (task.upid, true)
        }
        None => {
            if let Err(reason) = gate.check() {
                tracing::info!(%reason, "download not started");
                return Outcome::Failed { upid: None, error: format!("not started: {reason}"), retryable: true };
            }
            match start(client, d).await {
                Ok(upid) => {
                    if let Some(sink) = progress {
                        sink(Tracker::new().progress(index, &upid, Instant::now()));
                    }
                    tracing::info!(%upid, "download started");
                    (upid, false)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "download failed");
                    return fail(None, &e);
                }
            }
        }
    };
    match follow(client, index, &upid, settings, progress).await {
        Ok(bytes) => {
            if let Some(sink) = progress {
                let done = Progress {
                    download: index,
                    phase: Phase::Verifying,
                    upid: Some(upid.clone()),
                    done: bytes,
                    total: bytes,
                    rate: None,
                };
                sink(done);
            }
            if let Err(e) = confirm_visible(client, d).await {
                tracing::warn!(%upid, error = %e, "download failed");
                return Outcome::Failed { upid: Some(upid), error: e, retryable: true };
            }
            let seconds = started.elapsed().as_secs();
            tracing::info!(%upid, seconds, bytes = bytes.unwrap_or(0), "download finished");
            Outcome::Finished { upid, seconds, bytes, adopted }
        }
        Err((error, retryable)) => {
            tracing::warn!(%upid, %error, "download failed");
            Outcome::Failed { upid: Some(upid), error, retryable }
        }
    }
}

/// Starts the task that brings `d` (no checks: the caller made them); its UPID.
pub(super) async fn start(client: &Client, d: &Download) -> Result<String, PveError> {
    match &d.source {
        Source::Appliance { template } => client.download_appliance(&d.node, &d.storage, template).await,
        Source::Url { url, algorithm, checksum } => {
            let sum = Checksum { algorithm: algorithm.clone(), hex: checksum.clone() };
            client.download_url(&d.node, &d.storage, url, &d.file, &sum).await
        }
        Source::Oci { reference, filename } => {
            client.oci_pull(&d.node, &d.storage, reference, filename.as_deref()).await
        }
    }
}

/// Polls a task until it stops, reading its log for the size and progress; stops it past its deadline.
pub(super) async fn follow(
    client: &Client,
    index: usize,
    upid: &str,
    settings: &DownloadSettings,
    progress: Option<&ProgressSink>,
) -> Result<Option<u64>, (String, bool)> {
    let started = Instant::now();
    let mut log_offset = 0u64;
    let mut tracker = Tracker::new();
    let mut last_log: Option<String> = None;
    let mut transient_errors = 0u32;
    loop {
        let status = client.task_status(upid).await;
        // Read the log before acting on a stop: a short task ends before its first log read.
        if let Ok((lines, new_total)) = client.task_log(upid, log_offset).await {
            log_offset = new_total.max(log_offset);
            let now = Instant::now();
            for line in &lines {
                tracker.feed(&line.t, now);
            }
            if let Some(line) = lines.last() {
                last_log = Some(line.t.clone());
            }
        }
        // Every poll, not only on a new log line: between wget's lines the tracker interpolates.
        if let Some(sink) = progress {
            sink(tracker.progress(index, upid, Instant::now()));
        }
        let total = tracker.total();
        match status {
            Ok(status) if status.is_stopped() => {
                return if status.succeeded() {
                    Ok(total)
                } else {
                    let exit = status.exitstatus.unwrap_or_else(|| "unexpected status".into());
                    // A checksum mismatch or a refused overwrite will not fix itself on the next pass unchanged.
                    let retryable = !exit.contains("checksum mismatch") && !exit.contains("refusing to override");
                    Err((format!("task {upid} failed: {exit}"), retryable))
                };
            }
            Ok(_) => transient_errors = 0,
            Err(e) if e.is_retryable() && transient_errors < 10 => transient_errors += 1,
            Err(e) => return Err((format!("lost track of task {upid}: {e}"), e.is_retryable())),
        }
        let deadline = settings.deadline_for(total);
        if started.elapsed() > deadline {
            let _ = client.stop_task(upid).await;
            let detail = last_log.map(|l| format!(" (last log line: {l})")).unwrap_or_default();
            return Err((
                format!("task {upid} did not finish within {}s and was stopped{detail}", deadline.as_secs()),
                true,
            ));
        }
        tokio::time::sleep(settings.poll_interval).await;
    }
}

/// Re-lists the target storage a few times: some (CephFS, NFS) show a new file late.
async fn confirm_visible(client: &Client, d: &Download) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..5u32 {
        match client.templates_on(&d.node, &d.storage).await {
            Ok(list) if list.iter().any(|v| v.volid == d.volid()) => return Ok(()),
            Ok(_) => last = format!("{} is not listed on {} after the task ended", d.volid(), d.storage),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt + 1))).await;
    }
    Err(last)
}

/// A number in [0, 1) from the clock: spreading writers needs spread, not cryptographic randomness.
fn jitter_fraction() -> f64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    f64::from(nanos.wrapping_mul(2_654_435_761) % 1_000_000) / 1_000_000.0
}
