//! The daemon in-process against the simulator, with the real file watcher as its config producer:
//! hot reload (rename, in-place, symlink swap), rejected edits, a forced reload (SIGHUP's control), stop
//! during a download and adoption after a restart, a node going offline, and `/metrics` parsed as
//! Prometheus text. The real signals and sd_notify are covered once, in `daemon_process.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

use std::time::Duration;

use common::{ALPINE, Daemon, TestSim, write_config};
use reqwest::Method;
use serde_json::json;
use vztmpld::daemon::Control;

const ONE: &str = "interval: 1h\ntemplates:\n  - template: alpine-3.22\n";
const TWO: &str = "interval: 1h\ntemplates:\n  - template: alpine-3.22\n  - template: debian-13-standard\n";
const THREE: &str = "interval: 1h\ntemplates:\n  - template: alpine-3.22\n  - template: debian-13-standard\n  - template: ubuntu-24.04\n";

/// The config text for a set of templates, keeping the cluster part of an existing file.
fn with_templates(config: &std::path::Path, templates: &str) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    let cut = text.find("\ninterval:").unwrap();
    format!("{}\n{templates}", &text[..cut])
}

async fn all_cached(d: &Daemon, template: &str) -> bool {
    ["pve1", "pve2", "pve3"].iter().all(|node| d.state(node, template) == "cached")
}

async fn metrics(d: &Daemon) -> prometheus_parse::Scrape {
    let text = d.get("/metrics").await.expect("/metrics answers");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("/metrics parses as Prometheus text")
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.samples.iter().find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).map(
        |s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        },
    )
}

#[tokio::test]
async fn edits_by_rename_and_in_place_write_take_effect_and_bad_edits_are_rejected() {
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", ONE);
    let d = Daemon::start(&cfg).await;
    d.wait_for("the first pass", |d| async move { all_cached(d, "alpine-3.22").await }).await;
    assert_eq!(d.get("/readyz").await.as_deref(), Some("ready\n"));

    // An editor's save: write a temporary file, rename it over the config.
    let tmp = cfg.with_file_name(".vztmpld.yaml.swp");
    std::fs::write(&tmp, with_templates(&cfg, TWO)).unwrap();
    std::fs::rename(&tmp, &cfg).unwrap();
    let took = d.wait_for("the renamed config", |d| async move { all_cached(d, "debian-13-standard").await }).await;
    eprintln!("atomic rename → downloaded in {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");

    // `sed -i`-style in-place rewrite of the same inode.
    std::fs::write(&cfg, with_templates(&cfg, THREE)).unwrap();
    let took = d.wait_for("the rewritten config", |d| async move { all_cached(d, "ubuntu-24.04").await }).await;
    eprintln!("in-place write → downloaded in {took:?}");
    assert_eq!(d.status().await["config"]["generation"], 3);

    // An invalid edit: logged, counted, and the running config stays.
    std::fs::write(&cfg, with_templates(&cfg, "interval: soon\ntemplates: []\n")).unwrap();
    d.wait_for("the rejected reload", |d| async move {
        value(&metrics(d).await, "vztmpld_config_reloads_total", &[("outcome", "failure")]) == Some(1.0)
    })
    .await;
    let status = d.status().await;
    assert_eq!(status["config"]["generation"], 3);
    let error = status["config"]["last_reload_error"].as_str().unwrap();
    assert!(error.contains("vztmpld.yaml:") && error.contains("'soon' is not a duration"), "{error}");
    assert!(d.log().contains("configuration rejected, keeping the running one"));
    let m = metrics(&d).await;
    assert_eq!(value(&m, "vztmpld_config_generation", &[]), Some(3.0));
    assert_eq!(value(&m, "vztmpld_config_reloads_total", &[("outcome", "success")]), Some(2.0));
    assert!(d.get("/healthz").await.is_some(), "still running");

    // A forced reload (SIGHUP) re-reads (here: the fixed file) even without a file event.
    std::fs::write(&cfg, with_templates(&cfg, THREE)).unwrap();
    d.send(Control::Reload).await;
    d.wait_for("the SIGHUP reload", |d| async move { d.status().await["config"]["generation"] == 4 }).await;
    assert_eq!(sim.stats().await["downloads_started"], 3, "one download per spec, to the shared storage");
}

