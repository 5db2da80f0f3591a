//! Deleting one file (`DELETE …/content/{volid}`, an `imgdel` task) and following the task to its end: a build
//! `prune` supersedes, or a corrupt file `repair` replaces.

use std::time::{Duration, Instant};

use super::apply::{Outcome, StartGate};
use crate::config::DownloadSettings;
use crate::pve::Client;

/// Longest wait for an `imgdel` task: deleting a file takes a moment, not minutes.
const DELETE_DEADLINE: Duration = Duration::from_secs(120);

/// Deletes `volid` on `storage` through `node`; `AlreadyPresent` when it was gone already (another writer).
pub(super) async fn delete(
    client: &Client,
    node: &str,
    storage: &str,
    volid: &str,
    settings: &DownloadSettings,
    gate: &StartGate,
) -> Outcome {
    if let Err(reason) = gate.check() {
        return Outcome::Failed { upid: None, error: format!("not deleted: {reason}"), retryable: true };
    }
    let started = Instant::now();
    let upid = match client.delete_volume(node, storage, volid).await {
        Ok(upid) => upid,
        Err(e) if e.to_string().contains("does not exist") => {
            tracing::info!("already gone");
            return Outcome::AlreadyPresent;
        }
        Err(e) => {
            tracing::warn!(error = %e, "delete failed");
            return Outcome::Failed { upid: None, error: e.to_string(), retryable: e.is_retryable() };
        }
    };
    loop {
        match client.task_status(&upid).await {
            Ok(s) if s.is_stopped() && s.succeeded() => {
                tracing::info!(%upid, "deleted");
                let seconds = started.elapsed().as_secs();
                return Outcome::Finished { upid, seconds, bytes: None, adopted: false };
            }
            Ok(s) if s.is_stopped() => {
                let exit = s.exitstatus.unwrap_or_else(|| "unexpected status".into());
                if exit.contains("does not exist") {
                    return Outcome::AlreadyPresent;
                }
                tracing::warn!(%upid, error = %exit, "delete failed");
                return Outcome::Failed {
                    upid: Some(upid.clone()),
                    error: format!("task {upid} failed: {exit}"),
                    retryable: true,
                };
            }
            Ok(_) | Err(_) if started.elapsed() > DELETE_DEADLINE => {
                let error = format!("task {upid} did not finish within {}s", DELETE_DEADLINE.as_secs());
                return Outcome::Failed { upid: Some(upid), error, retryable: true };
            }
            _ => tokio::time::sleep(settings.poll_interval).await,
        }
    }
}
