//! Routing and request handling: the envelope, 501 for unknown paths, parameter merging and validation, bodies, garbage.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

use pve_sim::testing::{ALPINE, DEBIAN, TestSim};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn version_answers_with_the_envelope() {
    let sim = TestSim::start().await;
    let a = sim.get("/version").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.data()["version"], "9.1.4");
    assert_eq!(a.data()["release"], "9.1");
    assert_eq!(a.headers["server"], "pve-api-daemon/3.0");
    assert_eq!(a.json.as_object().unwrap().len(), 1, "only `data`: {}", a.body);
}

#[tokio::test]
async fn unknown_paths_and_methods_are_501_never_404() {
    let sim = TestSim::start().await;
    for (method, path) in [
        (Method::GET, "/nodes/pve1/bogus"),
        (Method::GET, "/nope"),
        (Method::DELETE, "/nodes/pve1/aplinfo"),
        (Method::PUT, "/version"),
    ] {
        let a = sim.send_raw(method.clone(), path).await;
        assert_eq!(a.status, 501, "{method} {path}");
        assert_eq!(a.json["message"], format!("Method '{method} {path}' not implemented\n"));
        assert!(a.json["data"].is_null());
    }
}

#[tokio::test]
async fn parameter_errors_are_400_with_per_parameter_messages() {
    let sim = TestSim::start().await;
    let a = sim.get_query("/nodes/pve1/storage", &[("enabled", "true"), ("bogus", "1")]).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json["message"], "Parameter verification failed.\n");
    assert_eq!(a.json["errors"]["enabled"], "type check ('boolean') failed - got 'true'");
    assert!(a.json["errors"]["bogus"].as_str().unwrap().contains("not defined in schema"));
    let a = sim.post("/nodes/pve1/aplinfo", &[("storage", "local")]).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json["errors"]["template"], "property is missing and it is not optional");
    let a = sim.get_query("/cluster/resources", &[("type", "qemu")]).await;
    assert_eq!(a.status, 400);
    assert!(a.json["errors"]["type"].as_str().unwrap().contains("enumeration"));
}

#[tokio::test]
async fn json_bodies_work_and_query_overrides_body() {
    let sim = TestSim::start().await;
    let a = sim.post_json("/nodes/pve1/aplinfo", &json!({"storage": "local", "template": ALPINE})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let url = format!("{}?storage=shared", sim.url("/nodes/pve1/aplinfo"));
    let a = sim
        .client
        .post(url)
        .header("Authorization", sim.server.auth_header())
        .form(&[("storage", "nope"), ("template", DEBIAN)])
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 200);
    let upid: serde_json::Value = a.json().await.unwrap();
    sim.wait_task(upid["data"].as_str().unwrap()).await;
    assert_eq!(sim.volids("pve2", "shared").await, [format!("shared:vztmpl/{DEBIAN}")]);
}

#[tokio::test]
async fn body_on_get_and_oversized_bodies_are_rejected() {
    let sim = TestSim::start().await;
    let a = sim
        .client
        .get(sim.url("/version"))
        .header("Authorization", sim.server.auth_header())
        .body("x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 501);
    let big = "a".repeat(600 * 1024);
    let a = sim.post("/nodes/pve1/aplinfo", &[("storage", "local"), ("template", big.as_str())]).await;
    assert_eq!(a.status, 501);
}

#[tokio::test]
async fn garbage_requests_never_crash_the_server() {
    let sim = TestSim::start().await;
    for path in [
        "/nodes/%ff%fe/storage",
        "/nodes/pve1/storage/%2e%2e/content",
        "/nodes/pve1/tasks/UPID:%00/log",
        "/nodes//storage",
        "/nodes/pve1/storage/local/content/%3A%3A%3A",
    ] {
        let a = sim.get(path).await;
        assert!(a.status.as_u16() >= 400 || a.status == 200, "{path}: {}", a.status);
    }
    let a = sim
        .client
        .post(sim.url("/nodes/pve1/aplinfo"))
        .header("Authorization", sim.server.auth_header())
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 400);
    assert_eq!(sim.get("/version").await.status, 200, "still alive");
}

trait SendRaw {
    async fn send_raw(&self, method: Method, path: &str) -> pve_sim::testing::Answer;
}

impl SendRaw for TestSim {
    async fn send_raw(&self, method: Method, path: &str) -> pve_sim::testing::Answer {
        let resp = self
            .client
            .request(method, self.url(path))
            .header("Authorization", self.server.auth_header())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap();
        let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        pve_sim::testing::Answer { status, json, body, headers }
    }
}
