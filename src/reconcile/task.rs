//! Proxmox tasks, the one seam where vztmpld changes a cluster: start a download (or adopt the one already
//! running), follow a task to its end, confirm the file shows, delete a file. `apply` (downloads and prune's
//! deletions), `verify` (re-hash) and its repair are policies over these functions; none of them talks to a
//! task directly.

use std::time::{Duration, Instant};

use super::fence::StartGate;
use super::outcome::{Failure, Outcome};
use super::plan::{Download, Source};
use super::progress::{Phase, Progress, ProgressSink, Tracker};
use crate::config::DownloadSettings;
use crate::pve::types::TaskListItem;
use crate::pve::{Client, TaskExit, TaskFailureKind};
use vztmpld_core::backoff::Jitter;

/// Longest wait for an `imgdel` task: deleting a file takes a moment, not minutes.
const DELETE_DEADLINE: Duration = Duration::from_secs(120);

/// How many failed status reads in a row a follow survives (a node restarting its proxy).
const TRANSIENT_STATUS_ERRORS: u32 = 10;

/// Brings `d`: adopts a download of the same file already running on the node, or (the file not being there)
/// starts one, follows it to its end and waits until the file is listed. `index` names it in progress reports.
pub async fn download(
    client: &Client,
    index: usize,
    d: &Download,
    settings: &DownloadSettings,
    progress: Option<&ProgressSink>,
    gate: &StartGate,
) -> Outcome {
    let started = Instant::now();
    // Another writer (a second daemon, a manual apply) plans the same downloads in the same order. A random
    // pause of up to one poll interval keeps two writers from checking in the same instant, and the checks
    // below, made right before the start (not when the plan was made), then see the other's task or file.
    tokio::time::sleep(settings.poll_interval.mul_f64(Jitter::from_clock().fraction())).await;
    let (upid, adopted) = match adopt_or_start(client, d, gate).await {
        Ok(Some(running)) => running,
        Ok(None) => {
            tracing::info!("already present (another writer downloaded it)");
            return Outcome::AlreadyPresent;
        }
        Err(failure) => {
            tracing::warn!(error = %failure, "download failed");
            return Outcome::failed(failure);
        }
    };
    if let Some(sink) = progress {
        sink(Tracker::new().progress(index, &upid, Instant::now()));
    }
    if adopted {
        tracing::info!(%upid, "download adopted (already running)");
    } else {
        tracing::info!(%upid, "download started");
    }
    let finished = match follow(client, index, &upid, settings, progress).await {
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
            confirm_listed(client, d).await.map(|()| bytes)
        }
        Err(failure) => Err(failure),
    };
    match finished {
        Ok(bytes) => {
            let seconds = started.elapsed().as_secs();
            tracing::info!(%upid, seconds, bytes = bytes.unwrap_or(0), "download finished");
            Outcome::Finished { upid, seconds, bytes, adopted }
        }
        Err(failure) => {
            tracing::warn!(%upid, error = %failure, "download failed");
            Outcome::Failed { upid: Some(upid), failure }
        }
    }
}

/// The running task that brings `d` — adopted (`true`) or started now (`false`) — or `None` when the file is
/// already there.
async fn adopt_or_start(client: &Client, d: &Download, gate: &StartGate) -> Result<Option<(String, bool)>, Failure> {
    // A download of the same file already running on that node (another writer, or a run that was killed).
    if let Some(task) = running(client, d).await? {
        return Ok(Some((task.upid, true)));
    }
    if client.templates_on(&d.node, &d.storage).await?.iter().any(|v| v.volid == d.volid()) {
        return Ok(None);
    }
    if let Err(fenced) = gate.check() {
        tracing::info!(reason = %fenced, "download not started");
        return Err(fenced.into());
    }
    match start(client, d).await {
        Ok(upid) => Ok(Some((upid, false))),
        Err(Failure::Api(request)) if request.may_have_been_carried_out() => {
            // No answer, but the request may have arrived: Proxmox lists a task as soon as it starts it. Adopt
            // that task, or take the file a fast one already brought; never send the request again blindly.
            tracing::warn!(error = %request, "the download request got no answer; looking for the task it may have started");
            if let Some(task) = running(client, d).await? {
                return Ok(Some((task.upid, true)));
            }
            if client.templates_on(&d.node, &d.storage).await?.iter().any(|v| v.volid == d.volid()) {
                return Ok(None);
            }
            Err(Failure::Unconfirmed { request })
        }
        Err(failure) => Err(failure),
    }
}

