//! Apply: start the planned downloads within the per-cluster and per-node limits, adopt downloads that
//! are already running, follow each task to its end, and check that the file shows up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::plan::{Download, Plan, Source};
use crate::config::{Checksum, Config, DownloadSettings};
use crate::pve::{Client, PveError};

/// How one download ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Finished { upid: String, seconds: u64, bytes: Option<u64>, adopted: bool },
    Failed { upid: Option<String>, error: String, retryable: bool },
}

/// Progress of a running download, for live displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub download: usize,
    pub upid: String,
    pub bytes_total: Option<u64>,
    pub percent: Option<u8>,
}

/// Receives progress updates (a terminal bar, the daemon's status).
pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// Runs every download of a plan; returns one outcome per `plan.downloads` entry.
pub async fn apply(
    config: &Config,
    clients: &HashMap<String, Arc<Client>>,
    plan: &Plan,
    progress: Option<ProgressSink>,
) -> Vec<Outcome> {
    let mut cluster_limits: HashMap<&str, Arc<Semaphore>> = HashMap::new();
    let mut node_limits: HashMap<(String, String), Arc<Semaphore>> = HashMap::new();
    // Each node's running downloads are listed once per apply, however many downloads it runs.
    let mut active: HashMap<(String, String), Arc<ActiveList>> = HashMap::new();
    for c in &config.clusters {
        cluster_limits.insert(&c.name, Arc::new(Semaphore::new(c.max_parallel_downloads.max(1))));
    }
    let per_node =
        |cluster: &str| config.clusters.iter().find(|c| c.name == cluster).map_or(1, |c| c.max_downloads_per_node);
    let jobs = plan.downloads.iter().enumerate().map(|(i, d)| {
        let cluster_limit = cluster_limits.get(d.cluster.as_str()).cloned();
        let node_limit = node_limits
            .entry((d.cluster.clone(), d.node.clone()))
            .or_insert_with(|| Arc::new(Semaphore::new(per_node(&d.cluster).max(1))))
            .clone();
        let running = active.entry((d.cluster.clone(), d.node.clone())).or_default().clone();
        let client = clients.get(&d.cluster).cloned();
        let progress = progress.clone();
        let settings = config.downloads.clone();
        async move {
            let Some(client) = client else {
                return Outcome::Failed {
                    upid: None,
                    error: format!("no client for cluster {}", d.cluster),
                    retryable: false,
                };
            };
            let _c = match &cluster_limit {
                Some(s) => s.acquire().await.ok(),
                None => None,
            };
            let _n = node_limit.acquire().await.ok();
            run_download(&client, &running, i, d, &settings, progress.as_ref()).await
        }
    });
    join_all(jobs).await
}

/// A node's running downloads, listed at most once per apply.
type ActiveList = tokio::sync::OnceCell<Result<Vec<crate::pve::types::TaskListItem>, PveError>>;

