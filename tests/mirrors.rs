//! `mirrors:`: index templates (and url templates) fetched from a mirror under a rewritten URL, with the same
//! file name and the index's sha512 — so a mirror serving other bytes is rejected.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

use common::{ALPINE, TestSim, vztmpld_async, write_config};
use reqwest::Method;

/// The sim's mirror base (`https://127.0.0.1:PORT/_mirror`), read from its index's location of ALPINE.
async fn mirror_base(sim: &TestSim) -> String {
    let index = sim.get("/nodes/pve1/aplinfo").await;
    let entry = index.data().as_array().unwrap().iter().find(|e| e["template"] == ALPINE).unwrap().clone();
    let location = entry["location"].as_str().unwrap();
    location.split("/images/").next().unwrap().to_string()
}

/// Every task log line on pve1..3 that starts a transfer.
async fn downloading_lines(sim: &TestSim) -> Vec<String> {
    let mut lines = Vec::new();
    for node in ["pve1", "pve2", "pve3"] {
        let tasks = sim.get(&format!("/nodes/{node}/tasks")).await;
        for t in tasks.data().as_array().into_iter().flatten() {
            let upid = t["upid"].as_str().unwrap();
            lines.extend(sim.task_log(upid).await.into_iter().filter(|l| l.starts_with("downloading ")));
        }
    }
    lines
}

async fn apply(cfg: &std::path::Path) -> (i32, String) {
    let (code, out, err) = vztmpld_async(vec!["apply".into(), "-c".into(), cfg.display().to_string()]).await;
    (code, format!("{out}{err}"))
}

#[tokio::test]
async fn index_templates_come_from_the_mirror_with_the_index_checksum() {
    let sim = TestSim::start().await;
    let base = mirror_base(&sim).await;
    let mirrors = format!("mirrors:\n  \"{base}/images/\": \"{base}/lan/pve-images/\"\n");
    let cfg = write_config(&sim.server, &mirrors, "templates:\n  - template: alpine-3.22\n");
    let (code, out) = apply(&cfg).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(sim.volids("pve1", "shared").await, [format!("shared:vztmpl/{ALPINE}")], "same file name");
    let lines = downloading_lines(&sim).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with(&format!("downloading {base}/lan/pve-images/system/{ALPINE}")), "{lines:?}");
    let requests = &sim.stats().await["requests"];
    assert_eq!(requests["POST /nodes/{node}/storage/{storage}/download-url"], 1, "{requests}");
    assert!(requests.get("POST /nodes/{node}/aplinfo").is_none(), "not through the index: {requests}");
}

#[tokio::test]
async fn a_mirror_serving_other_bytes_is_rejected() {
    let sim = TestSim::start().await;
    let base = mirror_base(&sim).await;
    // The sim's mirror flips a byte of everything under /corrupt/: a tampered mirror.
    let mirrors = format!("mirrors:\n  \"{base}/images/\": \"{base}/corrupt/images/\"\n");
    let cfg = write_config(&sim.server, &mirrors, "templates:\n  - template: alpine-3.22\n");
    let (code, out) = apply(&cfg).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("checksum mismatch"), "{out}");
    assert!(sim.volids("pve1", "shared").await.is_empty(), "nothing stored");
}

#[tokio::test]
async fn url_templates_are_rewritten_too_and_the_network_privilege_is_named() {
    let sim = TestSim::with("mirror_files: {custom_1.0_amd64.tar.zst: 5000}").await;
    let m = sim.control(Method::GET, "mirror/custom_1.0_amd64.tar.zst", None).await;
    let url = m.json["url"].as_str().unwrap().to_string();
    let sha = m.json["digests"]["sha256"].as_str().unwrap();
    let base = url.split("/images/").next().unwrap().to_string();
    let mirrors = format!("mirrors:\n  \"{base}/images/custom/\": \"{base}/lan/custom/\"\n");
    let templates = format!("templates:\n  - url: {url}\n    checksum: \"sha256:{sha}\"\n");
    let cfg = write_config(&sim.server, &mirrors, &templates);
    let (code, out) = apply(&cfg).await;
    assert_eq!(code, 0, "{out}");
    let lines = downloading_lines(&sim).await;
    assert!(lines.iter().any(|l| l.starts_with(&format!("downloading {base}/lan/custom/custom_1.0"))), "{lines:?}");

    // Without Sys.AccessNetwork the mirror cannot be used, and the plan says so.
    let sim = TestSim::with(
        "tokens:\n  - id: \"vztmpld@pve!cache\"\n    acl: [{path: /storage, privs: [Datastore.Audit, Datastore.AllocateTemplate]}, {path: /nodes, privs: [Sys.Audit]}]\n",
    )
    .await;
    let base = mirror_base(&sim).await;
    let mirrors = format!("mirrors:\n  \"{base}/images/\": \"{base}/lan/\"\n");
    let cfg = write_config(&sim.server, &mirrors, "templates:\n  - template: alpine-3.22\n");
    let (code, out, _) = vztmpld_async(vec!["plan".into(), "-c".into(), cfg.display().to_string()]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("needs Sys.AccessNetwork on /nodes/") && out.contains("remove the mirror"), "{out}");
}
