//! The simulator's download mirror (`/_mirror/...`): the stand-in for download.proxmox.com.
//!
//! It serves every file named in a node's index or in the scenario's `mirror_files`, with
//! deterministic bytes generated on the fly, and needs no authentication (like the real mirror).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use bytes::Bytes;

use super::Sim;
use super::content::Payload;

/// Answers `GET|HEAD /_mirror/<any path>/<file>`. Under `/_mirror/corrupt/…` every file's bytes differ from the
/// real ones (one byte flipped): a tampered mirror, which checksums must catch.
pub(crate) fn serve(sim: &Arc<Sim>, path: &str, head: bool) -> Response<Body> {
    let corrupt = path.starts_with("corrupt/");
    let file = path.rsplit('/').next().unwrap_or_default().to_string();
    let size = sim.with_world(|w| w.mirror_has(&file).then(|| w.size_of(&file)));
    let Some(size) = size else {
        let mut resp = Response::new(Body::from("Not Found"));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    };
    let body = if head {
        Body::empty()
    } else {
        let sim = sim.clone();
        let stream = futures_util::stream::unfold(Payload::new(&file, size, corrupt), move |mut payload| {
            let sim = sim.clone();
            async move {
                let mut buf = vec![0u8; 64 * 1024];
                let n = payload.fill(&mut buf);
                if n == 0 {
                    return None;
                }
                buf.truncate(n);
                sim.with_world(|w| w.stats.bytes_transferred += n as u64);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), payload))
            }
        });
        Body::from_stream(stream)
    };
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    resp
}
