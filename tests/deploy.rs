//! Every example configuration is accepted by `vztmpld check`, and the systemd unit passes
//! `systemd-analyze verify` where that tool exists.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

#[test]
fn every_example_config_passes_check() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        // ha.yaml names real files (certificates, passwords): checked with stand-ins below.
        if path.extension().is_none_or(|e| e != "yaml") || path.ends_with("ha.yaml") {
            continue;
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vztmpld"))
            .args(["check", "-c"])
            .arg(&path)
            .env("VZTMPLD_HOME_SECRET", "s")
            .env("VZTMPLD_PROD_SECRET", "s")
            .env("VZTMPLD_LAB_SECRET", "s")
            .env("VZTMPLD_EDGE_SECRET", "s")
            .env("VZTMPLD_DEMO_SECRET", "s")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        checked.push(path.file_name().unwrap().to_string_lossy().to_string());
    }
    checked.sort();
    assert_eq!(
        checked,
        ["demo.yaml", "deploy-tools.yaml", "multi-cluster.yaml", "shared-storage.yaml", "single-node.yaml"]
    );
}

#[test]
fn the_ha_example_is_valid_with_its_files_in_place() {
    let dir = common::temp_dir("ha-example");
    let pem = pve_sim::tls::ClusterCa::generate().unwrap().cert_pem;
    for (name, text) in [
        ("prod.secret", "d6a1f0b2-1111-2222-3333-444455556666\n"),
        ("pve-root-ca.pem", pem.as_str()),
        ("etcd-ca.pem", pem.as_str()),
        ("etcd-client.pem", pem.as_str()),
        ("etcd-client.key", "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n"),
        ("etcd.password", "etcd-pw\n"),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ha.yaml");
    let text = std::fs::read_to_string(example).unwrap().replace("/etc/vztmpld/", &format!("{}/", dir.display()));
    let cfg = dir.join("ha.yaml");
    std::fs::write(&cfg, text).unwrap();
    let (code, out, err) = common::vztmpld(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn the_production_example_is_valid_apart_from_its_secret_path() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.yaml");
    // The cluster CA it names is a copy of the cluster's /etc/pve/pve-root-ca.pem: a stand-in here.
    let ca = common::temp_dir("deploy").join("pve-root-ca.pem");
    std::fs::write(&ca, pve_sim::tls::ClusterCa::generate().unwrap().cert_pem).unwrap();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("secret_file: /etc/vztmpld/lab.secret", "secret_env: VZTMPLD_T_SECRET")
        .replace("ca_file: /etc/vztmpld/pve-root-ca.pem", &format!("ca_file: {}", ca.display()));
    assert!(text.contains(&format!("ca_file: {}", ca.display())), "the example still uses ca_file");
    // SAFETY: no other thread of this test binary reads the environment.
    unsafe { std::env::set_var("VZTMPLD_T_SECRET", "s") };
    vztmpld::config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn systemd_unit_verifies() {
    let unit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/vztmpld.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for needed in [
        "Type=notify",
        "WatchdogSec=",
        "ExecStartPre=/usr/local/bin/vztmpld check",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "StateDirectory=vztmpld\n",
        "LimitNOFILE=",
    ] {
        assert!(text.contains(needed), "unit lacks {needed}");
    }
    let Ok(out) = std::process::Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: skipping `systemd-analyze verify`");
        return;
    };
    assert!(out.status.success());
    // verify wants the binaries named in Exec* to exist: point them at this build in a copy.
    let dir = common::temp_dir("unit");
    let copy = dir.join("vztmpld.service");
    std::fs::write(&copy, text.replace("/usr/local/bin/vztmpld", env!("CARGO_BIN_EXE_vztmpld"))).unwrap();
    let out = std::process::Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&copy).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Only complaints about this unit count (the host's own units may be noisy in containers).
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("vztmpld.service")).collect();
    assert!(out.status.success() || ours.is_empty(), "systemd-analyze verify:\n{err}");
    assert!(ours.is_empty(), "systemd-analyze verify:\n{err}");
}
