//! HTTP/1.1 over TLS to one cluster's endpoints: hyper's connection API, with the connections kept here.
//!
//! Why not reqwest for the Proxmox API (it serves etcd and the CLI): a steady pass is a couple of thousand small
//! GETs, and reqwest's layers cost more CPU than the requests themselves — a URL parsed twice, a pool keyed by
//! origin, a spawned task per connection woken through channels, a redirect and a timeout layer per call. Here a
//! request is built in origin-form from strings made once per endpoint, and the caller's own task drives its
//! connection while it waits for the answer. What reqwest did for us and still holds: no redirects are followed
//! (the caller reports them), every wait is bounded (connect here, the whole call by the caller), bodies are
//! capped, idle connections are dropped before pveproxy's keep-alive ends them, and a request never sent on a
//! connection the server had closed goes out on a fresh one.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long an idle connection is kept: under pveproxy's 5 s keep-alive, so a kept one is still open.
const IDLE: Duration = Duration::from_secs(4);

const USER_AGENT: &str = concat!("vztmpld/", env!("CARGO_PKG_VERSION"));

/// One endpoint, with what each request to it needs made once.
struct Endpoint {
    /// Host to connect to (an IPv6 address without brackets) and port.
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    /// `Host:` header: the authority as the URL spells it.
    authority: HeaderValue,
    /// The API's path prefix, `/api2/json` below the endpoint's own path.
    base: String,
}

/// hyper's half of a connection: the future that reads and writes it.
type Driver = Connection<TokioIo<TlsStream<TcpStream>>, Full<Bytes>>;

/// A connection, and the future that drives it (polled by whoever uses the connection).
struct Conn {
    endpoint: usize,
    sender: SendRequest<Full<Bytes>>,
    /// Boxed: with its TLS state and buffers it is kilobytes, and the exchange holding the connection is awaited
    /// inside every future that makes an API call (a cluster's ten downloads, each following its task).
    driver: Pin<Box<Driver>>,
    /// When it last finished an exchange.
    idle_since: Instant,
    /// It served an exchange before: the server may have closed it meanwhile.
    reused: bool,
}

/// What an exchange came to when an HTTP answer arrived.
pub(super) struct Answer {
    pub status: u16,
    /// The reason phrase, kept only for an error status (Proxmox puts its message there).
    pub reason: Option<String>,
    /// `Location`, for a redirect that has one (shortened).
    pub location: Option<String>,
    pub body: Vec<u8>,
}

/// Why an exchange failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// No connection: DNS, refused, TCP or TLS timed out, TLS failed (the source says which).
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed before an answer came.
    Exchange(hyper::Error),
    /// The answer's body is larger than allowed.
    TooLarge,
    /// The answer's body broke off.
    CutOff(hyper::Error),
}

/// The connections to one cluster's endpoints.
pub(super) struct Transport {
    endpoints: Vec<Endpoint>,
    tls: TlsConnector,
    connect_timeout: Duration,
    idle: Mutex<Vec<Conn>>,
}

