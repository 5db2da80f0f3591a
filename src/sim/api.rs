//! The `/api2/json` endpoints: routing, authentication, permission checks, proxy semantics, and
//! handlers that answer with the shapes real Proxmox VE sends.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Response};
use serde_json::{Value, json};

use super::Sim;
use super::acl::Token;
use super::http::{self, ApiError, Kind, Param, Params, opt, req};
use super::state::World;
use super::tasks::{self, DownloadJob};

/// A matched endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Version,
    Nodes,
    ClusterResources,
    AccessPermissions,
    NodeStatus,
    StorageIndex,
    StorageStatus,
    ContentList,
    ContentInfo,
    ContentDelete,
    AplinfoList,
    AplinfoDownload,
    DownloadUrl,
    TaskList,
    TaskIndex,
    TaskStop,
    TaskStatus,
    TaskLog,
}

impl Route {
    /// The path pattern, as Proxmox's API viewer writes it (used in `/_sim/stats`).
    fn pattern(self) -> &'static str {
        match self {
            Route::Version => "/version",
            Route::Nodes => "/nodes",
            Route::ClusterResources => "/cluster/resources",
            Route::AccessPermissions => "/access/permissions",
            Route::NodeStatus => "/nodes/{node}/status",
            Route::StorageIndex => "/nodes/{node}/storage",
            Route::StorageStatus => "/nodes/{node}/storage/{storage}/status",
            Route::ContentList => "/nodes/{node}/storage/{storage}/content",
            Route::ContentInfo | Route::ContentDelete => "/nodes/{node}/storage/{storage}/content/{volume}",
            Route::AplinfoList | Route::AplinfoDownload => "/nodes/{node}/aplinfo",
            Route::DownloadUrl => "/nodes/{node}/storage/{storage}/download-url",
            Route::TaskList => "/nodes/{node}/tasks",
            Route::TaskIndex | Route::TaskStop => "/nodes/{node}/tasks/{upid}",
            Route::TaskStatus => "/nodes/{node}/tasks/{upid}/status",
            Route::TaskLog => "/nodes/{node}/tasks/{upid}/log",
        }
    }

    /// The parameter schema (path parameters included, as in Proxmox's schema).
    fn schema(self) -> &'static [Param] {
        const NODE: Param = req("node", Kind::Node);
        const STORAGE: Param = req("storage", Kind::StorageId);
        const CONTENT_TYPES: &[&str] = &["images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import"];
        match self {
            Route::Version | Route::Nodes => const { &[] },
            Route::ClusterResources => const { &[opt("type", Kind::Enum(&["vm", "storage", "node", "sdn"]))] },
            Route::AccessPermissions => const { &[opt("userid", Kind::Text(128)), opt("path", Kind::Text(256))] },
            Route::NodeStatus | Route::AplinfoList => const { &[NODE] },
            Route::StorageIndex => {
                const {
                    &[
                        NODE,
                        opt("storage", Kind::StorageId),
                        opt("content", Kind::EnumList(CONTENT_TYPES)),
                        opt("enabled", Kind::Bool),
                        opt("target", Kind::Node),
                        opt("format", Kind::Bool),
                    ]
                }
            }
            Route::StorageStatus => const { &[NODE, STORAGE] },
            Route::ContentList => {
                const {
                    &[
                        NODE,
                        STORAGE,
                        opt("content", Kind::Enum(CONTENT_TYPES)),
                        opt("vmid", Kind::Int(100, 999_999_999)),
                    ]
                }
            }
            Route::ContentInfo => const { &[NODE, opt("storage", Kind::StorageId), req("volume", Kind::Text(4096))] },
            Route::ContentDelete => {
                const {
                    &[
                        NODE,
                        opt("storage", Kind::StorageId),
                        req("volume", Kind::Text(4096)),
                        opt("delay", Kind::Int(1, 30)),
                    ]
                }
            }
            Route::AplinfoDownload => const { &[NODE, STORAGE, req("template", Kind::Text(255))] },
            Route::DownloadUrl => {
                const {
                    &[
                        NODE,
                        STORAGE,
                        req("url", Kind::HttpUrl),
                        req("content", Kind::Enum(&["iso", "vztmpl", "import"])),
                        req("filename", Kind::Text(255)),
                        opt("checksum", Kind::Text(1024)),
                        opt("checksum-algorithm", Kind::Enum(super::content::ALGORITHMS)),
                        opt("compression", Kind::Enum(&["gz", "lzo", "zst", "bz2"])),
                        opt("verify-certificates", Kind::Bool),
                    ]
                }
            }
            Route::TaskList => {
                const {
                    &[
                        NODE,
                        opt("start", Kind::Int(0, i64::MAX)),
                        opt("limit", Kind::Int(0, i64::MAX)),
                        opt("userfilter", Kind::Text(256)),
                        opt("typefilter", Kind::Text(64)),
                        opt("vmid", Kind::Int(100, 999_999_999)),
                        opt("errors", Kind::Bool),
                        opt("source", Kind::Enum(&["archive", "active", "all"])),
                        opt("statusfilter", Kind::Text(256)),
                        opt("since", Kind::Int(0, i64::MAX)),
                        opt("until", Kind::Int(0, i64::MAX)),
                    ]
                }
            }
            Route::TaskIndex | Route::TaskStop | Route::TaskStatus => const { &[NODE, req("upid", Kind::Text(256))] },
            Route::TaskLog => {
                const {
                    &[
                        NODE,
                        req("upid", Kind::Text(256)),
                        opt("start", Kind::Int(0, i64::MAX)),
                        opt("limit", Kind::Int(0, i64::MAX)),
                        opt("download", Kind::Bool),
                    ]
                }
            }
        }
    }
}

