//! A download POST is never sent twice. A proxy in front of the simulator passes every request on, but when a
//! POST has reached Proxmox (its answer is on the way) it closes the client's connection instead of answering —
//! the request was carried out, and the client cannot know. The client must not resend it (to this endpoint or
//! another); the reconciler looks for the task it may have started and adopts it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{TestSim, fast_options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vztmpld::reconcile::Fleet;

/// A TLS-terminating proxy to the simulator's first node that drops the connection of every POST once the
/// simulator answers it. Returns its address, its certificate's fingerprint, and the count of POSTs passed on.
async fn resetting_proxy(sim: &TestSim) -> (String, String, Arc<AtomicUsize>) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let der = certified.cert.der().to_vec();
    let fingerprint = {
        use sha2::Digest;
        sha2::Sha256::digest(&der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
    };
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der()).unwrap();
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![rustls::pki_types::CertificateDer::from(der)], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(sim.server.cert_der.clone())).unwrap();
    let client = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let upstream: std::net::SocketAddr = sim.server.nodes[0].endpoint.trim_start_matches("https://").parse().unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let posts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&posts);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, connector, posts) = (acceptor.clone(), connector.clone(), Arc::clone(&counted));
            tokio::spawn(async move {
                let Ok(mut down) = acceptor.accept(tcp).await else { return };
                let Ok(tcp) = tokio::net::TcpStream::connect(upstream).await else { return };
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let Ok(mut up) = connector.connect(name, tcp).await else { return };
                // One request at a time, each read whole (headers and Content-Length body) on both sides.
                let mut from_client = Vec::new();
                let mut from_server = Vec::new();
                loop {
                    let Some(request) = read_message(&mut down, &mut from_client).await else { return };
                    if up.write_all(&request).await.is_err() {
                        return;
                    }
                    let Some(answer) = read_message(&mut up, &mut from_server).await else { return };
                    if request.starts_with(b"POST ") {
                        // Carried out; the answer is lost with the connection.
                        posts.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    if down.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("https://{addr}"), fingerprint, posts)
}

/// One HTTP/1.1 message (headers, then a `Content-Length` body) from `stream`, `pending` holding what was read
/// past the previous one; `None` when the stream ends first.
async fn read_message<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
            let length: usize =
                head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
            assert!(!head.contains("transfer-encoding: chunked"), "the proxy reads Content-Length bodies only");
            let total = end + 4 + length;
            if pending.len() >= total {
                return Some(pending.drain(..total).collect());
            }
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn a_post_cut_off_after_it_arrived_is_adopted_never_resent() {
    let sim = TestSim::start().await;
    let (proxy, fingerprint, posts) = resetting_proxy(&sim).await;
    let dir = common::temp_dir("post-reset");
    std::fs::write(dir.join("lab.secret"), &sim.server.token_secret).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("lab.secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // The proxy first; the real second node after it, so a blind retry would have somewhere to go.
    let text = format!(
        "downloads:\n  poll_interval: 100ms\nclusters:\n  - name: lab\n    endpoints: [{proxy}, {}]\n    auth:\n      token_id: \"{}\"\n      secret_file: lab.secret\n    tls:\n      fingerprints: [\"{fingerprint}\", \"{}\"]\n    nodes: [pve1]\n    storage: local\ntemplates:\n  - template: alpine-3.22\n",
        sim.server.nodes[1].endpoint, sim.server.token_id, sim.server.nodes[1].fingerprint,
    );
    std::fs::write(dir.join("vztmpld.yaml"), text).unwrap();
    let fleet = Fleet::new(vztmpld::config::load(&dir.join("vztmpld.yaml")).unwrap(), fast_options()).unwrap();
    let passes = fleet.reconcile(|_, _| None, |_, _| {}).await;
    let pass = &passes[0];
    assert_eq!(pass.plan.downloads.len(), 1, "{:?}", pass.plan);

    let stats = sim.control(reqwest::Method::GET, "stats", None).await;
    let aplinfo = stats.json["requests"]["POST /nodes/{node}/aplinfo"].as_u64().unwrap_or(0);
    assert_eq!(posts.load(Ordering::SeqCst), 1, "the POST went through the proxy once");
    assert_eq!(aplinfo, 1, "Proxmox got the download POST exactly once: {}", stats.body);
    let outcome = &pass.outcomes[0];
    assert!(
        matches!(outcome, vztmpld::reconcile::Outcome::Finished { adopted: true, .. }),
        "the task the cut-off POST started is adopted and followed: {outcome:?}"
    );
}
