//! The validated configuration: what the reconciler can trust. Loading it (YAML, positions, secrets read from
//! files) is the binary crate's `config` module; this is only the model, plain data.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::template::TemplateSpec;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// How often the daemon reconciles.
    pub interval: Duration,
    pub clusters: Vec<ClusterConfig>,
    pub templates: Vec<TemplateConfig>,
    /// `server.listen` for the status server.
    pub server_listen: Option<SocketAddr>,
    /// `server.token_file`: the bearer token the status server requires (all but `/healthz` and `/readyz`).
    pub server_token: Option<Secret>,
    /// `server.allow_unauthenticated`: serve beyond loopback without a token, on purpose.
    pub server_allow_unauthenticated: bool,
    pub downloads: DownloadSettings,
    /// `ha`: leader election on etcd; without it the daemon runs alone.
    pub ha: Option<HaConfig>,
    /// `state_dir`: where the daemon keeps what it learned (learned pins, verify ledger, last inventory).
    pub state_dir: Option<PathBuf>,
    /// Non-fatal findings (e.g. a secret file readable by others), for the caller to log.
    pub warnings: Vec<String>,
}

/// `ha`: several daemons on the same clusters elect one leader on etcd; only the leader reconciles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    /// etcd client URLs (`http://` only on loopback), tried in order.
    pub endpoints: Vec<Url>,
    /// One election per prefix; the leader key is `{prefix}leader`.
    pub prefix: String,
    /// How long leadership outlives the leader's last renewal.
    pub lease_ttl: Duration,
    /// How often a standby looks for a vacant leadership.
    pub poll: Duration,
    /// A CA (PEM) for `https://` endpoints.
    pub ca: Option<PemFile>,
    /// A client certificate chain and its key (PEM), for etcd's `--client-cert-auth`.
    pub identity: Option<(PemFile, PemFile)>,
    /// etcd's own users: (name, password).
    pub auth: Option<(String, Secret)>,
    /// This daemon's name in the election (default `HOSTNAME:PID`).
    pub id: Option<String>,
    /// Where this daemon's status server is reachable, shown to standbys.
    pub advertise: Option<Url>,
}

/// A PEM file's path and bytes, read at load.
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

impl fmt::Debug for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A key file's bytes are a secret; the path says which file.
        write!(f, "PemFile({})", self.path.display())
    }
}

/// How long a download may take: `timeout` plus the file size at `min_rate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadSettings {
    /// Fixed part of every download's deadline.
    pub timeout: Duration,
    /// Slowest acceptable transfer rate (bytes per second) for the size-dependent part.
    pub min_rate: u64,
    /// How often task status is polled.
    pub poll_interval: Duration,
}

impl Default for DownloadSettings {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(300), min_rate: 1_000_000, poll_interval: Duration::from_secs(2) }
    }
}

impl DownloadSettings {
    /// The deadline for a file of `size` bytes (unknown size: the fixed part plus 30 minutes).
    pub fn deadline_for(&self, size: Option<u64>) -> Duration {
        let variable = size.map_or(Duration::from_secs(1800), |s| Duration::from_secs(s / self.min_rate.max(1)));
        self.timeout + variable
    }
}

/// One Proxmox VE cluster to reconcile.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub name: String,
    /// API endpoints of the same cluster, tried in order.
    pub endpoints: Vec<Url>,
    /// `USER@REALM!TOKENID`.
    pub token_id: String,
    pub secret: Secret,
    pub tls: TlsMode,
    pub nodes: NodeSelector,
    pub storage: StorageSelector,
    pub max_parallel_downloads: usize,
    pub max_downloads_per_node: usize,
    /// `mirrors:` URL prefix → replacement, longest prefix first.
    pub mirrors: Vec<(String, String)>,
}

/// How the server certificate is verified.
#[derive(Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// SHA-256 fingerprints of accepted leaf certificates (`tls.fingerprint` is a list of one). The other
    /// nodes' certificates are learned from `GET /nodes` over a connection verified by these pins.
    Pinned(Vec<[u8; 32]>),
    /// A CA (or the self-signed certificate itself) in PEM.
    CaFile { path: PathBuf, pem: Vec<u8> },
    /// No verification, only when the config says `insecure: true`.
    Insecure,
}

impl fmt::Debug for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsMode::Pinned(pins) => {
                let hex: Vec<String> =
                    pins.iter().map(|fp| fp.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")).collect();
                write!(f, "Pinned({})", hex.join(", "))
            }
            TlsMode::CaFile { path, .. } => write!(f, "CaFile({})", path.display()),
            TlsMode::Insecure => f.write_str("Insecure"),
        }
    }
}

/// Which nodes of a cluster are targeted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeSelector {
    All,
    Only(Vec<String>),
}

impl NodeSelector {
    /// Whether `node` is targeted.
    pub fn includes(&self, node: &str) -> bool {
        match self {
            NodeSelector::All => true,
            NodeSelector::Only(list) => list.iter().any(|n| n == node),
        }
    }
}

/// The default target storage of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageSelector {
    /// A shared vztmpl storage all targeted nodes see; else `local`; else the one with most room.
    Auto,
    Named(String),
}

