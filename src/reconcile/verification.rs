//! Deep verify (`verify: 7d`): Proxmox re-hashes a cached file when the same download is posted onto it — it
//! answers "got correct file already" without downloading, or fails on a checksum mismatch. Which files are due
//! is the caller's ([`Verifier`]: the daemon keeps when each was last verified); running one, and repairing a
//! corrupt one (`repair: true`: delete, then download again), is here.

use std::time::Instant;

use super::fence::StartGate;
use super::observation::ClusterObservation;
use super::outcome::{Failure, Outcome};
use super::plan::{Download, Plan};
use super::task;
use crate::config::DownloadSettings;
use crate::pve::{Client, TaskFailureKind};

/// One cached file to re-hash: the download that would bring it, posted onto it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub download: Download,
    /// The template (label) it satisfies.
    pub template: String,
    /// Delete and download again when it is found corrupt.
    pub repair: bool,
}

/// How a verification ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Proxmox hashed the file and it matches.
    Good,
    /// The checksum does not match; `repair` says how a repair went, when one was tried.
    Corrupt { mismatch: Failure, repair: Option<RepairFailed> },
    /// Corrupt, deleted and downloaded again.
    Repaired,
    /// It cannot be verified this way (e.g. not in the node's index any more), or the attempt failed.
    Failed(Failure),
}

/// Why a repair (delete, then download again) did not bring a good file back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepairFailed {
    /// The corrupt file could not be deleted.
    #[error("the repair could not delete it: {0}")]
    Delete(Failure),
    /// It was deleted, but the download that should replace it failed.
    #[error("deleted, but downloading again failed: {0}")]
    Download(Failure),
}

impl Verified {
    /// The metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verified::Good => "good",
            Verified::Corrupt { .. } => "corrupt",
            Verified::Repaired => "repaired",
            Verified::Failed(_) => "failed",
        }
    }

    /// What status and logs show for a corrupt or failed verification.
    pub fn message(&self) -> Option<String> {
        match self {
            Verified::Corrupt { mismatch, repair: None } => Some(mismatch.to_string()),
            Verified::Corrupt { mismatch, repair: Some(r) } => Some(format!("{mismatch}; {r}")),
            Verified::Failed(f) => Some(f.to_string()),
            Verified::Good | Verified::Repaired => None,
        }
    }
}

/// Decides which cached files are due for verification, and hears how each ended (the daemon's ledger).
pub trait Verifier: Send + Sync + std::fmt::Debug {
    /// The verifications due now among a cluster's cached items.
    fn due(&self, config: &crate::config::Config, plan: &Plan, observed: &ClusterObservation) -> Vec<Verification>;
    /// A verification ended.
    fn record(&self, v: &Verification, outcome: &Verified);
}

/// Posts the download onto the existing file and follows the task; repairs when asked.
pub async fn verify(client: &Client, v: &Verification, settings: &DownloadSettings, gate: &StartGate) -> Verified {
    if let Err(fenced) = gate.check() {
        return Verified::Failed(fenced.into());
    }
    let d = &v.download;
    // Posted onto the existing file on purpose: Proxmox hashes it instead of downloading.
    let upid = match task::start(client, d).await {
        Ok(upid) => upid,
        Err(failure) => return Verified::Failed(failure),
    };
    let mismatch = match task::follow(client, 0, &upid, settings, None).await {
        Ok(_) => return Verified::Good,
        Err(f) if f.task_failure().is_some_and(|t| t.kind == TaskFailureKind::ChecksumMismatch) => f,
        Err(f) => return Verified::Failed(f),
    };
    tracing::warn!(volid = %d.volid(), error = %mismatch, "CORRUPT: the cached file does not match its checksum");
    if !v.repair {
        return Verified::Corrupt { mismatch, repair: None };
    }
    match repair(client, d, settings, gate).await {
        Ok(()) => Verified::Repaired,
        Err(failed) => Verified::Corrupt { mismatch, repair: Some(failed) },
    }
}

/// Deletes the corrupt file and downloads it again.
async fn repair(
    client: &Client,
    d: &Download,
    settings: &DownloadSettings,
    gate: &StartGate,
) -> Result<(), RepairFailed> {
    let started = Instant::now();
    if let Outcome::Failed { failure, .. } = task::delete(client, &d.node, &d.storage, &d.volid(), settings, gate).await
    {
        return Err(RepairFailed::Delete(failure));
    }
    tracing::info!(volid = %d.volid(), seconds = started.elapsed().as_secs(), "deleted the corrupt file; downloading it again");
    match task::download(client, 0, d, settings, None, gate).await {
        Outcome::Failed { failure, .. } => Err(RepairFailed::Download(failure)),
        _ => Ok(()),
    }
}
