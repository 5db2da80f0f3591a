//! Storages and their template volumes: index, status, content listing, volume info and deletion.

use std::sync::Arc;

use serde_json::{Value, json};

use super::auth::{check_all, check_any};
use super::{Ctx, Reply};
use crate::Sim;
use crate::http::ApiError;
use crate::state::World;

fn storage_entry(w: &World, s: &crate::scenario::StorageSpec, node: &str, with_fraction: bool) -> Value {
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

pub(super) fn storage_index(w: &World, ctx: &Ctx) -> Result<Reply, ApiError> {
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

pub(super) fn storage_status(w: &World, ctx: &Ctx) -> Result<Reply, ApiError> {
    let id = ctx.param("storage").unwrap_or_default();
    let Some(spec) = w.storage(id) else {
        return Err(ApiError::param("storage", "No such storage."));
    };
    if !spec.allowed_on(&ctx.node) {
        return Err(ApiError::internal(format!("storage '{id}' is not available on node '{}'", ctx.node)));
    }
    Ok((storage_entry(w, spec, &ctx.node, false), None))
}

pub(super) fn volume_format(file: &str) -> &'static str {
    [(".tar.gz", "tgz"), (".tar.xz", "txz"), (".tar.zst", "tzst"), (".tar.bz2", "tbz2"), (".tar", "tar")]
        .iter()
        .find(|(ext, _)| file.ends_with(ext))
        .map_or("raw", |(_, f)| f)
}

pub(super) fn content_list(w: &World, ctx: &Ctx) -> Result<Reply, ApiError> {
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

pub(super) fn content_info(w: &World, ctx: &Ctx) -> Result<Reply, ApiError> {
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

pub(super) fn content_delete(sim: &Arc<Sim>, ctx: &Ctx) -> Result<Reply, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_formats_follow_the_extension() {
        assert_eq!(volume_format("a.tar.zst"), "tzst");
        assert_eq!(volume_format("a.tar"), "tar");
        assert_eq!(volume_format("a.raw"), "raw");
    }
}
