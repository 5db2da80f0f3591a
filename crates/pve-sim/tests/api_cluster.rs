//! Cluster and node views: `/nodes`, `/cluster/resources`, node status, pveproxy's forwarding to offline and unknown nodes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

use pve_sim::testing::{TestSim, raw_request};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn nodes_list_fingerprints_and_status() {
    let sim = TestSim::start().await;
    let a = sim.get("/nodes").await;
    let nodes = a.data().as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    let mut fingerprints = std::collections::BTreeSet::new();
    for n in nodes {
        let name = n["node"].as_str().unwrap();
        let own = sim.server.nodes.iter().find(|e| e.node == name).unwrap();
        assert_eq!(n["ssl_fingerprint"], own.fingerprint.as_str(), "each node reports its own certificate");
        fingerprints.insert(own.fingerprint.clone());
        assert_eq!(n["status"], "online");
        assert_eq!(n["type"], "node");
        assert_eq!(n["id"], format!("node/{}", n["node"].as_str().unwrap()));
        assert!(n["maxcpu"].is_number(), "Sys.Audit shows stats");
    }
    assert_eq!(fingerprints.len(), 3, "one certificate per node");
}

#[tokio::test]
async fn every_node_has_its_own_endpoint_and_certificate_signed_by_the_cluster_ca() {
    let sim = TestSim::start().await;
    for n in &sim.server.nodes {
        // Each endpoint presents its node's certificate, and the CA (what `client` trusts) vouches for it.
        let der = pve_sim::testing::peer_certificate(&n.endpoint).await;
        assert_eq!(pve_sim::tls::fingerprint_of(&der), n.fingerprint, "{}", n.node);
        let r = sim
            .client
            .get(format!("{}/api2/json/version", n.endpoint))
            .header("Authorization", sim.server.auth_header())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", n.node);
    }
}

#[tokio::test]
async fn an_endpoint_goes_down_while_its_node_stays_in_the_cluster() {
    let sim = TestSim::start().await;
    let pve2 = sim.server.nodes[1].endpoint.clone();
    let a = sim.control(Method::POST, "endpoints/pve2", Some(json!({"up": false}))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let down = sim.client.get(format!("{pve2}/api2/json/version")).send().await;
    assert!(down.is_err_and(|e| e.is_connect()), "refused");
    // The node itself is fine: asked through pve1, it is online.
    let nodes = sim.get("/nodes").await;
    let row = nodes.data().as_array().unwrap().iter().find(|n| n["node"] == "pve2").unwrap().clone();
    assert_eq!(row["status"], "online");
    assert_eq!(sim.control(Method::POST, "endpoints/pve2", Some(json!({"up": true}))).await.status, 200);
    let back = sim
        .client
        .get(format!("{pve2}/api2/json/version"))
        .header("Authorization", sim.server.auth_header())
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 200);
    assert_eq!(sim.control(Method::POST, "endpoints/nope", Some(json!({"up": false}))).await.status, 404);
}

#[tokio::test]
async fn cluster_resources_give_arch_and_one_storage_row_per_node() {
    let sim = TestSim::with("nodes: [{name: pve1}, {name: pve2, arch: aarch64}, {name: pve3}]").await;
    let a = sim.get_query("/cluster/resources", &[("type", "node")]).await;
    let rows = a.data().as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["host-arch"], "aarch64");
    assert_eq!(rows[0]["host-arch"], "x86_64");
    let a = sim.get_query("/cluster/resources", &[("type", "storage")]).await;
    let rows = a.data().as_array().unwrap();
    assert_eq!(rows.len(), 9, "3 storages x 3 nodes");
    let shared: Vec<_> = rows.iter().filter(|r| r["storage"] == "shared").collect();
    assert_eq!(shared.len(), 3);
    assert!(shared.iter().all(|r| r["shared"] == 1 && r["plugintype"] == "nfs"));
    assert_eq!(shared[0]["id"], format!("storage/{}/shared", shared[0]["node"].as_str().unwrap()));
    let all = sim.get("/cluster/resources").await;
    assert_eq!(all.data().as_array().unwrap().len(), 12);
}

#[tokio::test]
async fn node_status_reports_the_kernel_arch() {
    let sim = TestSim::with("nodes: [{name: a1, arch: aarch64}]").await;
    let a = sim.get("/nodes/a1/status").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.data()["current-kernel"]["machine"], "aarch64");
    assert!(a.data()["pveversion"].as_str().unwrap().starts_with("pve-manager/9.1.4/"));
}

#[tokio::test]
async fn offline_node_answers_595_and_shows_offline() {
    let sim = TestSim::start().await;
    let a = sim.control(Method::POST, "nodes/pve2", Some(json!({"online": false}))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let nodes = sim.get("/nodes").await;
    let pve2 = nodes.data().as_array().unwrap().iter().find(|n| n["node"] == "pve2").unwrap().clone();
    assert_eq!(pve2["status"], "offline");
    assert!(pve2.get("uptime").is_none());
    let a = sim.get("/nodes/pve2/storage").await;
    assert_eq!(a.status.as_u16(), 595);
    assert!(a.body.is_empty());
    let req = format!(
        "GET /api2/json/nodes/pve2/aplinfo HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        sim.server.auth_header()
    );
    let (head, _) = raw_request(&sim.server.endpoint, &req).await;
    assert!(head.starts_with("HTTP/1.1 595 No route to host\r\n"), "{head}");
    assert_eq!(sim.get("/nodes/pve1/storage").await.status, 200, "other nodes still answer");
    sim.control(Method::POST, "nodes/pve2", Some(json!({"online": true}))).await;
    assert_eq!(sim.get("/nodes/pve2/storage").await.status, 200);
}

#[tokio::test]
async fn unknown_or_wrong_case_node_fails_hostname_lookup() {
    let sim = TestSim::start().await;
    for name in ["PVE1", "pve9"] {
        let a = sim.get(&format!("/nodes/{name}/aplinfo")).await;
        assert_eq!(a.status, 500);
        assert!(a.json["message"].as_str().unwrap().starts_with(&format!("hostname lookup '{name}' failed")));
    }
    let a = sim.get("/nodes/localhost/aplinfo").await;
    assert_eq!(a.status, 200, "localhost is the node answering");
}
