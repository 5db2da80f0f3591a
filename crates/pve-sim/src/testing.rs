//! A test harness: start the simulator in-process on an ephemeral loopback port and talk HTTPS to it,
//! trusting only its certificate. For tests and benchmarks: every helper panics with the answer it got
//! when the simulator does not behave, which is what a failing test should do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use crate::{Scenario, SimServer};
use reqwest::StatusCode;
use serde_json::Value;

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
        let tls = crate::tls::client_config_trusting(&server.cert_der).unwrap();
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
        let mut rb = self.auth(self.client.request(method, format!("{}/_sim/{path}", self.server.control)));
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

/// `GET /_sim/stats` of a simulator reached only by its control URL and token (one in another process, say).
pub async fn stats_of(client: &reqwest::Client, control: &str, auth_header: &str) -> Value {
    client
        .get(format!("{control}/_sim/stats"))
        .header("Authorization", auth_header)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("GET /_sim/stats")
        .json()
        .await
        .expect("/_sim/stats is JSON")
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
    let config = Arc::new(crate::tls::client_config_unverified().unwrap());
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
    let config = Arc::new(crate::tls::client_config_unverified().unwrap());
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

pub const ALPINE: &str = "alpine-3.22-default_20250617_amd64.tar.xz";
pub const DEBIAN: &str = "debian-13-standard_13.6-1_amd64.tar.zst";

/// A file from the workplace's `shared/fixtures/` (found beside the checkout), or `None` with the reason
/// printed when it is absent. `VZTMPLD_REQUIRE_FIXTURES=1` (CI) turns the skip into a failure.
pub fn fixture(name: &str) -> Option<std::path::PathBuf> {
    let start = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let found = start.ancestors().map(|a| a.join("shared/fixtures").join(name)).find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("VZTMPLD_REQUIRE_FIXTURES").is_none_or(|v| v != "1"),
            "fixture {name} not found in any shared/fixtures/ above {} and VZTMPLD_REQUIRE_FIXTURES=1",
            start.display()
        );
        eprintln!("skipped: fixture {name} not found (shared/fixtures/ sits beside the checkout in the workplace)");
    }
    found
}

/// What a [`RawServer`] does with each request.
#[derive(Debug, Clone)]
pub enum RawBehaviour {
    /// Answers with these bytes (a whole HTTP/1.1 response) and closes.
    Answer(Vec<u8>),
    /// Sends these bytes (status line and headers) and then nothing, keeping the connection open.
    Stall(Vec<u8>),
    /// Answers every request on a connection with these bytes, keeping it open (HTTP keep-alive). Reads
    /// request heads only: for requests without a body.
    KeepAlive(Vec<u8>),
    /// Answers the first request with these bytes as if keeping the connection, and closes it this much later:
    /// a keep-alive connection that ends while the client holds it idle.
    HangUpAfter(Vec<u8>, std::time::Duration),
}

/// A server that is not Proxmox: HTTPS on an ephemeral loopback port that answers every request the same way,
/// for the client's behaviour against redirects, stalls and other things Proxmox never does.
pub struct RawServer {
    /// `https://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The certificate's SHA-256 fingerprint (`AA:BB:…`).
    pub fingerprint: String,
    /// Requests received so far.
    pub requests: Arc<std::sync::atomic::AtomicUsize>,
    /// TLS connections accepted so far.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawServer {
    /// Starts serving.
    pub async fn start(behaviour: RawBehaviour) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let identity = crate::tls::SimIdentity::generate(&[]).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config().unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("https://{}", listener.local_addr().unwrap());
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let opened = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, behaviour, counter) = (acceptor.clone(), behaviour.clone(), Arc::clone(&counter));
                let opened = Arc::clone(&opened);
                connections.spawn(async move {
                    // As pveproxy: an answer goes out at once, not after the client's delayed ACK.
                    let _ = tcp.set_nodelay(true);
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut buf = [0u8; 4096];
                    loop {
                        let mut head = Vec::new();
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
                            match tls.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        match &behaviour {
                            RawBehaviour::Answer(bytes) => {
                                let _ = tls.write_all(bytes).await;
                                let _ = tls.shutdown().await;
                                return;
                            }
                            RawBehaviour::Stall(bytes) => {
                                let _ = tls.write_all(bytes).await;
                                let _ = tls.flush().await;
                                std::future::pending::<()>().await;
                            }
                            RawBehaviour::KeepAlive(bytes) => {
                                if tls.write_all(bytes).await.is_err() || tls.flush().await.is_err() {
                                    return;
                                }
                            }
                            RawBehaviour::HangUpAfter(bytes, after) => {
                                let _ = tls.write_all(bytes).await;
                                let _ = tls.flush().await;
                                tokio::time::sleep(*after).await;
                                let _ = tls.shutdown().await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        Self { endpoint, fingerprint: identity.fingerprint, requests, connections, task }
    }
}
