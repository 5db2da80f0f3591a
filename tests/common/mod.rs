//! Helpers for vztmpld's black-box tests: configs pointing at the simulator, the binary, temp dirs.
#![allow(dead_code, unreachable_pub, unused_imports)]

pub mod etcd;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pve_sim::SimServer;
pub use pve_sim::testing::*;
use serde_json::Value;
use vztmpld::daemon::shared::Shared;
use vztmpld::daemon::watch::ConfigWatcher;
use vztmpld::daemon::{ConfigSource, Control, ControlSender, DaemonError};

/// A cluster configuration pointing at a running simulator, pinned to its fingerprint.
pub fn cluster_config(server: &SimServer, name: &str) -> vztmpld::config::ClusterConfig {
    use vztmpld::config::*;
    ClusterConfig {
        name: name.to_string(),
        endpoints: vec![reqwest::Url::parse(&server.endpoint).unwrap()],
        token_id: server.token_id.clone(),
        secret: Secret::new(server.token_secret.clone()),
        tls: TlsMode::Pinned(vec![parse_fingerprint(&server.fingerprint).unwrap()]),
        nodes: NodeSelector::All,
        storage: StorageSelector::Auto,
        max_parallel_downloads: 4,
        max_downloads_per_node: 1,
        mirrors: vec![],
    }
}

/// Client options for tests: quick retries.
pub fn fast_options() -> vztmpld::pve::ClientOptions {
    vztmpld::pve::ClientOptions {
        backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

/// A fresh temporary directory for one test.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("vztmpld-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes a config for the simulator (secret file beside it) and returns its path. `cluster_extra` is
/// appended to the cluster entry (indented by 4), `rest` after it (templates: etc.).
pub fn write_config(server: &SimServer, cluster_extra: &str, rest: &str) -> std::path::PathBuf {
    let dir = temp_dir("cfg");
    let secret = dir.join("lab.secret");
    std::fs::write(&secret, &server.token_secret).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let extra: String = cluster_extra.lines().map(|l| format!("    {l}\n")).collect();
    let text = format!(
        "downloads:\n  poll_interval: 100ms\nclusters:\n  - name: lab\n    endpoints: [{}]\n    auth:\n      token_id: \"{}\"\n      secret_file: lab.secret\n    tls:\n      fingerprint: \"{}\"\n{extra}{rest}",
        server.endpoint, server.token_id, server.fingerprint
    );
    let path = dir.join("vztmpld.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the real binary; returns exit code, stdout and stderr.
pub fn vztmpld(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vztmpld")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the binary off the async runtime (tests are async because the simulator runs in-process).
pub async fn vztmpld_async(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        vztmpld(&refs)
    })
    .await
    .unwrap()
}

/// Captured log lines of everything running on this test's thread (the daemon, its passes, the simulator).
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// `vztmpld run` in-process: the library daemon on a port-0 listener, driven by a control channel, with the
/// real file watcher as a producer. Tests must run on tokio's current-thread runtime (the default of
/// `#[tokio::test]`) so the log capture sees every task. Aborted when dropped.
pub struct Daemon {
    pub addr: String,
    pub http: reqwest::Client,
    pub controls: ControlSender,
    pub shared: Arc<Shared>,
    logs: LogBuffer,
    task: Option<tokio::task::JoinHandle<Result<(), DaemonError>>>,
    _watcher: ConfigWatcher,
    _log_guard: tracing::subscriber::DefaultGuard,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Daemon {
    /// Starts the daemon on a config file; its status server answers when this returns.
    pub async fn start(config: &std::path::Path) -> Self {
        Self::start_with(config, None).await
    }

    /// [`Daemon::start`] with a state directory (`--state-dir`).
    pub async fn start_with(config: &std::path::Path, state_dir: Option<&std::path::Path>) -> Self {
        let logs = LogBuffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        let log_guard = tracing::subscriber::set_default(subscriber);
        let _ = rustls::crypto::ring::default_provider().install_default();
        let choice = vztmpld::daemon::StateDirChoice { flag: state_dir.map(Into::into), environment: None };
        let source = ConfigSource::file(config, fast_options()).with_state_dir(choice);
        let daemon = vztmpld::daemon::Daemon::new(source).expect("the configuration loads");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (controls, stream) = vztmpld::daemon::channel();
        let watcher = vztmpld::daemon::watch::watch(config, controls.clone()).unwrap();
        let shared = Arc::clone(daemon.shared());
        let task = tokio::spawn(daemon.run(listener, stream));
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
        Self { addr, http, controls, shared, logs, task: Some(task), _watcher: watcher, _log_guard: log_guard }
    }

    /// Sends a control value.
    pub async fn send(&self, control: Control) {
        self.controls.send(control).await.expect("the daemon is running");
    }

    /// Sends [`Control::Stop`] and waits (bounded) for `run` to return; how long it took.
    pub async fn stop(mut self) -> Duration {
        let start = std::time::Instant::now();
        self.send(Control::Stop).await;
        let task = self.task.take().unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), task).await.expect("the daemon stops");
        result.expect("the daemon task ends normally").expect("run returns Ok");
        start.elapsed()
    }

    /// GET on the status server; `None` when it does not answer 2xx.
    pub async fn get(&self, path: &str) -> Option<String> {
        let r = self.http.get(format!("http://{}{path}", self.addr)).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.text().await.ok()
    }

    /// `/api/v1/status` as JSON, over HTTP.
    pub async fn status(&self) -> Value {
        serde_json::from_str(&self.get("/api/v1/status").await.unwrap_or_default()).unwrap_or(Value::Null)
    }

    /// A template's state on a node (`cached`, `downloading`, ...), read in-process.
    pub fn state(&self, node: &str, template: &str) -> String {
        self.shared.read(|s| {
            s.clusters
                .iter()
                .flat_map(|c| &c.nodes)
                .filter(|n| n.name.as_str() == node)
                .flat_map(|n| &n.templates)
                .find(|t| &*t.template == template)
                .map(|t| t.state.as_str().to_string())
                .unwrap_or_default()
        })
    }

    /// Polls `check` every 20 ms for up to 20 s.
    pub async fn wait_for<'a, F, Fut>(&'a self, what: &str, check: F) -> Duration
    where
        F: Fn(&'a Self) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if check(self).await {
                return start.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out waiting for {what}; daemon log:\n{}", self.log());
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.logs.text()
    }
}
