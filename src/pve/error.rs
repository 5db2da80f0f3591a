//! Errors of the Proxmox client: each names the cluster, the request and what to do, and says whether a
//! retry can help.

/// A failed Proxmox API call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PveError {
    /// No endpoint could be reached (connection refused, DNS, reset).
    #[error(
        "cluster {cluster}: cannot reach {endpoint}: {detail} (is the node up, and {endpoint} reachable from here?)"
    )]
    Connect {
        cluster: String,
        endpoint: String,
        detail: String,
        /// The transport's error (socket, DNS, TLS handshake), when there was one.
        #[source]
        cause: Option<Cause>,
    },
    /// The client could not be built from the configuration (a secret with characters no header may hold).
    #[error("cluster {cluster}: {detail}")]
    Setup { cluster: String, detail: String },
    /// The connection broke after a request that changes something was sent: it may have been carried out.
    #[error(
        "cluster {cluster}: {request}: the connection broke after the request was sent ({detail}); it may have been carried out, so it is not sent again"
    )]
    Interrupted {
        cluster: String,
        /// `METHOD path`.
        request: String,
        /// The endpoint and what broke.
        detail: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The server did not answer in time.
    #[error("cluster {cluster}: {method} {path}: no answer within {seconds}s")]
    Timeout { cluster: String, method: String, path: String, seconds: u64 },
    /// TLS failed: wrong pin, unknown CA, bad certificate.
    #[error("cluster {cluster}: TLS to {endpoint} failed: {detail}")]
    Tls {
        cluster: String,
        endpoint: String,
        detail: String,
        /// rustls' error, when the handshake failed.
        #[source]
        cause: Option<Cause>,
    },
    /// Proxmox answered with an error status.
    #[error("cluster {cluster}: {method} {path}: HTTP {status}: {message}")]
    Api { cluster: String, method: String, path: String, status: u16, message: String },
    /// The answer was not what Proxmox sends.
    #[error("cluster {cluster}: {method} {path}: unexpected answer: {detail}")]
    Decode { cluster: String, method: String, path: String, detail: String },
}

impl PveError {
    /// A request that changes something (a POST, a DELETE) may have been carried out although no answer came:
    /// it was cut off after it was sent, or timed out. Whoever sent it looks before sending it again.
    pub fn may_have_been_carried_out(&self) -> bool {
        match self {
            PveError::Interrupted { .. } => true,
            PveError::Timeout { method, .. } => method != "GET",
            _ => false,
        }
    }

    /// Whether retrying later can help: network trouble, timeouts, 5xx proxies and unreachable nodes — not a
    /// handler's 500, a permission error or a bad request.
    pub fn is_retryable(&self) -> bool {
        match self {
            PveError::Connect { .. } | PveError::Timeout { .. } | PveError::Interrupted { .. } => true,
            PveError::Api { status, .. } => matches!(status, 502 | 503 | 504 | 595 | 596),
            PveError::Tls { .. } | PveError::Decode { .. } | PveError::Setup { .. } => false,
        }
    }

    /// The HTTP status, when Proxmox answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            PveError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A short, fixed label for metrics and status (`connect`, `timeout`, `tls`, `http_403`, ...): the statuses
    /// Proxmox sends have their own, any other is `http_other`, so the label set stays bounded.
    pub fn metric_label(&self) -> &'static str {
        match self {
            PveError::Connect { .. } => "connect",
            PveError::Timeout { .. } => "timeout",
            PveError::Interrupted { .. } => "interrupted",
            PveError::Tls { .. } => "tls",
            PveError::Setup { .. } => "setup",
            PveError::Decode { .. } => "decode",
            PveError::Api { status, .. } => match status {
                400 => "http_400",
                401 => "http_401",
                403 => "http_403",
                500 => "http_500",
                501 => "http_501",
                502 => "http_502",
                503 => "http_503",
                504 => "http_504",
                595 => "http_595",
                596 => "http_596",
                300..=399 => "http_3xx",
                _ => "http_other",
            },
        }
    }
}

/// The error underneath a failed call, kept as the chain's `source()` (so a caller or a log can walk it by
/// type); two are equal when they read the same.
#[derive(Debug, Clone)]
pub struct Cause(std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    /// Keeps `error` as a cause.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(std::sync::Arc::from(error.into()))
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for Cause {}

/// Explains a status when the server sent no message (401 always; every error before PVE 8.3).
pub fn explain_status(status: u16, reason: Option<&str>) -> String {
    let reason = reason.map(|r| format!("'{r}': ")).unwrap_or_default();
    let why = match status {
        401 => {
            "authentication failed: check auth.token_id and the secret (the token may be deleted, expired, or its secret wrong)"
        }
        403 => {
            "permission denied: the token lacks a privilege (privilege-separated tokens start with none; see README)"
        }
        400 => "the request was rejected as invalid",
        500 => "the Proxmox handler failed",
        501 => "the endpoint does not exist on this Proxmox version",
        502..=504 => "a proxy or gateway failed; retrying",
        300..=399 => "Proxmox never redirects an API call",
        595 | 596 => "the node is unreachable through the cluster proxy (offline, or its certificate changed)",
        _ => "unexpected status",
    };
    format!("{reason}{why}")
}
