//! High availability against a real etcd (Debian's `etcd-server`) and the simulator: two daemons as real
//! processes elect one leader; kill -9, SIGTERM and an etcd outage hand over without a duplicate download.
//! Skipped with a printed reason when no `etcd` binary exists, unless `VZTMPLD_REQUIRE_ETCD=1` (CI).
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::{TestSim, write_config};
use reqwest::Method;
use serde_json::{Value, json};

const THREE: &str = "  - template: alpine-3.22\n  - template: debian-13-standard\n  - template: ubuntu-24.04\n";

/// The `ha` section for a test's etcd; `extra` goes under `etcd:`.
fn ha(etcd: &Etcd, test: &str, extra: &str) -> String {
    format!(
        "ha:\n  etcd:\n    endpoints: [{}]\n    prefix: /vztmpld/{test}/\n    lease_ttl: 3s\n{extra}",
        etcd.endpoint()
    )
}

/// `vztmpld run` as a real process (kill -9 and SIGTERM need one), its log in a file.
struct Proc {
    child: Child,
    log: PathBuf,
    addr: String,
    http: reqwest::Client,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    async fn spawn(config: &Path, name: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let log = config.parent().unwrap().join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_vztmpld"))
            .args(["--log-level", "debug", "run", "-c"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
        let mut p = Self { child, log, addr: String::new(), http };
        let start = Instant::now();
        while p.addr.is_empty() {
            let text = p.log();
            if let Some(rest) = text.split("status at http://").nth(1) {
                p.addr = rest.split('/').next().unwrap().to_string();
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{name} did not start:\n{text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> (u16, String) {
        match self.http.get(format!("http://{}{path}", self.addr)).send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }

    async fn status(&self) -> Value {
        serde_json::from_str(&self.get("/api/v1/status").await.1).unwrap_or(Value::Null)
    }

    async fn role(&self) -> String {
        self.status().await["ha"]["role"].as_str().unwrap_or_default().to_string()
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }
}

/// Every (node, template) in the status is cached, and there are `n` of them.
fn all_cached(status: &Value, n: usize) -> bool {
    let states: Vec<&str> = status["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["nodes"].as_array().into_iter().flatten())
        .flat_map(|n| n["templates"].as_array().into_iter().flatten())
        .map(|t| t["state"].as_str().unwrap_or_default())
        .collect();
    states.len() == n && states.iter().all(|s| *s == "cached")
}

/// Polls `check` every 50 ms for up to `limit`; how long it took.
async fn wait_until<F, Fut>(what: &str, limit: Duration, logs: &[&Proc], check: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs: Vec<String> = logs.iter().map(|p| p.log()).collect();
    panic!("timed out after {limit:?} waiting for {what}; logs:\n{}", logs.join("\n-----\n"));
}

/// Which of two daemons leads, once one does and the other stands by.
async fn leader_and_standby<'a>(a: &'a Proc, b: &'a Proc) -> (&'a Proc, &'a Proc) {
    wait_until("one leader and one standby", Duration::from_secs(20), &[a, b], || async {
        let (ra, rb) = (a.role().await, b.role().await);
        (ra == "leader" && rb == "standby") || (ra == "standby" && rb == "leader")
    })
    .await;
    if a.role().await == "leader" { (a, b) } else { (b, a) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_elect_one_leader_and_download_exactly_the_floor() {
    let Some(etcd) = Etcd::launch("two_daemons_elect_one_leader_and_download_exactly_the_floor") else { return };
    let sim = TestSim::start().await;
    let rest = format!("interval: 1h\n{}templates:\n{THREE}", ha(&etcd, "floor", ""));
    let cfg = write_config(&sim.server, "storage: local\n", &rest);
    let (a, b) = (Proc::spawn(&cfg, "a").await, Proc::spawn(&cfg, "b").await);
    let (leader, standby) = leader_and_standby(&a, &b).await;
    wait_until("3 nodes × 3 templates cached", Duration::from_secs(30), &[leader], || async {
        all_cached(&leader.status().await, 9)
    })
    .await;
    // The standby had time to do something wrong while the leader downloaded; give it one more poll.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats = sim.stats().await;
    assert_eq!(stats["downloads_started"], 9, "exactly one download per node and template: {stats}");

    let (ls, ss) = (leader.status().await, standby.status().await);
    assert_eq!(ss["ha"]["role"], "standby");
    assert_eq!(ss["ha"]["leader"]["id"], ls["ha"]["id"], "the standby names the leader");
    assert_eq!(ss["ha"]["leader"]["status_url"], format!("http://{}", leader.addr), "and where its status is");
    assert!(ss["last_pass"].is_null(), "the standby ran no pass: {ss}");
    assert_eq!(ls["ha"]["elections"], 1);
    assert_eq!(leader.get("/readyz").await.0, 200);
    let (code, text) = standby.get("/readyz").await;
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("standby") && text.contains(ls["ha"]["id"].as_str().unwrap()), "{text}");
    assert!(leader.get("/metrics").await.1.contains("vztmpld_leader 1"));
    let (code, out, err) = common::vztmpld_async(vec!["status".into(), "--addr".into(), standby.addr.clone()]).await;
    assert_eq!(code, 1, "a standby is not ready, as /readyz says: {err}");
    let leads = format!("{} leads since", ls["ha"]["id"].as_str().unwrap());
    assert!(out.contains("ha: standby (") && out.contains(&leads) && out.contains(&leader.addr), "{out}");
    let metrics = standby.get("/metrics").await.1;
    assert!(metrics.contains("vztmpld_leader 0") && metrics.contains("vztmpld_ha_elections_total 0"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_its_download_adopted() {
    let Some(etcd) = Etcd::launch("a_killed_leader_is_replaced_and_its_download_adopted") else { return };
    // 1 MiB at 200 kB/s: about five seconds of download.
    let sim = TestSim::with("bandwidth: 200000").await;
    let rest = |templates: &str| format!("interval: 1h\n{}templates:\n{templates}", ha(&etcd, "kill", ""));
    let cfg = write_config(&sim.server, "nodes: [pve1]\n", &rest("  - template: alpine-3.22\n"));
    let a = Proc::spawn(&cfg, "a").await;
    wait_until("a leads", Duration::from_secs(20), &[&a], || async { a.role().await == "leader" }).await;
    let b = Proc::spawn(&cfg, "b").await;
    wait_until("b stands by", Duration::from_secs(20), &[&b], || async { b.role().await == "standby" }).await;
    wait_until("a's download runs", Duration::from_secs(20), &[&a], || async {
        sim.stats().await["downloads_started"] == 1
    })
    .await;

    let mut a = a;
    a.child.kill().unwrap();
    let _ = a.child.wait();
    let took =
        wait_until("b takes over", Duration::from_secs(15), &[&b], || async { b.role().await == "leader" }).await;
    eprintln!("kill -9 of the leader → standby leads after {took:?} (lease_ttl 3s, poll 1s)");
    assert!(took < Duration::from_secs(3 + 3), "within lease_ttl + a few seconds: {took:?}");
    wait_until("b adopts the running download", Duration::from_secs(15), &[&b], || async {
        b.log().contains("download adopted")
    })
    .await;
    sim.control(Method::POST, "settings", Some(json!({"bandwidth": 100_000_000}))).await;
    wait_until("the adopted download finishes", Duration::from_secs(20), &[&b], || async {
        all_cached(&b.status().await, 1)
    })
    .await;
    assert_eq!(sim.stats().await["downloads_started"], 1, "one download, not two");

    // The new leader follows the configuration: a template added now is downloaded, once.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let two =
        text.replace("  - template: alpine-3.22\n", "  - template: alpine-3.22\n  - template: debian-13-standard\n");
    std::fs::write(&cfg, two).unwrap();
    wait_until("the added template is cached", Duration::from_secs(30), &[&b], || async {
        all_cached(&b.status().await, 2)
    })
    .await;
    assert_eq!(sim.stats().await["downloads_started"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_etcd_starts_nothing_until_it_returns() {
    let Some(mut etcd) = Etcd::launch("a_leader_that_loses_etcd_starts_nothing_until_it_returns") else { return };
    let sim = TestSim::with("bandwidth: 200000").await;
    // One download at a time on one node: a queue of three, the first about five seconds long.
    let rest = format!("interval: 1h\n{}templates:\n{THREE}", ha(&etcd, "outage", ""));
    let cfg = write_config(&sim.server, "nodes: [pve1]\nstorage: local\nmax_parallel_downloads: 1\n", &rest);
    let a = Proc::spawn(&cfg, "a").await;
    wait_until("the first download runs", Duration::from_secs(20), &[&a], || async {
        sim.stats().await["downloads_started"] == 1
    })
    .await;
    etcd.stop();
    wait_until("the leader gives up its role", Duration::from_secs(10), &[&a], || async {
        a.role().await == "connecting"
    })
    .await;
    // The queue would move on now: the first download ends at once.
    sim.control(Method::POST, "settings", Some(json!({"bandwidth": 100_000_000}))).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = a.status().await;
    assert_eq!(sim.stats().await["downloads_started"], 1, "no start without the lease; log:\n{}", a.log());
    assert!(status["ha"]["etcd_error"].as_str().is_some_and(|e| e.contains("unreachable")), "{status}");
    assert_eq!(a.get("/readyz").await.0, 503);

    etcd.start();
    wait_until("all three cached after etcd returns", Duration::from_secs(40), &[&a], || async {
        all_cached(&a.status().await, 3)
    })
    .await;
    assert_eq!(sim.stats().await["downloads_started"], 3, "each once");
    assert_eq!(a.role().await, "leader");
    assert!(a.status().await["ha"]["lease_losses"].as_u64() >= Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_leader_hands_over_within_two_seconds() {
    let Some(etcd) = Etcd::launch("sigterm_on_the_leader_hands_over_within_two_seconds") else { return };
    let sim = TestSim::start().await;
    // The default poll (1 s) and a long TTL: only the resignation can make the handover fast.
    let rest = format!(
        "interval: 1h\n{}templates:\n  - template: alpine-3.22\n",
        ha(&etcd, "term", "").replace("lease_ttl: 3s", "lease_ttl: 30s")
    );
    let cfg = write_config(&sim.server, "", &rest);
    let a = Proc::spawn(&cfg, "a").await;
    wait_until("a leads", Duration::from_secs(20), &[&a], || async { a.role().await == "leader" }).await;
    let b = Proc::spawn(&cfg, "b").await;
    wait_until("b stands by", Duration::from_secs(20), &[&b], || async { b.role().await == "standby" }).await;
    a.signal("TERM");
    let took = wait_until("b leads", Duration::from_secs(10), &[&a, &b], || async { b.role().await == "leader" }).await;
    eprintln!("SIGTERM on the leader → standby leads after {took:?}");
    assert!(took < Duration::from_secs(2), "handover in under 2 s: {took:?}");
    let mut a = a;
    let status = a.child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", a.log());
    assert!(a.log().contains("resigned"), "{}", a.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_at_start_means_no_pass_until_it_answers() {
    let Some(mut etcd) = Etcd::prepare("etcd_down_at_start_means_no_pass_until_it_answers") else { return };
    let sim = TestSim::start().await;
    let rest = format!("interval: 1h\n{}templates:\n  - template: alpine-3.22\n", ha(&etcd, "down", ""));
    let cfg = write_config(&sim.server, "", &rest);
    let a = Proc::spawn(&cfg, "a").await;
    wait_until("status says etcd is unreachable", Duration::from_secs(10), &[&a], || async {
        let s = a.status().await;
        s["ha"]["role"] == "connecting" && s["ha"]["etcd_error"].as_str().is_some_and(|e| e.contains("unreachable"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = a.status().await;
    assert!(s["last_pass"].is_null() && !s["pass_running"].as_bool().unwrap(), "no pass without the lease: {s}");
    assert!(s["ha"]["retry_at"].is_string(), "{s}");
    assert_eq!(sim.stats().await["downloads_started"], 0);
    etcd.start();
    wait_until("converged once etcd answers", Duration::from_secs(40), &[&a], || async {
        all_cached(&a.status().await, 3)
    })
    .await;
    assert!(a.status().await["ha"]["etcd_error"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shut_gate_starts_nothing() {
    // The fence itself, without etcd: a pass whose gate is shut plans and observes but starts nothing.
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", "templates:\n  - template: alpine-3.22\n");
    let config = vztmpld::config::load(&cfg).unwrap();
    let mut fleet = vztmpld::reconcile::Fleet::new(config, common::fast_options()).unwrap();
    fleet.gate = vztmpld::reconcile::StartGate::new(|| Err(vztmpld::reconcile::Fenced::NotLeader));
    let plan = fleet.plan().await;
    assert_eq!(plan.downloads.len(), 1);
    let outcomes = vztmpld::reconcile::apply::apply(&fleet, &plan, None).await;
    match &outcomes[..] {
        [vztmpld::reconcile::Outcome::Failed { failure, upid: None }] => {
            assert_eq!(*failure, vztmpld::reconcile::Failure::Fenced(vztmpld::reconcile::Fenced::NotLeader));
            assert!(failure.retryable());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.stats().await["downloads_started"], 0);
}

/// A client of the test's etcd with its client certificate, to set users up as an operator would.
fn operator_client(tls: &common::etcd::TlsFiles) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&tls.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(&tls.client_cert).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(&tls.client_key).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    reqwest::Client::builder().tls_backend_preconfigured(config).no_proxy().build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_certificates_and_etcd_users_work() {
    use base64::Engine;
    let Some(mut etcd) = Etcd::prepare_tls("tls_client_certificates_and_etcd_users_work") else { return };
    etcd.start();
    let tls = etcd.tls.as_ref().unwrap();
    // What README tells an operator to do: a user whose role may write only under the election's prefix.
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let operator = operator_client(tls);
    let steps = [
        ("/v3/auth/user/add", json!({"name": "root", "password": "root-pw"})),
        ("/v3/auth/user/grant", json!({"user": "root", "role": "root"})),
        ("/v3/auth/role/add", json!({"name": "vztmpld"})),
        (
            "/v3/auth/role/grant",
            json!({"name": "vztmpld", "perm": {"permType": "READWRITE", "key": b64("/vztmpld/tls/"), "range_end": b64("/vztmpld/tls0")}}),
        ),
        ("/v3/auth/user/add", json!({"name": "vztmpld", "password": "daemon-pw"})),
        ("/v3/auth/user/grant", json!({"user": "vztmpld", "role": "vztmpld"})),
        ("/v3/auth/enable", json!({})),
    ];
    for (path, body) in steps {
        let mut answer = None;
        // etcd may still be electing itself right after start.
        for _ in 0..100 {
            match operator.post(format!("{}{path}", etcd.endpoint())).json(&body).send().await {
                Ok(r) if r.status().is_success() => {
                    answer = Some(r);
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        assert!(answer.is_some(), "{path} failed; etcd log:\n{}", etcd.log());
    }

    let sim = TestSim::start().await;
    let dir = common::temp_dir("ha-tls");
    std::fs::write(dir.join("etcd.password"), "daemon-pw\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("etcd.password"), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let extra = format!(
        "    tls: {{ ca_file: {}, cert_file: {}, key_file: {} }}\n    auth: {{ username: vztmpld, password_file: {} }}\n",
        tls.ca.display(),
        tls.client_cert.display(),
        tls.client_key.display(),
        dir.join("etcd.password").display()
    );
    let rest = format!("interval: 1h\n{}templates:\n  - template: alpine-3.22\n", ha(&etcd, "tls", &extra));
    let cfg = write_config(&sim.server, "", &rest);
    let a = Proc::spawn(&cfg, "a").await;
    wait_until("converged as leader over TLS with a password", Duration::from_secs(30), &[&a], || async {
        let s = a.status().await;
        s["ha"]["role"] == "leader" && all_cached(&s, 3)
    })
    .await;
    assert!(!a.log().contains("daemon-pw"), "no secret in the log");
    assert!(!a.status().await.to_string().contains("daemon-pw"), "no secret in the status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_apply_runs_only_as_the_leader() {
    let Some(etcd) = Etcd::launch("a_one_shot_apply_runs_only_as_the_leader") else { return };
    let sim = TestSim::start().await;
    let rest = format!("interval: 1h\n{}templates:\n  - template: alpine-3.22\n", ha(&etcd, "apply", ""));
    let cfg = write_config(&sim.server, "", &rest);
    let apply = || common::vztmpld_async(vec!["apply".into(), "-c".into(), cfg.display().to_string()]);

    // Alone, apply leads for its run, converges, and resigns: a daemon started next leads at once.
    let (code, _, err) = apply().await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sim.stats().await["downloads_started"], 1);
    let a = Proc::spawn(&cfg, "a").await;
    let took =
        wait_until("the daemon leads", Duration::from_secs(10), &[&a], || async { a.role().await == "leader" }).await;
    assert!(took < Duration::from_secs(3), "apply resigned; no wait for its lease: {took:?}");

    // With a daemon leading, apply refuses and starts nothing.
    let volid = common::encode("shared:vztmpl/alpine-3.22-default_20250617_amd64.tar.xz");
    assert!(sim.delete(&format!("/nodes/pve1/storage/shared/content/{volid}")).await.status.is_success());
    let (code, _, err) = apply().await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("leads the clusters under /vztmpld/apply/") && err.contains(&a.addr), "{err}");
    assert_eq!(sim.stats().await["downloads_started"], 1, "nothing started by the refused apply");
}
