//! Who is asking and what they may do: token authentication, the permission part of each endpoint's
//! schema (checked before parameter validation, as Proxmox does), and pveproxy's forwarding rules.

use axum::http::HeaderMap;

use super::routes::{PathParams, Route};
use crate::Sim;
use crate::acl::Token;
use crate::http::{ApiError, Params};

/// Resolves the token from `Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`.
pub(crate) fn authenticate(sim: &Sim, headers: &HeaderMap) -> Result<Token, ApiError> {
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
pub(super) fn token_value(header: &str) -> Option<String> {
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

pub(super) fn check_all(token: &Token, path: &str, privs: &[&str]) -> Result<(), ApiError> {
    match privs.iter().find(|p| !token.has(path, p)) {
        Some(missing) => Err(ApiError::permission(path, missing)),
        None => Ok(()),
    }
}

pub(super) fn check_any(token: &Token, path: &str, privs: &[&str]) -> Result<(), ApiError> {
    if privs.iter().any(|p| token.has(path, p)) { Ok(()) } else { Err(ApiError::permission(path, &privs.join("|"))) }
}

/// The permission part of each endpoint's schema (checked before parameter validation, as Proxmox does).
pub(super) fn check_permissions(token: &Token, route: Route, params: &Params) -> Result<(), ApiError> {
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
        // Both, with no `Sys.Audit`+`Sys.Modify` alternative (pve-storage `Status.pm` oci_registry_pull).
        Route::OciPull => {
            check_all(token, &storage_path(), &["Datastore.AllocateTemplate"])?;
            check_all(token, &node_path(), &["Sys.AccessNetwork"])
        }
        _ => Ok(()),
    }
}

/// pveproxy's forwarding: unknown names fail DNS, offline nodes give 595.
pub(super) fn proxy_target(sim: &Sim, path: &PathParams) -> Result<String, ApiError> {
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

/// Whether the caller may see a task: its owner (the token, or the token's user) or Sys.Audit.
pub(super) fn may_see(token: &Token, task_user: &str, node: &str, privilege: &str) -> bool {
    task_user == token.id || task_user == token.user() || token.has(&format!("/nodes/{node}"), privilege)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_header_parsing() {
        assert_eq!(token_value("PVEAPIToken=a@pve!t=secret").as_deref(), Some("a@pve!t=secret"));
        assert_eq!(token_value("PVEAPIToken a@pve!t=s; x").as_deref(), Some("a@pve!t=s"));
        assert_eq!(token_value("Bearer xPVEAPIToken=a"), None);
        assert_eq!(token_value("Basic abc"), None);
    }
}