async fn run_download(
    client: &Client,
    active: &ActiveList,
    index: usize,
    d: &Download,
    settings: &DownloadSettings,
    progress: Option<&ProgressSink>,
) -> Outcome {
    let started = Instant::now();
    let fail = |upid: Option<String>, e: &PveError| Outcome::Failed {
        upid,
        error: e.to_string(),
        retryable: e.is_retryable(),
    };
    // A download of the same file already running on that node (say, from a run that was killed) is adopted.
    let running = match active.get_or_init(|| client.active_downloads(&d.node)).await {
        Ok(list) => list
            .iter()
            .find(|t| t.id.as_deref() == Some(d.file.as_str()) && t.kind.as_deref() == Some("download"))
            .cloned(),
        Err(e) => return fail(None, e),
    };
    let (upid, adopted) = match running {
        Some(task) => {
            if let Some(sink) = progress {
                sink(Progress { download: index, upid: task.upid.clone(), bytes_total: None, percent: Some(0) });
            }
            tracing::info!(cluster = %d.cluster, node = %d.node, storage = %d.storage, template = %d.file, upid = %task.upid, "download adopted (already running)");
            (task.upid, true)
        }
        None => {
            let started = match &d.source {
                Source::Appliance { template } => client.download_appliance(&d.node, &d.storage, template).await,
                Source::Url { url, algorithm, checksum } => {
                    let sum = Checksum { algorithm: algorithm.clone(), hex: checksum.clone() };
                    client.download_url(&d.node, &d.storage, url, &d.file, &sum).await
                }
            };
            match started {
                Ok(upid) => {
                    if let Some(sink) = progress {
                        sink(Progress { download: index, upid: upid.clone(), bytes_total: None, percent: Some(0) });
                    }
                    tracing::info!(cluster = %d.cluster, node = %d.node, storage = %d.storage, template = %d.file, %upid, "download started");
                    (upid, false)
                }
                Err(e) => {
                    tracing::warn!(cluster = %d.cluster, node = %d.node, storage = %d.storage, template = %d.file, error = %e, "download failed");
                    return fail(None, &e);
                }
            }
        }
    };
    match follow(client, index, &upid, settings, progress).await {
        Ok(bytes) => {
            if let Some(sink) = progress {
                sink(Progress { download: index, upid: upid.clone(), bytes_total: bytes, percent: Some(100) });
            }
            if let Err(e) = confirm_visible(client, d).await {
                tracing::warn!(cluster = %d.cluster, node = %d.node, storage = %d.storage, template = %d.file, %upid, error = %e, "download failed");
                return Outcome::Failed { upid: Some(upid), error: e, retryable: true };
            }
            let seconds = started.elapsed().as_secs();
            tracing::info!(cluster = %d.cluster, node = %d.node, storage = %d.storage, template = %d.file, %upid, seconds, bytes = bytes.unwrap_or(0), "download finished");
            Outcome::Finished { upid, seconds, bytes, adopted }
        }
        Err((error, retryable)) => {
            tracing::warn!(cluster = %d.cluster, node = %d.node, storage = %d.storage, template = %d.file, %upid, %error, "download failed");
            Outcome::Failed { upid: Some(upid), error, retryable }
        }
    }
}

/// Polls a task until it stops, reading its log for the size and progress; stops it past its deadline.
async fn follow(
    client: &Client,
    index: usize,
    upid: &str,
    settings: &DownloadSettings,
    progress: Option<&ProgressSink>,
) -> Result<Option<u64>, (String, bool)> {
    let started = Instant::now();
    let mut log_offset = 0u64;
    let mut total: Option<u64> = None;
    let mut last_log: Option<String> = None;
    let mut transient_errors = 0u32;
    loop {
        let status = client.task_status(upid).await;
        // Read the log before acting on a stop: a short task ends before its first log read.
        if let Ok((lines, new_total)) = client.task_log(upid, log_offset).await {
            log_offset = new_total.max(log_offset);
            for line in &lines {
                if let Some(len) = parse_length(&line.t) {
                    total = Some(len);
                }
                if let Some(pct) = parse_percent(&line.t) {
                    if let Some(sink) = progress {
                        sink(Progress {
                            download: index,
                            upid: upid.to_string(),
                            bytes_total: total,
                            percent: Some(pct),
                        });
                    }
                }
                last_log = Some(line.t.clone());
            }
        }
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

/// wget's `Length: 126129049 (120M) [application/octet-stream]`.
pub fn parse_length(line: &str) -> Option<u64> {
    line.strip_prefix("Length: ")?.split_whitespace().next()?.parse().ok()
}

/// wget's dot-progress `... 26% 43.9M 2s`.
pub fn parse_percent(line: &str) -> Option<u8> {
    line.split_whitespace().find_map(|w| w.strip_suffix('%')?.parse::<u8>().ok()).filter(|p| *p <= 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wget_lines() {
        assert_eq!(parse_length("Length: 126129049 (120M) [application/octet-stream]"), Some(126_129_049));
        assert_eq!(parse_length("Saving to: 'x'"), None);
        assert_eq!(parse_percent("     0K ........ ........ ........ ........ 26% 43.9M 2s"), Some(26));
        assert_eq!(parse_percent("downloading http://x to y"), None);
    }
}
