//! A small client for etcd's v3 API as JSON over HTTP (etcd's gRPC gateway, `/v3/...`, served on the client
//! port by every etcd since 3.3): leases, one compare-and-put transaction, reads, and authentication. In this
//! JSON, keys and values are base64 and 64-bit integers are strings; fields at their zero value are omitted.
//!
//! Every call is bounded by the client's timeout and answer size; an unreachable endpoint moves on to the next.

mod wire;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use wire::GrpcCode;
use wire::{Answer, Authenticated, KeepAlive, LeaseGrant, Range, Txn};

use crate::config::{HaConfig, Secret};

/// Largest answer read from etcd: a lease, a transaction or one key's value is well under a kilobyte.
const MAX_ANSWER: usize = 64 * 1024;

/// Why an etcd call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd is unreachable ({endpoints}): {detail}")]
    Unreachable { endpoints: String, detail: String },
    #[error("etcd at {endpoint} refused {path}: {message}")]
    Refused { endpoint: String, path: &'static str, code: Option<GrpcCode>, message: String },
    /// etcd's guard: over the JSON gateway a certificate's Common Name cannot act as the user.
    #[error(
        "etcd at {endpoint} refuses JSON-gateway requests from a client certificate with a Common Name; issue vztmpld's certificate without a CN (subject alternative names only) and authenticate with ha.etcd.auth"
    )]
    CommonName { endpoint: String },
    #[error("etcd at {endpoint} gave an unexpected answer to {path}: {detail}")]
    Decode { endpoint: String, path: &'static str, detail: String },
    #[error("cannot set up the etcd client: {0}")]
    Setup(String),
}

/// The current holder of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub value: Vec<u8>,
    /// The lease the key is bound to (0: none).
    pub lease: i64,
}

/// An etcd v3 client over the JSON gateway.
pub struct Etcd {
    http: reqwest::Client,
    endpoints: Vec<reqwest::Url>,
    /// The endpoint that answered last; calls start there.
    current: AtomicUsize,
    auth: Option<(String, Secret)>,
    token: Mutex<Option<HeaderValue>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd").field("endpoints", &self.endpoints).finish_non_exhaustive()
    }
}

impl Etcd {
    /// A client for the configured endpoints; each request is bounded by `timeout`.
    pub fn new(cfg: &HaConfig, timeout: Duration) -> Result<Self, EtcdError> {
        // Our own rustls configuration always (the CA, or no roots for plain-http loopback endpoints), so the
        // client never depends on a process-wide crypto provider.
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(cfg)?)
            .timeout(timeout)
            .connect_timeout(timeout)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("vztmpld/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EtcdError::Setup(e.to_string()))?;
        Ok(Self {
            http,
            endpoints: cfg.endpoints.clone(),
            current: AtomicUsize::new(0),
            auth: cfg.auth.clone(),
            token: Mutex::new(None),
        })
    }

    /// Grants a lease of `ttl` seconds: (lease id, the TTL etcd granted).
    pub async fn grant(&self, ttl: i64) -> Result<(i64, i64), EtcdError> {
        let path = "/v3/lease/grant";
        let (endpoint, answer) = self.post::<LeaseGrant>(path, &json!({ "TTL": ttl })).await?;
        if answer.id == 0 {
            return Err(decode(&endpoint, path, "no lease ID"));
        }
        Ok((answer.id, if answer.ttl > 0 { answer.ttl } else { ttl }))
    }

    /// Renews a lease: its remaining TTL, or `None` when etcd no longer has it (expired or revoked).
    pub async fn keep_alive(&self, lease: i64) -> Result<Option<i64>, EtcdError> {
        // A bidirectional stream in gRPC; through the gateway one request gives one answer, `{"result": …}`.
        let (_, answer) = self.post::<KeepAlive>("/v3/lease/keepalive", &json!({ "ID": lease.to_string() })).await?;
        Ok(Some(answer.ttl()).filter(|ttl| *ttl > 0))
    }

    /// Revokes a lease, deleting the keys bound to it. A lease etcd no longer has counts as revoked.
    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        match self.post::<Value>("/v3/lease/revoke", &json!({ "ID": lease.to_string() })).await {
            Err(EtcdError::Refused { code: Some(GrpcCode::NotFound), .. }) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Puts `key = value` bound to `lease` if the key does not exist: `None` when it was put, else the holder.
    pub async fn put_if_absent(&self, key: &str, value: &[u8], lease: i64) -> Result<Option<Holder>, EtcdError> {
        let path = "/v3/kv/txn";
        let key = B64.encode(key);
        let body = json!({
            "compare": [{ "key": key, "result": "EQUAL", "target": "CREATE", "create_revision": "0" }],
            "success": [{ "request_put": { "key": key, "value": B64.encode(value), "lease": lease.to_string() } }],
            "failure": [{ "request_range": { "key": key } }],
        });
        let (_, answer) = self.post::<Txn>(path, &body).await?;
        if answer.succeeded {
            return Ok(None);
        }
        let range = answer.responses.into_iter().next().and_then(|r| r.response_range).unwrap_or_default();
        match holder(range) {
            Some(h) => Ok(Some(h)),
            // Deleted between the compare and the read: vacant now; the caller tries again.
            None => Ok(Some(Holder { value: Vec::new(), lease: 0 })),
        }
    }

    /// The key's holder, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Holder>, EtcdError> {
        let path = "/v3/kv/range";
        let (_, answer) = self.post::<Range>(path, &json!({ "key": B64.encode(key) })).await?;
        Ok(holder(answer))
    }

