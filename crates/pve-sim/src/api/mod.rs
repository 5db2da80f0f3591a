//! The `/api2/json` endpoints, split along Proxmox's own seams:
//!
//! - [`routes`]: method + path → endpoint and parameter schema.
//! - [`auth`]: token authentication, permission checks, pveproxy's forwarding rules.
//! - [`cluster`], [`storage`], [`downloads`], [`tasks`]: the handlers, answering with real Proxmox VE's shapes.
//!
//! Order of checks per request, as pveproxy/pvedaemon do it: fault injection and latency, authentication,
//! body rules, routing (501), parameter merging, permissions, proxying to the node (500/595), schema
//! validation (400), then the handler.

mod auth;
mod cluster;
mod downloads;
mod oci;
mod routes;
mod storage;
mod tasks;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Response};
use serde_json::{Value, json};

pub(crate) use auth::authenticate;
use auth::{check_permissions, proxy_target};
use routes::{Route, route};

use crate::Sim;
use crate::acl::Token;
use crate::http::{self, ApiError, Params};

/// One API request, as the dispatcher hands it over.
pub(crate) struct ApiRequest<'a> {
    pub method: &'a Method,
    /// Path below `/api2/json`, still percent-encoded.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Answers one `/api2/json` request.
pub(crate) async fn handle(sim: &Arc<Sim>, req: ApiRequest<'_>) -> Response<Body> {
    let (numbers_as_strings, with_message, auth_delay) =
        sim.with_world(|w| (w.quirks.numbers_as_strings, !w.quirks.no_error_message, w.quirks.auth_failure_delay));
    match answer(sim, &req).await {
        Ok((data, total)) => http::success(data, total, numbers_as_strings),
        Err(err) => {
            if err.status == 401 && !auth_delay.is_zero() {
                tokio::time::sleep(auth_delay).await;
            }
            http::failure(&err, with_message)
        }
    }
}

pub(super) type Reply = (Value, Option<usize>);

async fn answer(sim: &Arc<Sim>, req: &ApiRequest<'_>) -> Result<Reply, ApiError> {
    let decoded = percent_encoding::percent_decode_str(req.path).decode_utf8_lossy().into_owned();
    let segments: Vec<&str> = decoded.split('/').filter(|s| !s.is_empty()).collect();
    let display_path = format!("/{}", segments.join("/"));
    let routed = route(req.method, &segments);
    let pattern = routed.as_ref().map_or(display_path.as_str(), |(r, _)| r.pattern());
    let method = req.method.as_str();

    let (fault, latency) = sim.with_world(|w| {
        *w.stats.requests.entry(format!("{method} {pattern}")).or_default() += 1;
        (w.take_fault(method, &display_path, pattern), w.latency)
    });
    // A worker is busy for the whole request, latency included (pveproxy has 3).
    let _permit = sim.api_workers.acquire().await.map_err(|_| ApiError::internal("server shutting down"))?;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(f) = fault {
        let message = f.message.unwrap_or_else(|| default_fault_message(f.status).to_string());
        let mut err = ApiError::with_status(f.status, message);
        err.empty_body = f.status >= 595 || f.status == 401;
        return Err(err);
    }

    let token = authenticate(sim, req.headers)?;
    if (req.method == Method::GET || req.method == Method::DELETE) && !req.body.is_empty() {
        return Err(ApiError::with_status(501, format!("Unexpected content for method '{method}'")));
    }
    if req.body.len() > crate::MAX_BODY {
        return Err(ApiError::with_status(501, "for data too large"));
    }
    let (route, path_params) = routed.map_err(|_| ApiError::not_implemented(method, &display_path))?;

    let content_type = req.headers.get("content-type").and_then(|v| v.to_str().ok());
    let mut params = http::body_params(content_type, req.body)?;
    params.extend(form_urlencoded::parse(req.query.unwrap_or_default().as_bytes()).into_owned());
    params.remove("_dc");
    for (name, value) in &path_params.0 {
        match params.get(*name) {
            Some(v) if v != value => {
                return Err(ApiError::param(
                    name,
                    "duplicate parameter (already defined in URI) with conflicting values!",
                ));
            }
            _ => {
                params.insert(name.to_string(), value.clone());
            }
        }
    }

    check_permissions(&token, route, &params)?;
    let node = proxy_target(sim, &path_params)?;
    http::validate(&params, route.schema())?;
    let ctx = Ctx { token, params, node };
    dispatch(sim, route, &ctx)
}

fn default_fault_message(status: u16) -> &'static str {
    match status {
        401 => "Authentication failed!",
        500 => "injected failure",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        595 => "Connection refused",
        596 => "Broken pipe",
        _ => "injected failure",
    }
}

pub(super) struct Ctx {
    pub(super) token: Token,
    pub(super) params: Params,
    /// The resolved node for `/nodes/{node}/...` routes.
    pub(super) node: String,
}

impl Ctx {
    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    pub(super) fn flag(&self, name: &str, default: bool) -> bool {
        self.param(name).map_or(default, |v| v == "1")
    }

    pub(super) fn int(&self, name: &str, default: u64) -> u64 {
        self.param(name).and_then(|v| v.parse().ok()).unwrap_or(default)
    }
}

fn dispatch(sim: &Arc<Sim>, route: Route, ctx: &Ctx) -> Result<Reply, ApiError> {
    match route {
        Route::Version => sim.with_world(|w| {
            let release: String = w.version.split('.').take(2).collect::<Vec<_>>().join(".");
            Ok((
                json!({"version": w.version, "release": release, "repoid": "5a1d9c3e7b2f4a61", "console": "xtermjs"}),
                None,
            ))
        }),
        Route::Nodes => sim.with_world(|w| Ok((cluster::list_nodes(w, &ctx.token, &sim.fingerprints, false), None))),
        Route::ClusterResources => {
            sim.with_world(|w| Ok((cluster::cluster_resources(w, &ctx.token, ctx.param("type")), None)))
        }
        Route::AccessPermissions => cluster::access_permissions(ctx),
        Route::NodeStatus => sim.with_world(|w| Ok((cluster::node_status(w, &ctx.node), None))),
        Route::StorageIndex => sim.with_world(|w| storage::storage_index(w, ctx)),
        Route::StorageStatus => sim.with_world(|w| storage::storage_status(w, ctx)),
        Route::ContentList => sim.with_world(|w| storage::content_list(w, ctx)),
        Route::ContentInfo => sim.with_world(|w| storage::content_info(w, ctx)),
        Route::ContentDelete => storage::content_delete(sim, ctx),
        Route::AplinfoList => sim.with_world(|w| {
            let index = w.node(&ctx.node).map(|n| n.index.clone()).unwrap_or_default();
            Ok((json!(*index), None))
        }),
        Route::AplinfoDownload => downloads::aplinfo_download(sim, ctx),
        Route::DownloadUrl => downloads::download_url(sim, ctx),
        Route::OciPull => oci::oci_pull(sim, ctx),
        Route::TaskList => sim.with_world(|w| tasks::task_list(w, ctx)),
        Route::TaskIndex => sim
            .with_world(|w| tasks::find_task(w, ctx).map(|_| (json!([{"subdir": "log"}, {"subdir": "status"}]), None))),
        Route::TaskStatus => sim.with_world(|w| tasks::task_status(w, ctx)),
        Route::TaskLog => sim.with_world(|w| tasks::task_log(w, ctx)),
        Route::TaskStop => sim.with_world(|w| tasks::task_stop(w, ctx)),
    }
}
