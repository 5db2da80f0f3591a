//! The binary's real edges, once: SIGHUP and SIGTERM through the OS, the systemd notify protocol
//! (`READY=1`, `RELOADING=1`, `WATCHDOG=1`, `STOPPING=1`) on a real `NOTIFY_SOCKET`, and a closed stdout
//! (`vztmpld plan | head`) as success. Everything else about the daemon runs in-process (`daemon.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestSim, write_config};

/// Collects notify datagrams until one contains `want` (bounded).
fn expect_notify(socket: &UnixDatagram, seen: &mut Vec<String>, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(text.clone());
            if text.lines().any(|l| l == want) {
                return;
            }
        }
    }
    panic!("no {want} within 20 s; got {seen:?}");
}

fn kill(pid: u32, signal: &str) {
    let ok = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap();
    assert!(ok.success());
}

#[tokio::test]
async fn signals_drive_the_daemon_and_systemd_hears_about_it() {
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", "interval: 1h\ntemplates:\n  - template: alpine-3.22\n");
    let dir = cfg.parent().unwrap().to_path_buf();
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vztmpld"))
        .args(["run", "-c"])
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    let log = || std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();

    // The notify socket is read off the runtime: the simulator must keep answering meanwhile.
    let result = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        expect_notify(&socket, &mut seen, "READY=1");
        expect_notify(&socket, &mut seen, "WATCHDOG=1");
        kill(pid, "HUP");
        expect_notify(&socket, &mut seen, "RELOADING=1");
        assert!(seen.last().unwrap().contains("MONOTONIC_USEC="), "{seen:?}");
        expect_notify(&socket, &mut seen, "READY=1");
        kill(pid, "TERM");
        expect_notify(&socket, &mut seen, "STOPPING=1");
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "exits within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, seen)
    })
    .await;
    let (status, seen) = result.unwrap_or_else(|e| panic!("{e}\ndaemon log:\n{}", log()));
    assert!(status.success(), "exit 0: {status:?}\n{}", log());
    let text = log();
    assert!(text.contains("SIGHUP") && text.contains("reloading the configuration"), "{text}");
    assert!(text.contains("SIGTERM") && text.contains("stopped"), "{text}");
    eprintln!("notify datagrams: {seen:?}");
}

#[tokio::test]
async fn a_closed_stdout_is_success_not_a_panic() {
    let sim = TestSim::start().await;
    let templates: String = ["alpine-3.22", "debian-13-standard", "ubuntu-24.04", "alpine", "debian"]
        .iter()
        .map(|t| format!("  - template: {t}\n"))
        .collect();
    let cfg = write_config(&sim.server, "", &format!("templates:\n{templates}"));
    let out = tokio::task::spawn_blocking(move || {
        // `vztmpld plan | true`: the reader is gone before the table is written.
        let mut child = Command::new(env!("CARGO_BIN_EXE_vztmpld"))
            .args(["plan", "-c"])
            .arg(&cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // 2: downloads pending would be the answer with a reader; with none, the broken pipe is success.
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[tokio::test]
async fn trace_logging_to_a_file_beside_the_config_does_not_feed_itself() {
    let sim = TestSim::start().await;
    let cfg = write_config(&sim.server, "", "interval: 1h\ntemplates:\n  - template: alpine-3.22\n");
    let dir = cfg.parent().unwrap().to_path_buf();
    let log_path = dir.join("vztmpld.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vztmpld"))
        .args(["run", "-c"])
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // Let it run its first pass and idle; a feedback loop would grow the log by tens of MB per second.
    let size_at = |d: Duration| {
        let path = log_path.clone();
        async move {
            tokio::time::sleep(d).await;
            std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        }
    };
    let first = size_at(Duration::from_millis(1500)).await;
    let second = size_at(Duration::from_millis(1500)).await;
    kill(child.id(), "TERM");
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    eprintln!("trace log: {first} bytes after 1.5 s, {second} after 3 s");
    assert!(second - first < 256 * 1024, "the log grows while idle: {first} → {second} bytes");
}

#[tokio::test]
async fn ctrl_c_during_apply_names_the_tasks_that_keep_running() {
    let sim = TestSim::with("bandwidth: 200000").await;
    let cfg = write_config(&sim.server, "nodes: [pve1]\n", "templates:\n  - template: alpine-3.22\n");
    let dir = cfg.parent().unwrap().to_path_buf();
    let err_path = dir.join("apply.err");
    let child = Command::new(env!("CARGO_BIN_EXE_vztmpld"))
        .args(["apply", "-c"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    // Wait until the task runs on the simulator, then interrupt.
    for _ in 0..200 {
        if sim.stats().await["downloads_started"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill(child.id(), "INT");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("interrupted: vztmpld stopped following; Proxmox keeps running its tasks"), "{err}");
    assert!(err.contains("adopts them") && err.contains("UPID:pve1:"), "{err}");
}

/// `kill -9` at arbitrary moments of a daemon that keeps writing its state (`$STATE_DIRECTORY`, as systemd sets
/// it): every state file left behind is whole — the last good state, never a torn write.
#[tokio::test]
async fn a_kill_9_at_any_moment_leaves_readable_state() {
    use vztmpld::state::{INVENTORY, LEDGER, PINS, StateDir};
    let sim = TestSim::start().await;
    let cfg =
        write_config(&sim.server, "", "interval: 1h\ntemplates:\n  - template: alpine-3.22\n  - template: debian-12\n");
    let dir = cfg.parent().unwrap().to_path_buf();
    let state = dir.join("state");
    let mut saved_once = false;
    for round in 0..6u64 {
        // Another writer deletes a cached file: the next pass downloads it again and saves a changed inventory.
        if let Ok(text) = std::fs::read_to_string(state.join("inventory.json")) {
            let volid = text.split('"').find(|s| s.starts_with("local:vztmpl/")).map(String::from);
            if let Some(volid) = volid {
                let path = format!("/nodes/pve1/storage/local/content/{}", common::encode(&volid));
                let _ = sim.delete(&path).await;
            }
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_vztmpld"))
            .args(["run", "-c"])
            .arg(&cfg)
            .args(["--listen", "127.0.0.1:0"])
            .env("STATE_DIRECTORY", &state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Spread over the start, the first pass and its save (pseudo-random, reproducible).
        let delay = 150 + (round * 7919) % 900;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        kill(child.id(), "KILL");
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        let d = StateDir::read_only(&state);
        for part in [PINS, LEDGER, INVENTORY] {
            if let Err(e) = d.load::<serde_json::Value>(part) {
                panic!("round {round}, killed after {delay} ms: {e}");
            }
        }
        saved_once |= state.join("inventory.json").exists();
    }
    assert!(saved_once, "the daemon saved its state within the rounds (no state: nothing was tested)");
}
