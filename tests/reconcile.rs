//! The reconciler end to end: the real binary's `plan` and `apply` against the simulator over HTTPS.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

use common::{ALPINE, TestSim, vztmpld_async, write_config};
use reqwest::Method;
use serde_json::{Value, json};

const TEMPLATES: &str = "templates:\n  - template: alpine-3.22\n  - template: debian-12-standard\n    policy: latest\n  - template: ubuntu\n";

async fn run(cmd: &str, config: &std::path::Path) -> (i32, String, String) {
    vztmpld_async(vec![cmd.into(), "-c".into(), config.display().to_string()]).await
}

fn started(stats: &Value) -> Vec<(String, String, String, u64)> {
    stats["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["node"].as_str().unwrap().to_string(),
                d["storage"].as_str().unwrap().to_string(),
                d["template"].as_str().unwrap().to_string(),
                d["started"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn from_nothing_each_spec_is_downloaded_once_to_shared_storage_and_the_second_run_is_a_no_op() {
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", TEMPLATES);
    let (code, out, err) = run("plan", &cfg).await;
    assert_eq!(code, 2, "downloads pending: {out}{err}");
    assert!(out.contains("Plan: 0 cached, 9 missing (3 downloads), 0 blocked"), "{out}");

    let (code, out, err) = run("apply", &cfg).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("CACHE MISS"), "{err}");
    assert!(err.contains("download finished"), "{err}");
    let stats = sim.stats().await;
    let downloads = started(&stats);
    assert_eq!(downloads.len(), 3, "{downloads:?}");
    assert!(downloads.iter().all(|(_, storage, _, n)| storage == "shared" && *n == 1), "{downloads:?}");
    let nodes: std::collections::BTreeSet<_> = downloads.iter().map(|d| d.0.clone()).collect();
    assert_eq!(nodes.len(), 3, "shared downloads spread over the nodes: {downloads:?}");

    let (code, out, _) = run("plan", &cfg).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Plan: 9 cached, 0 missing (0 downloads), 0 blocked"), "{out}");
    let (code, out, err) = run("apply", &cfg).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("CACHE HIT"), "{err}");
    assert_eq!(sim.stats().await["downloads_started"], 3, "the second apply downloads nothing");
}

#[tokio::test]
async fn local_storages_get_one_download_per_node() {
    let sim = TestSim::with(
        "storages: [{id: local, content: [vztmpl, iso]}, {id: local-lvm, type: lvmthin, content: [images]}]",
    )
    .await;
    let cfg = write_config(&sim.server, "", "templates:\n  - template: alpine-3.22\n");
    let (code, out, err) = run("apply", &cfg).await;
    assert_eq!(code, 0, "{out}{err}");
    let downloads = started(&sim.stats().await);
    assert_eq!(downloads.len(), 3);
    assert!(downloads.iter().all(|(_, s, t, n)| s == "local" && t == ALPINE && *n == 1), "{downloads:?}");
}

#[tokio::test]
async fn an_offline_node_blocks_only_itself() {
    let sim = TestSim::with(
        "storages: [{id: local, content: [vztmpl]}]\nnodes: [{name: pve1}, {name: pve2, online: false}, {name: pve3}]",
    )
    .await;
    let cfg = write_config(&sim.server, "", "templates:\n  - template: alpine-3.22\n");
    let (code, out, err) = run("apply", &cfg).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("pve2") && out.contains("node pve2 is offline"), "{out}");
    assert_eq!(sim.volids("pve1", "local").await.len(), 1);
    assert_eq!(sim.volids("pve3", "local").await.len(), 1);
    sim.control(Method::POST, "nodes/pve2", Some(json!({"online": true}))).await;
    let (code, out, err) = run("apply", &cfg).await;
    assert_eq!(code, 0, "converges once it is back: {out}{err}");
    assert_eq!(sim.volids("pve2", "local").await.len(), 1);
}

