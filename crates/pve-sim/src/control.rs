//! Control and accounting under `/_sim/` (same port, same token): node power, injected faults,
//! latency, bandwidth, and the counters benchmarks read.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Response, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Sim;
use super::scenario::{DownloadFaultSpec, FaultSpec};

/// Answers one `/_sim/...` request (already authenticated).
pub(crate) fn handle(sim: &Arc<Sim>, method: &Method, path: &str, body: &[u8]) -> Response<Body> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let result = match (method.as_str(), segments.as_slice()) {
        ("GET", ["stats"]) => Ok(sim.with_world(|w| w.stats.to_json())),
        ("POST", ["stats", "reset"]) => {
            sim.with_world(|w| w.stats = Default::default());
            Ok(json!({}))
        }
        ("POST", ["nodes", node]) => parse::<NodeChange>(body).and_then(|c| change_node(sim, node, c)),
        ("POST", ["endpoints", node]) => parse::<EndpointChange>(body).and_then(|c| {
            sim.listeners.set_up(sim, node, c.up).map(|()| json!({})).map_err(|e| (StatusCode::NOT_FOUND, e))
        }),
        ("GET", ["faults"]) => Ok(sim.with_world(|w| json!({"faults": w.faults, "download_faults": w.download_faults}))),
        ("POST", ["faults"]) => parse::<FaultSpec>(body).map(|f| {
            sim.with_world(|w| w.faults.push(f));
            json!({})
        }),
        ("DELETE", ["faults"]) => {
            sim.with_world(|w| {
                w.faults.clear();
                w.download_faults.clear();
            });
            Ok(json!({}))
        }
        ("POST", ["download-faults"]) => parse::<DownloadFaultSpec>(body).map(|f| {
            sim.with_world(|w| w.download_faults.push(f));
            json!({})
        }),
        ("POST", ["settings"]) => parse::<Settings>(body).map(|s| {
            sim.with_world(|w| {
                if let Some(l) = s.latency {
                    w.latency = l;
                }
                if let Some(b) = s.bandwidth.filter(|b| *b > 0) {
                    w.bandwidth = b;
                }
                if let Some(installed) = s.skopeo {
                    w.skopeo = installed;
                }
            });
            json!({})
        }),
        ("GET", ["mirror", file]) => sim.with_world(|w| {
            if !w.mirror_has(file) {
                return Err((StatusCode::NOT_FOUND, format!("the mirror has no file '{file}'")));
            }
            let size = w.size_of(file);
            let digests = w.digests(file, size, false);
            Ok(json!({"url": format!("{}/images/custom/{file}", w.mirror), "size": size, "digests": *digests}))
        }),
        ("GET", ["volumes"]) => Ok(sim.with_world(|w| {
            let rows: Vec<Value> = w
                .volumes
                .iter()
                .flat_map(|(key, files)| {
                    files.iter().map(move |(file, v)| {
                        json!({"storage": key.storage, "node": key.node, "file": file, "size": v.size, "ctime": v.ctime})
                    })
                })
                .collect();
            Value::Array(rows)
        })),
        _ => Err((StatusCode::NOT_FOUND, format!("no control endpoint {method} /_sim/{}", segments.join("/")))),
    };
    let (status, value) = match result {
        Ok(v) => (StatusCode::OK, v),
        Err((status, msg)) => (status, json!({"error": msg})),
    };
    let mut resp = Response::new(Body::from(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    resp
}

type ControlResult = Result<Value, (StatusCode, String)>;

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, (StatusCode, String)> {
    serde_json::from_slice(body).map_err(|e| (StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

/// Body of `POST /_sim/nodes/{node}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeChange {
    online: Option<bool>,
    /// `builtin`, `stale`, `empty` or a `.dat` path.
    index: Option<String>,
}

/// Body of `POST /_sim/settings`.
/// `{"up": false}` takes a node's API endpoint down (its node stays in the cluster); `true` brings it back.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointChange {
    up: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default, with = "humantime_serde")]
    latency: Option<Duration>,
    bandwidth: Option<u64>,
    /// Install or remove skopeo on every node.
    skopeo: Option<bool>,
}

fn change_node(sim: &Sim, node: &str, change: NodeChange) -> ControlResult {
    sim.with_world(|w| {
        if w.node(node).is_none() {
            return Err((StatusCode::NOT_FOUND, format!("no node '{node}'")));
        }
        if let Some(source) = &change.index {
            let index = w.named_index(source).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
            if let Some(n) = w.node_mut(node) {
                n.index = index;
            }
        }
        if let (Some(online), Some(n)) = (change.online, w.node_mut(node)) {
            n.online = online;
        }
        Ok(json!({}))
    })
}
