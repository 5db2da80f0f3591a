//! A real etcd on loopback for the HA tests: its own data dir and ports, stopped on drop. Without an `etcd`
//! binary the tests skip with a printed reason, unless `VZTMPLD_REQUIRE_ETCD=1` (CI), which makes it fatal.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One single-member etcd cluster.
pub struct Etcd {
    binary: PathBuf,
    pub dir: PathBuf,
    pub client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    /// With TLS: the CA that signed the server and client certificates (files in `dir`).
    pub tls: Option<TlsFiles>,
}

/// Files of an etcd with TLS and `--client-cert-auth`: the CA, etcd's own pair, and a client's pair.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `etcd` binary on PATH (or Debian's /usr/bin/etcd); `None` with the reason printed when absent and not
/// required.
pub fn etcd_binary(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("etcd")).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin/etcd")])
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("VZTMPLD_REQUIRE_ETCD").is_ok_and(|v| v == "1") {
            panic!("{test}: VZTMPLD_REQUIRE_ETCD=1 but no etcd binary was found (apt-get install etcd-server)");
        }
        eprintln!(
            "SKIPPED {test}: no etcd binary (apt-get install etcd-server, or set PATH); CI sets VZTMPLD_REQUIRE_ETCD=1"
        );
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap()
}

impl Etcd {
    /// Chooses ports and a data dir; nothing runs until [`Etcd::start`].
    pub fn prepare(test: &str) -> Option<Self> {
        let binary = etcd_binary(test)?;
        let dir = super::temp_dir("etcd");
        Some(Self { binary, dir, client_port: free_port(), peer_port: free_port(), child: None, tls: None })
    }

    /// Like [`Etcd::prepare`], serving clients over TLS and requiring a client certificate signed by its CA.
    pub fn prepare_tls(test: &str) -> Option<Self> {
        let mut etcd = Self::prepare(test)?;
        let write = |name: &str, text: &str| {
            let path = etcd.dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "test etcd CA");
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let issue = |names: Vec<String>, cn: Option<&str>| {
            let mut params = rcgen::CertificateParams::new(names).unwrap();
            // etcd refuses gateway requests from a client certificate with a Common Name.
            params.distinguished_name = rcgen::DistinguishedName::new();
            if let Some(cn) = cn {
                params.distinguished_name.push(rcgen::DnType::CommonName, cn);
            }
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = issue(vec!["localhost".into(), "127.0.0.1".into()], Some("etcd"));
        let (client_cert, client_key) = issue(vec!["vztmpld".into()], None);
        etcd.tls = Some(TlsFiles {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server-key.pem", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client-key.pem", &client_key),
        });
        Some(etcd)
    }

    /// Prepares and starts one, waiting until it answers.
    pub fn launch(test: &str) -> Option<Self> {
        let mut etcd = Self::prepare(test)?;
        etcd.start();
        Some(etcd)
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// Starts (or restarts, on the same data) and waits up to 20 s for `/health`.
    pub fn start(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut tls_args: Vec<std::ffi::OsString> = Vec::new();
        if let Some(t) = &self.tls {
            for (flag, path) in
                [("--cert-file", &t.server_cert), ("--key-file", &t.server_key), ("--trusted-ca-file", &t.ca)]
            {
                tls_args.push(flag.into());
                tls_args.push(path.into());
            }
            tls_args.push("--client-cert-auth".into());
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("etcd.log")).unwrap();
        let child = Command::new(&self.binary)
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(&tls_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = format!("127.0.0.1:{}", self.client_port);
        while Instant::now() < deadline {
            // With TLS, an open port is enough: the tests' own clients wait for answers anyway.
            let up = if self.tls.is_some() { std::net::TcpStream::connect(&addr).is_ok() } else { health(&addr) };
            if up {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd did not become healthy within 20 s; log:\n{}", self.log());
    }

    /// Kills it (SIGKILL: the harshest outage) and waits for the exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }
}

/// `GET /health` answers `"health":"true"` (plain HTTP/1.0 over a socket; no runtime needed).
fn health(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err() {
        return false;
    }
    let mut text = String::new();
    let _ = s.take(64 * 1024).read_to_string(&mut text);
    text.contains("\"health\":\"true\"")
}
