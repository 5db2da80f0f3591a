//! A converged cluster's plan is reused while what it was made from is unchanged — and only then: a changed
//! listing and a reloaded configuration each make the next pass plan afresh.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

use common::{TestSim, fast_options, write_config};
use vztmpld::reconcile::plan::ItemState;
use vztmpld::reconcile::{ClusterPass, Fleet};

async fn pass(fleet: &Fleet) -> ClusterPass {
    let mut passes = fleet.reconcile(|_, _, _| None, |_, _, _| {}).await;
    assert_eq!(passes.len(), 1);
    passes.remove(0)
}

#[tokio::test]
async fn a_converged_plan_is_reused_until_a_listing_changes_or_the_configuration_is_reloaded() {
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", "templates:\n  - template: alpine-3.22\n");
    let fleet = Fleet::new(vztmpld::config::load(&cfg).unwrap(), fast_options()).unwrap();

    let cold = pass(&fleet).await;
    assert!(!cold.plan.downloads.is_empty() && cold.outcomes.iter().all(|o| o.succeeded()), "{:?}", cold.outcomes);
    let first_converged = pass(&fleet).await;
    assert!(first_converged.plan.all_cached() && !first_converged.unchanged, "planned afresh, then kept");
    let steady = pass(&fleet).await;
    assert!(steady.unchanged, "the same listings: the kept plan stands");
    assert_eq!(steady.plan, first_converged.plan);

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
    assert!(!changed.unchanged && !changed.plan.downloads.is_empty(), "a changed listing is planned again");
    assert!(changed.outcomes.iter().all(|o| o.succeeded()), "{:?}", changed.outcomes);
    assert!(!pass(&fleet).await.unchanged, "the repaired cluster is planned afresh once more");
    assert!(pass(&fleet).await.unchanged, "then it stands again");

    // A reload builds a new fleet: nothing kept from the old configuration's plans.
    let reloaded = Fleet::new(vztmpld::config::load(&cfg).unwrap(), fast_options()).unwrap();
    assert!(!pass(&reloaded).await.unchanged, "a new configuration plans afresh");
    assert!(pass(&reloaded).await.unchanged);
}
