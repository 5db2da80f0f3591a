//! `oci:` templates: one fixed file (`NAME.tar`), pulled by `oci-registry-pull` on Proxmox VE 9 and later, which
//! needs `Sys.AccessNetwork` on the node with no alternative (unlike `download-url`).

use super::planner::{ClusterPlanner, Decision};
use super::{BlockReason, Download, Source};
use crate::config::TemplateConfig;
use crate::observation::NodeObservation;

impl ClusterPlanner<'_> {
    pub(super) fn resolve_oci(
        &self,
        node: &NodeObservation,
        t: &TemplateConfig,
        reference: &str,
        filename: Option<&str>,
        file: &str,
    ) -> Decision {
        if let Some(volid) = self.has_file(&node.name, file) {
            return Decision::Cached(volid);
        }
        match &self.obs.pve_version {
            Some(Ok(v)) if major(v).is_some_and(|m| m < 9) => {
                return Decision::Blocked(BlockReason::OciNeedsPve9 {
                    cluster: self.obs.name.clone(),
                    version: v.to_string(),
                });
            }
            Some(Err(e)) => {
                return Decision::Blocked(BlockReason::VersionUnknown { error: e.to_string() });
            }
            _ => {}
        }
        let (storage, shared) = match self.writable_target(node, t) {
            Ok(target) => target,
            Err(r) => return r,
        };
        let perms = &self.obs.permissions;
        let may = |n: &String| perms.has(&format!("/nodes/{n}"), "Sys.AccessNetwork");
        let via = if shared {
            self.least_loaded(self.online_nodes_seeing(&storage).into_iter().filter(may), &node.name)
        } else {
            may(&node.name).then(|| node.name.clone())
        };
        let Some(via) = via else {
            return Decision::Blocked(BlockReason::OciNoAccessNetwork { node: node.name.clone() });
        };
        Decision::Download(Box::new(Download {
            cluster: self.obs.name.clone(),
            node: via,
            storage,
            shared,
            file: file.to_string(),
            source: Source::Oci { reference: reference.to_string(), filename: filename.map(String::from) },
            for_nodes: Vec::new(),
        }))
    }
}

/// `9.1.4` → 9.
fn major(version: &str) -> Option<u32> {
    version.split(['.', '-']).next()?.parse().ok()
}
