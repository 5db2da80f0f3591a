//! Deep verify: the daemon posts the same download onto a cached file, so Proxmox re-hashes it without
//! downloading — a good file costs no transfer; a corrupt one is marked `corrupt` in status and metrics, and with
//! `repair: true` deleted and downloaded again.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

use std::time::Duration;

use common::{ALPINE, Daemon, TestSim, write_config};
use vztmpld::daemon::{Control, Trigger};

/// The sim with ALPINE already on the shared storage (`corrupt`: with other bytes than the index's).
async fn sim(corrupt: bool) -> TestSim {
    TestSim::with(&format!("templates: [{{storage: shared, file: {ALPINE}, corrupt: {corrupt}}}]")).await
}

/// `vztmpld_verifications_total{result=…}` summed over clusters.
async fn verifications(d: &Daemon, result: &str) -> u64 {
    let text = d.get("/metrics").await.unwrap_or_default();
    let needle = format!("outcome=\"{result}\"");
    text.lines()
        .filter(|l| l.starts_with("vztmpld_verifications_total") && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Asks for passes until `check` holds (the first verification is due within the 10 s period).
async fn until<F, Fut>(d: &Daemon, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if check().await {
            return;
        }
        d.send(Control::Reconcile(Trigger::Api)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("no {what} within 30 s; log:\n{}", d.log());
}

#[tokio::test]
async fn a_good_file_is_verified_without_a_download() {
    let sim = sim(false).await;
    let cfg = write_config(&sim.server, "", "interval: 1h\nverify: 10s\ntemplates:\n  - template: alpine-3.22\n");
    let d = Daemon::start(&cfg).await;
    until(&d, "good verification", || async { verifications(&d, "good").await >= 1 }).await;
    let stats = sim.stats().await;
    assert_eq!(stats["bytes_transferred"], 0, "nothing downloaded: {stats}");
    assert_eq!(stats["requests"]["POST /nodes/{node}/aplinfo"], 1, "one verification for the shared file: {stats}");
    assert_eq!(d.state("pve1", "alpine-3.22"), "cached");
}

#[tokio::test]
async fn a_corrupt_file_is_marked_and_kept_without_repair() {
    let sim = sim(true).await;
    let cfg = write_config(&sim.server, "", "interval: 1h\nverify: 10s\ntemplates:\n  - template: alpine-3.22\n");
    let d = Daemon::start(&cfg).await;
    until(&d, "corrupt verdict", || async { d.state("pve2", "alpine-3.22") == "corrupt" }).await;
    // It stays marked through later passes.
    d.send(Control::Reconcile(Trigger::Api)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(d.state("pve3", "alpine-3.22"), "corrupt", "{}", d.log());
    let status = d.status().await;
    let t = &status["clusters"][0]["nodes"][0]["templates"][0];
    assert!(t["error"].as_str().unwrap().contains("checksum mismatch"), "{t}");
    let metrics = d.get("/metrics").await.unwrap();
    assert!(metrics.contains("vztmpld_templates{cluster=\"lab\",state=\"corrupt\"} 3"), "{metrics}");
    assert!(d.log().contains("CORRUPT"), "logged");
    assert_eq!(sim.volids("pve1", "shared").await, [format!("shared:vztmpl/{ALPINE}")], "kept: repair is off");
    // Not a file to deploy from: resolve says blocked, and why.
    let url = format!("http://{}/api/v1/resolve?node=pve1&template=alpine-3.22", d.addr);
    let r = d.http.get(url).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["state"], "blocked");
    assert!(v["reason"].as_str().unwrap().contains("corrupt"), "{v}");
}

#[tokio::test]
async fn repair_deletes_and_downloads_again() {
    let sim = sim(true).await;
    let cfg = write_config(
        &sim.server,
        "",
        "interval: 1h\nverify: 10s\nrepair: true\ntemplates:\n  - template: alpine-3.22\n",
    );
    let d = Daemon::start(&cfg).await;
    until(&d, "repair", || async { verifications(&d, "repaired").await >= 1 }).await;
    let stats = sim.stats().await;
    assert_eq!(stats["requests"]["DELETE /nodes/{node}/storage/{storage}/content/{volume}"], 1, "{stats}");
    assert!(stats["bytes_transferred"].as_u64().unwrap() > 0, "downloaded again: {stats}");
    d.send(Control::Reconcile(Trigger::Api)).await;
    d.wait_for("cached again", |d| async move { d.state("pve1", "alpine-3.22") == "cached" }).await;
}
