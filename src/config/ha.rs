//! The `ha` section: etcd endpoints, the election's prefix and timing, and how vztmpld authenticates to
//! etcd. Plain `http://` is accepted on loopback only: leadership decides who downloads, and a password or a
//! forged answer must not cross a network in clear text.

use std::path::Path;
use std::time::Duration;

use super::model;
use super::{HaConfig, PemFile};
use super::{Validator, credentials::loose_permissions};

/// Shortest `ha.etcd.lease_ttl`: etcd itself grants no lease shorter than about 1.5 s (its election timeout).
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
/// Longest `ha.etcd.lease_ttl`: a dead leader holds the clusters this long.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(300);
/// Shortest `ha.etcd.poll`.
pub const MIN_HA_POLL: Duration = Duration::from_millis(100);

impl Validator {
    pub(super) fn ha(&mut self, raw: model::RawHa, base_dir: &Path, warnings: &mut Vec<String>) -> Option<HaConfig> {
        let before = self.problems.len();
        let e = raw.etcd;
        if e.endpoints.is_empty() {
            self.problem(
                "ha.etcd.endpoints",
                "ha.etcd.endpoints: give at least one etcd client URL, e.g. https://10.0.0.5:2379",
            );
        }
        let endpoints = self.etcd_endpoints(&e.endpoints);
        let prefix = e.prefix.unwrap_or_else(|| "/vztmpld/".to_string());
        if prefix.is_empty() || prefix.chars().any(char::is_control) {
            self.problem(
                "ha.etcd.prefix",
                "ha.etcd.prefix: give a key prefix like /vztmpld/prod/ (one election per prefix)",
            );
        }
        let lease_ttl =
            self.duration_at_least("ha.etcd.lease_ttl", e.lease_ttl.as_deref(), Duration::from_secs(15), MIN_LEASE_TTL);
        if lease_ttl > MAX_LEASE_TTL {
            self.problem(
                "ha.etcd.lease_ttl",
                "ha.etcd.lease_ttl: at most 5m (a dead leader holds the clusters for this long); 15s suits most sites",
            );
        }
        let poll = self.duration_at_least("ha.etcd.poll", e.poll.as_deref(), Duration::from_secs(1), MIN_HA_POLL);
        let (ca, identity) = e.tls.map_or((None, None), |tls| self.etcd_tls(tls, base_dir, warnings));
        if ca.is_none() && endpoints.iter().any(|u| u.scheme() == "https") {
            self.problem(
                "ha.etcd.tls",
                "ha.etcd.tls.ca_file: https endpoints need the CA that signed etcd's certificate (etcd's --trusted-ca-file)",
            );
        }
        let auth = e.auth.and_then(|a| {
            let password =
                self.secret_file("ha.etcd.auth.password_file", &base_dir.join(&a.password_file), warnings)?;
            Some((a.username, password))
        });
        let id = raw.id.filter(|id| {
            let ok = !id.trim().is_empty() && id.len() <= 253 && !id.chars().any(char::is_control);
            if !ok {
                self.problem(
                    "ha.id",
                    "ha.id: give a short name for this daemon, unique among its peers (default HOSTNAME:PID)",
                );
            }
            ok
        });
        let advertise = raw.advertise.and_then(|text| match reqwest::Url::parse(&text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
            _ => {
                self.problem("ha.advertise", format!("ha.advertise: '{text}' is not a URL like http://mgmt1:9811"));
                None
            }
        });
        (self.problems.len() == before).then_some(HaConfig {
            endpoints,
            prefix,
            lease_ttl,
            poll,
            ca,
            identity,
            auth,
            id,
            advertise,
        })
    }

    /// `ha.etcd.endpoints`: https, or plain http on loopback only.
    fn etcd_endpoints(&mut self, texts: &[String]) -> Vec<url::Url> {
        let mut endpoints = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let at = format!("ha.etcd.endpoints[{i}]");
            match reqwest::Url::parse(text) {
                Ok(url) if url.scheme() == "https" => endpoints.push(url),
                Ok(url) if url.scheme() == "http" && is_loopback(&url) => endpoints.push(url),
                Ok(url) if url.scheme() == "http" => self.problem(
                    &at,
                    format!("{at}: '{text}' is plain http to another host; use https:// with ha.etcd.tls.ca_file (http is accepted on loopback only)"),
                ),
                Ok(_) | Err(_) => {
                    self.problem(&at, format!("{at}: '{text}' is not an etcd client URL like https://10.0.0.5:2379"))
                }
            }
        }
        endpoints
    }

    /// `ha.etcd.tls`: the CA, and a client certificate with its key (both or neither).
    fn etcd_tls(
        &mut self,
        tls: model::RawEtcdTls,
        base_dir: &Path,
        warnings: &mut Vec<String>,
    ) -> (Option<PemFile>, Option<(PemFile, PemFile)>) {
        let ca = tls.ca_file.and_then(|f| self.pem("ha.etcd.tls.ca_file", &base_dir.join(f), "CERTIFICATE"));
        let identity = match (tls.cert_file, tls.key_file) {
            (Some(cert), Some(key)) => {
                let cert = self.pem("ha.etcd.tls.cert_file", &base_dir.join(cert), "CERTIFICATE");
                let key = self.pem("ha.etcd.tls.key_file", &base_dir.join(key), "PRIVATE KEY");
                if let Some(w) = key.as_ref().and_then(|k| loose_permissions(&k.path)) {
                    warnings.push(w);
                }
                cert.zip(key)
            }
            (None, None) => None,
            _ => {
                self.problem(
                    "ha.etcd.tls",
                    "ha.etcd.tls: give cert_file and key_file together (a client certificate and its key)",
                );
                None
            }
        };
        (ca, identity)
    }

    /// A PEM file holding a `-----BEGIN …{kind}-----` block (bounded read).
    fn pem(&mut self, key: &str, path: &Path, kind: &str) -> Option<PemFile> {
        match crate::files::read_bounded(path, crate::files::CA_LIMIT) {
            Ok(pem)
                if String::from_utf8_lossy(&pem).lines().any(|l| l.starts_with("-----BEGIN") && l.contains(kind)) =>
            {
                Some(PemFile { path: path.to_path_buf(), pem })
            }
            Ok(_) => {
                self.problem(key, format!("{key}: {} holds no PEM {}", path.display(), kind.to_lowercase()));
                None
            }
            Err(e) => {
                self.problem(key, format!("{key}: cannot read {}: {e}", path.display()));
                None
            }
        }
    }
}

/// `localhost`, `127.0.0.0/8` or `::1`.
fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