#[tokio::test]
async fn a_node_with_an_empty_index_gets_the_file_through_download_url() {
    let sim =
        TestSim::with("storages: [{id: local, content: [vztmpl]}]\nnodes: [{name: pve1}, {name: pve2, index: empty}]")
            .await;
    let cfg = write_config(&sim.server, "", "templates:\n  - template: alpine-3.22\n");
    let (code, out, err) = run("plan", &cfg).await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("via pve2 (download-url)"), "{out}");
    let (code, out, err) = run("apply", &cfg).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(sim.volids("pve2", "local").await, [format!("local:vztmpl/{ALPINE}")]);
    let stats = sim.stats().await;
    assert_eq!(stats["requests"]["POST /nodes/{node}/storage/{storage}/download-url"], 1, "{stats}");
}

#[tokio::test]
async fn a_stale_node_without_the_network_privilege_is_blocked_with_the_hint() {
    let sim = TestSim::with(
        r#"
storages: [{id: local, content: [vztmpl]}]
nodes: [{name: pve1}, {name: pve2, index: empty}]
tokens:
  - id: "vztmpld@pve!cache"
    acl: [{path: /storage, privs: [Datastore.Audit, Datastore.AllocateTemplate]}]
"#,
    )
    .await;
    let cfg = write_config(&sim.server, "", "templates:\n  - template: alpine-3.22\n");
    let (code, out, err) = run("apply", &cfg).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("run `pveam update` on pve2"), "{out}");
    assert!(out.contains("Sys.AccessNetwork on /nodes/pve2"), "{out}");
    assert_eq!(sim.volids("pve1", "local").await.len(), 1, "pve1 still converges");
}

#[tokio::test]
async fn a_spec_in_no_index_is_blocked() {
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", "templates:\n  - template: alpine-2.1\n");
    let (code, out, _) = run("plan", &cfg).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("'alpine-2.1' (amd64) is in no node's appliance index"), "{out}");
}

#[tokio::test]
async fn a_missing_privilege_is_named_before_anything_is_tried() {
    let sim = TestSim::with(
        r#"
tokens:
  - id: "vztmpld@pve!cache"
    acl: [{path: /storage, role: PVEDatastoreUser}]
"#,
    )
    .await;
    let cfg = write_config(&sim.server, "", "templates:\n  - template: alpine-3.22\n");
    let (code, out, err) = run("apply", &cfg).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("the token lacks Datastore.AllocateTemplate on /storage/shared"), "{out}");
    assert!(sim.stats().await["requests"].get("POST /nodes/{node}/aplinfo").is_none(), "nothing was tried");
}

#[tokio::test]
async fn a_checksum_failure_leaves_nothing_and_is_retried_next_pass() {
    let sim = TestSim::with(&format!("download_faults: [{{template: {ALPINE}, kind: corrupt}}]")).await;
    let cfg = write_config(&sim.server, "", "templates:\n  - template: alpine-3.22\n");
    let (code, out, err) = run("apply", &cfg).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("checksum mismatch"), "{out}");
    assert!(sim.volids("pve1", "shared").await.is_empty());
    let (code, out, err) = run("apply", &cfg).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(sim.volids("pve2", "shared").await.len(), 1);
}

#[tokio::test]
async fn a_running_download_is_adopted_not_started_twice() {
    // 1 MiB at 1 MB/s: the task runs for about a second.
    let sim = TestSim::with("bandwidth: 1000000\nstorages: [{id: shared, type: nfs, content: [vztmpl]}]").await;
    let upid = sim.download("pve1", "shared", ALPINE).await;
    let cfg = write_config(&sim.server, "nodes: [pve1]\n", "templates:\n  - template: alpine-3.22\n");
    let (code, out, err) = run("apply", &cfg).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("adopted a running task"), "{out}");
    assert!(err.contains(&upid), "{err}");
    assert_eq!(sim.stats().await["downloads_started"], 1, "one download, not two");
}

#[tokio::test]
async fn a_wrong_fingerprint_is_refused() {
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", "templates:\n  - template: alpine-3.22\n");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(&sim.server.fingerprint, &["AB"; 32].join(":"));
    std::fs::write(&cfg, text).unwrap();
    let (code, out, _) = run("plan", &cfg).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not match tls.fingerprint"), "{out}");
    assert_eq!(sim.stats().await["requests_total"], 0, "no request got through");
}

