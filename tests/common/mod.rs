//! Test helpers: start the simulator in-process on an ephemeral loopback port and talk HTTPS to it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use vztmpld::sim::{Scenario, SimServer};

/// A running simulator plus a client that trusts only its certificate.
pub struct TestSim {
    pub server: SimServer,
    pub client: reqwest::Client,
}

/// An answer: status, parsed JSON body (Null when empty or not JSON), and the raw body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub json: Value,
    pub body: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// `data` of a success envelope.
    pub fn data(&self) -> &Value {
        &self.json["data"]
    }
}

/// The scenario tests use: the built-in one, without the 3 s delay on 401.
pub fn test_scenario(yaml: &str) -> Scenario {
    let mut s = Scenario::parse(yaml).unwrap_or_else(|e| panic!("bad test scenario: {e}"));
    if !yaml.contains("auth_failure_delay") {
        s.quirks.auth_failure_delay = Duration::ZERO;
    }
    s
}

impl TestSim {
    /// The built-in cluster.
    pub async fn start() -> Self {
        Self::with("{}").await
    }

    /// A scenario given as YAML (relative paths resolve against the crate root).
    pub async fn with(yaml: &str) -> Self {
        Self::with_scenario(test_scenario(yaml)).await
    }

    /// A scenario value.
    pub async fn with_scenario(scenario: Scenario) -> Self {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let server = SimServer::start(scenario, dir, "127.0.0.1:0".parse().unwrap()).await.expect("simulator starts");
        let tls = vztmpld::sim::tls::client_config_trusting(&server.cert_der).unwrap();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self { server, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api2/json{path}", self.server.endpoint)
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Answer {
        let resp = rb.send().await.expect("request reaches the simulator");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&body).unwrap_or(Value::Null);
        Answer { status, json, body, headers }
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        rb.header("Authorization", self.server.auth_header())
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.auth(self.client.get(self.url(path)))).await
    }

    pub async fn get_query(&self, path: &str, query: &[(&str, &str)]) -> Answer {
        self.send(self.auth(self.client.get(self.url(path)).query(query))).await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        self.send(self.auth(self.client.post(self.url(path)).form(form))).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.send(self.auth(self.client.post(self.url(path)).json(body))).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(self.auth(self.client.delete(self.url(path)))).await
    }

    /// A request with an arbitrary Authorization header (or none).
    pub async fn get_with_auth(&self, path: &str, auth: Option<&str>) -> Answer {
        let mut rb = self.client.get(self.url(path));
        if let Some(a) = auth {
            rb = rb.header("Authorization", a);
        }
        self.send(rb).await
    }

    /// `/_sim/` control call with a JSON body.
    pub async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Answer {
        let mut rb = self.auth(self.client.request(method, format!("{}/_sim/{path}", self.server.endpoint)));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        self.send(rb).await
    }

    pub async fn stats(&self) -> Value {
        self.control(reqwest::Method::GET, "stats", None).await.json
    }

    /// Starts a download of an index template and returns the UPID.
    pub async fn download(&self, node: &str, storage: &str, template: &str) -> String {
        let a = self.post(&format!("/nodes/{node}/aplinfo"), &[("storage", storage), ("template", template)]).await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.data().as_str().expect("a UPID").to_string()
    }

