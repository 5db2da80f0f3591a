//! The resolve API and `vztmpld resolve`: the deploy-time question answered from what the daemon observed —
//! cached, downloading, blocked, missing, unknown; any spec; `wait` and `fresh`; `/api/v1/cache`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

use std::time::Duration;

use common::{ALPINE, Daemon, TestSim, write_config};
use reqwest::Method;
use serde_json::{Value, json};

const ONE: &str = "interval: 1h\ntemplates:\n  - template: alpine-3.22\n";

/// `GET /api/v1/resolve?…`: (status code, JSON).
async fn resolve(d: &Daemon, query: &str) -> (u16, Value) {
    let r = d.http.get(format!("http://{}/api/v1/resolve?{query}", d.addr)).send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

async fn ready(d: &Daemon) {
    d.wait_for("the first pass", |d| async move {
        d.status().await["last_pass"]["outcome"] != Value::Null && d.status().await["pass_running"] == false
    })
    .await;
}

#[tokio::test]
async fn a_cached_template_resolves_for_any_matching_spec() {
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", ONE);
    let d = Daemon::start(&cfg).await;
    d.wait_for("alpine cached", |d| async move { d.state("pve1", "alpine-3.22") == "cached" }).await;

    let (code, v) = resolve(&d, "cluster=lab&node=pve1&template=alpine-3.22").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["volid"], format!("shared:vztmpl/{ALPINE}"));
    assert_eq!(v["storage"], "shared");
    assert_eq!(v["state"], "cached");
    assert_eq!(v["configured"], true);
    assert!(v["size"].as_u64().unwrap() > 0 && v["observed_at"].is_string(), "{v}");
    // Any spec: version-agnostic, the exact file, without the cluster (the node name is unique).
    for spec in ["alpine", ALPINE] {
        let (code, v) = resolve(&d, &format!("node=pve3&template={spec}")).await;
        assert_eq!((code, v["volid"].as_str().unwrap()), (200, format!("shared:vztmpl/{ALPINE}").as_str()));
        assert_eq!(v["configured"], true, "{spec} finds the file alpine-3.22 keeps: {v}");
    }
    let (code, v) = resolve(&d, "node=pve1&template=debian-12").await;
    assert_eq!((code, v["state"].as_str(), v["configured"].as_bool()), (404, Some("missing"), Some(false)), "{v}");
    let (code, v) = resolve(&d, "node=pve9&template=alpine").await;
    assert_eq!((code, v["state"].as_str()), (404, Some("unknown")), "{v}");
    let (code, v) = resolve(&d, "node=pve1&template=alp%20ine").await;
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("template"), "{v}");

    // The command line prints the volid alone.
    let addr = d.addr.clone();
    let (code, out, err) = common::vztmpld_async(vec![
        "resolve".into(),
        "--addr".into(),
        addr.clone(),
        "pve2".into(),
        "alpine-3.22".into(),
    ])
    .await;
    assert_eq!((code, out.trim()), (0, format!("shared:vztmpl/{ALPINE}").as_str()), "{err}");
    let (code, out, err) =
        common::vztmpld_async(vec!["resolve".into(), "--addr".into(), addr, "pve2".into(), "debian-12".into()]).await;
    assert_eq!((code, out.as_str()), (1, ""), "missing: exit 1, nothing on stdout");
    assert!(err.contains("debian-12 on lab/pve2 is missing"), "{err}");
}

