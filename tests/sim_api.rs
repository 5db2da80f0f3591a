//! Every simulator endpoint, over real HTTPS on an ephemeral port, success and error paths.

mod common;

use common::{ALPINE, DEBIAN, TestSim, encode, raw_request};
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
async fn nodes_list_fingerprints_and_status() {
    let sim = TestSim::start().await;
    let a = sim.get("/nodes").await;
    let nodes = a.data().as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for n in nodes {
        assert_eq!(n["ssl_fingerprint"], sim.server.fingerprint);
        assert_eq!(n["status"], "online");
        assert_eq!(n["type"], "node");
        assert_eq!(n["id"], format!("node/{}", n["node"].as_str().unwrap()));
        assert!(n["maxcpu"].is_number(), "Sys.Audit shows stats");
    }
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

#[tokio::test]
async fn aplinfo_lists_the_index_with_all_fields_as_strings() {
    let sim = TestSim::start().await;
    let a = sim.get("/nodes/pve2/aplinfo").await;
    let entries = a.data().as_array().unwrap();
    assert!(entries.len() >= 10);
    let alpine = entries.iter().find(|e| e["template"] == ALPINE).unwrap();
    for key in [
        "package",
        "version",
        "type",
        "os",
        "section",
        "maintainer",
        "architecture",
        "location",
        "md5sum",
        "sha512sum",
        "infopage",
        "headline",
        "description",
        "source",
        "template",
    ] {
        assert!(alpine[key].is_string(), "{key} in {alpine}");
    }
    let digests = sim.control(Method::GET, &format!("mirror/{ALPINE}"), None).await;
    assert_eq!(alpine["sha512sum"], digests.json["digests"]["sha512"]);
    assert!(entries.iter().all(|e| e.as_object().unwrap().values().all(|v| v.is_string())));
}

#[tokio::test]
async fn aplinfo_download_runs_a_task_to_ok_and_the_file_appears() {
    let sim = TestSim::start().await;
    let upid = sim.download("pve1", "local", ALPINE).await;
    assert!(upid.starts_with("UPID:pve1:"));
    assert!(upid.contains(&format!(":download:{ALPINE}:vztmpld@pve!cache:")));
    let status = sim.wait_task(&upid).await;
    assert_eq!(status["exitstatus"], "OK");
    assert_eq!(status["user"], "vztmpld@pve");
    assert_eq!(status["tokenid"], "cache");
    assert_eq!(status["type"], "download");
    assert_eq!(status["id"], ALPINE);
    let log = sim.task_log(&upid).await;
    assert!(log[0].starts_with("downloading https://127.0.0.1:"), "{log:?}");
    assert!(log.iter().any(|l| l == "calculating checksum...OK, checksum verified"), "{log:?}");
    assert!(log.iter().any(|l| l.starts_with("download of '") && l.ends_with("finished")), "{log:?}");
    assert_eq!(log.last().unwrap(), "TASK OK");
    assert_eq!(sim.volids("pve1", "local").await, [format!("local:vztmpl/{ALPINE}")]);
    assert!(sim.volids("pve2", "local").await.is_empty(), "local storage is per node");
    let content = sim.get("/nodes/pve1/storage/local/content").await;
    let v = &content.data()[0];
    assert_eq!(v["format"], "txz");
    assert_eq!(v["content"], "vztmpl");
    assert_eq!(v["size"], 1024 * 1024);
    assert!(v["ctime"].as_u64().unwrap() > 1_700_000_000);
}

#[tokio::test]
async fn a_download_to_shared_storage_is_visible_from_every_node() {
    let sim = TestSim::start().await;
    let upid = sim.download("pve2", "shared", DEBIAN).await;
    assert_eq!(sim.wait_task(&upid).await["exitstatus"], "OK");
    for node in ["pve1", "pve2", "pve3"] {
        assert_eq!(sim.volids(node, "shared").await, [format!("shared:vztmpl/{DEBIAN}")], "{node}");
    }
}

#[tokio::test]
async fn aplinfo_post_errors() {
    let sim = TestSim::start().await;
    let a = sim.post("/nodes/pve1/aplinfo", &[("storage", "local"), ("template", "nope_1_amd64.tar.xz")]).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json["errors"]["template"], "no such template");
    let a = sim.post("/nodes/pve1/aplinfo", &[("storage", "nope"), ("template", ALPINE)]).await;
    assert_eq!(a.status, 500);
    assert_eq!(a.json["message"], "storage 'nope' does not exist\n");
    let a = sim.post("/nodes/pve1/aplinfo", &[("storage", "local-lvm"), ("template", ALPINE)]).await;
    assert_eq!(a.status, 500);
    assert_eq!(a.json["message"], "storage 'local-lvm' does not support templates\n");
}

