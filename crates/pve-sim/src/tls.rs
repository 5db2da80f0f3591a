//! The simulator's TLS identity: a self-signed certificate made at start-up, never stored on disk.

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