    /// POSTs to the first endpoint that answers, authenticating first when `auth` is configured.
    async fn post<T: DeserializeOwned>(&self, path: &'static str, body: &Value) -> Result<(String, T), EtcdError> {
        let mut last = String::new();
        let n = self.endpoints.len().max(1);
        let start = self.current.load(Ordering::Relaxed);
        for step in 0..n {
            let i = (start + step) % n;
            let Some(base) = self.endpoints.get(i) else { break };
            match self.post_to(base, path, body).await {
                Err(EtcdError::Unreachable { detail, .. }) => last = format!("{}: {detail}", base.as_str()),
                other => {
                    self.current.store(i, Ordering::Relaxed);
                    return other.map(|v| (base.to_string(), v));
                }
            }
        }
        let endpoints = self.endpoints.iter().map(reqwest::Url::as_str).collect::<Vec<_>>().join(", ");
        Err(EtcdError::Unreachable { endpoints, detail: last })
    }

    async fn post_to<T: DeserializeOwned>(
        &self,
        base: &reqwest::Url,
        path: &'static str,
        body: &Value,
    ) -> Result<T, EtcdError> {
        for attempt in 0..2 {
            let token = match &self.auth {
                Some(_) => Some(self.token(base).await?),
                None => None,
            };
            match self.send(base, path, body, token).await {
                // Simple tokens expire (5 min by default): authenticate again, once.
                Err(EtcdError::Refused { code: Some(GrpcCode::Unauthenticated), .. }) if attempt == 0 => {
                    *self.token.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                }
                other => return other,
            }
        }
        Err(EtcdError::Refused {
            endpoint: base.to_string(),
            path,
            code: Some(GrpcCode::Unauthenticated),
            message: "invalid auth token twice".into(),
        })
    }

    /// The auth token, fetched once and reused until etcd says it is invalid.
    async fn token(&self, base: &reqwest::Url) -> Result<HeaderValue, EtcdError> {
        if let Some(t) = self.token.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
            return Ok(t);
        }
        let Some((name, password)) = &self.auth else { return Err(EtcdError::Setup("no auth configured".into())) };
        let path = "/v3/auth/authenticate";
        let answer: Authenticated =
            self.send(base, path, &json!({ "name": name, "password": password.expose() }), None).await?;
        let mut header = HeaderValue::from_str(&answer.token)
            .map_err(|_| decode(base.as_str(), path, "a token no header can carry"))?;
        header.set_sensitive(true);
        *self.token.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(header.clone());
        Ok(header)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        base: &reqwest::Url,
        path: &'static str,
        body: &Value,
        token: Option<HeaderValue>,
    ) -> Result<T, EtcdError> {
        let url = base.join(path).map_err(|e| EtcdError::Setup(format!("{base}: {e}")))?;
        let mut request = self.http.post(url).json(body);
        if let Some(t) = token {
            request = request.header(AUTHORIZATION, t);
        }
        let endpoint = base.to_string();
        let unreachable =
            |e: reqwest::Error| EtcdError::Unreachable { endpoints: endpoint.clone(), detail: error_chain(&e) };
        let mut response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if bytes.len() + chunk.len() > MAX_ANSWER {
                return Err(decode(&endpoint, path, &format!("answer larger than {MAX_ANSWER} bytes")));
            }
            bytes.extend_from_slice(&chunk);
        }
        match wire::read(status.as_u16(), &bytes).map_err(|detail| decode(&endpoint, path, &detail))? {
            Answer::Ok(json) => serde_json::from_str(json).map_err(|e| decode(&endpoint, path, &e.to_string())),
            Answer::Refused { code, message } => Err(EtcdError::Refused { endpoint, path, code, message }),
            Answer::CommonNameRefused => Err(EtcdError::CommonName { endpoint }),
        }
    }
}

/// The first key of a range answer, if any.
fn holder(range: Range) -> Option<Holder> {
    range.kvs.into_iter().next().map(|kv| Holder { value: kv.value, lease: kv.lease })
}

/// The error and its causes in one line (reqwest's own message hides the cause: refused, reset, TLS).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn decode(endpoint: &str, path: &'static str, detail: &str) -> EtcdError {
    EtcdError::Decode { endpoint: endpoint.to_string(), path, detail: detail.to_string() }
}

/// rustls with the configured CA and, for `--client-cert-auth`, the client certificate.
fn tls_config(cfg: &HaConfig) -> Result<rustls::ClientConfig, EtcdError> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| EtcdError::Setup(e.to_string()))?;
    let roots = match &cfg.ca {
        Some(ca) => crate::pve::tls::root_store(&ca.pem, &ca.path).map_err(EtcdError::Setup)?,
        None => rustls::RootCertStore::empty(),
    };
    let builder = builder.with_root_certificates(roots);
    match &cfg.identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(&cert.pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| EtcdError::Setup(format!("{}: bad PEM: {e}", cert.path.display())))?;
            let private = PrivateKeyDer::from_pem_slice(&key.pem)
                .map_err(|e| EtcdError::Setup(format!("{}: no usable private key: {e}", key.path.display())))?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|e| EtcdError::Setup(format!("{}: {e}", cert.path.display())))
        }
    }
}