#[cfg(unix)]
#[tokio::test]
async fn a_configmap_style_symlink_swap_is_seen() {
    use std::os::unix::fs::symlink;
    let sim = TestSim::start().await;
    let base = write_config(&sim.server, "", ONE);
    let dir = base.parent().unwrap().to_path_buf();
    // Kubernetes: config.yaml -> ..data/config.yaml, ..data -> ..v1; an update swaps ..data atomically.
    std::fs::create_dir(dir.join("..v1")).unwrap();
    std::fs::write(dir.join("..v1/config.yaml"), std::fs::read_to_string(&base).unwrap()).unwrap();
    symlink("..v1", dir.join("..data")).unwrap();
    symlink("..data/config.yaml", dir.join("config.yaml")).unwrap();
    let cfg = dir.join("config.yaml");
    let d = Daemon::start(&cfg).await;
    d.wait_for("the first pass", |d| async move { all_cached(d, "alpine-3.22").await }).await;

    std::fs::create_dir(dir.join("..v2")).unwrap();
    std::fs::write(dir.join("..v2/config.yaml"), with_templates(&base, TWO)).unwrap();
    symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    let took = d.wait_for("the swapped config", |d| async move { all_cached(d, "debian-13-standard").await }).await;
    eprintln!("symlink swap → downloaded in {took:?}");
    assert_eq!(d.status().await["config"]["generation"], 2);
}

#[tokio::test]
async fn stop_during_a_download_returns_quickly_and_a_restart_adopts_the_task() {
    // 1 MiB at 200 kB/s: about five seconds of download.
    let sim = TestSim::with("bandwidth: 200000").await;
    let cfg = write_config(&sim.server, "nodes: [pve1]\n", ONE);
    let d = Daemon::start(&cfg).await;
    d.wait_for("a running download", |d| async move { d.state("pve1", "alpine-3.22") == "downloading" }).await;
    let shared = std::sync::Arc::clone(&d.shared);
    let took = d.stop().await;
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");
    eprintln!("stop → returned in {took:?}");
    let last = shared.read(|s| s.last_pass.clone()).unwrap();
    assert_eq!(last.outcome, vztmpld::daemon::status::PassOutcome::Interrupted);

    let d = Daemon::start(&cfg).await;
    d.wait_for("the adoption", |d| async move { d.log().contains("download adopted") }).await;
    // Adopted: the rest of the transfer need not take its slow course.
    sim.control(Method::POST, "settings", Some(json!({"bandwidth": 100_000_000}))).await;
    d.wait_for("the adopted download", |d| async move { d.state("pve1", "alpine-3.22") == "cached" }).await;
    let stats = sim.stats().await;
    assert_eq!(stats["downloads_started"], 1, "one download, not two: {stats}");
    assert_eq!(sim.volids("pve1", "shared").await, [format!("shared:vztmpl/{ALPINE}")]);
}

