//! Errors of the Proxmox client: each names the cluster, the request and what to do, and says whether a
//! retry can help.

/// A failed Proxmox API call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PveError {
    /// No endpoint could be reached (connection refused, DNS, reset).
    #[error(
        "cluster {cluster}: cannot reach {endpoint}: {detail} (is the node up, and {endpoint} reachable from here?)"
    )]
    Connect { cluster: String, endpoint: String, detail: String },
    /// The client could not be built from the configuration (a secret with characters no header may hold).
    #[error("cluster {cluster}: {detail}")]
    Setup { cluster: String, detail: String },
    /// The server did not answer in time.
    #[error("cluster {cluster}: {method} {path}: no answer within {seconds}s")]
    Timeout { cluster: String, method: String, path: String, seconds: u64 },
    /// TLS failed: wrong pin, unknown CA, bad certificate.
    #[error("cluster {cluster}: TLS to {endpoint} failed: {detail}")]
    Tls { cluster: String, endpoint: String, detail: String },
    /// Proxmox answered with an error status.
    #[error("cluster {cluster}: {method} {path}: HTTP {status}: {message}")]
    Api { cluster: String, method: String, path: String, status: u16, message: String },
    /// The answer was not what Proxmox sends.
    #[error("cluster {cluster}: {method} {path}: unexpected answer: {detail}")]
    Decode { cluster: String, method: String, path: String, detail: String },
}

impl PveError {
    /// Whether retrying later can help: network trouble, timeouts, 5xx proxies and unreachable nodes — not a
    /// handler's 500, a permission error or a bad request.
    pub fn is_retryable(&self) -> bool {
        match self {
            PveError::Connect { .. } | PveError::Timeout { .. } => true,
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

    /// A short, low-cardinality label for metrics and status (`connect`, `timeout`, `tls`, `http_403`, ...).
    pub fn kind(&self) -> String {
        match self {
            PveError::Connect { .. } => "connect".into(),
            PveError::Timeout { .. } => "timeout".into(),
            PveError::Tls { .. } => "tls".into(),
            PveError::Setup { .. } => "setup".into(),
            PveError::Api { status, .. } => format!("http_{status}"),
            PveError::Decode { .. } => "decode".into(),
        }
    }
}

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
