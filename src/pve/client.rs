//! The Proxmox VE API client: the only code in vztmpld that talks HTTP to Proxmox.
//!
//! Token auth, pinned or CA-verified TLS, a bound on requests in flight per cluster (pveproxy has 3 workers),
//! timeouts on every call, bounded bodies, retries with backoff for what can succeed later, and failover
//! across the cluster's endpoints.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::Method;
use hyper::header::HeaderValue;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use vztmpld_core::backoff::{Backoff, Jitter, Spread};

use super::error::{PveError, explain_status};
use super::pins::{PinBook, Pins};
use super::tls::{SeenFingerprint, client_config};
use super::transport::{Answer, Transport};
use super::types::{
    Appliance, ClusterNode, ClusterStorage, Envelope, ErrorBody, NodeListItem, Permissions, StorageVolume,
    TaskListItem, TaskLogLine, TaskStatus,
};
use super::{Connection, Trust};

mod failure;

/// Characters left as they are in a path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes one path segment (UPIDs hold `:` and `!`, volids `:` and `/`).
pub fn encode_segment(s: &str) -> String {
    segment(s).into_owned()
}

/// A path segment, percent-encoded only when it needs to be (node names and storage IDs never do).
fn segment(s: &str) -> std::borrow::Cow<'_, str> {
    utf8_percent_encode(s, SEGMENT).into()
}

/// The node a UPID belongs to (`UPID:<node>:...`): the only part of a UPID vztmpld reads.
pub fn upid_node(upid: &str) -> Option<&str> {
    let rest = upid.strip_prefix("UPID:")?;
    let node = rest.split(':').next()?;
    (!node.is_empty()).then_some(node)
}

/// Tunables of the client.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// Whole-request timeout (pveproxy gives up forwarding after 30 s).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Requests in flight per cluster. One: each pass then needs one connection (a TCP and TLS handshake) per
    /// cluster, and pveproxy keeps 2 of its 3 workers for the GUI and other clients.
    pub max_in_flight: usize,
    /// Tries per request, including the first.
    pub attempts: u32,
    /// First retry delay; doubles each time.
    pub backoff: Duration,
    /// Largest response body accepted.
    pub max_body: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(35),
            connect_timeout: Duration::from_secs(5),
            max_in_flight: 1,
            attempts: 3,
            backoff: Duration::from_millis(300),
            max_body: 16 * 1024 * 1024,
        }
    }
}

/// What a request came to, for metrics: every HTTP answer's status, and every failed attempt's error.
#[derive(Debug, Clone, Copy)]
pub enum ApiAnswer<'a> {
    /// An HTTP answer arrived with this status.
    Status(u16),
    /// The attempt failed (transport, TLS, timeout, an error status, an undecodable body).
    Failed(&'a PveError),
}