#[tokio::test]
async fn downloading_then_wait_returns_as_soon_as_it_is_cached() {
    // 1 MiB at 200 kB/s: about five seconds of download.
    let sim = TestSim::with("bandwidth: 200000").await;
    let cfg = write_config(&sim.server, "nodes: [pve1]\n", ONE);
    let d = Daemon::start(&cfg).await;
    d.wait_for("a running download", |d| async move { d.state("pve1", "alpine-3.22") == "downloading" }).await;
    let (code, v) = resolve(&d, "node=pve1&template=alpine-3.22").await;
    assert_eq!((code, v["state"].as_str()), (404, Some("downloading")), "{v}");
    assert!(v["upid"].as_str().unwrap().starts_with("UPID:pve1:"), "{v}");
    assert_eq!(v["configured"], true);

    let waiting = {
        let (http, addr) = (d.http.clone(), d.addr.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let url = format!("http://{addr}/api/v1/resolve?node=pve1&template=alpine-3.22&wait=20s");
            let r = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap()
                .get(url)
                .send()
                .await
                .unwrap();
            drop(http);
            (r.status().as_u16(), r.json::<Value>().await.unwrap(), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.control(Method::POST, "settings", Some(json!({"bandwidth": 100_000_000}))).await;
    let (code, v, took) = waiting.await.unwrap();
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["volid"], format!("shared:vztmpl/{ALPINE}"));
    assert!(took < Duration::from_secs(15), "returned when cached, not at the deadline: {took:?}");
}

#[tokio::test]
async fn a_blocked_template_says_why_and_exits_2() {
    let sim = TestSim::with("storages: [{id: local, content: [vztmpl]}]").await;
    sim.control(Method::POST, "nodes/pve2", Some(json!({"online": false}))).await;
    let cfg = write_config(&sim.server, "", ONE);
    let d = Daemon::start(&cfg).await;
    ready(&d).await;
    let (code, v) = resolve(&d, "node=pve2&template=alpine-3.22").await;
    assert_eq!((code, v["state"].as_str()), (404, Some("blocked")), "{v}");
    assert!(v["reason"].as_str().unwrap().contains("offline"), "{v}");
    let (code, _, err) = common::vztmpld_async(vec![
        "resolve".into(),
        "--addr".into(),
        d.addr.clone(),
        "pve2".into(),
        "alpine-3.22".into(),
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("blocked") && err.contains("offline"), "{err}");
}

#[tokio::test]
async fn fresh_relists_the_node_and_sees_a_file_put_there_meanwhile() {
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", ONE);
    let d = Daemon::start(&cfg).await;
    d.wait_for("alpine cached", |d| async move { d.state("pve1", "alpine-3.22") == "cached" }).await;
    // Someone downloads another template behind the daemon's back.
    let debian = "debian-12-standard_12.12-1_amd64.tar.zst";
    let upid = sim.download("pve1", "local", debian).await;
    sim.wait_task(&upid).await;
    let (code, v) = resolve(&d, "node=pve1&template=debian-12").await;
    assert_eq!(code, 404, "the last pass did not see it: {v}");
    let before = sim.stats().await["requests_total"].as_u64().unwrap_or(0);
    let (code, v) = resolve(&d, "node=pve1&template=debian-12&fresh=1").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["volid"], format!("local:vztmpl/{debian}"));
    assert_eq!(v["configured"], false, "present, not configured");
    let calls = sim.stats().await["requests_total"].as_u64().unwrap_or(0) - before;
    assert!(calls <= 2, "one listing per storage the node sees (local, shared): {calls}");

    // The cache view: every file the node sees, and whether each configured spec would hit.
    let cache: Value =
        d.http.get(format!("http://{}/api/v1/cache?node=pve1", d.addr)).send().await.unwrap().json().await.unwrap();
    let nodes = cache["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{cache}");
    assert_eq!(
        nodes[0]["configured"],
        json!([{"template": "alpine-3.22", "hit": true, "volid": format!("shared:vztmpl/{ALPINE}")}])
    );
    let files: Vec<&str> =
        nodes[0]["cached"].as_array().unwrap().iter().map(|f| f["volid"].as_str().unwrap()).collect();
    assert!(files.contains(&format!("local:vztmpl/{debian}").as_str()) && files.len() == 2, "{files:?}");
}

#[tokio::test]
async fn an_unchanged_pass_keeps_every_answer_and_moves_observed_at() {
    use vztmpld::daemon::{Control, Trigger};
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", ONE);
    let d = Daemon::start(&cfg).await;
    d.wait_for("alpine cached", |d| async move { d.state("pve1", "alpine-3.22") == "cached" }).await;
    ready(&d).await;
    let query = "cluster=lab&node=pve1&template=alpine-3.22";
    let cache = |d: &Daemon| {
        let url = format!("http://{}/api/v1/cache?node=pve1", d.addr);
        let http = d.http.clone();
        async move { http.get(url).send().await.unwrap().json::<Value>().await.unwrap()["nodes"][0]["cached"].clone() }
    };
    // A pass that finds everything cached keeps its plan; the next, finding the cluster as it was, reuses it
    // and leaves the listings undecoded. What the resolve API answers stays; only the observation time moves
    // (to the second).
    let passes = |d: &Daemon| d.log().matches("reconcile pass finished").count();
    let reused = |d: &Daemon| d.log().matches("nothing changed since the last pass").count();
    async fn pass(d: &Daemon, passes: impl Fn(&Daemon) -> usize + Copy) {
        let before = passes(d);
        d.send(Control::Reconcile(Trigger::Api)).await;
        d.wait_for("the pass", |d| async move { passes(d) > before }).await;
    }
    pass(&d, passes).await;
    let (_, first) = resolve(&d, query).await;
    let files = cache(&d).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = reused(&d);
    pass(&d, passes).await;
    assert_eq!(reused(&d), before + 1, "the pass reused its plan");
    let (code, now) = resolve(&d, query).await;
    assert_eq!(code, 200, "{now}");
    assert_eq!((&now["volid"], &now["size"], &now["state"]), (&first["volid"], &first["size"], &first["state"]));
    assert!(now["observed_at"].as_str().unwrap() > first["observed_at"].as_str().unwrap(), "{first} -> {now}");
    assert_eq!(cache(&d).await, files, "every file the node sees, as before");
}

/// A burst of `fresh=1` requests for one node shares one listing in flight: 200 concurrent requests cost one or
/// two listings per storage, not 400 (20,000 used to make 40,000 Proxmox calls and stretch a pass 90-fold).
#[tokio::test]
async fn a_burst_of_fresh_requests_for_a_node_is_coalesced() {
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", ONE);
    let d = Daemon::start(&cfg).await;
    d.wait_for("alpine cached", |d| async move { d.state("pve1", "alpine-3.22") == "cached" }).await;
    ready(&d).await;
    let before = sim.stats().await["requests_total"].as_u64().unwrap_or(0);
    let asks = (0..200).map(|_| resolve(&d, "node=pve1&template=alpine-3.22&fresh=1"));
    let answers = futures_util::future::join_all(asks).await;
    assert!(answers.iter().all(|(code, _)| *code == 200), "{:?}", answers.iter().find(|(c, _)| *c != 200));
    let calls = sim.stats().await["requests_total"].as_u64().unwrap_or(0) - before;
    assert!(calls <= 4, "one or two listings per storage the node sees (local, shared), not 400: {calls}");
}