#[tokio::test]
async fn aplinfo_onto_an_existing_file_rehashes_it() {
    let sim = TestSim::with(&format!(
        "templates: [{{storage: local, node: pve1, file: {ALPINE}}}, {{storage: local, node: pve2, file: {ALPINE}, corrupt: true}}]"
    ))
    .await;
    let upid = sim.download("pve1", "local", ALPINE).await;
    assert_eq!(sim.wait_task(&upid).await["exitstatus"], "OK");
    let log = sim.task_log(&upid).await;
    assert!(log.iter().any(|l| l.contains("got correct file already, no need to download")), "{log:?}");
    assert_eq!(sim.stats().await["bytes_transferred"], 0);

    let upid = sim.download("pve2", "local", ALPINE).await;
    let status = sim.wait_task(&upid).await;
    let exit = status["exitstatus"].as_str().unwrap();
    assert!(exit.starts_with("checksum mismatch: got '") && exit.ends_with("', aborting"), "{exit}");
    assert_eq!(sim.volids("pve2", "local").await.len(), 1, "nothing overwritten or removed");
}

#[tokio::test]
async fn checksum_failure_leaves_no_volume() {
    let sim = TestSim::start().await;
    let a = sim.control(Method::POST, "download-faults", Some(json!({"template": ALPINE, "kind": "corrupt"}))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let upid = sim.download("pve1", "local", ALPINE).await;
    let status = sim.wait_task(&upid).await;
    let exit = status["exitstatus"].as_str().unwrap();
    assert!(exit.starts_with("checksum mismatch: got '"), "{exit}");
    assert!(sim.volids("pve1", "local").await.is_empty());
    let log = sim.task_log(&upid).await;
    assert!(log.last().unwrap().starts_with("TASK ERROR: checksum mismatch"), "{log:?}");
    // The fault was for one download only: the retry succeeds.
    let upid = sim.download("pve1", "local", ALPINE).await;
    assert_eq!(sim.wait_task(&upid).await["exitstatus"], "OK");
}

#[tokio::test]
async fn a_failing_transfer_ends_in_error() {
    let sim = TestSim::with(&format!("download_faults: [{{template: {ALPINE}, kind: fail}}]")).await;
    let upid = sim.download("pve1", "local", ALPINE).await;
    let exit = sim.wait_task(&upid).await["exitstatus"].as_str().unwrap().to_string();
    assert!(exit.starts_with("download failed: Read error"), "{exit}");
    assert!(sim.volids("pve1", "local").await.is_empty());
    let stats = sim.stats().await;
    assert_eq!(stats["downloads_failed"], 1);
}

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

#[tokio::test]
async fn concurrent_downloads_of_the_same_file_both_run() {
    let sim = TestSim::with("bandwidth: 4000000").await;
    let a = sim.download("pve1", "shared", ALPINE).await;
    let b = sim.download("pve2", "shared", ALPINE).await;
    sim.wait_task(&a).await;
    sim.wait_task(&b).await;
    let stats = sim.stats().await;
    assert_eq!(stats["downloads_started"], 2, "{stats}");
    assert_eq!(stats["bytes_transferred"], 2 * 1024 * 1024);
}

#[tokio::test]
async fn download_url_with_checksum() {
    let sim = TestSim::with("mirror_files: {custom_1.0_amd64.tar.zst: 4096}").await;
    let m = sim.control(Method::GET, "mirror/custom_1.0_amd64.tar.zst", None).await;
    let url = m.json["url"].as_str().unwrap().to_string();
    let sha256 = m.json["digests"]["sha256"].as_str().unwrap().to_string();
    let form = [
        ("url", url.as_str()),
        ("content", "vztmpl"),
        ("filename", "custom_1.0_amd64.tar.zst"),
        ("checksum", sha256.as_str()),
        ("checksum-algorithm", "sha256"),
    ];
    let a = sim.post("/nodes/pve2/storage/local/download-url", &form).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let upid = a.data().as_str().unwrap().to_string();
    assert!(upid.contains(":download:custom_1.0_amd64.tar.zst:"));
    assert_eq!(sim.wait_task(&upid).await["exitstatus"], "OK");
    assert_eq!(sim.volids("pve2", "local").await, ["local:vztmpl/custom_1.0_amd64.tar.zst"]);

    // Again with the checksum: the existing file matches, nothing is fetched.
    let upid = sim.post("/nodes/pve2/storage/local/download-url", &form).await.data().as_str().unwrap().to_string();
    assert_eq!(sim.wait_task(&upid).await["exitstatus"], "OK");
    // Again without a checksum: Proxmox refuses to overwrite, inside the task.
    let a = sim.post("/nodes/pve2/storage/local/download-url", &form[..3]).await;
    assert_eq!(a.status, 200);
    let exit = sim.wait_task(a.data().as_str().unwrap()).await["exitstatus"].as_str().unwrap().to_string();
    assert!(exit.starts_with("refusing to override existing file '/var/lib/vz/template/cache/custom_1.0"), "{exit}");
}

#[tokio::test]
async fn download_url_errors() {
    let sim = TestSim::with("mirror_files: {custom_1.0_amd64.tar.zst: 4096}").await;
    let m = sim.control(Method::GET, "mirror/custom_1.0_amd64.tar.zst", None).await;
    let url = m.json["url"].as_str().unwrap().to_string();
    let post = |storage: &'static str, form: Vec<(&'static str, String)>| {
        let sim = &sim;
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            sim.post(&format!("/nodes/pve1/storage/{storage}/download-url"), &form).await
        }
    };
    let base =
        |name: &str| vec![("url", url.clone()), ("content", "vztmpl".to_string()), ("filename", name.to_string())];

    let a = post("local", base("custom.iso")).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json["errors"]["filename"], "wrong file extension");
    let a = post("local-lvm", base("custom_1.0_amd64.tar.zst")).await;
    assert_eq!(a.status, 500);
    assert_eq!(a.json["message"], "can't upload to storage type 'lvmthin', not a file based storage!\n");
    let mut bad_sum = base("custom_1.0_amd64.tar.zst");
    bad_sum.push(("checksum", "00".repeat(32)));
    bad_sum.push(("checksum-algorithm", "sha256".into()));
    let a = post("local", bad_sum).await;
    let exit = sim.wait_task(a.data().as_str().unwrap()).await["exitstatus"].as_str().unwrap().to_string();
    assert!(exit.starts_with("checksum mismatch"), "{exit}");
    assert!(sim.volids("pve1", "local").await.is_empty());
    let mut missing_algo = base("custom_1.0_amd64.tar.zst");
    missing_algo.push(("checksum", "00".into()));
    assert_eq!(post("local", missing_algo).await.status, 400);
    let a = post(
        "local",
        base("missing_1.0_amd64.tar.zst")
            .into_iter()
            .map(|(k, v)| if k == "url" { (k, v.replace("custom_1.0", "missing_1.0")) } else { (k, v) })
            .collect(),
    )
    .await;
    let exit = sim.wait_task(a.data().as_str().unwrap()).await["exitstatus"].as_str().unwrap().to_string();
    assert_eq!(exit, "download failed: ERROR 404: Not Found.");
    let mut outside = base("custom_1.0_amd64.tar.zst");
    outside[0].1 = "https://mirror.example/ct/custom_1.0_amd64.tar.zst".into();
    let a = post("local", outside).await;
    let exit = sim.wait_task(a.data().as_str().unwrap()).await["exitstatus"].as_str().unwrap().to_string();
    assert!(exit.contains("unable to resolve host address 'mirror.example'"), "{exit}");
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
async fn stale_and_empty_indexes_per_node() {
    let sim = TestSim::with("nodes: [{name: pve1}, {name: pve2, index: stale}, {name: pve3, index: empty}]").await;
    let fresh = sim.get("/nodes/pve1/aplinfo").await;
    let stale = sim.get("/nodes/pve2/aplinfo").await;
    assert!(fresh.data().as_array().unwrap().iter().any(|e| e["template"] == ALPINE));
    assert!(!stale.data().as_array().unwrap().iter().any(|e| e["template"] == ALPINE));
    assert!(stale.data().as_array().unwrap().iter().any(|e| e["package"] == "alpine-3.19-default"));
    assert_eq!(sim.get("/nodes/pve3/aplinfo").await.data(), &json!([]));
    let a = sim.post("/nodes/pve3/aplinfo", &[("storage", "local"), ("template", ALPINE)]).await;
    assert_eq!(a.json["errors"]["template"], "no such template");
    sim.control(Method::POST, "nodes/pve3", Some(json!({"index": "builtin"}))).await;
    assert_eq!(sim.post("/nodes/pve3/aplinfo", &[("storage", "local"), ("template", ALPINE)]).await.status, 200);
}

