//! `oci:` templates (Proxmox VE 9's `oci-registry-pull`) against the simulator's model of pve-storage's endpoint:
//! one pull per shared storage, adoption of a running pull, PVE 8 blocked, the network privilege named, skopeo
//! missing, an unknown image failing as skopeo does.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

use common::{TestSim, vztmpld_async, write_config};
use reqwest::Method;
use serde_json::json;

const REF: &str = "docker.io/library/alpine:3.22";
const FILE: &str = "alpine_3.22.tar";

fn sim_yaml(extra: &str) -> String {
    format!("oci_images: {{\"{REF}\": 300000}}\n{extra}")
}

async fn run(cmd: &str, cfg: &std::path::Path) -> (i32, String) {
    let (code, out, err) = vztmpld_async(vec![cmd.into(), "-c".into(), cfg.display().to_string()]).await;
    (code, format!("{out}{err}"))
}

fn templates(oci: &str) -> String {
    format!("templates:\n  - oci: {oci}\n")
}

#[tokio::test]
async fn one_pull_per_shared_storage_and_then_nothing() {
    let sim = TestSim::with(&sim_yaml("")).await;
    let cfg = write_config(&sim.server, "", &templates(REF));
    let (code, out) = run("plan", &cfg).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("oci-registry-pull"), "{out}");
    let (code, out) = run("apply", &cfg).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(sim.volids("pve2", "shared").await, [format!("shared:vztmpl/{FILE}")]);
    let stats = sim.stats().await;
    assert_eq!(stats["downloads_started"], 1, "one pull serves the three nodes: {stats}");
    assert_eq!(stats["requests"]["POST /nodes/{node}/storage/{storage}/oci-registry-pull"], 1, "{stats}");
    let (code, out) = run("plan", &cfg).await;
    assert_eq!(code, 0, "converged: {out}");

    // The resolve API finds it by its reference or its file name.
    let d = common::Daemon::start(&cfg).await;
    d.wait_for("a pass", |d| async move { d.state("pve1", REF) == "cached" }).await;
    for asked in [REF, FILE] {
        let url = format!("http://{}/api/v1/resolve?node=pve3&template={}", d.addr, common::encode(asked));
        let v: serde_json::Value = d.http.get(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(v["volid"], format!("shared:vztmpl/{FILE}"), "{asked}: {v}");
        assert_eq!(v["configured"], true, "{v}");
    }
    drop(d);

    // A custom filename: Proxmox appends .tar to it.
    let cfg = write_config(&sim.server, "", &format!("{}    filename: alpine-base\n", templates(REF)));
    let (code, out) = run("apply", &cfg).await;
    assert_eq!(code, 0, "{out}");
    assert!(sim.volids("pve1", "shared").await.contains(&"shared:vztmpl/alpine-base.tar".to_string()));
}

#[tokio::test]
async fn a_running_pull_is_adopted_not_started_twice() {
    // 300 kB at 100 kB/s: three seconds of pulling.
    let sim = TestSim::with(&sim_yaml("bandwidth: 100000\n")).await;
    let started = sim.post("/nodes/pve1/storage/shared/oci-registry-pull", &[("reference", REF)]).await;
    assert_eq!(started.status, 200, "{}", started.body);
    let cfg = write_config(&sim.server, "", &templates(REF));
    let (code, out) = run("apply", &cfg).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("adopted a running task"), "{out}");
    assert_eq!(sim.stats().await["downloads_started"], 1);
}

#[tokio::test]
async fn a_pve_8_cluster_is_blocked_with_the_reason() {
    let sim = TestSim::with(&sim_yaml("version: 8.4.1\n")).await;
    let cfg = write_config(&sim.server, "", &templates(REF));
    let (code, out) = run("plan", &cfg).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("OCI images need Proxmox VE 9.0 or later") && out.contains("runs 8.4.1"), "{out}");
}

#[tokio::test]
async fn the_network_privilege_is_required_without_the_download_url_alternative() {
    // Sys.Audit + Sys.Modify on / would do for download-url; not for oci-registry-pull.
    let sim = TestSim::with(&sim_yaml(
        "tokens:\n  - id: \"vztmpld@pve!cache\"\n    acl: [{path: /, privs: [Sys.Audit, Sys.Modify, Datastore.Audit, Datastore.AllocateTemplate]}]\n",
    ))
    .await;
    let cfg = write_config(&sim.server, "", &templates(REF));
    let (code, out) = run("apply", &cfg).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("oci-registry-pull needs Sys.AccessNetwork on /nodes/"), "{out}");
    assert_eq!(sim.stats().await["downloads_started"], 0, "nothing tried");
}

#[tokio::test]
async fn skopeo_missing_and_an_unknown_image_fail_clearly() {
    let sim = TestSim::with(&sim_yaml("skopeo: false\n")).await;
    let cfg = write_config(&sim.server, "", &templates(REF));
    let (code, out) = run("apply", &cfg).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Install 'skopeo'"), "{out}");
    sim.control(Method::POST, "settings", Some(json!({"skopeo": true}))).await;
    let (code, out) = run("apply", &cfg).await;
    assert_eq!(code, 0, "installed now: {out}");

    let cfg = write_config(&sim.server, "", &templates("docker.io/library/nosuch:1"));
    let (code, out) = run("apply", &cfg).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("skopeo copy docker://docker.io/library/nosuch:1") && out.contains("exit code 1"), "{out}");
}

#[tokio::test]
async fn references_proxmox_refuses_are_refused_at_load() {
    let sim = TestSim::start().await;
    for (reference, says) in [
        ("docker.io/library/alpine", "must end in :TAG"),
        ("alpine@sha256:0123", "accepts no digest"),
        ("Docker.io/Library/Alpine:3", "lower-case"),
    ] {
        let cfg = write_config(&sim.server, "", &templates(reference));
        let (code, out) = run("check", &cfg).await;
        assert_eq!(code, 1, "{reference}: {out}");
        assert!(out.contains(says), "{reference}: {out}");
    }
}