impl Transport {
    /// A transport for `https` endpoints; fails on a URL without a host.
    pub(super) fn new(
        endpoints: &[url::Url],
        tls: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        let endpoints = endpoints
            .iter()
            .map(|url| {
                let (host, server_name) = match url.host() {
                    Some(url::Host::Domain(d)) => (
                        d.to_string(),
                        ServerName::try_from(d.to_string()).map_err(|e| format!("{url}: bad host name: {e}"))?,
                    ),
                    Some(url::Host::Ipv4(ip)) => (ip.to_string(), ServerName::from(std::net::IpAddr::V4(ip))),
                    Some(url::Host::Ipv6(ip)) => (ip.to_string(), ServerName::from(std::net::IpAddr::V6(ip))),
                    None => return Err(format!("{url}: no host")),
                };
                let authority = match url.port() {
                    Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
                    None => url.host_str().unwrap_or_default().to_string(),
                };
                Ok(Endpoint {
                    host,
                    port: url.port_or_known_default().unwrap_or(443),
                    server_name,
                    authority: HeaderValue::from_str(&authority).map_err(|e| format!("{url}: {e}"))?,
                    base: format!("{}/api2/json", url.path().trim_end_matches('/')),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { endpoints, tls: TlsConnector::from(tls), connect_timeout, idle: Mutex::new(Vec::new()) })
    }

    /// Drops the idle connections (a pass is over; the next is further away than pveproxy keeps them).
    pub(super) fn close_idle(&self) {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// The request target for `path` below endpoint `idx`'s API base, with `query` encoded: built in one string.
    pub(super) fn target(&self, idx: usize, path: &str, query: &[(&str, String)]) -> String {
        let base = &self.endpoints[idx].base;
        let query_len: usize = query.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        let mut target = String::with_capacity(base.len() + path.len() + query_len);
        target.push_str(base);
        target.push_str(path);
        if !query.is_empty() {
            target.push('?');
            let start = target.len();
            target = form_urlencoded::Serializer::for_suffix(target, start).extend_pairs(query).finish();
        }
        target
    }

    /// One request to endpoint `idx` for `target` ([`Transport::target`]), `form` the body.
    /// Unbounded in time by itself: the caller bounds the whole call.
    pub(super) async fn exchange(
        &self,
        idx: usize,
        method: &Method,
        target: String,
        auth: &HeaderValue,
        form: Option<String>,
        max_body: usize,
    ) -> Result<Answer, Failure> {
        let endpoint = &self.endpoints[idx];
        let body = form.map(Bytes::from);
        let uri = hyper::Uri::try_from(target).map_err(|e| Failure::Connect(e.into()))?;
        let make = || {
            let mut request = Request::new(Full::new(body.clone().unwrap_or_default()));
            *request.method_mut() = method.clone();
            *request.uri_mut() = uri.clone();
            // Sized once: a request's four or five headers would otherwise grow the map twice.
            let headers = request.headers_mut();
            headers.reserve(5);
            headers.insert(header::HOST, endpoint.authority.clone());
            headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
            headers.insert(header::AUTHORIZATION, auth.clone());
            if body.is_some() {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
            }
            request
        };
        // Dialing is boxed: its TLS handshake state is large, and needed once per connection, not per request.
        let mut conn = match self.checkout(idx) {
            Some(conn) => conn,
            None => Box::pin(self.dial(idx)).await?,
        };
        let mut request = make();
        loop {
            let reused = conn.reused;
            let (result, kept) = conn.round_trip(request, max_body).await;
            match result {
                Ok(answer) => {
                    if let Some(conn) = kept {
                        self.checkin(conn);
                    }
                    return Ok(answer);
                }
                // A kept connection the server had closed (pveproxy ends idle ones): a request that never left
                // goes out on a new connection, and so does a GET whose answer never began (it changes nothing).
                Err(Trip::NotSent(back)) if reused => request = *back,
                Err(Trip::Failed(Failure::Exchange(e)))
                    if reused && method == Method::GET && (e.is_incomplete_message() || e.is_canceled()) =>
                {
                    request = make();
                }
                Err(Trip::NotSent(_)) => {
                    return Err(Failure::Connect("the connection closed before the request was sent".into()));
                }
                Err(Trip::Failed(failure)) => return Err(failure),
            }
            conn = Box::pin(self.dial(idx)).await?;
        }
    }

    /// A kept connection to `idx` still young enough to be open; older ones are dropped on the way.
    fn checkout(&self, idx: usize) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|c| c.idle_since.elapsed() < IDLE);
        let at = idle.iter().position(|c| c.endpoint == idx)?;
        Some(idle.swap_remove(at))
    }

    fn checkin(&self, mut conn: Conn) {
        conn.idle_since = Instant::now();
        conn.reused = true;
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
    }

    /// A new connection: TCP (no Nagle: a request is one write), then TLS, within the connect timeout.
    async fn dial(&self, idx: usize) -> Result<Conn, Failure> {
        let endpoint = &self.endpoints[idx];
        let connect = async {
            let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
            tcp.set_nodelay(true)?;
            self.tls.connect(endpoint.server_name.clone(), tcp).await
        };
        let tls = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(Failure::Connect(e.into())),
            Err(_) => {
                let secs = self.connect_timeout.as_secs_f64();
                return Err(Failure::Connect(format!("no connection within {secs}s").into()));
            }
        };
        let (sender, driver) =
            http1::Builder::new().handshake(TokioIo::new(tls)).await.map_err(|e| Failure::Connect(e.into()))?;
        Ok(Conn { endpoint: idx, sender, driver: Box::pin(driver), idle_since: Instant::now(), reused: false })
    }
}

/// How a round trip failed: the request handed back when it never left, or the failure.
enum Trip {
    /// Boxed: a rare path, and the request is large.
    NotSent(Box<Request<Full<Bytes>>>),
    Failed(Failure),
}

impl Conn {
    /// Sends the request and reads the whole answer while driving the connection in this task; says whether
    /// the connection can serve another request.
    async fn round_trip(self, request: Request<Full<Bytes>>, max_body: usize) -> (Result<Answer, Trip>, Option<Conn>) {
        let Conn { mut sender, mut driver, endpoint, idle_since, reused } = self;
        let answer = {
            let sender = &mut sender;
            let work = async {
                if sender.ready().await.is_err() {
                    return Err(Trip::NotSent(Box::new(request)));
                }
                let response = sender.try_send_request(request).await.map_err(|mut e| match e.take_message() {
                    Some(request) => Trip::NotSent(Box::new(request)),
                    None => Trip::Failed(Failure::Exchange(e.into_error())),
                })?;
                let (parts, mut incoming) = response.into_parts();
                let status = parts.status.as_u16();
                let location = (300..400)
                    .contains(&status)
                    .then(|| parts.headers.get(header::LOCATION)?.to_str().ok().map(|l| l.chars().take(200).collect()))
                    .flatten();
                let reason = (!(200..300).contains(&status))
                    .then(|| parts.extensions.get::<hyper::ext::ReasonPhrase>())
                    .flatten()
                    .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
                let declared = parts
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok());
                if declared.is_some_and(|n| n > max_body) {
                    return Err(Trip::Failed(Failure::TooLarge));
                }
                let mut body = Vec::with_capacity(declared.unwrap_or(0));
                while let Some(frame) = incoming.frame().await {
                    let frame = frame.map_err(|e| Trip::Failed(Failure::CutOff(e)))?;
                    if let Ok(data) = frame.into_data() {
                        if body.len() + data.len() > max_body {
                            return Err(Trip::Failed(Failure::TooLarge));
                        }
                        body.extend_from_slice(&data);
                    }
                }
                Ok(Answer { status, reason, location, body })
            };
            let mut work = std::pin::pin!(work);
            tokio::select! {
                biased;
                answer = &mut work => answer,
                _ = &mut driver => {
                    // The connection ended (closed or failed). Once it is dropped, the exchange ends too: with
                    // the request handed back if it never left, or with hyper's word on why.
                    drop(driver);
                    return (work.await, None);
                }
            }
        };
        // Let the connection settle after the answer; one that ended, or cannot take another request, is dropped.
        let open = answer.is_ok() && (&mut driver).now_or_never().is_none() && !sender.is_closed();
        (answer, open.then_some(Conn { sender, driver, endpoint, idle_since, reused }))
    }
}
