//! The state directory: what the daemon learned survives a reload and a restart (learned pins, the verify
//! ledger, the inventory), a changed anchor drops the pins learned under it, and a bad or unwritable state
//! directory costs a warning or a condition — never a start, never a pass.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

use std::path::{Path, PathBuf};

use common::{Daemon, TestSim, temp_dir};
use reqwest::Method;
use serde_json::json;
use vztmpld::daemon::Control;

/// A configuration for the simulator's pve1 and pve2 endpoints, pinned to `pin` only (per-node certificates:
/// pve2 is trusted only once learned), with `templates`.
fn config(sim: &TestSim, dir: &Path, pin: &str, templates: &[&str]) -> PathBuf {
    std::fs::write(dir.join("lab.secret"), &sim.server.token_secret).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("lab.secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let endpoints: Vec<&str> = sim.server.nodes[..2].iter().map(|n| n.endpoint.as_str()).collect();
    let templates: String = templates.iter().map(|t| format!("  - template: {t}\n")).collect();
    let text = format!(
        "downloads:\n  poll_interval: 100ms\nclusters:\n  - name: lab\n    endpoints: [{}]\n    auth:\n      token_id: \"{}\"\n      secret_file: lab.secret\n    tls:\n      fingerprint: \"{pin}\"\ntemplates:\n{templates}",
        endpoints.join(", "),
        sim.server.token_id,
    );
    let path = dir.join("vztmpld.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn endpoint(sim: &TestSim, node: &str, up: bool) {
    let a = sim.control(Method::POST, &format!("endpoints/{node}"), Some(json!({"up": up}))).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

/// Every node shows `template` cached.
async fn converged(d: &Daemon, template: &str) {
    d.wait_for(&format!("{template} cached on every node"), |d| async move {
        let nodes: Vec<String> =
            d.shared.read(|s| s.clusters.iter().flat_map(|c| &c.nodes).map(|n| n.name.as_str().to_string()).collect());
        !nodes.is_empty() && nodes.iter().all(|n| d.state(n, template) == "cached")
    })
    .await;
}

/// The learned pins on disk.
fn saved_pins(state: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(state.join("pins.json")).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

#[tokio::test]
async fn learned_pins_carry_a_reload_and_a_restart_through_a_dead_pinned_node() {
    let sim = TestSim::start().await;
    let dir = temp_dir("state-pins");
    let state = dir.join("state");
    let pve1 = sim.server.nodes[0].fingerprint.clone();
    let cfg = config(&sim, &dir, &pve1, &["alpine-3.22"]);

    let d = Daemon::start_with(&cfg, Some(&state)).await;
    converged(&d, "alpine-3.22").await;
    d.send(Control::Reconcile(vztmpld::daemon::Trigger::Api)).await;
    d.wait_for("the learned pins saved", |_| {
        let state = state.clone();
        async move { saved_pins(&state)["data"]["clusters"]["lab"]["learned"]["pve2"].is_object() }
    })
    .await;
    let pins = saved_pins(&state);
    assert_eq!(pins["version"], 1, "{pins}");
    assert_eq!(pins["data"]["clusters"]["lab"]["anchors"][0], pve1.as_str(), "under which anchor: {pins}");
    assert_eq!(pins["data"]["clusters"]["lab"]["learned"]["pve2"]["fingerprint"], sim.server.nodes[1].fingerprint);

    // The pinned node dies, then the admin adds a template: the reload keeps the learned pins (same anchor),
    // and the cluster converges through pve2.
    endpoint(&sim, "pve1", false).await;
    config(&sim, &dir, &pve1, &["alpine-3.22", "debian-12"]);
    d.send(Control::Reload).await;
    converged(&d, "debian-12").await;
    assert!(!d.log().contains("is not pinned"), "{}", d.log());
    d.stop().await;

    // A restart with the pinned node still down: the pins come back from the state directory.
    config(&sim, &dir, &pve1, &["alpine-3.22", "debian-12", "ubuntu-24.04"]);
    let d = Daemon::start_with(&cfg, Some(&state)).await;
    converged(&d, "ubuntu-24.04").await;
    assert!(d.log().contains("restored the learned node certificate fingerprints"), "{}", d.log());
    assert!(!d.log().contains("is not pinned"), "{}", d.log());
    d.stop().await;
}

#[tokio::test]
async fn a_changed_pin_drops_the_pins_learned_under_the_old_one() {
    let sim = TestSim::start().await;
    let dir = temp_dir("state-anchor");
    let state = dir.join("state");
    let cfg = config(&sim, &dir, &sim.server.nodes[0].fingerprint, &["alpine-3.22"]);
    let d = Daemon::start_with(&cfg, Some(&state)).await;
    converged(&d, "alpine-3.22").await;
    d.stop().await;
    assert!(saved_pins(&state)["data"]["clusters"]["lab"]["learned"]["pve2"].is_object());

    // The anchor is now pve3's certificate (not an endpoint): pve2's learned pin was vouched for by pve1's
    // pin, which is gone, so with pve1 down nothing the daemon can reach is trusted.
    endpoint(&sim, "pve1", false).await;
    config(&sim, &dir, &sim.server.nodes[2].fingerprint, &["alpine-3.22"]);
    let d = Daemon::start_with(&cfg, Some(&state)).await;
    d.wait_for("the cluster refused for an unpinned certificate", |d| async move { d.log().contains("is not pinned") })
        .await;
    let log = d.log();
    assert!(log.contains("pinned fingerprints changed"), "{log}");
    assert!(log.contains(&sim.server.nodes[1].fingerprint), "shows what pve2 presented: {log}");
    d.stop().await;
    let pins = saved_pins(&state);
    assert!(pins["data"]["clusters"]["lab"].is_null(), "nothing learned under the new anchor yet: {pins}");
}

#[tokio::test]
async fn unusable_state_files_cost_a_warning_each_and_the_daemon_starts_afresh() {
    let sim = TestSim::start().await;
    let dir = temp_dir("state-bad");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("pins.json"), b"\x00garbage").unwrap();
    std::fs::write(state.join("inventory.json"), br#"{"format":"vztmpld-state","part":"inventory.json","ver"#).unwrap();
    std::fs::write(
        state.join("ledger.json"),
        br#"{"format":"vztmpld-state","part":"ledger.json","version":99,"saved_at":"2026-01-01T00:00:00Z","data":{}}"#,
    )
    .unwrap();
    let cfg = config(&sim, &dir, &sim.server.nodes[0].fingerprint, &["alpine-3.22"]);
    let d = Daemon::start_with(&cfg, Some(&state)).await;
    converged(&d, "alpine-3.22").await;
    let log = d.log();
    for file in ["pins.json", "inventory.json", "ledger.json"] {
        let path = state.join(file).display().to_string();
        assert_eq!(log.matches(&format!("{path}: ")).count(), 1, "one warning naming {path}:\n{log}");
        assert!(state.join(format!("{file}.bad")).exists(), "{file} kept aside");
    }
    assert!(log.contains("written by a newer vztmpld (layout 99"), "{log}");
    d.send(Control::Reconcile(vztmpld::daemon::Trigger::Api)).await;
    d.wait_for("a fresh inventory saved", |_| {
        let state = state.clone();
        async move {
            let text = std::fs::read_to_string(state.join("inventory.json")).unwrap_or_default();
            text.contains("alpine-3.22")
        }
    })
    .await;
    d.stop().await;
}

#[tokio::test]
async fn an_unwritable_state_directory_is_a_condition_and_the_daemon_runs_on() {
    let sim = TestSim::start().await;
    let dir = temp_dir("state-ro");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    // A directory where the inventory's temporary file goes: every write of it fails, even for root (as on a
    // read-only or full file system).
    std::fs::create_dir(state.join(".inventory.json.tmp")).unwrap();
    let cfg = config(&sim, &dir, &sim.server.nodes[0].fingerprint, &["alpine-3.22"]);
    let d = Daemon::start_with(&cfg, Some(&state)).await;
    converged(&d, "alpine-3.22").await;
    let condition = |d: &Daemon| {
        d.shared.read(|s| {
            s.conditions
                .iter()
                .find(|c| c.kind == vztmpld::daemon::status::ConditionType::StatePersisted)
                .map(|c| (c.status == vztmpld::daemon::status::ConditionStatus::True, c.message.clone()))
        })
    };
    d.wait_for("StatePersisted=False", |d| async move { condition(d).is_some_and(|(ok, _)| !ok) }).await;
    let (_, message) = condition(&d).unwrap();
    assert!(message.contains("inventory.json: cannot write"), "{message}");
    let status = d.status().await;
    let wire = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "StatePersisted").cloned();
    assert_eq!(wire.unwrap()["status"], "False", "{status}");
    assert_eq!(d.log().matches("cannot save to the state directory").count(), 1, "logged once");

    // Fixed: the next pass saves, and the condition clears.
    std::fs::remove_dir(state.join(".inventory.json.tmp")).unwrap();
    d.send(Control::Reconcile(vztmpld::daemon::Trigger::Api)).await;
    d.wait_for("StatePersisted=True", |d| async move { condition(d).is_some_and(|(ok, _)| ok) }).await;
    assert!(state.join("inventory.json").exists());
    d.stop().await;
}

#[tokio::test]
async fn a_restarted_daemon_answers_resolve_from_the_saved_inventory_before_its_first_pass() {
    let sim = TestSim::start().await;
    let dir = temp_dir("state-inventory");
    let state = dir.join("state");
    let cfg = config(&sim, &dir, &sim.server.nodes[0].fingerprint, &["alpine-3.22"]);
    let d = Daemon::start_with(&cfg, Some(&state)).await;
    converged(&d, "alpine-3.22").await;
    d.stop().await;

    // Built, not run: no pass has observed anything yet.
    let choice = vztmpld::daemon::StateDirChoice { flag: Some(state.clone()), environment: None };
    let source = vztmpld::daemon::ConfigSource::file(&cfg, common::fast_options()).with_state_dir(choice);
    let daemon = vztmpld::daemon::Daemon::new(source).unwrap();
    let spec = vztmpld::template::TemplateSpec::parse("alpine-3.22").unwrap();
    let found = daemon.shared().catalog().read(|inv| inv.cluster("lab").and_then(|c| c.nodes.get("pve2")?.find(&spec)));
    let found = found.expect("the saved inventory answers");
    assert!(found.volid.contains("alpine-3.22"), "{found:?}");
    assert!(found.observed_at <= std::time::SystemTime::now());
    assert!(daemon.shared().read(|s| s.ready), "ready at once: /readyz need not wait for the first pass");

    // Without the state directory, ready waits for the first pass.
    let source = vztmpld::daemon::ConfigSource::file(&cfg, common::fast_options());
    let fresh = vztmpld::daemon::Daemon::new(source).unwrap();
    assert!(!fresh.shared().read(|s| s.ready));
}
