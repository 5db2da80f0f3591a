//! TLS for the Proxmox client: pin the leaf certificate's SHA-256, trust a CA file, or (only when asked)
//! accept anything. Handshake signatures are always verified.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use super::Trust;
use super::pins::Pins;

/// What the pinning verifier last saw, for an error message that shows the presented fingerprint.
pub type SeenFingerprint = Arc<Mutex<Option<String>>>;

/// Formats 32 bytes as `AA:BB:...`.
pub fn format_fingerprint(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// The certificates of a CA file (PEM) as a root store; errors name the file.
pub fn root_store(pem: &[u8], path: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("{}: bad PEM: {e}", path.display()))?;
        roots.add(cert).map_err(|e| format!("{}: unusable certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// Builds the rustls configuration for a trust mode; for pinned modes, `pins` is the live set the verifier checks
/// (its anchors are the configured fingerprints).
pub fn client_config(mode: &Trust, seen: SeenFingerprint, pins: &Pins) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::clone(provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = match mode {
        Trust::Ca { path, pem } => builder.with_root_certificates(root_store(pem, path)?).with_no_client_auth(),
        Trust::Pinned(_) => {
            let pins = Some(Arc::clone(pins));
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Verifier { pins, provider, seen }))
                .with_no_client_auth()
        }
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier { pins: None, provider, seen }))
            .with_no_client_auth(),
    };
    // A cluster's client talks to its few endpoints: rustls' default of 256 remembered servers preallocates
    // for a browser, about 10 KiB per cluster a fleet would keep for nothing.
    config.resumption = rustls::client::Resumption::in_memory_sessions(RESUMED_SERVERS);
    Ok(config)
}

/// How many servers' TLS sessions a cluster's client remembers for resumption (its endpoints).
const RESUMED_SERVERS: usize = 16;

/// The crypto provider every client shares (one copy of its suite lists, not one per cluster).
fn provider() -> &'static Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER.get_or_init(|| {
        let mut provider = rustls::crypto::ring::default_provider();
        // Prefer the SHA-256 suites: every pass opens fresh connections (pveproxy drops idle ones after 5 s),
        // and their key schedule hashes with SHA-256, which CPUs accelerate (SHA-NI) where SHA-384 runs in
        // software.
        provider.cipher_suites.sort_by_key(|s| s.suite() == rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
        Arc::new(provider)
    })
}

/// Pins the leaf certificate to a set (or, without pins, accepts any) and checks handshake signatures
/// properly, so that holding the public certificate is not enough to impersonate the server.
#[derive(Debug)]
struct Verifier {
    pins: Option<Pins>,
    provider: Arc<CryptoProvider>,
    seen: SeenFingerprint,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(format_fingerprint(&digest));
        }
        let accepted = match &self.pins {
            None => true,
            Some(pins) => pins.read().is_ok_and(|set| set.accepts(&digest)),
        };
        if accepted {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
