//! One reconcile pass as the daemon runs it: its own task (so the loop keeps answering signals and the
//! watchdog while downloads are followed), publishing the plan and live progress to the status as it goes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::SystemTime;

use std::time::Instant;
use tokio::task::JoinHandle;

use super::control::Trigger;
use super::shared::Shared;
use crate::reconcile::lookups::{LookupLog, log_summary};
use crate::reconcile::plan::{ItemState, Plan};
use crate::reconcile::progress::{Progress, ProgressSink};
use crate::reconcile::{ClusterPass, Fleet};
use crate::reconcile::{Failure, Outcome};

/// What a finished pass hands back to the loop.
#[derive(Debug)]
pub(super) struct PassResult {
    /// Each cluster's plan and outcomes, in configuration order.
    pub(super) clusters: Vec<ClusterPass>,
    pub(super) started: Instant,
    pub(super) trigger: Trigger,
}

impl PassResult {
    /// Per node: whether it had a failure a later pass may fix (a retryable block, or a retryable download
    /// failure). Nodes with only permanent problems are not retried early.
    pub(super) fn failing_nodes(&self) -> Vec<((&str, &str), bool)> {
        // Items come node by node: one key per run of the same node, not one map insert per item. Items share
        // their names (`Arc<str>`), so a run is usually told by pointer, without comparing the strings.
        let mut nodes: Vec<((&str, &str), bool)> = Vec::new();
        let items = self.clusters.iter().flat_map(|c| c.plan.items.iter().map(move |i| (i, &c.outcomes)));
        for (item, outcomes) in items {
            let failing = match &item.state {
                ItemState::Blocked(b) => b.retryable(),
                ItemState::Download { download } => {
                    outcomes.get(*download).and_then(Outcome::failure).is_some_and(Failure::retryable)
                }
                ItemState::Cached { .. } => false,
            };
            let (cluster, node) = (&*item.cluster, item.node.as_str());
            match nodes.last_mut() {
                Some(((c, n), f)) if same(c, cluster) && same(n, node) => *f |= failing,
                _ => nodes.push(((cluster, node), failing)),
            }
        }
        nodes
    }
}

/// The same string: the same pointer, or else equal.
fn same(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || a == b
}

/// The plan each cluster last settled on (published with its outcomes, logged, its verify marks applied). A
/// pass whose plan is that very `Arc` (the reconciler reused it: nothing changed there) has nothing to publish,
/// log or mark again. Weak: it keeps no plan alive, and a plan's allocation outlives it, so a new plan never
/// takes an old one's address.
#[derive(Debug, Default)]
pub(super) struct Settled(Mutex<HashMap<Box<str>, Weak<Plan>>>);

impl Settled {
    /// Whether `plan` is the one its cluster last settled on.
    fn is(&self, plan: &Arc<Plan>) -> bool {
        let Some(cluster) = cluster_of(plan) else { return false };
        self.lock().get(cluster).is_some_and(|last| Weak::ptr_eq(last, &Arc::downgrade(plan)))
    }

    /// Its cluster settled on `plan`.
    fn settle(&self, plan: &Arc<Plan>) {
        if let Some(cluster) = cluster_of(plan) {
            self.lock().insert(cluster.into(), Arc::downgrade(plan));
        }
    }

    /// Forgets clusters no longer configured.
    pub(super) fn retain(&self, configured: &[String]) {
        self.lock().retain(|name, _| configured.iter().any(|c| **c == **name));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Weak<Plan>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The cluster a daemon's per-cluster plan is for (none for a plan with no items: nothing to show for it).
fn cluster_of(plan: &Plan) -> Option<&str> {
    plan.items.first().map(|i| &*i.cluster)
}

/// What a pass reports to, beside the status: the lookup log, the verify ledger, the plans settled on.
#[derive(Debug, Clone)]
pub(super) struct Reporting {
    pub(super) lookups: Arc<Mutex<LookupLog>>,
    pub(super) ledger: Arc<super::ledger::Ledger>,
    pub(super) settled: Arc<Settled>,
}

/// Starts a pass: observe → plan (published at once) → apply (progress published as it comes).
pub(super) fn spawn(fleet: Fleet, shared: Arc<Shared>, report: Reporting, trigger: Trigger) -> JoinHandle<PassResult> {
    shared.update(|s| s.start_pass(trigger, SystemTime::now()));
    tracing::debug!(%trigger, "reconcile pass started");
    tokio::spawn(async move {
        let started = tokio::time::Instant::now().into_std();
        let Reporting { lookups, ledger, settled } = &report;
        // Each cluster's plan is published, logged and applied as soon as it is made. A cluster whose plan is
        // the one it settled on last (reused: nothing changed there) keeps its status, lookup log and verify
        // marks as they are: only the inventory's observation time moves.
        let clusters = fleet
            .reconcile(
                |plan, observed| {
                    if settled.is(plan) {
                        shared.catalog().update(|inv| inv.touch(observed, SystemTime::now()));
                        return None;
                    }
                    shared.catalog().update(|inv| inv.record(observed, SystemTime::now()));
                    lookups.lock().unwrap_or_else(PoisonError::into_inner).log_changes(plan);
                    if !plan.has_downloads() {
                        // Nothing to follow: `on_applied` publishes it a moment later, once.
                        return None;
                    }
                    shared.update(|s| s.publish_cluster_plan(plan, None, SystemTime::now()));
                    Some(progress_sink(plan, &shared))
                },
                |plan, outcomes| {
                    log_summary(plan, outcomes, started.elapsed());
                    if settled.is(plan) {
                        return;
                    }
                    record_downloaded(&shared, plan, outcomes);
                    lookups.lock().unwrap_or_else(PoisonError::into_inner).record_outcomes(plan, outcomes);
                    shared.update(|s| s.publish_cluster_plan(plan, Some(outcomes), SystemTime::now()));
                    ledger.remark(plan);
                    settled.settle(plan);
                },
            )
            .await;
        PassResult { clusters, started, trigger }
    })
}

/// Files that downloads put in place, into the resolve API's inventory (a long poll wakes on them).
fn record_downloaded(shared: &Shared, plan: &Plan, outcomes: &[Outcome]) {
    let done: Vec<_> = plan.downloads.iter().zip(outcomes).filter(|(_, o)| o.succeeded()).collect();
    if done.is_empty() {
        return;
    }
    let now = SystemTime::now();
    shared.catalog().update(|inv| {
        for (d, o) in done {
            let size = match o {
                Outcome::Finished { bytes, .. } => *bytes,
                _ => None,
            };
            let vol = crate::reconcile::inventory::Vol { volid: d.volid().into(), size };
            inv.add(&d.cluster, &d.node, &d.storage, vol, now);
        }
    });
}

/// Marks every (node, template) a download serves as downloading, with its UPID and percent.
fn progress_sink(plan: &Plan, shared: &Arc<Shared>) -> ProgressSink {
    // Per download: the cluster and the (node, template) items it serves, computed once.
    let mut served: Vec<(String, Vec<(String, String)>)> =
        plan.downloads.iter().map(|d| (d.cluster.clone(), Vec::new())).collect();
    for item in &plan.items {
        if let ItemState::Download { download } = item.state {
            if let Some((_, items)) = served.get_mut(download) {
                items.push((item.node.to_string(), item.template.to_string()));
            }
        }
    }
    let shared = Arc::clone(shared);
    Arc::new(move |p: Progress| {
        if let Some((cluster, items)) = served.get(p.download) {
            shared.update(|s| s.record_progress(cluster, items, &p));
        }
    })
}
