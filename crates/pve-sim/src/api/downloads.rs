//! Starting downloads: `POST /nodes/{node}/aplinfo` (from the appliance index) and
//! `POST /nodes/{node}/storage/{storage}/download-url`; the worker itself lives in `crate::tasks`.

use std::sync::Arc;

use serde_json::json;

use super::{Ctx, Reply};
use crate::Sim;
use crate::http::ApiError;
use crate::tasks::{self, DownloadJob};

pub(super) fn aplinfo_download(sim: &Arc<Sim>, ctx: &Ctx) -> Result<Reply, ApiError> {
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

pub(super) fn download_url(sim: &Arc<Sim>, ctx: &Ctx) -> Result<Reply, ApiError> {
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
                if !crate::aplinfo::has_vztmpl_extension(&filename) || filename.starts_with(".tar") {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_are_normalized() {
        assert_eq!(normalize_filename("../x y:z.tar.zst"), "x_y_z.tar.zst");
    }
}
