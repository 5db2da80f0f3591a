//! The plan cache behind the observe step: a converged cluster's plan (the same `Arc`) is reused while what it
//! was made from is unchanged — and only then: a changed listing, a task this daemon runs there (a
//! verification) and a reloaded configuration each make the next pass plan afresh.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

use common::{TestSim, fast_options, write_config};
use std::sync::{Arc, Mutex};

use vztmpld::reconcile::observation::ClusterObservation;
use vztmpld::reconcile::plan::{Download, ItemState, Plan, Source};
use vztmpld::reconcile::verification::{Verification, Verified, Verifier};
use vztmpld::reconcile::{ClusterPass, Fleet};

async fn pass(fleet: &Fleet) -> ClusterPass {
    let mut passes = fleet.reconcile(|_, _| None, |_, _| {}).await;
    assert_eq!(passes.len(), 1);
    passes.remove(0)
}

/// Whether the second pass reused the first one's plan.
fn reused(before: &ClusterPass, after: &ClusterPass) -> bool {
    Arc::ptr_eq(&before.plan, &after.plan)
}

#[tokio::test]
async fn a_converged_plan_is_reused_until_a_listing_changes_or_the_configuration_is_reloaded() {
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", "templates:\n  - template: alpine-3.22\n");
    let fleet = Fleet::new(vztmpld::config::load(&cfg).unwrap(), fast_options()).unwrap();

    let cold = pass(&fleet).await;
    assert!(!cold.plan.downloads.is_empty() && cold.outcomes.iter().all(|o| o.succeeded()), "{:?}", cold.outcomes);
    let first_converged = pass(&fleet).await;
    assert!(first_converged.plan.all_cached() && !reused(&cold, &first_converged), "planned afresh, then kept");
    let steady = pass(&fleet).await;
    assert!(reused(&first_converged, &steady), "the same listings: the kept plan stands");

    // Another writer deletes a cached file: the listing changed, so the next pass plans (and downloads) again.
    let (node, volid) = steady
        .plan
        .items
        .iter()
        .find_map(|i| match &i.state {
            ItemState::Cached { volid } => Some((i.node.to_string(), volid.to_string())),
            _ => None,
        })
        .unwrap();
    let storage = volid.split(':').next().unwrap();
    let answer = sim.delete(&format!("/nodes/{node}/storage/{storage}/content/{}", common::encode(&volid))).await;
    sim.wait_task(answer.data().as_str().unwrap()).await;
    let changed = pass(&fleet).await;
    assert!(!reused(&steady, &changed) && !changed.plan.downloads.is_empty(), "a changed listing is planned again");
    assert!(changed.outcomes.iter().all(|o| o.succeeded()), "{:?}", changed.outcomes);
    let repaired = pass(&fleet).await;
    assert!(!reused(&changed, &repaired), "the repaired cluster is planned afresh once more");
    assert!(reused(&repaired, &pass(&fleet).await), "then it stands again");

    // A reload builds a new fleet: nothing kept from the old configuration's plans.
    let reloaded = Fleet::new(vztmpld::config::load(&cfg).unwrap(), fast_options()).unwrap();
    let first = pass(&reloaded).await;
    assert!(!reused(&repaired, &first), "a new configuration plans afresh");
    assert!(reused(&first, &pass(&reloaded).await));
}

/// A verifier that, when armed, asks for one verification of the first cached item (the daemon's ledger does
/// this when a file's `verify` period is up), and records what it heard.
#[derive(Debug, Default)]
struct OneVerification {
    armed: Mutex<bool>,
    heard: Mutex<Vec<String>>,
}

impl Verifier for OneVerification {
    fn due(&self, _: &vztmpld::config::Config, plan: &Plan, observed: &ClusterObservation) -> Vec<Verification> {
        if !std::mem::take(&mut *self.armed.lock().unwrap()) {
            return Vec::new();
        }
        let item = plan.items.iter().find(|i| matches!(i.state, ItemState::Cached { .. })).unwrap();
        let ItemState::Cached { volid } = &item.state else { unreachable!() };
        let (storage, file) = volid.split_once(":vztmpl/").unwrap();
        let download = Download {
            cluster: item.cluster.to_string(),
            node: item.node.to_string(),
            storage: storage.to_string(),
            shared: observed.storages[storage].shared,
            file: file.to_string(),
            source: Source::Appliance { template: file.to_string() },
            for_nodes: vec![item.node.to_string()],
        };
        vec![Verification { download, template: item.template.to_string(), repair: false }]
    }

    fn record(&self, v: &Verification, outcome: &Verified) {
        self.heard.lock().unwrap().push(format!("{} {}", v.download.volid(), outcome.as_str()));
    }
}

#[tokio::test]
async fn a_verification_run_on_the_cluster_drops_the_kept_plan() {
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", "templates:\n  - template: alpine-3.22\n");
    let verifier = Arc::new(OneVerification::default());
    let mut fleet = Fleet::new(vztmpld::config::load(&cfg).unwrap(), fast_options()).unwrap();
    fleet.verifier = Some(Arc::clone(&verifier) as Arc<dyn Verifier>);

    pass(&fleet).await;
    let converged = pass(&fleet).await;
    let steady = pass(&fleet).await;
    assert!(reused(&converged, &steady), "kept while nothing happens");

    *verifier.armed.lock().unwrap() = true;
    let verified = pass(&fleet).await;
    assert!(reused(&steady, &verified), "the pass that verifies still plans from the kept plan");
    assert_eq!(verifier.heard.lock().unwrap().len(), 1, "one verification ran: {:?}", verifier.heard);
    let after = pass(&fleet).await;
    assert!(!reused(&verified, &after), "a task of ours ran there: the next pass plans afresh");
    assert!(after.plan.all_cached());
    assert!(reused(&after, &pass(&fleet).await), "and then it stands again");
}
