//! Authentication and permissions: 401s, token header forms, 403s with Proxmox's messages, silent filtering, visibility.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

use pve_sim::testing::{ALPINE, DEBIAN, TestSim, encode, raw_request};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn missing_or_bad_token_is_401_with_reason_in_status_line_and_empty_body() {
    let sim = TestSim::start().await;
    let a = sim.get_with_auth("/version", None).await;
    assert_eq!(a.status, 401);
    assert!(a.body.is_empty());
    let bad = format!("PVEAPIToken={}=wrong-secret", sim.server.token_id);
    let a = sim.get_with_auth("/version", Some(&bad)).await;
    assert_eq!(a.status, 401);
    assert!(a.body.is_empty());

    let (head, body) = raw_request(
        &sim.server.endpoint,
        "GET /api2/json/version HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 401 No ticket\r\n"), "{head}");
    assert!(body.is_empty());
    let req = format!(
        "GET /api2/json/version HTTP/1.1\r\nHost: localhost\r\nAuthorization: {bad}\r\nConnection: close\r\n\r\n"
    );
    let (head, _) = raw_request(&sim.server.endpoint, &req).await;
    assert!(head.starts_with("HTTP/1.1 401 Authentication failed!\r\n"), "{head}");
    assert!(head.to_lowercase().contains("connection: close"), "{head}");
}

#[tokio::test]
async fn token_header_accepts_a_space_and_url_encoding_and_a_stale_cookie_wins() {
    let sim = TestSim::start().await;
    let spaced = format!("PVEAPIToken {}={}", sim.server.token_id, sim.server.token_secret);
    assert_eq!(sim.get_with_auth("/version", Some(&spaced)).await.status, 200);
    let encoded = format!("PVEAPIToken={}={}", sim.server.token_id.replace('!', "%21"), sim.server.token_secret);
    assert_eq!(sim.get_with_auth("/version", Some(&encoded)).await.status, 200);
    let a = sim
        .client
        .get(sim.url("/version"))
        .header("Authorization", sim.server.auth_header())
        .header("Cookie", "PVEAuthCookie=PVE:root@pam:0::x")
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 401);
}

#[tokio::test]
async fn auth_failure_delay_is_applied_when_configured() {
    let sim = TestSim::with("quirks: {auth_failure_delay: 300ms}").await;
    let started = std::time::Instant::now();
    assert_eq!(sim.get_with_auth("/version", None).await.status, 401);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
}

const LIMITED: &str = r#"
tokens:
  - id: "cache@pve!limited"
    secret: "11111111-2222-3333-4444-555555555555"
    acl:
      - { path: /storage/local, role: PVEDatastoreUser }
      - { path: /storage/shared, role: PVEDatastoreAdmin }
"#;

#[tokio::test]
async fn missing_privileges_give_403_with_proxmox_message() {
    let sim = TestSim::with(LIMITED).await;
    let a = sim.post("/nodes/pve1/aplinfo", &[("storage", "local"), ("template", ALPINE)]).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.json["message"], "Permission check failed (/storage/local, Datastore.AllocateTemplate)\n");
    let a = sim.get("/nodes/pve1/storage/local-lvm/content").await;
    assert_eq!(a.status, 403);
    assert_eq!(
        a.json["message"],
        "Permission check failed (/storage/local-lvm, Datastore.Audit|Datastore.AllocateSpace)\n"
    );
    let form = [("url", "https://127.0.0.1/x.tar.zst"), ("content", "vztmpl"), ("filename", "x.tar.zst")];
    let a = sim.post("/nodes/pve1/storage/shared/download-url", &form).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.json["message"], "Permission check failed\n", "the network half of the check fails");
    let a = sim.get("/nodes/pve1/status").await;
    assert_eq!(a.status, 403);
    // Allowed: a template download to shared storage.
    let upid = sim.download("pve1", "shared", ALPINE).await;
    assert_eq!(sim.wait_task(&upid).await["exitstatus"], "OK");
}

#[tokio::test]
async fn storage_list_is_silently_filtered_by_privilege() {
    let sim = TestSim::with(LIMITED).await;
    let a = sim.get("/nodes/pve1/storage").await;
    assert_eq!(a.status, 200);
    let ids: Vec<_> = a.data().as_array().unwrap().iter().map(|s| s["storage"].as_str().unwrap()).collect();
    assert_eq!(ids, ["local", "shared"]);
    let nodes = sim.get("/nodes").await;
    assert!(nodes.data()[0].get("maxcpu").is_none(), "no Sys.Audit, no stats");
    assert!(nodes.data()[0]["status"].is_string());
}

