//! One template's entry in the status, and how a plan's items become entries.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::reconcile::Outcome;
use crate::reconcile::plan::{ItemState, Plan, Scope};
use crate::time::Timestamp;

/// Where one template stands on one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateState {
    Cached,
    /// Planned for download, not started yet.
    #[default]
    Missing,
    /// Waiting for a free slot on its node or in its cluster.
    Queued,
    Downloading,
    /// Transferred; Proxmox verifies the checksum and moves it into place.
    Verifying,
    Failed,
    Blocked,
    /// A deep verify found the cached file's checksum wrong (`verify`); with `repair` it is downloaded again.
    Corrupt,
}

impl TemplateState {
    /// The label used in metrics and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateState::Cached => "cached",
            TemplateState::Missing => "missing",
            TemplateState::Queued => "queued",
            TemplateState::Downloading => "downloading",
            TemplateState::Verifying => "verifying",
            TemplateState::Failed => "failed",
            TemplateState::Blocked => "blocked",
            TemplateState::Corrupt => "corrupt",
        }
    }
}

/// One template on one node. Most entries are cached and carry nothing more, so the rest (`detail`) is boxed:
/// a fleet's status holds tens of thousands of entries. The JSON shape is the flat one of `Wire`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Wire", into = "Wire")]
pub struct TemplateStatus {
    /// Shared with the plan (one allocation per label), as are `volid` and `storage`.
    pub template: Arc<str>,
    pub state: TemplateState,
    pub volid: Option<Arc<str>>,
    pub storage: Option<Arc<str>>,
    /// A download's task and progress, a failure, a retry time: absent while there is none.
    pub detail: Option<Box<TemplateDetail>>,
}

/// What a template entry has beyond its state and file, when it has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateDetail {
    pub upid: Option<String>,
    pub progress: Option<u8>,
    pub error: Option<String>,
    pub next_retry: Option<Timestamp>,
    /// Bytes transferred (interpolated between the task log's lines), while downloading.
    pub bytes_done: Option<u64>,
    /// The file's size, once the task log gave it.
    pub bytes_total: Option<u64>,
    /// Transfer rate, bytes per second.
    pub rate_bytes_per_second: Option<u64>,
    /// Seconds left at that rate.
    pub eta_seconds: Option<u64>,
}

impl TemplateStatus {
    /// The detail, empty when there is none.
    pub fn detail(&self) -> &TemplateDetail {
        static NONE: TemplateDetail = TemplateDetail {
            upid: None,
            progress: None,
            error: None,
            next_retry: None,
            bytes_done: None,
            bytes_total: None,
            rate_bytes_per_second: None,
            eta_seconds: None,
        };
        self.detail.as_deref().unwrap_or(&NONE)
    }

    /// The detail to change (created on first use).
    pub fn detail_mut(&mut self) -> &mut TemplateDetail {
        self.detail.get_or_insert_with(Box::default)
    }

    /// The error, if any.
    pub fn error(&self) -> Option<&str> {
        self.detail().error.as_deref()
    }
}

/// The JSON shape of a template entry (the contract `tests/json_shape.rs` pins).
#[derive(Clone, Serialize, Deserialize)]
struct Wire {
    template: Arc<str>,
    state: TemplateState,
    volid: Option<Arc<str>>,
    storage: Option<Arc<str>>,
    upid: Option<String>,
    progress: Option<u8>,
    error: Option<String>,
    next_retry: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes_done: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes_total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate_bytes_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    eta_seconds: Option<u64>,
}

impl From<Wire> for TemplateStatus {
    fn from(w: Wire) -> Self {
        let detail = TemplateDetail {
            upid: w.upid,
            progress: w.progress,
            error: w.error,
            next_retry: w.next_retry,
            bytes_done: w.bytes_done,
            bytes_total: w.bytes_total,
            rate_bytes_per_second: w.rate_bytes_per_second,
            eta_seconds: w.eta_seconds,
        };
        let detail = (detail != TemplateDetail::default()).then(|| Box::new(detail));
        Self { template: w.template, state: w.state, volid: w.volid, storage: w.storage, detail }
    }
}

impl From<TemplateStatus> for Wire {
    fn from(t: TemplateStatus) -> Self {
        let d = t.detail.map(|d| *d).unwrap_or_default();
        Self {
            template: t.template,
            state: t.state,
            volid: t.volid,
            storage: t.storage,
            upid: d.upid,
            progress: d.progress,
            error: d.error,
            next_retry: d.next_retry,
            bytes_done: d.bytes_done,
            bytes_total: d.bytes_total,
            rate_bytes_per_second: d.rate_bytes_per_second,
            eta_seconds: d.eta_seconds,
        }
    }
}

/// Builds per-node template states from a plan, and (once applied) its outcomes.
pub fn templates_from<'p>(
    plan: &'p Plan,
    outcomes: Option<&[Outcome]>,
) -> BTreeMap<(&'p str, &'p Scope), Vec<TemplateStatus>> {
    let mut out: BTreeMap<(&str, &Scope), Vec<TemplateStatus>> = BTreeMap::new();
    // A cluster has a handful of storages: one name each, shared by every entry on it.
    let mut storages: Vec<Arc<str>> = Vec::new();
    let mut storage = |name: &str| -> Arc<str> {
        if let Some(s) = storages.iter().find(|s| &***s == name) {
            return Arc::clone(s);
        }
        let s: Arc<str> = Arc::from(name);
        storages.push(Arc::clone(&s));
        s
    };
    for item in &plan.items {
        let base = TemplateStatus { template: Arc::clone(&item.template), ..Default::default() };
        let t = match &item.state {
            ItemState::Cached { volid } => TemplateStatus {
                state: TemplateState::Cached,
                storage: volid.split(':').next().map(&mut storage),
                volid: Some(Arc::clone(volid)),
                ..base
            },
            ItemState::Download { download } => {
                let d = &plan.downloads[*download];
                let storage = Some(storage(&d.storage));
                match outcomes.and_then(|o| o.get(*download)) {
                    None => TemplateStatus { state: TemplateState::Missing, storage, ..base },
                    Some(Outcome::Finished { .. } | Outcome::AlreadyPresent | Outcome::AlreadyAbsent) => {
                        let volid = Some(Arc::from(d.volid()));
                        TemplateStatus { state: TemplateState::Cached, storage, volid, ..base }
                    }
                    Some(Outcome::Failed { upid, failure }) => TemplateStatus {
                        state: TemplateState::Failed,
                        storage,
                        detail: Some(Box::new(TemplateDetail {
                            upid: upid.clone(),
                            error: Some(failure.to_string()),
                            ..Default::default()
                        })),
                        ..base
                    },
                }
            }
            ItemState::Blocked(b) => {
                let detail = Some(Box::new(TemplateDetail { error: Some(b.to_string()), ..Default::default() }));
                TemplateStatus { state: TemplateState::Blocked, detail, ..base }
            }
        };
        out.entry((&*item.cluster, &item.node)).or_default().push(t);
    }
    // The status keeps these lists: growth by doubling would leave a third of 20,000 entries unused.
    out.values_mut().for_each(Vec::shrink_to_fit);
    out
}
