//! How a download, a deletion or a verification ended — as types. Whether to retry, what to count and what to
//! tell a person are read from [`Failure`]'s variants, never from the wording of a message.

use serde::Serialize;

use super::fence::Fenced;
use super::plan::BlockReason;
use crate::pve::{PveError, TaskFailure};

/// How one download or deletion ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The task ran (or was adopted) to success and the file is listed (a deletion: the file is gone).
    Finished { upid: String, seconds: u64, bytes: Option<u64>, adopted: bool },
    /// Another writer (a second daemon, a manual download) put the file there after the plan was made.
    AlreadyPresent,
    /// A deletion found the file already gone (another writer deleted it first).
    AlreadyAbsent,
    /// It did not happen; `upid` when a task had started.
    Failed { upid: Option<String>, failure: Failure },
}

impl Outcome {
    /// Whether the wanted state holds now (the file there, or for a deletion gone).
    pub fn succeeded(&self) -> bool {
        matches!(self, Outcome::Finished { .. } | Outcome::AlreadyPresent | Outcome::AlreadyAbsent)
    }

    /// A failure without a task.
    pub fn failed(failure: impl Into<Failure>) -> Self {
        Outcome::Failed { upid: None, failure: failure.into() }
    }

    /// The failure, when it failed.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Outcome::Failed { failure, .. } => Some(failure),
            _ => None,
        }
    }

    /// A fixed label for metrics: `success`, `already_present`, `already_absent`, `failure`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Outcome::Finished { .. } => "success",
            Outcome::AlreadyPresent => "already_present",
            Outcome::AlreadyAbsent => "already_absent",
            Outcome::Failed { .. } => "failure",
        }
    }
}

/// Why a download, deletion or verification did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// A Proxmox API call failed (starting, listing, reading a task).
    #[error(transparent)]
    Api(#[from] PveError),
    /// The task ran and Proxmox reported it failed.
    #[error("task {upid} failed: {failure}")]
    Task {
        upid: String,
        #[source]
        failure: TaskFailure,
    },
    /// The task's status could no longer be read.
    #[error("lost track of task {upid}: {source}")]
    LostTrack {
        upid: String,
        #[source]
        source: PveError,
    },
    /// The task ran past its deadline (and vztmpld stopped it, when `stopped`).
    #[error("task {upid} did not finish within {seconds}s{}{}", if *stopped { " and was stopped" } else { "" }, last_log.as_ref().map(|l| format!(" (last log line: {l})")).unwrap_or_default())]
    Deadline { upid: String, seconds: u64, stopped: bool, last_log: Option<String> },
    /// The task succeeded but the file never showed in the storage's listing.
    #[error("{volid} is not listed on {storage} after the task ended{}", listing.as_ref().map(|e| format!(" (listing failed: {e})")).unwrap_or_default())]
    NotListed { volid: String, storage: String, listing: Option<PveError> },
    /// HA fencing held the start back.
    #[error("not started: {0}")]
    Fenced(#[from] Fenced),
    /// A deletion waited for the download of the newer build it makes room for, and that did not arrive.
    #[error("not deleted: the newer build it makes room for did not arrive")]
    AwaitedDownloadFailed,
    /// The plan could not allow it (a deletion without the privilege it needs).
    #[error("{0}")]
    Blocked(BlockReason),
    /// A start request got no answer (cut off, or timed out) and may have started a task, yet no such task runs
    /// and the file is not there: it is not sent again blindly; the next pass looks again.
    #[error("{request}; no download of it is running and the file is not there yet, so the next pass looks again")]
    Unconfirmed {
        #[source]
        request: PveError,
    },
    /// The plan names a cluster the fleet it was applied with does not have.
    #[error("cluster {cluster} is not in the configuration this plan was applied with")]
    UnknownCluster { cluster: String },
}

impl Failure {
    /// Whether a later pass may succeed without anyone changing anything.
    pub fn retryable(&self) -> bool {
        match self {
            Failure::Api(e) | Failure::LostTrack { source: e, .. } => e.is_retryable(),
            Failure::Task { failure, .. } => failure.retryable(),
            Failure::Deadline { .. } | Failure::NotListed { .. } | Failure::Fenced(_) => true,
            Failure::AwaitedDownloadFailed | Failure::Unconfirmed { .. } => true,
            Failure::Blocked(reason) => reason.retryable(),
            Failure::UnknownCluster { .. } => false,
        }
    }

    /// A short, fixed label for metrics and JSON (`http_403`, `checksum_mismatch`, `deadline`, …).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Failure::Api(e) | Failure::LostTrack { source: e, .. } => e.metric_label(),
            Failure::Task { failure, .. } => failure.metric_label(),
            Failure::Deadline { .. } => "deadline",
            Failure::NotListed { .. } => "not_listed",
            Failure::Fenced(_) => "fenced",
            Failure::AwaitedDownloadFailed => "awaited_download_failed",
            Failure::Unconfirmed { .. } => "unconfirmed",
            Failure::Blocked(reason) => reason.metric_label(),
            Failure::UnknownCluster { .. } => "unknown_cluster",
        }
    }

    /// The task's failure, when Proxmox reported one.
    pub fn task_failure(&self) -> Option<&TaskFailure> {
        match self {
            Failure::Task { failure, .. } => Some(failure),
            _ => None,
        }
    }
}

/// The JSON of an outcome (`apply --output json`): `outcome` tags it; a failure carries its text (`error`),
/// whether a retry may help, and its fixed `reason` label.
impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(tag = "outcome", rename_all = "snake_case")]
        enum Wire<'a> {
            Finished { upid: &'a str, seconds: u64, bytes: Option<u64>, adopted: bool },
            AlreadyPresent,
            AlreadyAbsent,
            Failed { upid: Option<&'a str>, error: String, retryable: bool, reason: &'static str },
        }
        let wire = match self {
            Outcome::Finished { upid, seconds, bytes, adopted } => {
                Wire::Finished { upid, seconds: *seconds, bytes: *bytes, adopted: *adopted }
            }
            Outcome::AlreadyPresent => Wire::AlreadyPresent,
            Outcome::AlreadyAbsent => Wire::AlreadyAbsent,
            Outcome::Failed { upid, failure } => Wire::Failed {
                upid: upid.as_deref(),
                error: failure.to_string(),
                retryable: failure.retryable(),
                reason: failure.metric_label(),
            },
        };
        wire.serialize(serializer)
    }
}
