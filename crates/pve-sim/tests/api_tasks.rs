//! Tasks: lifecycle, listing, per-node visibility, stop, log paging.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

use pve_sim::testing::{ALPINE, TestSim, encode};
use serde_json::json;

#[tokio::test]
async fn task_lifecycle_running_then_stopped_and_listed() {
    // 1 MiB at 2 MB/s: about half a second of "running".
    let sim = TestSim::with("bandwidth: 2000000").await;
    let upid = sim.download("pve3", "local", ALPINE).await;
    let path = format!("/nodes/pve3/tasks/{}/status", encode(&upid));
    let a = sim.get(&path).await;
    assert_eq!(a.data()["status"], "running");
    assert!(a.data().get("exitstatus").is_none());
    let active = sim.get_query("/nodes/pve3/tasks", &[("source", "active")]).await;
    assert_eq!(active.json["total"], 1);
    assert_eq!(active.data()[0]["status"], "RUNNING");
    let archive = sim.get("/nodes/pve3/tasks").await;
    assert_eq!(archive.json["total"], 0, "the default list hides running tasks");
    assert_eq!(sim.wait_task(&upid).await["exitstatus"], "OK");
    let archive = sim.get_query("/nodes/pve3/tasks", &[("typefilter", "download")]).await;
    assert_eq!(archive.json["total"], 1);
    assert_eq!(archive.data()[0]["status"], "OK");
    assert!(archive.data()[0]["endtime"].is_number());
    let other = sim.get_query("/nodes/pve1/tasks", &[("source", "all")]).await;
    assert_eq!(other.json["total"], 0, "tasks are listed on their own node");
}

#[tokio::test]
async fn task_status_is_only_known_on_its_own_node() {
    let sim = TestSim::start().await;
    let upid = sim.download("pve1", "local", ALPINE).await;
    sim.wait_task(&upid).await;
    let a = sim.get(&format!("/nodes/pve2/tasks/{}/status", encode(&upid))).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json["errors"]["upid"], "no such task");
    let a = sim.get("/nodes/pve1/tasks/garbage/status").await;
    assert_eq!(a.status, 400);
    assert!(a.json["errors"]["upid"].as_str().unwrap().starts_with("unable to parse worker upid"));
}

#[tokio::test]
async fn stopping_a_task_ends_it_in_error_with_no_file() {
    let sim = TestSim::with(&format!("download_faults: [{{template: {ALPINE}, kind: hang}}]")).await;
    let upid = sim.download("pve1", "shared", ALPINE).await;
    let a = sim.delete(&format!("/nodes/pve1/tasks/{}", encode(&upid))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.data().is_null());
    let status = sim.wait_task(&upid).await;
    assert_eq!(status["exitstatus"], "received interrupt");
    assert!(sim.volids("pve1", "shared").await.is_empty());
}

#[tokio::test]
async fn task_log_pages_like_proxmox() {
    let sim = TestSim::start().await;
    let upid = sim.download("pve1", "local", ALPINE).await;
    sim.wait_task(&upid).await;
    let path = format!("/nodes/pve1/tasks/{}/log", encode(&upid));
    let all = sim.get_query(&path, &[("limit", "0")]).await;
    let total = all.json["total"].as_u64().unwrap() as usize;
    assert_eq!(all.data().as_array().unwrap().len(), total);
    assert_eq!(all.data()[0]["n"], 1);
    let page = sim.get_query(&path, &[("start", "2"), ("limit", "2")]).await;
    assert_eq!(page.data().as_array().unwrap().len(), 2);
    assert_eq!(page.data()[0]["n"], 3);
    let index = sim.get(&format!("/nodes/pve1/tasks/{}", encode(&upid))).await;
    assert_eq!(index.data(), &json!([{"subdir": "log"}, {"subdir": "status"}]));
}
