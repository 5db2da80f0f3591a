//! Downloads: the appliance index, `aplinfo` and `download-url` tasks, checksums, existing files, stale indexes, full disks.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

use pve_sim::testing::{ALPINE, DEBIAN, TestSim, fixture};
use reqwest::Method;
use serde_json::json;

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
    let Some(index) = fixture("aplinfo-2024-06.dat") else { return };
    let sim = TestSim::with(&format!("nodes: [{{name: pve1}}, {{name: old, index: '{}'}}]", index.display())).await;
    let a = sim.get("/nodes/old/aplinfo").await;
    let entries = a.data().as_array().unwrap();
    assert_eq!(entries.len(), 21);
    let alpine = entries.iter().find(|e| e["package"] == "alpine-3.19-default").unwrap();
    assert_eq!(alpine["template"], "alpine-3.19-default_20240207_amd64.tar.xz");
    let upid = sim.download("old", "local", "alpine-3.19-default_20240207_amd64.tar.xz").await;
    assert_eq!(sim.wait_task(&upid).await["exitstatus"], "OK");
}

#[tokio::test]
async fn no_space_left_fails_the_download() {
    let sim = TestSim::with("storages: [{id: local, content: [vztmpl], total: 3000000, used: 2500000}]").await;
    let upid = sim.download("pve1", "local", ALPINE).await;
    let exit = sim.wait_task(&upid).await["exitstatus"].as_str().unwrap().to_string();
    assert!(exit.contains("No space left on device"), "{exit}");
    assert!(sim.volids("pve1", "local").await.is_empty());
}
