//! The daemon under test: the real `vztmpld run` binary as a child process, so its CPU time and memory are
//! its own (read from `/proc`), never the simulators' or the bench's.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// A line of the daemon's log the bench waits for.
#[derive(Debug)]
pub struct PassFinished {
    /// The pass's duration as the daemon measured it.
    pub seconds: f64,
    pub outcome: String,
}

pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    finished: mpsc::UnboundedReceiver<PassFinished>,
    lines: Arc<AtomicU64>,
    http: reqwest::Client,
    clock_ticks: f64,
}

/// Process CPU time and memory, from `/proc/PID/stat` and `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub cpu: Duration,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

impl Daemon {
    /// Starts `vztmpld run` on `config` with JSON logs and waits until its status server answers.
    pub async fn start(config: &Path) -> Self {
        let addr = free_port();
        // FLEET_DAEMON_WRAPPER (e.g. `heaptrack -o /tmp/ht`) runs the daemon under a profiler; the figures
        // read from /proc are then the wrapper's.
        let wrapper = std::env::var("FLEET_DAEMON_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(env!("CARGO_BIN_EXE_vztmpld"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_vztmpld")),
        };
        let mut child = command
            .args(["--log-format", "json", "run", "-c"])
            .arg(config)
            .args(["--listen", &addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vztmpld");
        let lines = Arc::new(AtomicU64::new(0));
        let (tx, finished) = mpsc::unbounded_channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let (lines, tx) = (Arc::clone(&lines), tx.clone());
            std::thread::spawn(move || read_log(stream, &lines, &tx));
        }
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let clock_ticks = clock_ticks();
        let daemon = Self { child, addr, finished, lines, http, clock_ticks };
        let deadline = Instant::now() + Duration::from_secs(60);
        while daemon.http.get(daemon.url("/healthz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "vztmpld did not start within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        daemon
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The child's process id (to attach a profiler).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Log lines written so far.
    pub fn log_lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    /// Waits for the next `reconcile pass finished` line.
    pub async fn next_pass(&mut self, within: Duration) -> PassFinished {
        tokio::time::timeout(within, self.finished.recv())
            .await
            .expect("a reconcile pass finished in time")
            .expect("vztmpld exited")
    }

    /// Asks for a pass (`POST /api/v1/reconcile`).
    pub async fn trigger(&self) {
        let r = self.http.post(self.url("/api/v1/reconcile")).send().await.expect("POST /api/v1/reconcile");
        assert!(r.status().is_success(), "reconcile request refused: {}", r.status());
    }

    /// `GET path`: the body.
    pub async fn get(&self, path: &str) -> String {
        self.http.get(self.url(path)).send().await.expect("GET").text().await.expect("body")
    }

    /// CPU time (user + system, every thread) and memory so far.
    pub fn usage(&self) -> Usage {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
        // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Usage {
            cpu: Duration::from_secs_f64(ticks as f64 / self.clock_ticks),
            rss_kib: kib("VmRSS:"),
            peak_rss_kib: kib("VmHWM:"),
        }
    }

    /// Resets the peak RSS (`VmHWM`) to the current RSS (`echo 5 > /proc/PID/clear_refs`, Linux ≥ 4.0), so the
    /// next peak read covers only what follows.
    pub fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5");
    }

    /// SIGTERM, then wait.
    pub fn stop(mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn read_log(stream: Box<dyn std::io::Read + Send>, lines: &AtomicU64, tx: &mpsc::UnboundedSender<PassFinished>) {
    for line in std::io::BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        lines.fetch_add(1, Ordering::Relaxed);
        if std::env::var_os("FLEET_ECHO_LOG").is_some() {
            eprintln!("daemon: {line}");
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if v["message"] == "reconcile pass finished" {
            let _ = tx.send(PassFinished {
                seconds: v["seconds"].as_f64().unwrap_or(f64::NAN),
                outcome: v["outcome"].as_str().unwrap_or_default().to_string(),
            });
        }
    }
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// `getconf CLK_TCK` (100 on Linux unless the kernel says otherwise).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