/// One desired template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateConfig {
    /// How it is shown in plans, logs and status (`alpine-3.22`, or the url template's file name).
    pub label: String,
    pub source: TemplateSource,
    pub policy: Policy,
    /// Only these clusters (all when absent).
    pub clusters: Option<Vec<String>>,
    /// Only these nodes (all targeted when absent).
    pub nodes: Option<Vec<String>>,
    /// Target storage for this template (overrides the cluster's).
    pub storage: Option<String>,
    /// `prune: {keep: N}`: on the storages vztmpld fills, delete older matching builds beyond the newest N.
    pub prune: Option<usize>,
    /// `verify`: re-hash the cached file on Proxmox this often (its own, else the global one; `None`: never).
    pub verify: Option<Duration>,
    /// `repair`: a file found corrupt is deleted and downloaded again.
    pub repair: bool,
}

impl TemplateConfig {
    /// Whether this template applies to a node of a cluster.
    pub fn applies_to(&self, cluster: &str, node: &str) -> bool {
        self.clusters.as_ref().is_none_or(|c| c.iter().any(|c| c == cluster))
            && self.nodes.as_ref().is_none_or(|n| n.iter().any(|n| n == node))
    }
}

/// Where a template comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSource {
    /// The appliance index (`POST /nodes/{node}/aplinfo`).
    Appliance(TemplateSpec),
    /// A URL with a checksum (`download-url`).
    Url { url: Url, checksum: Checksum, filename: String },
    /// An OCI image (`oci-registry-pull`, Proxmox VE 9): `reference` ends in `:tag`; `file` is the `NAME.tar`
    /// Proxmox makes of `filename` (or of the reference).
    Oci { reference: String, filename: Option<String>, file: String },
}

impl TemplateSource {
    /// The label used in output.
    pub fn label(&self) -> String {
        match self {
            TemplateSource::Appliance(spec) => spec.to_string(),
            TemplateSource::Url { filename, .. } => filename.clone(),
            TemplateSource::Oci { reference, .. } => reference.clone(),
        }
    }

    /// Whether this template is satisfied by a file on a node of `arch` (so the daemon keeps that file).
    pub fn accepts(&self, file: &str, name: Option<&crate::template::TemplateName>, arch: &str) -> bool {
        match self {
            TemplateSource::Appliance(spec) => spec.accepts(file, name, arch),
            other => other.fixed_file() == Some(file),
        }
    }

    /// The spec a lookup for this template uses (a url or OCI template's one file by name).
    pub fn spec(&self) -> TemplateSpec {
        match self {
            TemplateSource::Appliance(spec) => spec.clone(),
            other => TemplateSpec::File(other.fixed_file().unwrap_or_default().to_string()),
        }
    }

    /// The one file a url or OCI template is (an index template is any matching file).
    pub fn fixed_file(&self) -> Option<&str> {
        match self {
            TemplateSource::Appliance(_) => None,
            TemplateSource::Url { filename, .. } => Some(filename),
            TemplateSource::Oci { file, .. } => Some(file),
        }
    }
}

/// A checksum as Proxmox's download-url takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// `md5`, `sha1`, `sha224`, `sha256`, `sha384` or `sha512`.
    pub algorithm: String,
    /// Lower-case hex.
    pub hex: String,
}

impl Checksum {
    /// Parses `ALGO:HEX`.
    pub fn parse(text: &str) -> Result<Self, String> {
        const LENGTHS: &[(&str, usize)] =
            &[("md5", 32), ("sha1", 40), ("sha224", 56), ("sha256", 64), ("sha384", 96), ("sha512", 128)];
        let Some((algo, hex)) = text.split_once(':') else {
            return Err(format!("checksum '{text}' must be ALGORITHM:HEX, e.g. sha256:3f5a..."));
        };
        let algo = algo.trim().to_ascii_lowercase();
        let Some((_, len)) = LENGTHS.iter().find(|(a, _)| *a == algo) else {
            return Err(format!(
                "checksum algorithm '{algo}' is not one Proxmox supports (md5, sha1, sha224, sha256, sha384, sha512)"
            ));
        };
        let hex = hex.trim().to_ascii_lowercase();
        if hex.len() != *len || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("{algo} checksum must be {len} hex digits, got {}", hex.len()));
        }
        Ok(Self { algorithm: algo, hex })
    }
}

/// When a template counts as satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Any matching file.
    Present,
    /// The newest matching build in the cluster's appliance indexes.
    Latest,
}

/// A token secret: never shown by `Debug` or `Display`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: String) -> Self {
        Self(s)
    }

    /// The secret itself, for the Authorization header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this secret, compared in time that does not depend on where they differ.
    pub fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        let differ = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
        a.len() == b.len() && differ == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `url` with its longest matching mirror prefix replaced, if any (`mirrors` is ordered longest prefix first).
pub fn rewrite_mirror(mirrors: &[(String, String)], url: &str) -> Option<String> {
    mirrors.iter().find_map(|(from, to)| url.strip_prefix(from.as_str()).map(|rest| format!("{to}{rest}")))
}