#[tokio::test]
async fn a_real_dat_file_can_be_the_index_of_a_stale_node() {
    let sim = TestSim::with("nodes: [{name: pve1}, {name: old, index: ../shared/fixtures/aplinfo-2024-06.dat}]").await;
    let a = sim.get("/nodes/old/aplinfo").await;
    let entries = a.data().as_array().unwrap();
    assert_eq!(entries.len(), 21);
    let alpine = entries.iter().find(|e| e["package"] == "alpine-3.19-default").unwrap();
    assert_eq!(alpine["template"], "alpine-3.19-default_20240207_amd64.tar.xz");
    let upid = sim.download("old", "local", "alpine-3.19-default_20240207_amd64.tar.xz").await;
    assert_eq!(sim.wait_task(&upid).await["exitstatus"], "OK");
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
async fn no_space_left_fails_the_download() {
    let sim = TestSim::with("storages: [{id: local, content: [vztmpl], total: 3000000, used: 2500000}]").await;
    let upid = sim.download("pve1", "local", ALPINE).await;
    let exit = sim.wait_task(&upid).await["exitstatus"].as_str().unwrap().to_string();
    assert!(exit.contains("No space left on device"), "{exit}");
    assert!(sim.volids("pve1", "local").await.is_empty());
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
    async fn send_raw(&self, method: Method, path: &str) -> common::Answer;
}

impl SendRaw for TestSim {
    async fn send_raw(&self, method: Method, path: &str) -> common::Answer {
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
        common::Answer { status, json, body, headers }
    }
}
