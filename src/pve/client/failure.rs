//! How the client's failures become [`PveError`]s: the transport's failure read once (a TLS rejection, a
//! connection that broke before or after the request went out, a body too large or cut off), with what to do
//! said in the error and the transport's error kept as its source.

use hyper::Method;

use super::Client;
use crate::pve::error::{Cause, PveError};
use crate::pve::transport::Failure;

impl Client {
    pub(super) fn connect_error(&self, endpoint: &str, detail: &str) -> PveError {
        PveError::Connect {
            cluster: self.cluster.clone(),
            endpoint: endpoint.to_string(),
            detail: detail.to_string(),
            cause: None,
        }
    }

    pub(super) fn timeout(&self, method: &Method, path: &str) -> PveError {
        PveError::Timeout {
            cluster: self.cluster.clone(),
            method: method.to_string(),
            path: path.to_string(),
            seconds: self.options.timeout.as_secs(),
        }
    }

    pub(super) fn decode_error(&self, method: &Method, path: &str, detail: String) -> PveError {
        PveError::Decode { cluster: self.cluster.clone(), method: method.to_string(), path: path.to_string(), detail }
    }

    pub(super) fn transport_error(
        &self,
        endpoint: &url::Url,
        method: &Method,
        path: &str,
        failure: Failure,
    ) -> PveError {
        let endpoint_s = endpoint.origin().ascii_serialization();
        let e: &(dyn std::error::Error + 'static) = match &failure {
            Failure::Connect(e) => &**e,
            // The request went out (or may have): only a GET is safe to send again.
            Failure::Exchange(e) if method != Method::GET => {
                return PveError::Interrupted {
                    cluster: self.cluster.clone(),
                    request: format!("{method} {path}"),
                    detail: format!("{}: {}", endpoint.origin().ascii_serialization(), root_cause(e)),
                    cause: Some(kept(failure)),
                };
            }
            Failure::Exchange(e) => e,
            Failure::TooLarge => {
                let detail = format!("answer larger than {} bytes", self.options.max_body);
                return self.decode_error(method, path, detail);
            }
            Failure::CutOff(e) => return self.decode_error(method, path, format!("answer cut off: {}", root_cause(e))),
        };
        let cause = root_cause(e);
        let tls_failure = rustls_cause(e);
        let bad_certificate = matches!(tls_failure, Some(rustls::Error::InvalidCertificate(_)));
        if tls_failure.is_some() {
            let detail = match (bad_certificate, self.pins.is_some()) {
                (true, true) if self.endpoints.len() > 1 => {
                    let seen = self.seen_fingerprint.lock().ok().and_then(|s| s.clone()).unwrap_or_default();
                    format!(
                        "the server's certificate (SHA-256 {seen}) is not pinned. Each Proxmox node has its own certificate: list every node's in tls.fingerprints, or trust the cluster CA (tls.ca_file: a copy of /etc/pve/pve-root-ca.pem); vztmpld also learns the other nodes' certificates while a pinned node answers. If this node's certificate was renewed, copy the new fingerprint (node → System → Certificates)"
                    )
                }
                (true, true) => {
                    let seen = self.seen_fingerprint.lock().ok().and_then(|s| s.clone()).unwrap_or_default();
                    format!(
                        "the server's certificate (SHA-256 {seen}) does not match tls.fingerprint; if the certificate was renewed, copy the new fingerprint from the Proxmox GUI (node → System → Certificates)"
                    )
                }
                (true, false) => {
                    format!("certificate not accepted ({cause}); check tls.ca_file, or pin tls.fingerprint instead")
                }
                (false, _) => cause.clone(),
            };
            let cause = Some(kept(failure));
            return PveError::Tls { cluster: self.cluster.clone(), endpoint: endpoint_s, detail, cause };
        }
        PveError::Connect {
            cluster: self.cluster.clone(),
            endpoint: endpoint_s,
            detail: cause,
            cause: Some(kept(failure)),
        }
    }
}

/// The rustls error somewhere in a chain. An `io::Error`'s `source()` skips the error it wraps (it returns the
/// wrapped error's source), so a wrapped error is visited through `get_ref` — io::Errors nest when hyper and
/// tokio-rustls each wrap one.
fn rustls_cause(e: &(dyn std::error::Error + 'static)) -> Option<rustls::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<rustls::Error>() {
            return Some(r.clone());
        }
        cause = match c.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(inner) => Some(inner),
            None => c.source(),
        };
    }
    None
}

/// A transport failure kept as an error's source.
fn kept(failure: Failure) -> Cause {
    match failure {
        Failure::Connect(e) => Cause::new(e),
        Failure::Exchange(e) | Failure::CutOff(e) => Cause::new(e),
        Failure::TooLarge => Cause::new("answer too large"),
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
