//! `vztmpld sim` as a real process: the ready line, the certificate it pins, and a clean stop.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

#[tokio::test]
async fn sim_prints_one_ready_line_and_serves_the_certificate_it_names() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vztmpld"))
        .args(["sim", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(20), line).await.expect("ready in time").unwrap().unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
    let endpoint = ready["endpoint"].as_str().unwrap().to_string();
    assert!(endpoint.starts_with("https://127.0.0.1:"));
    assert_eq!(ready["token_id"], "vztmpld@pve!cache");
    assert_eq!(ready["token_secret"].as_str().unwrap().len(), 36, "a UUID");

    let der = common::peer_certificate(&endpoint).await;
    assert_eq!(ready["fingerprint"].as_str().unwrap(), fingerprint(&der));

    // The certificate is the first node's, signed by the cluster CA the line also prints.
    use rustls::pki_types::pem::PemObject;
    let ca = rustls::pki_types::CertificateDer::from_pem_slice(ready["ca_pem"].as_str().unwrap().as_bytes()).unwrap();
    let tls = pve_sim::tls::client_config_trusting(&ca).unwrap();
    let client = reqwest::Client::builder().tls_backend_preconfigured(tls).no_proxy().build().unwrap();
    let auth =
        format!("PVEAPIToken={}={}", ready["token_id"].as_str().unwrap(), ready["token_secret"].as_str().unwrap());
    let nodes: serde_json::Value = client
        .get(format!("{endpoint}/api2/json/nodes"))
        .header("Authorization", auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(nodes["data"].as_array().unwrap().len(), 3);
    assert_eq!(nodes["data"][0]["ssl_fingerprint"], ready["fingerprint"]);
    assert_eq!(ready["nodes"].as_array().unwrap().len(), 3, "every node's endpoint");
    assert_ne!(nodes["data"][1]["ssl_fingerprint"], ready["fingerprint"], "one certificate per node");

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
}

#[test]
fn a_bad_scenario_is_an_error_naming_the_file_and_place() {
    let dir = std::env::temp_dir().join(format!("vztmpld-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(&file, "nodes:\n  - name: pve1\n    colour: blue\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vztmpld"))
        .args(["sim", "--listen", "127.0.0.1:0", "--scenario"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml") && err.contains("unknown field `colour`") && err.contains("line 3"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn every_example_scenario_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sim");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            pve_sim::Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 3);
}