#[tokio::test]
async fn a_wrong_token_is_a_clear_401() {
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", "templates:\n  - template: alpine-3.22\n");
    std::fs::write(cfg.parent().unwrap().join("lab.secret"), "00000000-0000-0000-0000-000000000000").unwrap();
    let (code, out, _) = run("plan", &cfg).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("HTTP 401") && out.contains("check auth.token_id and the secret"), "{out}");
    // The plan table shows the cluster once, not once per template.
    let (_, out, _) = run("plan", &{
        let c = write_config(&sim.server, "", TEMPLATES);
        std::fs::write(c.parent().unwrap().join("lab.secret"), "00000000-0000-0000-0000-000000000000").unwrap();
        c
    })
    .await;
    assert_eq!(out.matches("HTTP 401").count(), 1, "{out}");
    assert!(out.contains("(3 templates)"), "{out}");
    // apply logs the cluster-level failure once, not once per template as a cache miss.
    let cfg2 = write_config(&sim.server, "", TEMPLATES);
    std::fs::write(cfg2.parent().unwrap().join("lab.secret"), "00000000-0000-0000-0000-000000000000").unwrap();
    let (code, _, err) = run("apply", &cfg2).await;
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.matches("cluster not observed").count(), 1, "{err}");
    assert!(!err.contains("CACHE MISS"), "{err}");
}

#[tokio::test]
async fn url_templates_use_download_url_with_the_checksum() {
    let sim = TestSim::with("mirror_files: {custom_1.0_amd64.tar.zst: 5000}").await;
    let m = sim.control(Method::GET, "mirror/custom_1.0_amd64.tar.zst", None).await;
    let url = m.json["url"].as_str().unwrap();
    let sha = m.json["digests"]["sha256"].as_str().unwrap();
    let cfg = write_config(&sim.server, "", &format!("templates:\n  - url: {url}\n    checksum: \"sha256:{sha}\"\n"));
    let (code, out, err) = run("apply", &cfg).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(sim.volids("pve3", "shared").await, ["shared:vztmpl/custom_1.0_amd64.tar.zst"]);
    assert_eq!(sim.stats().await["downloads_started"], 1);
}

#[tokio::test]
async fn arch_matching_uses_the_nodes_architecture() {
    let sim =
        TestSim::with("storages: [{id: local, content: [vztmpl]}]\nnodes: [{name: pve1}, {name: arm1, arch: aarch64}]")
            .await;
    let cfg = write_config(&sim.server, "", "templates:\n  - template: alpine-3.22\n");
    let (code, out, _) = run("plan", &cfg).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("'alpine-3.22' (arm64) is in no node's appliance index"), "{out}");
}

#[tokio::test]
async fn json_output_is_machine_readable() {
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", "templates:\n  - template: alpine\n");
    let (code, out, _) =
        vztmpld_async(vec!["plan".into(), "-c".into(), cfg.display().to_string(), "--output".into(), "json".into()])
            .await;
    assert_eq!(code, 2);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["downloads"].as_array().unwrap().len(), 1);
    assert_eq!(v["downloads"][0]["file"], "alpine-3.24-default_20260714_amd64.tar.xz", "the newest Alpine");
    assert_eq!(v["items"][0]["state"]["state"], "download");
}

#[tokio::test]
async fn check_validates_offline() {
    let dir = common::temp_dir("check");
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "clusters: []\ntemplates: []\n").unwrap();
    let (code, _, err) = vztmpld_async(vec!["check".into(), "-c".into(), bad.display().to_string()]).await;
    assert_eq!(code, 1);
    assert!(err.contains("bad.yaml:1:1: clusters: at least one cluster is needed"), "{err}");
}

