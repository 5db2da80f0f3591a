//! Storages and their content: index filters, per-node restrictions, content listings.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

use pve_sim::testing::TestSim;
use serde_json::json;

#[tokio::test]
async fn storage_index_filters_like_proxmox() {
    let sim = TestSim::start().await;
    let all = sim.get("/nodes/pve1/storage").await;
    assert_eq!(all.data().as_array().unwrap().len(), 3);
    let a = sim.get_query("/nodes/pve1/storage", &[("content", "vztmpl")]).await;
    let ids: Vec<_> = a.data().as_array().unwrap().iter().map(|s| s["storage"].as_str().unwrap()).collect();
    assert_eq!(ids, ["local", "shared"]);
    let local = &a.data()[0];
    assert_eq!(
        (local["enabled"].clone(), local["active"].clone(), local["shared"].clone()),
        (json!(1), json!(1), json!(0))
    );
    assert!(local["avail"].as_u64().unwrap() > 0);
    assert!(local["used_fraction"].is_f64());
    let a = sim.get_query("/nodes/pve1/storage", &[("storage", "nope")]).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json["errors"]["storage"], "No such storage.");
    let a = sim.get("/nodes/pve1/storage/local/status").await;
    assert_eq!(a.data()["type"], "dir");
}

#[tokio::test]
async fn storages_restricted_to_other_nodes_show_disabled() {
    let sim = TestSim::with(
        "storages: [{id: local, content: [vztmpl]}, {id: nfs2, type: nfs, content: [vztmpl], nodes: [pve2]}]",
    )
    .await;
    let a = sim.get("/nodes/pve1/storage").await;
    let nfs = a.data().as_array().unwrap().iter().find(|s| s["storage"] == "nfs2").unwrap().clone();
    assert_eq!((nfs["enabled"].clone(), nfs["active"].clone()), (json!(0), json!(0)));
    let a = sim.get_query("/nodes/pve1/storage", &[("content", "vztmpl"), ("enabled", "1")]).await;
    assert_eq!(a.data().as_array().unwrap().len(), 1);
    let a = sim.get("/nodes/pve1/storage/nfs2/content").await;
    assert_eq!(a.status, 500);
    assert_eq!(a.json["message"], "storage 'nfs2' is not available on node 'pve1'\n");
}

#[tokio::test]
async fn content_of_unknown_or_non_template_storage() {
    let sim = TestSim::start().await;
    let a = sim.get("/nodes/pve1/storage/nope/content").await;
    assert_eq!(a.status, 500);
    assert_eq!(a.json["message"], "storage 'nope' does not exist\n");
    let a = sim.get("/nodes/pve1/storage/local-lvm/content").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.data(), &json!([]));
}
