//! `/_sim/` control: injected faults, quirks, request statistics.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

use pve_sim::testing::{ALPINE, TestSim};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn injected_faults_fail_the_next_requests_then_clear() {
    let sim = TestSim::start().await;
    let a = sim
        .control(
            Method::POST,
            "faults",
            Some(json!({"method": "GET", "path": "/nodes/{node}/aplinfo", "status": 503, "count": 2})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(sim.get("/nodes/pve1/aplinfo").await.status, 503);
    assert_eq!(sim.get("/nodes/pve3/aplinfo").await.status, 503);
    assert_eq!(sim.get("/nodes/pve1/aplinfo").await.status, 200);
    sim.control(Method::POST, "faults", Some(json!({"path": "/version", "status": 500, "message": "boom"}))).await;
    let a = sim.get("/version").await;
    assert_eq!((a.status.as_u16(), a.json["message"].clone()), (500, json!("boom\n")));
    sim.control(Method::DELETE, "faults", None).await;
    assert_eq!(sim.get("/version").await.status, 200);
}

#[tokio::test]
async fn quirks_numbers_as_strings_and_errors_without_message() {
    let sim = TestSim::with(&format!(
        "quirks: {{numbers_as_strings: true, no_error_message: true}}\ntemplates: [{{storage: shared, file: {ALPINE}}}]"
    ))
    .await;
    let a = sim.get("/nodes/pve1/storage/shared/content").await;
    assert_eq!(a.data()[0]["size"], "1048576");
    let a = sim.get_query("/nodes/pve1/storage", &[("content", "vztmpl")]).await;
    assert_eq!(a.data()[0]["enabled"], "1");
    let a = sim.get("/nodes/pve1/storage/nope/content").await;
    assert_eq!(a.status, 500);
    assert_eq!(a.json, json!({"data": null}));
}

#[tokio::test]
async fn stats_count_requests_by_pattern() {
    let sim = TestSim::start().await;
    sim.get("/nodes/pve1/aplinfo").await;
    sim.get("/nodes/pve2/aplinfo").await;
    sim.get("/version").await;
    let stats = sim.stats().await;
    assert_eq!(stats["requests"]["GET /nodes/{node}/aplinfo"], 2);
    assert_eq!(stats["requests"]["GET /version"], 1);
    sim.control(Method::POST, "stats/reset", None).await;
    assert_eq!(sim.stats().await["requests_total"], 0);
}

#[tokio::test]
async fn control_requests_read_no_files() {
    let sim = TestSim::start().await;
    for path in ["/dev/zero", "/etc/passwd", "../Cargo.toml"] {
        let a = sim.control(Method::POST, "nodes/pve1", Some(json!({"index": path}))).await;
        assert_eq!(a.status, 400, "{path}: {}", a.body);
        assert!(a.body.contains("control requests read no files"), "{}", a.body);
    }
    let before = sim.get("/nodes/pve1/aplinfo").await.data().as_array().unwrap().len();
    assert!(before > 10, "index unchanged: {before} entries");
    let a = sim.control(Method::POST, "nodes/pve1", Some(json!({"index": "empty"}))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(sim.get("/nodes/pve1/aplinfo").await.data(), &json!([]));
}