/// Path parameters captured while routing.
#[derive(Debug, Default)]
struct PathParams(Vec<(&'static str, String)>);

impl PathParams {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

fn route(method: &Method, segments: &[&str]) -> Result<(Route, PathParams), bool> {
    use Route::*;
    let m = |get: Route, other: &[(Method, Route)]| -> Result<Route, bool> {
        if method == Method::GET {
            return Ok(get);
        }
        other.iter().find(|(mm, _)| mm == method).map(|(_, r)| *r).ok_or(false)
    };
    let s = |i: usize| segments[i].to_string();
    let route = match segments {
        ["version"] => (m(Version, &[])?, PathParams::default()),
        ["nodes"] => (m(Nodes, &[])?, PathParams::default()),
        ["cluster", "resources"] => (m(ClusterResources, &[])?, PathParams::default()),
        ["access", "permissions"] => (m(AccessPermissions, &[])?, PathParams::default()),
        ["nodes", _, rest @ ..] => {
            let mut p = PathParams(vec![("node", s(1))]);
            let r = match rest {
                ["status"] => m(NodeStatus, &[])?,
                ["storage"] => m(StorageIndex, &[])?,
                ["aplinfo"] => m(AplinfoList, &[(Method::POST, AplinfoDownload)])?,
                ["tasks"] => m(TaskList, &[])?,
                ["storage", storage, tail @ ..] => {
                    p.0.push(("storage", storage.to_string()));
                    match tail {
                        ["status"] => m(StorageStatus, &[])?,
                        ["content"] => m(ContentList, &[])?,
                        ["download-url"] if method == Method::POST => DownloadUrl,
                        ["content", volume @ ..] if !volume.is_empty() => {
                            p.0.push(("volume", volume.join("/")));
                            m(ContentInfo, &[(Method::DELETE, ContentDelete)])?
                        }
                        _ => return Err(false),
                    }
                }
                ["tasks", upid, tail @ ..] => {
                    p.0.push(("upid", upid.to_string()));
                    match tail {
                        [] => m(TaskIndex, &[(Method::DELETE, TaskStop)])?,
                        ["status"] => m(TaskStatus, &[])?,
                        ["log"] => m(TaskLog, &[])?,
                        _ => return Err(false),
                    }
                }
                _ => return Err(false),
            };
            (r, p)
        }
        _ => return Err(false),
    };
    Ok(route)
}

/// One API request, as the dispatcher hands it over.
pub struct ApiRequest<'a> {
    pub method: &'a Method,
    /// Path below `/api2/json`, still percent-encoded.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Answers one `/api2/json` request.
pub async fn handle(sim: &Arc<Sim>, req: ApiRequest<'_>) -> Response<Body> {
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

type Reply = (Value, Option<usize>);

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
    if req.body.len() > super::MAX_BODY {
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

/// Resolves the token from `Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`.
pub fn authenticate(sim: &Sim, headers: &HeaderMap) -> Result<Token, ApiError> {
    // A cookie ticket takes precedence over a token; the simulator issues no tickets, so any is stale.
    let has_cookie = headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|c| c.split(';').any(|kv| kv.trim_start().starts_with("PVEAuthCookie=")));
    if has_cookie {
        return Err(ApiError::unauthorized("Authentication failed!"));
    }
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Err(ApiError::unauthorized("No ticket"));
    };
    let Some(value) = token_value(auth) else {
        return Err(ApiError::unauthorized("No ticket"));
    };
    let value = percent_encoding::percent_decode_str(&value).decode_utf8_lossy().into_owned();
    let Some((id, secret)) = value.rsplit_once('=') else {
        return Err(ApiError::unauthorized("Authentication failed!"));
    };
    sim.with_world(|w| w.tokens.iter().find(|t| t.id == id && t.secret == secret).cloned())
        .ok_or_else(|| ApiError::unauthorized("Authentication failed!"))
}

/// `(?:^|\s)PVEAPIToken(?:=| )([^;]*)`
fn token_value(header: &str) -> Option<String> {
    let mut search = header;
    let mut offset = 0;
    while let Some(pos) = search.find("PVEAPIToken") {
        let abs = offset + pos;
        let at_boundary = abs == 0 || header[..abs].ends_with(char::is_whitespace);
        let after = &header[abs + "PVEAPIToken".len()..];
        if at_boundary && (after.starts_with('=') || after.starts_with(' ')) {
            let rest = &after[1..];
            return Some(rest.split(';').next().unwrap_or_default().to_string());
        }
        offset = abs + 1;
        search = &header[offset..];
    }
    None
}

fn check_all(token: &Token, path: &str, privs: &[&str]) -> Result<(), ApiError> {
    match privs.iter().find(|p| !token.has(path, p)) {
        Some(missing) => Err(ApiError::permission(path, missing)),
        None => Ok(()),
    }
}

fn check_any(token: &Token, path: &str, privs: &[&str]) -> Result<(), ApiError> {
    if privs.iter().any(|p| token.has(path, p)) { Ok(()) } else { Err(ApiError::permission(path, &privs.join("|"))) }
}

/// The permission part of each endpoint's schema (checked before parameter validation, as Proxmox does).
fn check_permissions(token: &Token, route: Route, params: &Params) -> Result<(), ApiError> {
    let storage_path = || format!("/storage/{}", params.get("storage").map_or("", String::as_str));
    let node_path = || format!("/nodes/{}", params.get("node").map_or("", String::as_str));
    match route {
        Route::NodeStatus => check_all(token, &node_path(), &["Sys.Audit"]),
        Route::StorageStatus | Route::ContentList => {
            check_any(token, &storage_path(), &["Datastore.Audit", "Datastore.AllocateSpace"])
        }
        Route::AplinfoDownload => check_all(token, &storage_path(), &["Datastore.AllocateTemplate"]),
        Route::DownloadUrl => {
            check_all(token, &storage_path(), &["Datastore.AllocateTemplate"])?;
            let via_sys = token.has("/", "Sys.Audit") && token.has("/", "Sys.Modify");
            if via_sys || token.has(&node_path(), "Sys.AccessNetwork") {
                Ok(())
            } else {
                Err(ApiError::permission_plain())
            }
        }
        _ => Ok(()),
    }
}

/// pveproxy's forwarding: unknown names fail DNS, offline nodes give 595.
fn proxy_target(sim: &Sim, path: &PathParams) -> Result<String, ApiError> {
    let Some(node) = path.get("node") else { return Ok(String::new()) };
    sim.with_world(|w| {
        let name = if node == "localhost" { w.entry_node().to_string() } else { node.to_string() };
        match w.node(&name) {
            None => Err(ApiError::internal(format!(
                "hostname lookup '{name}' failed - failed to get address info for: {name}: Name or service not known"
            ))),
            Some(n) if !n.online => Err(ApiError::unreachable("No route to host")),
            Some(_) => Ok(name),
        }
    })
}

struct Ctx {
    token: Token,
    params: Params,
    /// The resolved node for `/nodes/{node}/...` routes.
    node: String,
}

impl Ctx {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    fn flag(&self, name: &str, default: bool) -> bool {
        self.param(name).map_or(default, |v| v == "1")
    }

    fn int(&self, name: &str, default: u64) -> u64 {
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
        Route::Nodes => sim.with_world(|w| Ok((list_nodes(w, &ctx.token, &sim.fingerprint, false), None))),
        Route::ClusterResources => sim.with_world(|w| Ok((cluster_resources(w, &ctx.token, ctx.param("type")), None))),
        Route::AccessPermissions => access_permissions(ctx),
        Route::NodeStatus => sim.with_world(|w| Ok((node_status(w, &ctx.node), None))),
        Route::StorageIndex => sim.with_world(|w| storage_index(w, ctx)),
        Route::StorageStatus => sim.with_world(|w| storage_status(w, ctx)),
        Route::ContentList => sim.with_world(|w| content_list(w, ctx)),
        Route::ContentInfo => sim.with_world(|w| content_info(w, ctx)),
        Route::ContentDelete => content_delete(sim, ctx),
        Route::AplinfoList => sim.with_world(|w| {
            let index = w.node(&ctx.node).map(|n| n.index.clone()).unwrap_or_default();
            Ok((json!(*index), None))
        }),
        Route::AplinfoDownload => aplinfo_download(sim, ctx),
        Route::DownloadUrl => download_url(sim, ctx),
        Route::TaskList => sim.with_world(|w| task_list(w, ctx)),
        Route::TaskIndex => {
            sim.with_world(|w| find_task(w, ctx).map(|_| (json!([{"subdir": "log"}, {"subdir": "status"}]), None)))
        }
        Route::TaskStatus => sim.with_world(|w| task_status(w, ctx)),
        Route::TaskLog => sim.with_world(|w| task_log(w, ctx)),
        Route::TaskStop => sim.with_world(|w| task_stop(w, ctx)),
    }
}

fn node_stats(w: &World, name: &str, online: bool) -> serde_json::Map<String, Value> {
    const GIB: u64 = 1024 * 1024 * 1024;
    let mut m = serde_json::Map::new();
    m.insert("maxcpu".into(), json!(16));
    m.insert("maxmem".into(), json!(64 * GIB));
    m.insert("maxdisk".into(), json!(100 * GIB));
    if online {
        let salt = name.bytes().map(u64::from).sum::<u64>();
        m.insert("cpu".into(), json!(0.01 + (salt % 7) as f64 / 100.0));
        m.insert("mem".into(), json!(8 * GIB + salt * 1024 * 1024));
        m.insert("disk".into(), json!(12 * GIB));
        m.insert("uptime".into(), json!(w.uptime()));
    }
    m
}

fn list_nodes(w: &World, token: &Token, fingerprint: &str, resources: bool) -> Value {
    let rows: Vec<Value> = w
        .nodes
        .iter()
        .map(|n| {
            let mut row = serde_json::Map::new();
            row.insert("id".into(), json!(format!("node/{}", n.name)));
            row.insert("type".into(), json!("node"));
            row.insert("node".into(), json!(n.name));
            row.insert("status".into(), json!(if n.online { "online" } else { "offline" }));
            row.insert("level".into(), json!(""));
            if resources {
                row.insert("host-arch".into(), json!(n.arch.as_str()));
                row.insert("cgroup-mode".into(), json!(2));
            } else {
                row.insert("ssl_fingerprint".into(), json!(fingerprint));
            }
            if token.has(&format!("/nodes/{}", n.name), "Sys.Audit") {
                row.extend(node_stats(w, &n.name, n.online));
            }
            Value::Object(row)
        })
        .collect();
    Value::Array(rows)
}

fn cluster_resources(w: &World, token: &Token, kind: Option<&str>) -> Value {
    let mut rows = Vec::new();
    if kind.is_none_or(|k| k == "node") {
        if let Value::Array(nodes) = list_nodes(w, token, "", true) {
            rows.extend(nodes);
        }
    }
    if kind.is_none_or(|k| k == "storage") {
        for node in &w.nodes {
            for s in &w.storages {
                if !w.storage_enabled_on(s, &node.name) || !token.has(&format!("/storage/{}", s.id), "Datastore.Audit")
                {
                    continue;
                }
                let available = node.online && s.active;
                rows.push(json!({
                    "id": format!("storage/{}/{}", node.name, s.id),
                    "storage": s.id,
                    "node": node.name,
                    "type": "storage",
                    "plugintype": s.kind,
                    "status": if available { "available" } else { "unknown" },
                    "shared": u8::from(s.is_shared()),
                    "content": s.content.join(","),
                    "disk": w.used_bytes(s, &node.name),
                    "maxdisk": s.total,
                }));
            }
        }
    }
    Value::Array(rows)
}

fn access_permissions(ctx: &Ctx) -> Result<Reply, ApiError> {
    if let Some(user) = ctx.param("userid") {
        if user != ctx.token.id && !ctx.token.has("/access", "Sys.Audit") {
            return Err(ApiError::permission("/access", "Sys.Audit"));
        }
    }
    let mut out = serde_json::Map::new();
    let privs_json = |path: &str| {
        let privs = ctx.token.privs_at(path);
        Value::Object(privs.into_iter().map(|(p, prop)| (p, json!(u8::from(prop)))).collect())
    };
    match ctx.param("path") {
        Some(path) => {
            out.insert(path.to_string(), privs_json(path));
        }
        None => {
            for path in ctx.token.listed_paths() {
                let v = privs_json(&path);
                if v.as_object().is_some_and(|m| !m.is_empty()) {
                    out.insert(path, v);
                }
            }
        }
    }
    Ok((Value::Object(out), None))
}

fn node_status(w: &World, node: &str) -> Value {
    const GIB: u64 = 1024 * 1024 * 1024;
    let arch = w.node(node).map_or("x86_64", |n| n.arch.as_str());
    json!({
        "uptime": w.uptime(),
        "cpu": 0.02,
        "wait": 0.0,
        "loadavg": ["0.12", "0.09", "0.05"],
        "kversion": "Linux 6.14.11-4-pve #1 SMP PREEMPT_DYNAMIC PMX 6.14.11-4",
        "pveversion": format!("pve-manager/{}/5a1d9c3e7b2f4a61", w.version),
        "cpuinfo": {"model": "Simulated CPU", "cpus": 16, "cores": 8, "sockets": 1, "mhz": "3000.000", "hvm": "1", "flags": "", "user_hz": 100},
        "memory": {"total": 64 * GIB, "used": 8 * GIB, "free": 56 * GIB, "available": 56 * GIB},
        "swap": {"total": 8 * GIB, "used": 0, "free": 8 * GIB},
        "rootfs": {"total": 100 * GIB, "used": 12 * GIB, "free": 88 * GIB, "avail": 83 * GIB},
        "ksm": {"shared": 0},
        "current-kernel": {"sysname": "Linux", "release": "6.14.11-4-pve", "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.14.11-4", "machine": arch},
        "boot-info": {"mode": "efi", "secureboot": 0},
    })
}

fn storage_entry(w: &World, s: &super::scenario::StorageSpec, node: &str, with_fraction: bool) -> Value {
    let enabled = w.storage_enabled_on(s, node);
    let active = enabled && s.active;
    let (total, used) = if active { (s.total, w.used_bytes(s, node)) } else { (0, 0) };
    let mut entry = json!({
        "storage": s.id,
        "type": s.kind,
        "content": s.content.join(","),
        "enabled": u8::from(enabled),
        "active": u8::from(active),
        "shared": u8::from(s.is_shared()),
        "total": total,
        "used": used,
        "avail": total - used,
    });
    if with_fraction && total > 0 {
        entry["used_fraction"] = json!(used as f64 / total as f64);
    }
    entry
}

fn storage_index(w: &World, ctx: &Ctx) -> Result<Reply, ApiError> {
    if let Some(id) = ctx.param("storage") {
        if w.storage(id).is_none() {
            return Err(ApiError::param("storage", "No such storage."));
        }
    }
    let content: Option<Vec<&str>> = ctx.param("content").map(|c| c.split(',').collect());
    let rows: Vec<Value> = w
        .storages
        .iter()
        .filter(|s| ctx.param("storage").is_none_or(|id| id == s.id))
        .filter(|s| !(ctx.flag("enabled", false) && s.disabled))
        .filter(|s| {
            content.as_ref().is_none_or(|c| w.storage_enabled_on(s, &ctx.node) && c.iter().any(|c| s.has_content(c)))
        })
        .filter(|s| {
            ctx.param("target").is_none_or(|t| s.is_shared() && s.allowed_on(t) && w.storage_enabled_on(s, &ctx.node))
        })
        // Storages the caller may not see are dropped silently: no 403.
        .filter(|s| {
            let path = format!("/storage/{}", s.id);
            ctx.token.has(&path, "Datastore.Audit") || ctx.token.has(&path, "Datastore.AllocateSpace")
        })
        .map(|s| storage_entry(w, s, &ctx.node, true))
        .collect();
    Ok((Value::Array(rows), None))
}

fn storage_status(w: &World, ctx: &Ctx) -> Result<Reply, ApiError> {
    let id = ctx.param("storage").unwrap_or_default();
    let Some(spec) = w.storage(id) else {
        return Err(ApiError::param("storage", "No such storage."));
    };
    if !spec.allowed_on(&ctx.node) {
        return Err(ApiError::internal(format!("storage '{id}' is not available on node '{}'", ctx.node)));
    }
    Ok((storage_entry(w, spec, &ctx.node, false), None))
}

fn volume_format(file: &str) -> &'static str {
    [(".tar.gz", "tgz"), (".tar.xz", "txz"), (".tar.zst", "tzst"), (".tar.bz2", "tbz2"), (".tar", "tar")]
        .iter()
        .find(|(ext, _)| file.ends_with(ext))
        .map_or("raw", |(_, f)| f)
}

fn content_list(w: &World, ctx: &Ctx) -> Result<Reply, ApiError> {
    let id = ctx.param("storage").unwrap_or_default();
    let spec = w.check_storage_usable(id, &ctx.node).map_err(ApiError::internal)?;
    if !spec.active {
        return Err(ApiError::internal(format!("storage '{id}' is not online")));
    }
    if ctx.param("content").is_some_and(|c| c != "vztmpl") || !spec.has_content("vztmpl") || spec.mount_path().is_none()
    {
        return Ok((json!([]), None));
    }
    let key = w.volume_key(id, &ctx.node);
    let mut rows: Vec<(String, Value)> = w
        .volumes
        .get(&key)
        .into_iter()
        .flatten()
        .map(|(file, v)| {
            let volid = format!("{id}:vztmpl/{file}");
            let row = json!({"volid": volid, "format": volume_format(file), "size": v.size, "ctime": v.ctime, "content": "vztmpl"});
            (volid.to_lowercase(), row)
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((Value::Array(rows.into_iter().map(|(_, r)| r).collect()), None))
}

/// Splits `{volume}` (`STORE:vztmpl/FILE` or `vztmpl/FILE`) and checks it against `{storage}`.
fn parse_volume(ctx: &Ctx) -> Result<(String, String), ApiError> {
    let volume = ctx.param("volume").unwrap_or_default();
    let path_storage = ctx.param("storage").unwrap_or_default();
    let (storage, rel) = match volume.split_once(':') {
        Some((s, rel)) => (s.to_string(), rel.to_string()),
        None if !path_storage.is_empty() => (path_storage.to_string(), volume.to_string()),
        None => return Err(ApiError::internal(format!("unable to parse volume ID '{volume}'"))),
    };
    if !path_storage.is_empty() && storage != path_storage {
        return Err(ApiError::param("volume", format!("storage ID mismatch ({storage} != {path_storage})")));
    }
    let Some(file) = rel.strip_prefix("vztmpl/").filter(|f| !f.contains('/')) else {
        return Err(ApiError::internal(format!("unable to parse volume filename '{rel}'")));
    };
    Ok((storage, file.to_string()))
}

fn content_info(w: &World, ctx: &Ctx) -> Result<Reply, ApiError> {
    let (storage, file) = parse_volume(ctx)?;
    let spec = w.check_storage_usable(&storage, &ctx.node).map_err(ApiError::internal)?;
    check_any(&ctx.token, &format!("/storage/{storage}"), &["Datastore.Audit", "Datastore.AllocateSpace"])?;
    let key = w.volume_key(&storage, &ctx.node);
    let path = format!("{}/template/cache/{file}", spec.mount_path().unwrap_or_default());
    match w.volumes.get(&key).and_then(|v| v.get(&file)) {
        Some(v) => Ok((json!({"path": path, "size": v.size, "used": v.size, "format": volume_format(&file)}), None)),
        None => Err(ApiError::internal(format!("volume '{storage}:vztmpl/{file}' does not exist"))),
    }
}

fn content_delete(sim: &Arc<Sim>, ctx: &Ctx) -> Result<Reply, ApiError> {
    let (storage, file) = parse_volume(ctx)?;
    sim.with_world(|w| {
        w.check_storage_usable(&storage, &ctx.node).map_err(ApiError::internal)?;
        check_all(&ctx.token, &format!("/storage/{storage}"), &["Datastore.Allocate"])?;
        let key = w.volume_key(&storage, &ctx.node);
        let (upid, _) = w.new_task(&ctx.node, "imgdel", &storage, &ctx.token.id);
        let removed = w.volumes.get_mut(&key).and_then(|v| v.remove(&file));
        let outcome = match removed {
            Some(_) => {
                w.log(&upid, format!("Removed volume '{storage}:vztmpl/{file}'"));
                Ok(())
            }
            None => Err(format!("volume '{storage}:vztmpl/{file}' does not exist")),
        };
        let failed = outcome.clone().err();
        w.finish(&upid, outcome);
        match (ctx.param("delay"), failed) {
            (Some(_), Some(err)) => Err(ApiError::internal(err)),
            (Some(_), None) => Ok((Value::Null, None)),
            (None, _) => Ok((json!(upid), None)),
        }
    })
}

fn aplinfo_download(sim: &Arc<Sim>, ctx: &Ctx) -> Result<Reply, ApiError> {
    let storage = ctx.param("storage").unwrap_or_default().to_string();
    let template = ctx.param("template").unwrap_or_default().to_string();
    let job = sim.with_world(|w| {
        let index = w.node(&ctx.node).map(|n| n.index.clone()).unwrap_or_default();
        let Some(entry) = index.iter().find(|e| e.get("template") == Some(&template)) else {
            return Err(ApiError::param("template", "no such template"));
        };
        let spec = w.check_storage_usable(&storage, &ctx.node).map_err(ApiError::internal)?;
        if entry.get("type").map(String::as_str) != Some("lxc")
            && entry.get("type").map(String::as_str) != Some("openvz")
        {
            return Err(ApiError::internal(format!("unknown template type '{}'", entry["type"])));
        }
        let Some(mount) = spec.mount_path().filter(|_| spec.has_content("vztmpl")) else {
            return Err(ApiError::internal(format!("storage '{storage}' does not support templates")));
        };
        let checksum = if let Some(sha) = entry.get("sha512sum") {
            Some(("sha512".to_string(), sha.clone()))
        } else {
            entry.get("md5sum").map(|md5| ("md5".to_string(), md5.clone()))
        };
        Ok(DownloadJob {
            url: entry.get("location").cloned().unwrap_or_default(),
            file: template.clone(),
            node: ctx.node.clone(),
            storage: storage.clone(),
            key: w.volume_key(&storage, &ctx.node),
            dest_dir: format!("{mount}/template/cache"),
            checksum,
            verify_certificates: true,
        })
    })?;
    if job.checksum.is_none() {
        return start_failed_task(sim, ctx, &template, "checksum required but not specified");
    }
    start_download(sim, ctx, job)
}

fn start_failed_task(sim: &Arc<Sim>, ctx: &Ctx, id: &str, error: &str) -> Result<Reply, ApiError> {
    let upid = sim.with_world(|w| {
        let (upid, _) = w.new_task(&ctx.node, "download", id, &ctx.token.id);
        w.finish(&upid, Err(error.to_string()));
        upid
    });
    Ok((json!(upid), None))
}

fn start_download(sim: &Arc<Sim>, ctx: &Ctx, job: DownloadJob) -> Result<Reply, ApiError> {
    let (upid, cancel) = sim.with_world(|w| w.new_task(&ctx.node, "download", &job.file, &ctx.token.id));
    tracing::debug!(node = %job.node, storage = %job.storage, template = %job.file, %upid, "simulated download started");
    let sim2 = sim.clone();
    let task_upid = upid.clone();
    sim.tracker.spawn(async move { tasks::run_download(sim2, task_upid, cancel, job).await });
    Ok((json!(upid), None))
}

/// `PVE::Storage::normalize_content_filename`: path stripped, odd characters become `_`.
fn normalize_filename(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or_default();
    base.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).collect()
}

fn download_url(sim: &Arc<Sim>, ctx: &Ctx) -> Result<Reply, ApiError> {
    let storage = ctx.param("storage").unwrap_or_default().to_string();
    let content = ctx.param("content").unwrap_or_default();
    match (ctx.param("checksum"), ctx.param("checksum-algorithm")) {
        (Some(_), None) => {
            return Err(ApiError::param("checksum-algorithm", "missing property - 'checksum' requires this property"));
        }
        (None, Some(_)) => {
            return Err(ApiError::param("checksum", "missing property - 'checksum-algorithm' requires this property"));
        }
        _ => {}
    }
    let job = sim.with_world(|w| {
        let spec = w.check_storage_usable(&storage, &ctx.node).map_err(ApiError::internal)?;
        let Some(mount) = spec.mount_path() else {
            return Err(ApiError::internal(format!(
                "can't upload to storage type '{}', not a file based storage!",
                spec.kind
            )));
        };
        if !spec.has_content(content) {
            return Err(ApiError::internal(format!(
                "storage '{storage}' is not configured for content-type '{content}'"
            )));
        }
        let filename = normalize_filename(ctx.param("filename").unwrap_or_default());
        let dest_dir = match content {
            "vztmpl" => {
                if !super::aplinfo::has_vztmpl_extension(&filename) || filename.starts_with(".tar") {
                    return Err(ApiError::param("filename", "wrong file extension"));
                }
                format!("{mount}/template/cache")
            }
            "iso" => format!("{mount}/template/iso"),
            _ => format!("{mount}/import"),
        };
        Ok(DownloadJob {
            url: ctx.param("url").unwrap_or_default().to_string(),
            file: filename,
            node: ctx.node.clone(),
            storage: storage.clone(),
            key: w.volume_key(&storage, &ctx.node),
            dest_dir,
            checksum: ctx
                .param("checksum")
                .zip(ctx.param("checksum-algorithm"))
                .map(|(c, a)| (a.to_string(), c.to_string())),
            verify_certificates: ctx.flag("verify-certificates", true),
        })
    })?;
    if ctx.param("compression").is_some() && content != "iso" {
        return start_failed_task(sim, ctx, &job.file, "decompression not supported for vztmpl");
    }
    if content != "vztmpl" {
        // Only templates are modelled; other content is accepted and discarded.
        return start_failed_task(sim, ctx, &job.file, &format!("content type '{content}' is not simulated"));
    }
    start_download(sim, ctx, job)
}

/// Whether the caller may see a task: its owner (the token, or the token's user) or Sys.Audit.
fn may_see(token: &Token, task_user: &str, node: &str, privilege: &str) -> bool {
    task_user == token.id || task_user == token.user() || token.has(&format!("/nodes/{node}"), privilege)
}

fn task_row(t: &super::state::Task) -> Value {
    let (user, tokenid) = match t.user.split_once('!') {
        Some((u, tok)) => (u.to_string(), Some(tok.to_string())),
        None => (t.user.clone(), None),
    };
    let mut row = json!({
        "upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart, "starttime": t.starttime,
        "type": t.kind, "id": t.id, "user": user,
    });
    if let Some(tok) = tokenid {
        row["tokenid"] = json!(tok);
    }
    row
}

fn task_list(w: &World, ctx: &Ctx) -> Result<Reply, ApiError> {
    let source = ctx.param("source").unwrap_or("archive");
    let errors_only = ctx.flag("errors", false);
    let mut rows: Vec<(u64, Value)> = w
        .tasks
        .iter()
        .filter(|t| t.node == ctx.node)
        .filter(|t| may_see(&ctx.token, &t.user, &ctx.node, "Sys.Audit"))
        .filter(|t| match source {
            "active" => t.end.is_none(),
            "all" => true,
            _ => t.end.is_some(),
        })
        .filter(|t| ctx.param("typefilter").is_none_or(|f| f == t.kind))
        .filter(|t| ctx.param("userfilter").is_none_or(|f| t.user.to_lowercase().contains(&f.to_lowercase())))
        .filter(|t| !errors_only || t.end.as_ref().is_some_and(|(_, s)| s != "OK"))
        .filter(|t| ctx.param("since").is_none_or(|s| s.parse::<u64>().is_ok_and(|s| t.starttime >= s)))
        .filter(|t| ctx.param("until").is_none_or(|u| u.parse::<u64>().is_ok_and(|u| t.starttime <= u)))
        .map(|t| {
            let mut row = task_row(t);
            match &t.end {
                Some((end, status)) => {
                    row["endtime"] = json!(end);
                    row["status"] = json!(status);
                }
                None => row["status"] = json!("RUNNING"),
            }
            (t.starttime, row)
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    let total = rows.len();
    let start = usize::try_from(ctx.int("start", 0)).unwrap_or(usize::MAX);
    let limit = usize::try_from(ctx.int("limit", 50)).unwrap_or(usize::MAX);
    let page: Vec<Value> = rows.into_iter().skip(start).take(limit).map(|(_, r)| r).collect();
    Ok((Value::Array(page), Some(total)))
}

fn find_task<'a>(w: &'a World, ctx: &Ctx) -> Result<&'a super::state::Task, ApiError> {
    let upid = ctx.param("upid").unwrap_or_default();
    let Some(parsed) = tasks::parse_upid(upid) else {
        return Err(ApiError::param("upid", format!("unable to parse worker upid '{upid}'")));
    };
    // A task is only known on the node that ran it.
    let found = w.tasks.iter().find(|t| t.upid == upid && t.node == ctx.node && parsed.node == ctx.node);
    found.ok_or_else(|| ApiError::param("upid", "no such task"))
}

fn task_status(w: &World, ctx: &Ctx) -> Result<Reply, ApiError> {
    let t = find_task(w, ctx)?;
    if !may_see(&ctx.token, &t.user, &ctx.node, "Sys.Audit") {
        return Err(ApiError::permission(&format!("/nodes/{}", ctx.node), "Sys.Audit"));
    }
    let mut row = task_row(t);
    match &t.end {
        Some((_, status)) => {
            row["status"] = json!("stopped");
            row["exitstatus"] = json!(status);
        }
        None => row["status"] = json!("running"),
    }
    Ok((row, None))
}

fn task_log(w: &World, ctx: &Ctx) -> Result<Reply, ApiError> {
    let t = find_task(w, ctx)?;
    if !may_see(&ctx.token, &t.user, &ctx.node, "Sys.Audit") {
        return Err(ApiError::permission(&format!("/nodes/{}", ctx.node), "Sys.Audit"));
    }
    let start = usize::try_from(ctx.int("start", 0)).unwrap_or(usize::MAX);
    let limit = match ctx.int("limit", 50) {
        0 => usize::MAX,
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    if t.log.is_empty() {
        return Ok((json!([{"n": 1, "t": "no content"}]), Some(1)));
    }
    let lines: Vec<Value> =
        t.log.iter().enumerate().skip(start).take(limit).map(|(i, line)| json!({"n": i + 1, "t": line})).collect();
    Ok((Value::Array(lines), Some(t.log.len())))
}

fn task_stop(w: &World, ctx: &Ctx) -> Result<Reply, ApiError> {
    let t = find_task(w, ctx)?;
    if !may_see(&ctx.token, &t.user, &ctx.node, "Sys.Modify") {
        return Err(ApiError::permission(&format!("/nodes/{}", ctx.node), "Sys.Modify"));
    }
    // SIGTERM: the worker removes its temp file and ends in an error.
    t.cancel.cancel();
    Ok((Value::Null, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_proxmox_paths() {
        let r =
            |m: Method, p: &str| route(&m, &p.split('/').filter(|s| !s.is_empty()).collect::<Vec<_>>()).map(|(r, _)| r);
        assert_eq!(r(Method::GET, "/nodes/pve1/aplinfo"), Ok(Route::AplinfoList));
        assert_eq!(r(Method::POST, "/nodes/pve1/aplinfo"), Ok(Route::AplinfoDownload));
        assert_eq!(r(Method::DELETE, "/nodes/pve1/aplinfo"), Err(false));
        assert_eq!(r(Method::GET, "/nodes/pve1/storage/local/content/local:vztmpl/a.tar.xz"), Ok(Route::ContentInfo));
        assert_eq!(r(Method::GET, "/nodes/pve1/bogus"), Err(false));
        let (_, params) =
            route(&Method::DELETE, &["nodes", "n", "storage", "s", "content", "vztmpl", "x.tar"]).unwrap();
        assert_eq!(params.get("volume"), Some("vztmpl/x.tar"));
    }

    #[test]
    fn token_header_parsing() {
        assert_eq!(token_value("PVEAPIToken=a@pve!t=secret").as_deref(), Some("a@pve!t=secret"));
        assert_eq!(token_value("PVEAPIToken a@pve!t=s; x").as_deref(), Some("a@pve!t=s"));
        assert_eq!(token_value("Bearer xPVEAPIToken=a"), None);
        assert_eq!(token_value("Basic abc"), None);
    }

    #[test]
    fn filenames_are_normalized() {
        assert_eq!(normalize_filename("../x y:z.tar.zst"), "x_y_z.tar.zst");
        assert_eq!(volume_format("a.tar.zst"), "tzst");
        assert_eq!(volume_format("a.tar"), "tar");
    }
}
