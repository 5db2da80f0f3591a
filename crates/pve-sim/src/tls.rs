//! The simulator's TLS identities, made at start-up and never stored on disk: a per-run cluster CA (Proxmox's
//! `pve-root-ca`) and one leaf certificate per node signed by it, as a real cluster has; or a lone self-signed
//! certificate for servers that are not Proxmox.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use super::SimError;

/// A freshly generated certificate with its key and the SHA-256 fingerprint Proxmox's GUI would show.
pub struct SimIdentity {
    /// DER of the self-signed leaf certificate.
    pub cert_der: Vec<u8>,
    /// PKCS#8 DER of its private key.
    pub key_der: Vec<u8>,
    /// `AA:BB:...` — upper-case, colon-separated SHA-256 of `cert_der`.
    pub fingerprint: String,
    /// PEM text of the certificate, for clients that want a CA file.
    pub cert_pem: String,
}

impl SimIdentity {
    /// Generates a certificate valid for `localhost`, 127.0.0.1 and ::1 (and any extra names).
    pub fn generate(extra_names: &[String]) -> Result<Self, SimError> {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
        names.extend(extra_names.iter().cloned());
        let certified = rcgen::generate_simple_self_signed(names)
            .map_err(|e| SimError::Tls(format!("cannot generate certificate: {e}")))?;
        let cert_der = certified.cert.der().to_vec();
        let key_der = certified.signing_key.serialize_der();
        let fingerprint = fingerprint_of(&cert_der);
        let cert_pem = certified.cert.pem();
        Ok(Self { cert_der, key_der, fingerprint, cert_pem })
    }

    /// A rustls server configuration (HTTP/1.1 only, as pveproxy).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, SimError> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| SimError::Tls(e.to_string()))?
                .with_no_client_auth()
                .with_single_cert(vec![CertificateDer::from(self.cert_der.clone())], key)
                .map_err(|e| SimError::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A cluster's certificate authority (`/etc/pve/pve-root-ca.pem`), which signs every node's certificate.
pub struct ClusterCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    /// DER of the CA certificate.
    pub cert_der: Vec<u8>,
    /// PEM of the CA certificate (what `tls.ca_file` points at).
    pub cert_pem: String,
}

impl ClusterCa {
    /// A new CA for one simulator run.
    pub fn generate() -> Result<Self, SimError> {
        let err = |e: rcgen::Error| SimError::Tls(format!("cannot generate the cluster CA: {e}"));
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "Proxmox Virtual Environment (simulated)");
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().map_err(err)?;
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).map_err(err)?;
        let cert_der = issuer.der().to_vec();
        let cert_pem = issuer.pem();
        Ok(Self { issuer, cert_der, cert_pem })
    }

    /// A node's certificate, for its name and the loopback addresses, as `pvecm updatecerts` makes them.
    pub fn issue(&self, node: &str) -> Result<SimIdentity, SimError> {
        let err = |e: rcgen::Error| SimError::Tls(format!("cannot issue the certificate of node {node}: {e}"));
        let names = vec![node.to_string(), "localhost".into(), "127.0.0.1".into(), "::1".into()];
        let mut params = rcgen::CertificateParams::new(names).map_err(err)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("{node}.simulated"));
        let key = rcgen::KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(err)?;
        let cert_der = cert.der().to_vec();
        Ok(SimIdentity {
            fingerprint: fingerprint_of(&cert_der),
            cert_pem: cert.pem(),
            key_der: key.serialize_der(),
            cert_der,
        })
    }
}

/// SHA-256 of a DER certificate in Proxmox's display format (`AA:BB:...`, 32 pairs).
pub fn fingerprint_of(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_has_proxmox_shape() {
        let fp = fingerprint_of(b"hello");
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(
            fp.split(':').all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()))
        );
    }
}

/// A client TLS configuration whose only trust anchor is `cert_der` (how a test or a download task
/// trusts the simulator's self-signed certificate).
pub fn client_config_trusting(cert_der: &[u8]) -> Result<rustls::ClientConfig, SimError> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert_der.to_vec()))
        .map_err(|e| SimError::Tls(format!("cannot trust certificate: {e}")))?;
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| SimError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A client TLS configuration that accepts any certificate, as `wget --no-check-certificate` does
/// (download-url with `verify-certificates=0`). Handshake signatures are still checked.
pub fn client_config_unverified() -> Result<rustls::ClientConfig, SimError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| SimError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth())
}

#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
