//! What serde reads (`Raw*`, unknown keys rejected); the `Validator` turns it into the core's validated model.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub interval: Option<String>,
    pub clusters: Vec<RawCluster>,
    #[serde(default)]
    pub templates: Vec<RawTemplate>,
    pub server: Option<RawServer>,
    pub downloads: Option<RawDownloads>,
    pub verify: Option<String>,
    pub repair: Option<bool>,
    pub ha: Option<RawHa>,
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub name: String,
    pub endpoints: Vec<String>,
    pub auth: RawAuth,
    pub tls: RawTls,
    pub nodes: Option<yaml_serde::Value>,
    pub storage: Option<String>,
    pub max_parallel_downloads: Option<u32>,
    pub max_downloads_per_node: Option<u32>,
    pub mirrors: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub token_id: String,
    pub secret_file: Option<PathBuf>,
    pub secret_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub fingerprint: Option<String>,
    pub fingerprints: Option<Vec<String>>,
    pub ca_file: Option<PathBuf>,
    pub insecure: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTemplate {
    pub template: Option<String>,
    pub url: Option<String>,
    pub oci: Option<String>,
    pub checksum: Option<String>,
    pub filename: Option<String>,
    pub policy: Option<String>,
    pub clusters: Option<Vec<String>>,
    pub nodes: Option<Vec<String>>,
    pub storage: Option<String>,
    pub prune: Option<RawPrune>,
    pub verify: Option<String>,
    pub repair: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrune {
    pub keep: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub listen: Option<String>,
    pub token_file: Option<PathBuf>,
    pub allow_unauthenticated: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDownloads {
    pub timeout: Option<String>,
    pub min_rate: Option<u64>,
    pub poll_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHa {
    pub etcd: RawEtcd,
    pub id: Option<String>,
    pub advertise: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEtcd {
    pub endpoints: Vec<String>,
    pub prefix: Option<String>,
    pub lease_ttl: Option<String>,
    pub poll: Option<String>,
    pub tls: Option<RawEtcdTls>,
    pub auth: Option<RawEtcdAuth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEtcdTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEtcdAuth {
    pub username: String,
    pub password_file: PathBuf,
}