    /// Polls a task's status on its own node until it stops (bounded).
    pub async fn wait_task(&self, upid: &str) -> Value {
        let node = upid.split(':').nth(1).unwrap().to_string();
        let path = format!("/nodes/{node}/tasks/{}/status", encode(upid));
        for _ in 0..600 {
            let a = self.get(&path).await;
            assert_eq!(a.status, 200, "{}", a.body);
            if a.data()["status"] == "stopped" {
                return a.data().clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("task {upid} did not stop within 12 s");
    }

    /// A task's full log as lines.
    pub async fn task_log(&self, upid: &str) -> Vec<String> {
        let node = upid.split(':').nth(1).unwrap().to_string();
        let a = self.get_query(&format!("/nodes/{node}/tasks/{}/log", encode(upid)), &[("limit", "0")]).await;
        a.data().as_array().unwrap().iter().map(|l| l["t"].as_str().unwrap().to_string()).collect()
    }

    /// vztmpl volids visible from a node on a storage.
    pub async fn volids(&self, node: &str, storage: &str) -> Vec<String> {
        let a = self.get(&format!("/nodes/{node}/storage/{storage}/content")).await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.data().as_array().unwrap().iter().map(|v| v["volid"].as_str().unwrap().to_string()).collect()
    }
}

/// Percent-encodes a path segment (UPIDs contain `:` and `!`, volids `:` and `/`).
pub fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A raw HTTP/1.1 exchange over TLS, for what reqwest hides: the status line's reason phrase.
pub async fn raw_request(endpoint: &str, request: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = endpoint.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let config = Arc::new(vztmpld::sim::tls::client_config_unverified().unwrap());
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_string(), body.to_string())
}

/// The certificate a TLS server presents (DER), for fingerprint checks.
pub async fn peer_certificate(endpoint: &str) -> Vec<u8> {
    let addr = endpoint.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let config = Arc::new(vztmpld::sim::tls::client_config_unverified().unwrap());
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

pub const ALPINE: &str = "alpine-3.22-default_20250617_amd64.tar.xz";
pub const DEBIAN: &str = "debian-13-standard_13.6-1_amd64.tar.zst";

/// A cluster configuration pointing at a running simulator, pinned to its fingerprint.
pub fn cluster_config(server: &SimServer, name: &str) -> vztmpld::config::ClusterConfig {
    use vztmpld::config::*;
    ClusterConfig {
        name: name.to_string(),
        endpoints: vec![reqwest::Url::parse(&server.endpoint).unwrap()],
        token_id: server.token_id.clone(),
        secret: Secret::new(server.token_secret.clone()),
        tls: TlsMode::Fingerprint(parse_fingerprint(&server.fingerprint).unwrap()),
        nodes: NodeSelector::All,
        storage: StorageSelector::Auto,
        max_parallel_downloads: 4,
        max_downloads_per_node: 1,
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
        "downloads:\n  poll_interval: 50ms\nclusters:\n  - name: lab\n    endpoints: [{}]\n    auth:\n      token_id: \"{}\"\n      secret_file: lab.secret\n    tls:\n      fingerprint: \"{}\"\n{extra}{rest}",
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

/// A `vztmpld run` child process with its status address. Killed when dropped.
pub struct Daemon {
    pub log_path: std::path::PathBuf,
    pub child: std::process::Child,
    pub addr: String,
    pub http: reqwest::Client,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Daemon {
    /// Starts the daemon on a config file and waits until its status server answers.
    pub async fn start(config: &std::path::Path) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = config.with_extension("log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_vztmpld"))
            .args(["run", "-c"])
            .arg(config)
            .args(["--listen", &addr, "--log-level", "debug"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
        let d = Self { log_path: log, child, addr, http };
        d.wait_for("the status server", |d| async move { d.get("/healthz").await.is_some() }).await;
        d
    }

    /// GET on the status server; `None` when it does not answer 2xx.
    pub async fn get(&self, path: &str) -> Option<String> {
        let r = self.http.get(format!("http://{}{path}", self.addr)).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.text().await.ok()
    }

    pub async fn status(&self) -> Value {
        serde_json::from_str(&self.get("/api/v1/status").await.unwrap_or_default()).unwrap_or(Value::Null)
    }

    /// A template's state on a node (`cached`, `downloading`, ...).
    pub async fn state(&self, node: &str, template: &str) -> String {
        let s = self.status().await;
        for c in s["clusters"].as_array().into_iter().flatten() {
            for n in c["nodes"].as_array().into_iter().flatten() {
                if n["name"] == node {
                    for t in n["templates"].as_array().into_iter().flatten() {
                        if t["template"] == template {
                            return t["state"].as_str().unwrap_or_default().to_string();
                        }
                    }
                }
            }
        }
        String::new()
    }

    /// Polls `check` every 50 ms for up to 20 s.
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
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}; daemon log:\n{}", self.log());
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}
