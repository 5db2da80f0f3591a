//! What the client needs to reach one cluster — its own options, so `pve` depends on no configuration type:
//! the reconciler builds a [`Connection`] from the validated configuration (`reconcile::connection`).

use std::fmt;
use std::path::PathBuf;

/// One cluster's endpoints, token and trust.
#[derive(Clone)]
pub struct Connection {
    /// The cluster's name, in every error and log line.
    pub cluster: String,
    /// API endpoints of the same cluster, tried in order.
    pub endpoints: Vec<url::Url>,
    /// `USER@REALM!TOKENID`.
    pub token_id: String,
    /// The token's secret (never printed: `Debug` redacts it).
    pub secret: String,
    pub trust: Trust,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("cluster", &self.cluster)
            .field("endpoints", &self.endpoints)
            .field("token_id", &self.token_id)
            .field("secret", &"<redacted>")
            .field("trust", &self.trust)
            .finish()
    }
}

/// How the server certificate is verified.
#[derive(Clone, PartialEq, Eq)]
pub enum Trust {
    /// SHA-256 fingerprints of accepted leaf certificates; the other nodes' are learned from `GET /nodes` over a
    /// connection verified by these.
    Pinned(Vec<[u8; 32]>),
    /// A CA (or the self-signed certificate itself) in PEM; `path` names it in errors.
    Ca { path: PathBuf, pem: Vec<u8> },
    /// No verification (the configuration said `insecure: true`).
    Insecure,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trust::Pinned(pins) => {
                let shown: Vec<String> = pins.iter().map(|p| super::tls::format_fingerprint(p)).collect();
                write!(f, "Pinned({})", shown.join(", "))
            }
            Trust::Ca { path, .. } => write!(f, "Ca({})", path.display()),
            Trust::Insecure => f.write_str("Insecure"),
        }
    }
}
