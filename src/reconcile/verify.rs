//! Deep verify (`verify: 7d`): Proxmox re-hashes a cached file when the same download is posted onto it — it
//! answers "got correct file already" without downloading, or fails on a checksum mismatch. Which files are due
//! is the caller's ([`Verifier`]: the daemon keeps when each was last verified); running one, and repairing a
//! corrupt one (`repair: true`: delete, then download again), is here.

use std::time::Instant;

use super::apply::{Outcome, StartGate};
use super::observation::ClusterObservation;
use super::plan::{Download, Plan};
use crate::config::DownloadSettings;
use crate::pve::Client;

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
    /// The checksum does not match (the task's message).
    Corrupt(String),
    /// Corrupt, deleted and downloaded again.
    Repaired,
    /// It cannot be verified this way (e.g. not in the node's index any more), or the attempt failed.
    Failed(String),
}

impl Verified {
    /// The metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verified::Good => "good",
            Verified::Corrupt(_) => "corrupt",
            Verified::Repaired => "repaired",
            Verified::Failed(_) => "failed",
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
    if let Err(reason) = gate.check() {
        return Verified::Failed(format!("not started: {reason}"));
    }
    let d = &v.download;
    // Posted onto the existing file on purpose: Proxmox hashes it instead of downloading.
    let error = match super::apply::start(client, d).await {
        Err(e) => return Verified::Failed(e.to_string()),
        Ok(upid) => match super::apply::follow(client, 0, &upid, settings, None).await {
            Ok(_) => return Verified::Good,
            Err((error, _)) => error,
        },
    };
    if !error.contains("checksum mismatch") {
        return Verified::Failed(error);
    }
    tracing::warn!(volid = %d.volid(), %error, "CORRUPT: the cached file does not match its checksum");
    if !v.repair {
        return Verified::Corrupt(error);
    }
    let started = Instant::now();
    match super::prune::delete(client, &d.node, &d.storage, &d.volid(), settings, gate).await {
        Outcome::Failed { error: e, .. } => {
            return Verified::Corrupt(format!("{error}; the repair could not delete it: {e}"));
        }
        _ => {
            tracing::info!(volid = %d.volid(), seconds = started.elapsed().as_secs(), "deleted the corrupt file; downloading it again")
        }
    }
    match super::apply::run_download(client, 0, d, settings, None, gate).await {
        Outcome::Finished { .. } | Outcome::AlreadyPresent => Verified::Repaired,
        Outcome::Failed { error: e, .. } => {
            Verified::Corrupt(format!("{error}; deleted, but downloading again failed: {e}"))
        }
    }
}
