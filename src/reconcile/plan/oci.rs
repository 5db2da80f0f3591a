//! `oci:` templates: one fixed file (`NAME.tar`), pulled by `oci-registry-pull` on Proxmox VE 9 and later, which
//! needs `Sys.AccessNetwork` on the node with no alternative (unlike `download-url`).

use super::planner::{ClusterPlanner, Resolution};
use super::{Blocked, Download, Source};
use crate::config::TemplateConfig;
use crate::reconcile::observation::NodeObservation;

impl ClusterPlanner<'_> {
    pub(super) fn resolve_oci(
        &self,
        node: &NodeObservation,
        t: &TemplateConfig,
        reference: &str,
        filename: Option<&str>,
        file: &str,
    ) -> Resolution {
        if let Some(volid) = self.has_file(&node.name, file) {
            return Resolution::Cached(volid);
        }
        match &self.obs.pve_version {
            Some(Ok(v)) if major(v).is_some_and(|m| m < 9) => {
                return Resolution::Blocked(Blocked::permanent(format!(
                    "OCI images need Proxmox VE 9.0 or later (oci-registry-pull); cluster {} runs {v}: upgrade it, or remove this template",
                    self.obs.name
                )));
            }
            Some(Err(e)) => {
                return Resolution::Blocked(Blocked::retryable(format!(
                    "cannot read the Proxmox VE version ({e}); OCI pulls need 9.0 or later"
                )));
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
            return Resolution::Blocked(Blocked::permanent(format!(
                "oci-registry-pull needs Sys.AccessNetwork on /nodes/{} (Sys.Audit+Sys.Modify on / does not do, unlike download-url); grant it to the token",
                node.name
            )));
        };
        Resolution::Download(Box::new(Download {
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
