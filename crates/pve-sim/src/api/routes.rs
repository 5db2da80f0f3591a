//! Routing: which endpoint a method and path name, its path parameters, and its parameter schema.

use axum::http::Method;

use crate::http::{Kind, Param, opt, req};

/// A matched endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
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
    OciPull,
    TaskList,
    TaskIndex,
    TaskStop,
    TaskStatus,
    TaskLog,
}

impl Route {
    /// The path pattern, as Proxmox's API viewer writes it (used in `/_sim/stats`).
    pub(super) fn pattern(self) -> &'static str {
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
            Route::OciPull => "/nodes/{node}/storage/{storage}/oci-registry-pull",
            Route::TaskList => "/nodes/{node}/tasks",
            Route::TaskIndex | Route::TaskStop => "/nodes/{node}/tasks/{upid}",
            Route::TaskStatus => "/nodes/{node}/tasks/{upid}/status",
            Route::TaskLog => "/nodes/{node}/tasks/{upid}/log",
        }
    }

    /// The parameter schema (path parameters included, as in Proxmox's schema).
    pub(super) fn schema(self) -> &'static [Param] {
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
                        opt("checksum-algorithm", Kind::Enum(crate::content::ALGORITHMS)),
                        opt("compression", Kind::Enum(&["gz", "lzo", "zst", "bz2"])),
                        opt("verify-certificates", Kind::Bool),
                    ]
                }
            }
            Route::OciPull => {
                const { &[NODE, STORAGE, req("reference", Kind::Text(1024)), opt("filename", Kind::Text(255))] }
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
pub(super) struct PathParams(pub(super) Vec<(&'static str, String)>);

impl PathParams {
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

pub(super) fn route(method: &Method, segments: &[&str]) -> Result<(Route, PathParams), bool> {
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
                        ["oci-registry-pull"] if method == Method::POST => OciPull,
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
}