#[tokio::test]
async fn a_download_past_its_deadline_is_stopped_on_proxmox() {
    let sim = TestSim::with(&format!("download_faults: [{{template: {ALPINE}, kind: hang}}]")).await;
    let cfg = write_config(&sim.server, "", "templates:\n  - template: alpine-3.22\n");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "downloads:\n  poll_interval: 100ms\n",
        "downloads:\n  poll_interval: 100ms\n  timeout: 1s\n  min_rate: 1000000000000\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let (code, out, err) = run("apply", &cfg).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("did not finish within 1s and was stopped"), "{out}");
    let mut statuses: Vec<String> = Vec::new();
    for node in ["pve1", "pve2", "pve3"] {
        let t = sim.get_query(&format!("/nodes/{node}/tasks"), &[("source", "all")]).await;
        statuses.extend(t.data().as_array().unwrap().iter().map(|t| t["status"].as_str().unwrap().to_string()));
    }
    assert_eq!(statuses, ["received interrupt"], "the task was stopped on Proxmox");
    assert!(sim.volids("pve1", "shared").await.is_empty());
}

#[tokio::test]
async fn plan_shows_a_running_download_as_in_progress() {
    let sim = TestSim::with("bandwidth: 200000").await;
    let upid = sim.download("pve1", "shared", ALPINE).await;
    let cfg = write_config(&sim.server, "", "templates:\n  - template: alpine-3.22\n");
    let (code, out, err) = run("plan", &cfg).await;
    assert_eq!(code, 2, "still pending: {out}{err}");
    assert!(out.contains("in progress") && out.contains(&upid), "{out}");
    let (_, json, _) =
        vztmpld_async(vec!["plan".into(), "-c".into(), cfg.display().to_string(), "--output".into(), "json".into()])
            .await;
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["in_progress"]["0"], upid.as_str(), "{v}");
}

#[tokio::test]
async fn available_lists_what_the_indexes_offer_and_where() {
    // pve3's index is stale: what is only in the current index is not there.
    let sim = TestSim::with("nodes: [{name: pve1}, {name: pve2}, {name: pve3, index: stale}]").await;
    let cfg = write_config(&sim.server, "", "templates: []\n");
    let (code, out, err) =
        vztmpld_async(vec!["available".into(), "-c".into(), cfg.display().to_string(), "alpine-3.22".into()]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(ALPINE) && out.contains("alpine-3.22-default"), "{out}");
    assert!(out.contains("pve1, pve2 (not on pve3: stale index)"), "{out}");
    assert!(!out.contains("debian"), "filtered: {out}");

    let (code, json, _) = vztmpld_async(vec![
        "available".into(),
        "-c".into(),
        cfg.display().to_string(),
        "--output".into(),
        "json".into(),
    ])
    .await;
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&json).unwrap();
    let all = v.as_array().unwrap();
    assert!(all.len() > 10, "every template of the index");
    let alpine = all.iter().find(|o| o["template"] == ALPINE).unwrap();
    assert_eq!(alpine["nodes"], json!(["pve1", "pve2"]));
    assert_eq!(alpine["missing_on"], json!(["pve3"]));

    let (code, _, err) = vztmpld_async(vec![
        "available".into(),
        "-c".into(),
        cfg.display().to_string(),
        "--cluster".into(),
        "lba".into(),
    ])
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("no cluster named 'lba' (did you mean 'lab'?)"), "{err}");
}

#[tokio::test]
async fn a_converged_plan_costs_only_the_listings() {
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", "templates:\n  - template: alpine-3.22\n  - template: ubuntu\n");
    let (code, out, err) = run("apply", &cfg).await;
    assert_eq!(code, 0, "{out}{err}");
    let before = sim.stats().await;
    assert!(before["requests"]["GET /access/permissions"].as_u64() >= Some(1), "a miss reads the privileges: {before}");
    sim.control(Method::POST, "stats/reset", None).await;

    let (code, out, _) = run("plan", &cfg).await;
    assert_eq!(code, 0, "{out}");
    let requests = sim.stats().await["requests"].clone();
    // Two resource views, the shared storage once, and each of the three nodes' `local`.
    assert_eq!(requests["GET /cluster/resources"], 2, "{requests}");
    assert_eq!(requests["GET /nodes/{node}/storage/{storage}/content"], 4, "{requests}");
    assert_eq!(requests.as_object().map(|m| m.len()), Some(2), "nothing else: no privileges, no index: {requests}");
}