/// Called with each [`ApiAnswer`].
pub type AnswerObserver = Arc<dyn Fn(ApiAnswer<'_>) + Send + Sync>;

/// A client for one cluster.
pub struct Client {
    observer: std::sync::OnceLock<AnswerObserver>,
    cluster: String,
    endpoints: Vec<url::Url>,
    /// The connections to the endpoints.
    transport: Transport,
    auth: HeaderValue,
    permits: Semaphore,
    /// Index of the endpoint that answered last: later calls start there.
    preferred: AtomicUsize,
    seen_fingerprint: SeenFingerprint,
    /// The accepted leaf fingerprints (pinned modes only): configured, and learned from `GET /nodes`.
    pins: Option<Pins>,
    /// When the nodes' fingerprints were last learned.
    learned_at: std::sync::Mutex<Option<std::time::Instant>>,
    options: ClientOptions,
    /// Spreads retries, so that clusters failing together do not retry in step.
    jitter: Mutex<Jitter>,
}

/// The longest wait between two attempts of one call.
const RETRY_CAP: Duration = Duration::from_secs(30);
/// Up to this much is added to each retry's wait.
const RETRY_SPREAD: Duration = Duration::from_millis(100);

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("cluster", &self.cluster)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds a client for one cluster (a pinned one learns its nodes' fingerprints afresh).
    pub fn new(cfg: Connection, options: ClientOptions) -> Result<Self, PveError> {
        Self::with_pins(cfg, options, &PinBook::default())
    }

    /// Builds a client for one cluster; a pinned one takes the node fingerprints `book` learned under the same
    /// anchors, and learns into it.
    pub fn with_pins(cfg: Connection, options: ClientOptions, book: &PinBook) -> Result<Self, PveError> {
        let seen = SeenFingerprint::default();
        let tls_error = |detail: String| PveError::Tls {
            cluster: cfg.cluster.clone(),
            endpoint: cfg.endpoints.first().map(|u| u.to_string()).unwrap_or_default(),
            detail,
            cause: None,
        };
        let pins = match &cfg.trust {
            Trust::Pinned(anchors) => Some(book.pins_for(&cfg.cluster, anchors)),
            Trust::Ca { .. } | Trust::Insecure => None,
        };
        let tls = client_config(&cfg.trust, Arc::clone(&seen), &pins.clone().unwrap_or_default()).map_err(tls_error)?;
        let transport = Transport::new(&cfg.endpoints, Arc::new(tls), options.connect_timeout)
            .map_err(|e| tls_error(format!("cannot set up the endpoint: {e}")))?;
        let mut auth = HeaderValue::from_str(&format!("PVEAPIToken={}={}", cfg.token_id, cfg.secret))
            .map_err(|_| PveError::Setup {
                cluster: cfg.cluster.clone(),
                detail: "auth: the token id or secret holds characters an HTTP header cannot carry (a token secret is a UUID); check the secret file".into(),
            })?;
        auth.set_sensitive(true);
        Ok(Self {
            observer: std::sync::OnceLock::new(),
            pins,
            cluster: cfg.cluster,
            endpoints: cfg.endpoints,
            transport,
            auth,
            permits: Semaphore::new(options.max_in_flight.max(1)),
            preferred: AtomicUsize::new(0),
            seen_fingerprint: seen,
            learned_at: std::sync::Mutex::new(None),
            options,
            jitter: Mutex::new(Jitter::from_clock()),
        })
    }

    /// Closes the connections kept for reuse (requests under way keep theirs): a pass is over for this
    /// cluster, and the next one is minutes away, while pveproxy drops an idle connection after 5 s. Holding
    /// them till then would only keep their buffers — every cluster's at once at the end of a pass. The TLS
    /// sessions stay remembered, so the next pass still resumes them.
    pub fn close_idle_connections(&self) {
        self.transport.close_idle();
    }

    /// How many requests this client sends at once.
    pub fn max_in_flight(&self) -> usize {
        self.options.max_in_flight.max(1)
    }

    /// Installs the answer observer (once).
    pub fn set_observer(&self, observer: AnswerObserver) {
        let _ = self.observer.set(observer);
    }

    fn observe(&self, answer: ApiAnswer<'_>) {
        if let Some(o) = self.observer.get() {
            o(answer);
        }
    }

    /// One API call with retries and endpoint failover, its answer decoded.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        form: &[(&str, String)],
    ) -> Result<Envelope<T>, PveError> {
        let body = self.call_bytes(&method, path, query, form).await?;
        self.decode(&method, path, &body)
    }

    /// Decodes a successful answer's body.
    fn decode<T: DeserializeOwned>(&self, method: &Method, path: &str, body: &[u8]) -> Result<T, PveError> {
        // UTF-8 checked once for the whole body: from bytes, serde_json checks every string on its own, which
        // was most of the time a pass spends decoding its views.
        let text = std::str::from_utf8(body)
            .map_err(|e| self.decode_error(method, path, format!("the answer is not UTF-8 ({e})")))?;
        serde_json::from_str(text).map_err(|e| self.decode_error(method, path, e.to_string()))
    }

    /// One API call with retries and endpoint failover: the body of its successful answer.
    async fn call_bytes(
        &self,
        method: &Method,
        path: &str,
        query: &[(&str, String)],
        form: &[(&str, String)],
    ) -> Result<Vec<u8>, PveError> {
        let _permit = self.permits.acquire().await.map_err(|_| self.connect_error("", "client shut down"))?;
        let mut last = None;
        for attempt in 0..self.options.attempts.max(1) {
            if attempt > 0 {
                let retry = Backoff { base: self.options.backoff, cap: RETRY_CAP, spread: Spread::Upto(RETRY_SPREAD) };
                let wait = retry.delay(attempt, &mut self.jitter.lock().unwrap_or_else(PoisonError::into_inner));
                tokio::time::sleep(wait).await;
            }
            let start = self.preferred.load(Ordering::Relaxed);
            for k in 0..self.endpoints.len() {
                let idx = (start + k) % self.endpoints.len();
                let sent = self.send(idx, method, path, query, form).await;
                if let Err(e) = &sent {
                    self.observe(ApiAnswer::Failed(e));
                }
                match sent {
                    Ok(v) => {
                        self.preferred.store(idx, Ordering::Relaxed);
                        return Ok(v);
                    }
                    // Never delivered: the next endpoint may answer.
                    Err(e @ PveError::Connect { .. }) => last = Some(e),
                    // A POST that timed out or was cut off after it was sent may have started a task: never send
                    // it again (to this endpoint or another); the caller looks for what it did.
                    Err(e) if e.may_have_been_carried_out() => return Err(e),
                    Err(e) if e.is_retryable() => {
                        last = Some(e);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Err(last.unwrap_or_else(|| self.connect_error("", "no endpoint configured")))
    }

    async fn send(
        &self,
        idx: usize,
        method: &Method,
        path: &str,
        query: &[(&str, String)],
        form: &[(&str, String)],
    ) -> Result<Vec<u8>, PveError> {
        let endpoint = &self.endpoints[idx];
        let target = self.transport.target(idx, path, query);
        let body =
            (!form.is_empty()).then(|| form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish());
        // Not boxed: the connection inside is (`transport::Conn`), so an exchange is small enough to sit inline in
        // every future that awaits an API call.
        let exchange = self.transport.exchange(idx, method, target, &self.auth, body, self.options.max_body);
        let answer = match tokio::time::timeout(self.options.timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(failure)) => return Err(self.transport_error(endpoint, method, path, failure)),
            Err(_) => return Err(self.timeout(method, path)),
        };
        let Answer { status, reason, location, body } = answer;
        self.observe(ApiAnswer::Status(status));
        if (300..400).contains(&status) {
            let location = location.unwrap_or_else(|| "nowhere".to_string());
            return Err(PveError::Api {
                cluster: self.cluster.clone(),
                method: method.to_string(),
                path: path.to_string(),
                status,
                message: format!(
                    "redirected to {location}; Proxmox never redirects an API call, so something else answers at {} (a reverse proxy or web server?): point endpoints at the node's API, e.g. https://pve1:8006",
                    endpoint.origin().ascii_serialization()
                ),
            });
        }
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let parsed: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
        let mut message = parsed.message.map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).unwrap_or_default();
        if let Some(errors) = parsed.errors.filter(|e| !e.is_empty()) {
            let detail: Vec<String> = errors
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.as_str().map_or_else(|| v.to_string(), |s| s.trim().to_string())))
                .collect();
            message = if message.is_empty() { detail.join("; ") } else { format!("{message} ({})", detail.join("; ")) };
        }
        if message.is_empty() {
            message = explain_status(status, reason.as_deref());
        }
        Err(PveError::Api {
            cluster: self.cluster.clone(),
            method: method.to_string(),
            path: path.to_string(),
            status,
            message,
        })
    }

    /// Pinned modes: learns every node's certificate fingerprint from `GET /nodes` (`ssl_fingerprint`), over a
    /// connection the pins already verified, so failing over to another node works with one pinned node.
    /// At most once per `every`; returns how many fingerprints were new.
    pub async fn learn_node_fingerprints(&self, every: Duration) -> Result<usize, PveError> {
        let Some(pins) = &self.pins else { return Ok(0) };
        {
            let mut last = self.learned_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < every) {
                return Ok(0);
            }
            *last = Some(std::time::Instant::now());
        }
        let nodes: Vec<NodeListItem> = self.call(Method::GET, "/nodes", &[], &[]).await?.data;
        let reported: Vec<(String, [u8; 32])> = nodes
            .iter()
            .filter_map(|n| Some((n.node.clone(), crate::names::parse_fingerprint(n.ssl_fingerprint.as_deref()?)?)))
            .collect();
        // The endpoint that answered (the call moves the preference to it).
        let via = self.endpoints.get(self.preferred.load(std::sync::atomic::Ordering::Relaxed)).map(|u| u.as_str());
        let mut set = pins.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let learned = set.learn(&reported, via.unwrap_or_default(), crate::time::Timestamp::now());
        if learned > 0 {
            tracing::debug!(cluster = %self.cluster, learned, "learned node certificate fingerprints");
        }
        Ok(learned)
    }

    /// One `GET /version` to each endpoint in turn, without retries, within `within` overall: whether the API
    /// answers at all (the probe of a cluster that stalled).
    pub async fn probe(&self, within: Duration) -> Result<(), PveError> {
        let probing = async {
            let mut last = None;
            for idx in 0..self.endpoints.len() {
                match self.send(idx, &Method::GET, "/version", &[], &[]).await {
                    Ok(_) => {
                        self.preferred.store(idx, Ordering::Relaxed);
                        return Ok(());
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| self.connect_error("", "no endpoint configured")))
        };
        tokio::time::timeout(within, probing).await.unwrap_or_else(|_| {
            Err(PveError::Timeout {
                cluster: self.cluster.clone(),
                method: "GET".into(),
                path: "/version".into(),
                seconds: within.as_secs(),
            })
        })
    }

    /// Whether the client has more than one endpoint to fail over to.
    pub fn has_failover(&self) -> bool {
        self.endpoints.len() > 1
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<serde_json::Value, PveError> {
        Ok(self.call(Method::GET, "/version", &[], &[]).await?.data)
    }

    /// `GET /access/permissions`: the token's own effective privileges.
    pub async fn permissions(&self) -> Result<Permissions, PveError> {
        Ok(self.call(Method::GET, "/access/permissions", &[], &[]).await?.data)
    }

    /// `GET /cluster/resources?type=node`.
    pub async fn cluster_nodes(&self) -> Result<Vec<ClusterNode>, PveError> {
        Ok(self.call(Method::GET, "/cluster/resources", &[("type", "node".into())], &[]).await?.data)
    }

    /// `GET /cluster/resources?type=storage`: one row per (storage, node).
    pub async fn cluster_storages(&self) -> Result<Vec<ClusterStorage>, PveError> {
        Ok(self.call(Method::GET, "/cluster/resources", &[("type", "storage".into())], &[]).await?.data)
    }

    /// `GET /nodes/{node}/storage/{storage}/content?content=vztmpl`.
    pub async fn templates_on(&self, node: &str, storage: &str) -> Result<Vec<StorageVolume>, PveError> {
        self.volumes(node, storage, &self.listing(node, storage).await?)
    }

    /// The same listing as it arrived, undecoded: a steady pass compares listings by their bytes, and decodes
    /// them ([`Client::volumes`]) only when something changed.
    pub async fn listing(&self, node: &str, storage: &str) -> Result<Vec<u8>, PveError> {
        self.call_bytes(&Method::GET, &listing_path(node, storage), &[("content", "vztmpl".into())], &[]).await
    }

    /// Decodes a listing [`Client::listing`] returned.
    pub fn volumes(&self, node: &str, storage: &str, listing: &[u8]) -> Result<Vec<StorageVolume>, PveError> {
        let envelope: Envelope<Vec<StorageVolume>> =
            self.decode(&Method::GET, &listing_path(node, storage), listing)?;
        Ok(envelope.data)
    }

    /// `GET /nodes/{node}/aplinfo`: that node's own appliance index.
    pub async fn appliances(&self, node: &str) -> Result<Vec<Appliance>, PveError> {
        Ok(self.call(Method::GET, &format!("/nodes/{}/aplinfo", encode_segment(node)), &[], &[]).await?.data)
    }

    /// `POST /nodes/{node}/aplinfo`: download an index template; returns the UPID.
    pub async fn download_appliance(&self, node: &str, storage: &str, template: &str) -> Result<String, PveError> {
        let form = [("storage", storage.to_string()), ("template", template.to_string())];
        Ok(self.call(Method::POST, &format!("/nodes/{}/aplinfo", encode_segment(node)), &[], &form).await?.data)
    }

    /// `POST /nodes/{node}/storage/{storage}/download-url` with a checksum; returns the UPID.
    pub async fn download_url(
        &self,
        node: &str,
        storage: &str,
        url: &str,
        filename: &str,
        (algorithm, checksum): (&str, &str),
    ) -> Result<String, PveError> {
        let form = [
            ("url", url.to_string()),
            ("content", "vztmpl".to_string()),
            ("filename", filename.to_string()),
            ("checksum", checksum.to_string()),
            ("checksum-algorithm", algorithm.to_string()),
            ("verify-certificates", "1".to_string()),
        ];
        let path = format!("/nodes/{}/storage/{}/download-url", encode_segment(node), encode_segment(storage));
        Ok(self.call(Method::POST, &path, &[], &form).await?.data)
    }

    /// `GET /nodes/{node}/tasks/{upid}/status`, asked of the UPID's own node.
    pub async fn task_status(&self, upid: &str) -> Result<TaskStatus, PveError> {
        let node = upid_node(upid).unwrap_or("localhost");
        let path = format!("/nodes/{}/tasks/{}/status", encode_segment(node), encode_segment(upid));
        Ok(self.call(Method::GET, &path, &[], &[]).await?.data)
    }

    /// `GET /nodes/{node}/tasks/{upid}/log` from line `start` (0-based); returns lines and the total.
    pub async fn task_log(&self, upid: &str, start: u64) -> Result<(Vec<TaskLogLine>, u64), PveError> {
        let node = upid_node(upid).unwrap_or("localhost");
        let path = format!("/nodes/{}/tasks/{}/log", encode_segment(node), encode_segment(upid));
        let env: Envelope<Vec<TaskLogLine>> =
            self.call(Method::GET, &path, &[("start", start.to_string()), ("limit", "500".into())], &[]).await?;
        let total = env.total.unwrap_or(start + env.data.len() as u64);
        Ok((env.data, total))
    }

    /// `GET /nodes/{node}/tasks?source=active`, kept to downloads (`download`) and OCI pulls (`ociregistrypull`):
    /// what runs there now. `typefilter` takes one type, so the two are filtered here.
    pub async fn active_downloads(&self, node: &str) -> Result<Vec<TaskListItem>, PveError> {
        let query = [("source", "active".to_string()), ("limit", "500".into())];
        let tasks: Vec<TaskListItem> =
            self.call(Method::GET, &format!("/nodes/{}/tasks", encode_segment(node)), &query, &[]).await?.data;
        let kinds = ["download", "ociregistrypull"];
        Ok(tasks.into_iter().filter(|t| t.kind.as_deref().is_some_and(|k| kinds.contains(&k))).collect())
    }

    /// `POST /nodes/{node}/storage/{storage}/oci-registry-pull` (Proxmox VE 9); returns the UPID.
    pub async fn oci_pull(
        &self,
        node: &str,
        storage: &str,
        reference: &str,
        filename: Option<&str>,
    ) -> Result<String, PveError> {
        let mut form = vec![("reference", reference.to_string())];
        if let Some(f) = filename {
            form.push(("filename", f.to_string()));
        }
        let path = format!("/nodes/{}/storage/{}/oci-registry-pull", encode_segment(node), encode_segment(storage));
        Ok(self.call(Method::POST, &path, &[], &form).await?.data)
    }

    /// `DELETE /nodes/{node}/storage/{storage}/content/{volid}`: starts an `imgdel` task; returns its UPID.
    pub async fn delete_volume(&self, node: &str, storage: &str, volid: &str) -> Result<String, PveError> {
        let path = format!(
            "/nodes/{}/storage/{}/content/{}",
            encode_segment(node),
            encode_segment(storage),
            encode_segment(volid)
        );
        Ok(self.call(Method::DELETE, &path, &[], &[]).await?.data)
    }

    /// `DELETE /nodes/{node}/tasks/{upid}`: stop a task.
    pub async fn stop_task(&self, upid: &str) -> Result<(), PveError> {
        let node = upid_node(upid).unwrap_or("localhost");
        let path = format!("/nodes/{}/tasks/{}", encode_segment(node), encode_segment(upid));
        self.call::<serde_json::Value>(Method::DELETE, &path, &[], &[]).await.map(|_| ())
    }
}

/// The path of a storage's content listing.
fn listing_path(node: &str, storage: &str) -> String {
    ["/nodes/", &segment(node), "/storage/", &segment(storage), "/content"].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upid_node_and_encoding() {
        let upid = "UPID:pve2:0002F1A3:00A1B2C3:6853F0A1:download:alpine-3.22-default_20250617_amd64.tar.xz:a@pve!t:";
        assert_eq!(upid_node(upid), Some("pve2"));
        assert_eq!(upid_node("garbage"), None);
        let enc = encode_segment(upid);
        assert!(!enc.contains(':') && !enc.contains('!') && enc.contains("alpine-3.22-default_20250617_amd64.tar.xz"));
        assert_eq!(encode_segment("local:vztmpl/a.tar"), "local%3Avztmpl%2Fa.tar");
    }
}