#[tokio::test]
async fn an_offline_node_degrades_only_itself_and_converges_when_back() {
    let sim = TestSim::with("storages: [{id: local, content: [vztmpl]}]").await;
    sim.control(Method::POST, "nodes/pve2", Some(json!({"online": false}))).await;
    let cfg = write_config(&sim.server, "", ONE);
    let d = Daemon::start(&cfg).await;
    d.wait_for("the first pass", |d| async move { d.status().await["ready"] == true }).await;
    let status = d.status().await;
    let nodes = status["clusters"][0]["nodes"].as_array().unwrap().clone();
    let cond = |name: &str, kind: &str| {
        let n = nodes.iter().find(|n| n["name"] == name).unwrap();
        n["conditions"].as_array().unwrap().iter().find(|c| c["type"] == kind).unwrap()["status"].clone()
    };
    assert_eq!(cond("pve2", "Degraded"), "True");
    assert_eq!(cond("pve1", "Degraded"), "False");
    assert_eq!(cond("pve3", "Ready"), "True");
    let pve2 = nodes.iter().find(|n| n["name"] == "pve2").unwrap();
    assert_eq!(pve2["templates"][0]["state"], "blocked");
    assert!(pve2["templates"][0]["error"].as_str().unwrap().contains("offline"));
    assert!(pve2["next_retry"].is_string(), "a retry is scheduled: {pve2}");
    let m = metrics(&d).await;
    assert_eq!(value(&m, "vztmpld_templates", &[("cluster", "lab"), ("state", "blocked")]), Some(1.0));
    assert_eq!(value(&m, "vztmpld_templates", &[("cluster", "lab"), ("state", "cached")]), Some(2.0));
    assert_eq!(value(&m, "vztmpld_nodes", &[("cluster", "lab"), ("ready", "false")]), Some(1.0));
    assert_eq!(value(&m, "vztmpld_nodes", &[("cluster", "lab"), ("ready", "true")]), Some(2.0));

    sim.control(Method::POST, "nodes/pve2", Some(json!({"online": true}))).await;
    let r = d.http.post(format!("http://{}/api/v1/reconcile", d.addr)).send().await.unwrap();
    assert_eq!(r.status(), 202);
    d.wait_for("pve2 to converge", |d| async move { d.state("pve2", "alpine-3.22") == "cached" }).await;
    let m = metrics(&d).await;
    assert_eq!(value(&m, "vztmpld_templates", &[("cluster", "lab"), ("state", "cached")]), Some(3.0));
    assert_eq!(
        value(&m, "vztmpld_templates", &[("cluster", "lab"), ("state", "blocked")]),
        None,
        "the blocked series is gone"
    );
    assert_eq!(value(&m, "vztmpld_nodes", &[("cluster", "lab"), ("ready", "false")]), Some(0.0));
    assert!(value(&m, "vztmpld_reconcile_total", &[("outcome", "converged")]).unwrap_or(0.0) >= 1.0);
    assert!(value(&m, "vztmpld_cache_lookups_total", &[("result", "hit")]).unwrap_or(0.0) >= 2.0);
    assert!(value(&m, "vztmpld_api_requests_total", &[("cluster", "lab"), ("code", "200")]).unwrap_or(0.0) > 0.0);
}

#[tokio::test]
async fn status_command_renders_the_table() {
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", ONE);
    let d = Daemon::start(&cfg).await;
    d.wait_for("the first pass", |d| async move { all_cached(d, "alpine-3.22").await }).await;
    let (code, out, err) = common::vztmpld_async(vec!["status".into(), "--addr".into(), d.addr.clone()]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("NODE") && out.contains("alpine-3.22") && out.contains("lab/pve2  ✓"), "{out}");
}

