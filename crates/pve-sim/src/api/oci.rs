//! `POST /nodes/{node}/storage/{storage}/oci-registry-pull` (Proxmox VE 9, pve-storage `Status.pm`): skopeo
//! copies an image into the vztmpl directory as `NAME.tar`. Modelled from the source: the reference must end in
//! `:tag`; `Datastore.AllocateTemplate` on the storage and `Sys.AccessNetwork` on the node (no alternative);
//! no skopeo, a non-file storage, a storage without vztmpl, or an existing file fail before the worker starts;
//! the worker (type `ociregistrypull`, id = the file name) fails as skopeo does for an unknown image.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{Ctx, Reply};
use crate::Sim;
use crate::http::ApiError;
use crate::state::{Volume, now_epoch};

pub(super) fn oci_pull(sim: &Arc<Sim>, ctx: &Ctx) -> Result<Reply, ApiError> {
    let storage = ctx.param("storage").unwrap_or_default().to_string();
    let reference = ctx.param("reference").unwrap_or_default().to_string();
    if !valid_reference(&reference) {
        return Err(ApiError::param("reference", "value does not match the regex pattern"));
    }
    let (upid, cancel, key, file, size, dest) = sim.with_world(|w| {
        if !w.skopeo {
            return Err(ApiError::internal("Install 'skopeo' to pull OCI images from registries."));
        }
        let spec = w.check_storage_usable(&storage, &ctx.node).map_err(ApiError::internal)?;
        let Some(mount) = spec.mount_path() else {
            return Err(ApiError::internal(format!(
                "can't upload to storage type '{}', not a file based storage!",
                spec.kind
            )));
        };
        if !spec.has_content("vztmpl") {
            return Err(ApiError::internal(format!("storage '{storage}' is not configured for content-type 'vztmpl'")));
        }
        let file = format!("{}.tar", normalize(ctx.param("filename").unwrap_or(&reference)));
        let key = w.volume_key(&storage, &ctx.node);
        if w.volumes.get(&key).is_some_and(|v| v.contains_key(&file)) {
            return Err(ApiError::internal(format!("refusing to override existing file '{file}'")));
        }
        let size = w.oci_images.get(&reference).copied();
        let dest = format!("{mount}/template/cache");
        let (upid, cancel) = w.new_task(&ctx.node, "ociregistrypull", &file, &ctx.token.id);
        Ok((upid, cancel, key, file, size, dest))
    })?;
    let (sim2, task) = (sim.clone(), upid.clone());
    let stats_key = (ctx.node.clone(), storage.clone(), file.clone());
    sim.with_world(|w| w.stats.downloads.entry(stats_key.clone()).or_default().started += 1);
    sim.tracker.spawn(async move {
        let log = |line: String| sim2.with_world(|w| w.log(&task, line));
        let command = format!("skopeo copy docker://{reference} oci-archive:{dest}/{file}.tmp.{}", std::process::id());
        let outcome = match size {
            None => {
                let (repo, tag) = reference.rsplit_once(':').unwrap_or((&reference, ""));
                log(format!(
                    "time=\"{}\" level=fatal msg=\"initializing source docker://{reference}: reading manifest {tag} in {repo}: manifest unknown\"",
                    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                ));
                Err(format!("command '{command}' failed: exit code 1"))
            }
            Some(size) => {
                log("Getting image source signatures".into());
                log(format!("Copying blob sha256:{:064x}", size));
                let bandwidth = sim2.with_world(|w| w.bandwidth).max(1);
                let takes = Duration::from_secs_f64(size as f64 / bandwidth as f64);
                tokio::select! {
                    () = tokio::time::sleep(takes) => {
                        log("Copying config sha256:0000".into());
                        log("Writing manifest to image destination".into());
                        Ok(())
                    }
                    () = cancel.cancelled() => Err("received interrupt".to_string()),
                }
            }
        };
        sim2.with_world(|w| {
            let count = w.stats.downloads.entry(stats_key).or_default();
            if outcome.is_ok() {
                count.succeeded += 1;
            } else {
                count.failed += 1;
            }
            if outcome.is_ok() {
                let digests = w.digests(&file, size.unwrap_or(0), false);
                w.volumes.entry(key).or_default().insert(file.clone(), Volume { size: size.unwrap_or(0), ctime: now_epoch(), digests });
            }
            w.finish(&task, outcome);
        });
    });
    Ok((json!(upid), None))
}

/// `PVE::Storage::normalize_content_filename`: path stripped, odd characters become `_`.
fn normalize(name: &str) -> String {
    let base = name.trim_end_matches('\n').rsplit(['/', '\\']).next().unwrap_or_default();
    base.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).collect()
}

/// Proxmox's `reference` pattern: `[host[:port]/]name[/name…]:tag`, lower-case names, a tag of word characters.
fn valid_reference(r: &str) -> bool {
    let Some((path, tag)) = r.rsplit_once(':') else { return false };
    let tag_ok = tag.len() <= 128
        && tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    let mut parts: Vec<&str> = path.split('/').collect();
    let host_like = |p: &str| p.contains('.') || p.contains(':') || p == "localhost";
    if parts.len() > 1 && host_like(parts[0]) {
        let host = parts.remove(0);
        let (name, port) = host.split_once(':').unwrap_or((host, "0"));
        let label_ok = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if !name.split('.').all(label_ok) || !port.chars().all(|c| c.is_ascii_digit()) || port.is_empty() {
            return false;
        }
    }
    let component_ok = |c: &str| {
        c.chars().next().is_some_and(|x| x.is_ascii_lowercase() || x.is_ascii_digit())
            && c.chars().last().is_some_and(|x| x.is_ascii_lowercase() || x.is_ascii_digit())
            && c.chars().all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || "._-".contains(x))
    };
    tag_ok && !parts.is_empty() && parts.iter().all(|c| component_ok(c))
}

#[cfg(test)]
mod tests {
    #[test]
    fn references_and_file_names_follow_proxmox() {
        for ok in ["docker.io/library/alpine:3.22", "alpine:latest", "registry.lan:5000/team/app:v1.2", "localhost/x:1"]
        {
            assert!(super::valid_reference(ok), "{ok}");
        }
        for bad in ["docker.io/library/alpine", "Alpine:3", "alpine@sha256:abc", "alpine:", "alpine:-x"] {
            assert!(!super::valid_reference(bad), "{bad}");
        }
        assert_eq!(super::normalize("docker.io/library/alpine:3.22"), "alpine_3.22");
    }
}
