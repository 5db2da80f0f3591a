//! Cluster-wide and per-node views: `/nodes`, `/cluster/resources`, `/access/permissions`, `/nodes/{node}/status`.

use serde_json::{Value, json};

use super::{Ctx, Reply};
use crate::acl::Token;
use crate::http::ApiError;
use crate::state::World;

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

pub(super) fn list_nodes(
    w: &World,
    token: &Token,
    fingerprints: &std::collections::BTreeMap<String, String>,
    resources: bool,
) -> Value {
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
                row.insert("ssl_fingerprint".into(), json!(fingerprints.get(&n.name).cloned().unwrap_or_default()));
            }
            if token.has(&format!("/nodes/{}", n.name), "Sys.Audit") {
                row.extend(node_stats(w, &n.name, n.online));
            }
            Value::Object(row)
        })
        .collect();
    Value::Array(rows)
}

pub(super) fn cluster_resources(w: &World, token: &Token, kind: Option<&str>) -> Value {
    let mut rows = Vec::new();
    if kind.is_none_or(|k| k == "node") {
        if let Value::Array(nodes) = list_nodes(w, token, &Default::default(), true) {
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

pub(super) fn access_permissions(ctx: &Ctx) -> Result<Reply, ApiError> {
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

pub(super) fn node_status(w: &World, node: &str) -> Value {
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