#[tokio::test]
async fn access_permissions_report_effective_privileges() {
    let sim = TestSim::with(LIMITED).await;
    let a = sim.get_query("/access/permissions", &[("path", "/storage/shared")]).await;
    assert_eq!(a.status, 200);
    let privs = a.data()["/storage/shared"].as_object().unwrap();
    assert_eq!(privs["Datastore.AllocateTemplate"], 1);
    let a = sim.get_query("/access/permissions", &[("path", "/nodes/pve1")]).await;
    assert_eq!(a.data(), &json!({"/nodes/pve1": {}}));
    let a = sim.get("/access/permissions").await;
    let map = a.data().as_object().unwrap();
    assert!(map.contains_key("/storage/local") && map.contains_key("/storage/shared"));
    assert!(!map.contains_key("/"), "paths without privileges are dropped: {map:?}");
    let a = sim.get_query("/access/permissions", &[("userid", "root@pam")]).await;
    assert_eq!(a.status, 403);
}

#[tokio::test]
async fn network_privilege_on_the_node_allows_download_url() {
    let sim = TestSim::with(
        r#"
mirror_files: {custom_1.0_amd64.tar.zst: 100}
tokens:
  - id: "cache@pve!net"
    acl:
      - { path: /storage, role: PVEDatastoreAdmin }
      - { path: /nodes/pve1, privs: [Sys.AccessNetwork] }
"#,
    )
    .await;
    let m = sim.control(Method::GET, "mirror/custom_1.0_amd64.tar.zst", None).await;
    let url = m.json["url"].as_str().unwrap();
    let form = [("url", url), ("content", "vztmpl"), ("filename", "custom_1.0_amd64.tar.zst")];
    assert_eq!(sim.post("/nodes/pve1/storage/local/download-url", &form).await.status, 200);
    assert_eq!(sim.post("/nodes/pve2/storage/local/download-url", &form).await.status, 403);
}

#[tokio::test]
async fn tasks_of_other_tokens_are_hidden_without_sys_audit() {
    let sim = TestSim::with(
        r#"
tokens:
  - { id: "admin@pve!all" }
  - id: "cache@pve!limited"
    secret: "s3cret-limited"
    acl: [{ path: /storage, role: PVEDatastoreAdmin }]
"#,
    )
    .await;
    let upid = sim.download("pve1", "local", ALPINE).await;
    sim.wait_task(&upid).await;
    let limited = "PVEAPIToken=cache@pve!limited=s3cret-limited";
    let a = sim.get_with_auth("/nodes/pve1/tasks", Some(limited)).await;
    assert_eq!(a.json["total"], 0);
    let a = sim.get_with_auth(&format!("/nodes/pve1/tasks/{}/status", encode(&upid)), Some(limited)).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.json["message"], "Permission check failed (/nodes/pve1, Sys.Audit)\n");
}

#[tokio::test]
async fn delete_content_needs_datastore_allocate_and_removes_the_volume() {
    let sim = TestSim::with(&format!("templates: [{{storage: shared, file: {DEBIAN}}}]")).await;
    let volid = format!("shared:vztmpl/{DEBIAN}");
    let a = sim.get(&format!("/nodes/pve1/storage/shared/content/{}", encode(&volid))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.data()["format"], "tzst");
    let a = sim.delete(&format!("/nodes/pve3/storage/local/content/{}", encode(&volid))).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json["errors"]["volume"], "storage ID mismatch (shared != local)");
    let a = sim.delete(&format!("/nodes/pve3/storage/shared/content/{}", encode(&volid))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let upid = a.data().as_str().unwrap().to_string();
    assert!(upid.contains(":imgdel:shared:"), "{upid}");
    assert_eq!(sim.wait_task(&upid).await["exitstatus"], "OK");
    assert!(sim.volids("pve1", "shared").await.is_empty());

    let limited = TestSim::with(&format!(
        "templates: [{{storage: shared, file: {DEBIAN}}}]\ntokens: [{{id: \"a@pve!bb\", acl: [{{path: /storage, role: PVEDatastoreUser}}]}}]"
    ))
    .await;
    let a = limited.delete(&format!("/nodes/pve1/storage/shared/content/{}", encode(&volid))).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.json["message"], "Permission check failed (/storage/shared, Datastore.Allocate)\n");
}