#[tokio::test]
async fn a_deleted_or_replaced_config_keeps_the_running_one_and_says_so_once() {
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", ONE);
    let good = std::fs::read_to_string(&cfg).unwrap();
    let d = Daemon::start(&cfg).await;
    d.wait_for("the first pass", |d| async move { all_cached(d, "alpine-3.22").await }).await;
    let readable = |d: &Daemon| {
        d.shared.read(|s| {
            s.conditions
                .iter()
                .find(|c| c.kind == vztmpld::daemon::status::ConditionType::ConfigReadable)
                .map(|c| (c.status == vztmpld::daemon::status::ConditionStatus::True, c.message.clone()))
        })
    };

    std::fs::remove_file(&cfg).unwrap();
    d.wait_for("the unreadable condition", |d| async move { readable(d).is_some_and(|(ok, _)| !ok) }).await;
    let (_, message) = readable(&d).unwrap();
    assert!(message.contains("vztmpld.yaml: cannot read the configuration"), "{message}");
    // A directory in its place: still the old config, and the log says it once per distinct reason.
    std::fs::create_dir(&cfg).unwrap();
    d.send(Control::ConfigChanged).await;
    d.wait_for("the directory noticed", |d| async move {
        readable(d).is_some_and(|(_, m)| m.contains("it is a directory"))
    })
    .await;
    for _ in 0..3 {
        d.send(Control::ConfigChanged).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(
        d.log().matches("it is a directory; give a regular file; keeping the running one").count(),
        1,
        "{}",
        d.log()
    );
    assert_eq!(d.shared.read(|s| s.config.generation), 1);
    assert!(d.get("/healthz").await.is_some());

    std::fs::remove_dir(&cfg).unwrap();
    std::fs::write(&cfg, good).unwrap();
    d.wait_for("readable again", |d| async move { readable(d).is_some_and(|(ok, _)| ok) }).await;
}

#[tokio::test]
async fn a_stalled_cluster_holds_back_only_itself() {
    use pve_sim::testing::{RawBehaviour, RawServer};
    // Headers, then silence: every GET to this cluster waits for its timeout, three times.
    let stall = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"data\":";
    let stuck = RawServer::start(RawBehaviour::Stall(stall.to_vec())).await;
    let sim = TestSim::start().await;
    let second = format!(
        "  - name: stuck\n    endpoints: [{}]\n    auth: {{token_id: \"vztmpld@pve!cache\", secret_file: lab.secret}}\n    tls: {{fingerprint: \"{}\"}}\n",
        stuck.endpoint, stuck.fingerprint
    );
    let cfg = write_config(&sim.server, "", &format!("{second}{ONE}"));
    let started = std::time::Instant::now();
    let d = Daemon::start(&cfg).await;
    d.wait_for("the healthy cluster's downloads", |d| async move { all_cached(d, "alpine-3.22").await }).await;
    let took = started.elapsed();
    assert!(d.shared.read(|s| s.pass_running), "the stalled cluster is still being observed");
    assert!(stuck.requests.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    eprintln!("healthy cluster converged in {took:?} while the other stalled");
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[tokio::test]
async fn the_status_server_refuses_cross_origin_writes_foreign_hosts_and_missing_tokens() {
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", ONE);
    let d = Daemon::start(&cfg).await;
    let url = |path: &str| format!("http://{}{path}", d.addr);
    let post = |origin: Option<&str>, site: Option<&str>| {
        let mut rb = d.http.post(url("/api/v1/reconcile"));
        if let Some(o) = origin {
            rb = rb.header("Origin", o);
        }
        if let Some(s) = site {
            rb = rb.header("Sec-Fetch-Site", s);
        }
        rb.send()
    };
    assert_eq!(post(Some("http://evil.example"), None).await.unwrap().status(), 403, "CSRF from a web page");
    assert_eq!(post(None, Some("cross-site")).await.unwrap().status(), 403);
    assert_eq!(post(Some(&format!("http://{}", d.addr)), None).await.unwrap().status(), 202, "same origin");
    assert_eq!(post(None, None).await.unwrap().status(), 202, "curl sends no Origin");
    // DNS rebinding: a foreign name resolving to 127.0.0.1 gets nothing.
    let r = d.http.get(url("/api/v1/status")).header("Host", "evil.example").send().await.unwrap();
    assert_eq!(r.status(), 421);
    let r = d
        .http
        .get(url("/api/v1/status"))
        .header("Host", format!("localhost:{}", d.addr.rsplit(':').next().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(d);

    // With a token: everything but the probes needs it.
    let dir = cfg.parent().unwrap();
    std::fs::write(dir.join("status.token"), "s3cr3t-status-token\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("status.token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("server: {{token_file: status.token}}\n{text}")).unwrap();
    let d = Daemon::start(&cfg).await;
    assert_eq!(d.http.get(format!("http://{}/healthz", d.addr)).send().await.unwrap().status(), 200);
    assert_eq!(d.http.get(format!("http://{}/api/v1/status", d.addr)).send().await.unwrap().status(), 401);
    let wrong = d.http.get(format!("http://{}/metrics", d.addr)).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let right =
        d.http.get(format!("http://{}/api/v1/status", d.addr)).bearer_auth("s3cr3t-status-token").send().await.unwrap();
    assert_eq!(right.status(), 200);
    let args = vec![
        "status".to_string(),
        "--addr".into(),
        d.addr.clone(),
        "--token-file".into(),
        dir.join("status.token").display().to_string(),
    ];
    d.wait_for("the first pass", |d| async move { all_cached(d, "alpine-3.22").await }).await;
    let (code, out, err) = common::vztmpld_async(args).await;
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test]
async fn two_daemons_on_one_cluster_start_at_most_one_duplicate() {
    let sim = TestSim::start().await;
    // Two writers with the same configuration, started together: each re-checks the node's tasks and the
    // storage right before every start, after a pause of up to one poll interval.
    let cfg_a = write_config(&sim.server, "", THREE);
    let cfg_b = write_config(&sim.server, "", THREE);
    for cfg in [&cfg_a, &cfg_b] {
        let text = std::fs::read_to_string(cfg).unwrap().replace("poll_interval: 100ms", "poll_interval: 1s");
        std::fs::write(cfg, text).unwrap();
    }
    let a = Daemon::start(&cfg_a).await;
    let b = Daemon::start(&cfg_b).await;
    for d in [&a, &b] {
        for t in ["alpine-3.22", "debian-13-standard", "ubuntu-24.04"] {
            d.wait_for("convergence", |d| async move { all_cached(d, t).await }).await;
        }
    }
    let started = sim.stats().await["downloads_started"].as_u64().unwrap();
    eprintln!("two daemons, 3 templates to a shared storage: {started} downloads started");
    assert!(started <= 4, "at most one duplicate: {started} started");
    assert_eq!(sim.volids("pve1", "shared").await.len(), 3);
}

#[tokio::test]
async fn a_large_reload_is_validated_off_the_loop() {
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", ONE);
    let d = Daemon::start(&cfg).await;
    d.wait_for("the first pass", |d| async move { all_cached(d, "alpine-3.22").await }).await;
    // A 3.5 MB edit that validation rejects only at its end: parsing it takes a while.
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    for i in 0..9_000 {
        text.push_str(&format!(
            "  - {{template: alpine-3.{i}, clusters: [lab], nodes: [pve1, pve2, pve3]}} # {}\n",
            "p".repeat(300)
        ));
    }
    text.push_str("bogus_key: 1\n");
    std::fs::write(&cfg, &text).unwrap();
    d.send(Control::Reload).await;
    d.send(Control::Reconcile(vztmpld::daemon::Trigger::Api)).await;
    // The loop answers the request while the file is still being read and validated.
    let mut seen = None;
    for _ in 0..20_000 {
        let (trigger, generation, rejected) = d.shared.read(|s| {
            (s.last_pass.as_ref().map(|p| p.trigger), s.config.generation, s.config.last_reload_error.is_some())
        });
        if trigger == Some(vztmpld::daemon::Trigger::Api) {
            seen = Some(rejected);
            assert_eq!(generation, 1);
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(seen, Some(false), "the api pass started before the reload was judged");
    d.wait_for("the rejection", |d| async move { d.shared.read(|s| s.config.last_reload_error.is_some()) }).await;
    assert!(d.shared.read(|s| s.config.last_reload_error.clone()).unwrap().contains("bogus_key"));
}

#[tokio::test]
async fn a_steady_pass_logs_one_line_per_cluster_and_changes_are_logged() {
    let nodes: String = (1..=20).map(|i| format!("{{name: pve{i}}}, ")).collect();
    let sim = TestSim::with(&format!("nodes: [{}]", nodes.trim_end_matches(", "))).await;
    let cfg = write_config(&sim.server, "", TWO);
    let d = Daemon::start(&cfg).await;
    let converged =
        |d: &Daemon| d.shared.read(|s| s.ready && s.all_cached() && !s.pass_running && s.clusters[0].nodes.len() == 20);
    d.wait_for("the first pass", |d| async move { converged(d) }).await;
    let info_lines = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains("vztmpld") && (l.contains(" INFO ") || l.contains(" WARN ")))
            .map(String::from)
            .collect()
    };
    assert_eq!(info_lines(&d.log()).iter().filter(|l| l.contains("CACHE MISS")).count(), 40, "every item at start");

    // Steady passes: one summary per cluster, and the pass line. The first all-cached plan is kept; the next
    // pass, observing the same, reuses it.
    let stands = |log: &str| log.matches("nothing changed since the last pass").count();
    for reused in [0, 1] {
        let before = info_lines(&d.log()).len();
        d.send(Control::Reconcile(vztmpld::daemon::Trigger::Api)).await;
        d.wait_for("the steady pass", |d| async move {
            info_lines(&d.log()).len() > before
                && info_lines(&d.log()).last().is_some_and(|l| l.contains("reconcile pass finished"))
        })
        .await;
        let steady: Vec<String> = info_lines(&d.log())[before..].to_vec();
        assert_eq!(steady.len(), 2, "one line per cluster plus the pass: {steady:#?}");
        assert!(steady[0].contains("cluster reconciled") && steady[0].contains("cached=40"), "{steady:#?}");
        assert_eq!(stands(&d.log()), reused, "the second steady pass reuses the plan");
    }
    assert!(d.shared.read(|s| s.ready && s.all_cached() && s.clusters[0].nodes.len() == 20), "status kept");

    // A template disappears from the shared storage: its misses are logged, once.
    let volid = format!("shared:vztmpl/{ALPINE}");
    let a = sim.delete(&format!("/nodes/pve1/storage/shared/content/{}", common::encode(&volid))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let before = info_lines(&d.log()).len();
    d.send(Control::Reconcile(vztmpld::daemon::Trigger::Api)).await;
    d.wait_for("the repair", |d| async move {
        info_lines(&d.log())[before..].iter().any(|l| l.contains("reconcile pass finished"))
    })
    .await;
    let changed: Vec<String> = info_lines(&d.log())[before..].to_vec();
    assert_eq!(
        changed.iter().filter(|l| l.contains("CACHE MISS") && l.contains("alpine-3.22")).count(),
        20,
        "{changed:#?}"
    );
    assert!(!changed.iter().any(|l| l.contains("CACHE HIT") && l.contains("debian")), "unchanged items stay quiet");
    assert_eq!(stands(&d.log()), 1, "a changed listing is planned again");
    let downloaded = |d: &Daemon| d.shared.read(|s| s.all_cached() && !s.pass_running);
    d.wait_for("the file back", |d| async move { downloaded(d) }).await;
    assert_eq!(sim.stats().await["downloads_started"], 3, "the missing file was downloaded again");
}

#[tokio::test]
async fn status_shows_queued_then_moving_percentages_with_rate_and_eta() {
    // 64 MiB at 64 MB/s: wget logs one progress line (at 32 MiB); the rest is interpolated from its rate.
    let sim = TestSim::with("default_template_size: 67108864\nbandwidth: 64000000").await;
    let cfg = write_config(&sim.server, "max_parallel_downloads: 1\n", TWO);
    let d = Daemon::start(&cfg).await;
    let mut seen_queued = false;
    let mut percents = std::collections::BTreeSet::new();
    let mut with_rate = false;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let (queued, downloading, done) = d.shared.read(|s| {
            let ts: Vec<_> = s.templates().cloned().collect();
            let queued = ts.iter().any(|t| t.state == vztmpld::daemon::status::TemplateState::Queued);
            let downloading: Vec<_> = ts
                .iter()
                .filter(|t| t.state == vztmpld::daemon::status::TemplateState::Downloading)
                .map(|t| t.detail())
                .map(|d| (d.progress, d.rate_bytes_per_second, d.eta_seconds, d.bytes_total))
                .collect();
            (queued, downloading, s.ready && s.all_cached())
        });
        seen_queued |= queued;
        for (pct, rate, eta, total) in downloading {
            if let Some(p) = pct.filter(|p| (1..100).contains(p)) {
                percents.insert(p);
                assert_eq!(total, Some(67_108_864));
            }
            with_rate |= rate.is_some() && eta.is_some();
        }
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("intermediate percentages seen: {percents:?}");
    assert!(seen_queued, "the second download waited for the cluster's only slot as `queued`");
    // Two distinct values between 1 and 99 show the bar moving between wget's lines (there is one, at 50 %); a
    // busy machine samples the one-second download only a few times, so more is not required.
    assert!(percents.len() >= 2, "moving between wget's lines: {percents:?}");
    assert!(with_rate, "rate and ETA shown while downloading");
    // The simulator's log stays wget's: one line per 32 MiB, not finer.
    let log = d.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn the_served_status_is_the_snapshot_cluster_by_cluster() {
    let sim = TestSim::start().await;
    // A second cluster over the same simulator, so the served list holds more than one view.
    let second = format!(
        "  - name: second\n    endpoints: [{}]\n    auth: {{token_id: \"{}\", secret_file: lab.secret}}\n    tls: {{fingerprint: \"{}\"}}\n",
        sim.server.endpoint, sim.server.token_id, sim.server.fingerprint
    );
    let cfg = write_config(&sim.server, "", &format!("{second}{ONE}"));
    let d = Daemon::start(&cfg).await;
    d.wait_for("both clusters converged", |d| async move {
        d.shared.read(|s| s.ready && !s.pass_running && s.all_cached() && s.clusters.len() == 2)
    })
    .await;
    let served = d.status().await;
    let held = d.shared.read(|s| serde_json::to_value(s).unwrap());
    assert_eq!(served["clusters"].as_array().map(Vec::len), Some(2), "{served}");
    assert_eq!(served, held, "the streamed document is the snapshot, byte for byte in meaning");
    d.stop().await;
}