/// The task running on `d`'s node that downloads `d`'s file, if any.
async fn running(client: &Client, d: &Download) -> Result<Option<TaskListItem>, Failure> {
    let tasks = client.active_downloads(&d.node).await?;
    Ok(tasks
        .into_iter()
        .find(|t| t.id.as_deref() == Some(d.file.as_str()) && t.kind.as_deref() == Some(d.source.task_type())))
}

/// Starts the task that brings `d` (no checks: the caller made them); its UPID.
pub async fn start(client: &Client, d: &Download) -> Result<String, Failure> {
    let upid = match &d.source {
        Source::Appliance { template } => client.download_appliance(&d.node, &d.storage, template).await,
        Source::Url { url, algorithm, checksum } => {
            client.download_url(&d.node, &d.storage, url, &d.file, (algorithm, checksum)).await
        }
        Source::Oci { reference, filename } => {
            client.oci_pull(&d.node, &d.storage, reference, filename.as_deref()).await
        }
    };
    Ok(upid?)
}

/// Polls a task until it stops, reading its log for the size and progress; stops it past its deadline. The
/// bytes it transferred, when its log said.
pub async fn follow(
    client: &Client,
    index: usize,
    upid: &str,
    settings: &DownloadSettings,
    progress: Option<&ProgressSink>,
) -> Result<Option<u64>, Failure> {
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
                return match status.exit() {
                    TaskExit::Ok | TaskExit::Warnings(_) => Ok(total),
                    TaskExit::Failed(failure) => Err(Failure::Task { upid: upid.to_string(), failure }),
                };
            }
            Ok(_) => transient_errors = 0,
            Err(e) if e.is_retryable() && transient_errors < TRANSIENT_STATUS_ERRORS => transient_errors += 1,
            Err(source) => return Err(Failure::LostTrack { upid: upid.to_string(), source }),
        }
        let deadline = settings.deadline_for(total);
        if started.elapsed() > deadline {
            let _ = client.stop_task(upid).await;
            return Err(Failure::Deadline {
                upid: upid.to_string(),
                seconds: deadline.as_secs(),
                stopped: true,
                last_log,
            });
        }
        tokio::time::sleep(settings.poll_interval).await;
    }
}

/// Re-lists the target storage a few times: some (CephFS, NFS) show a new file late.
async fn confirm_listed(client: &Client, d: &Download) -> Result<(), Failure> {
    let mut listing = None;
    for attempt in 0..5u32 {
        match client.templates_on(&d.node, &d.storage).await {
            Ok(list) if list.iter().any(|v| v.volid == d.volid()) => return Ok(()),
            Ok(_) => listing = None,
            Err(e) => listing = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt + 1))).await;
    }
    Err(Failure::NotListed { volid: d.volid(), storage: d.storage.clone(), listing })
}

/// Deletes `volid` on `storage` through `node` (`DELETE …/content/{volid}`, an `imgdel` task) and follows the
/// task; `AlreadyAbsent` when the file was gone already (another writer).
pub async fn delete(
    client: &Client,
    node: &str,
    storage: &str,
    volid: &str,
    settings: &DownloadSettings,
    gate: &StartGate,
) -> Outcome {
    if let Err(fenced) = gate.check() {
        return Outcome::failed(fenced);
    }
    let started = Instant::now();
    let upid = match client.delete_volume(node, storage, volid).await {
        Ok(upid) => upid,
        Err(e) => {
            tracing::warn!(error = %e, "delete failed");
            return Outcome::failed(e);
        }
    };
    loop {
        let status = client.task_status(&upid).await;
        match status.as_ref().map(|s| (s.is_stopped(), s.exit())) {
            Ok((true, TaskExit::Ok | TaskExit::Warnings(_))) => {
                tracing::info!(%upid, "deleted");
                let seconds = started.elapsed().as_secs();
                return Outcome::Finished { upid, seconds, bytes: None, adopted: false };
            }
            Ok((true, TaskExit::Failed(failure))) if failure.kind == TaskFailureKind::VolumeMissing => {
                tracing::info!(%upid, "already gone");
                return Outcome::AlreadyAbsent;
            }
            Ok((true, TaskExit::Failed(failure))) => {
                tracing::warn!(%upid, error = %failure, "delete failed");
                return Outcome::Failed { upid: Some(upid.clone()), failure: Failure::Task { upid, failure } };
            }
            _ if started.elapsed() > DELETE_DEADLINE => {
                let failure = Failure::Deadline {
                    upid: upid.clone(),
                    seconds: DELETE_DEADLINE.as_secs(),
                    stopped: false,
                    last_log: None,
                };
                return Outcome::Failed { upid: Some(upid), failure };
            }
            _ => tokio::time::sleep(settings.poll_interval).await,
        }
    }
}
