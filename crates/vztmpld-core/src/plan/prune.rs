//! `prune: {keep: N}`: on the storage vztmpld fills for a (node, template), the matching builds older than the
//! newest N are planned for deletion — only with the build the template resolves to among those kept (there, or
//! arriving by a planned download, after which the deletion runs), and never a file another configured template
//! of the cluster matches.

use super::planner::ClusterPlanner;
use super::{BlockReason, Deletion};
use crate::config::{TemplateConfig, TemplateSource};
use crate::observation::{NodeObservation, Volume};
use crate::template::{TemplateName, compare_recency};

impl ClusterPlanner<'_> {
    /// The superseded builds of `t` to delete on `node`'s target storage, given that `newest` satisfies `t` —
    /// there already, or brought by download `after`.
    pub(super) fn prune(
        &self,
        node: &NodeObservation,
        t: &TemplateConfig,
        newest: &str,
        after: Option<usize>,
        cluster_templates: &[&TemplateConfig],
    ) -> Vec<Deletion> {
        let (Some(keep), TemplateSource::Appliance(spec)) = (t.prune, &t.source) else { return Vec::new() };
        let Ok(target) = self.target_storage(node, t) else { return Vec::new() };
        // The newest must be on the storage being pruned: a build elsewhere does not replace the ones here.
        if newest.split_once(':').map(|(s, _)| s) != Some(target.as_str()) {
            return Vec::new();
        }
        let Some(Ok(volumes)) = self.obs.storages.get(&target).and_then(|s| s.volumes_for(&node.name)) else {
            return Vec::new();
        };
        let arriving = after.and_then(|_| {
            let file = newest.split_once("vztmpl/").map(|(_, f)| f)?;
            Some(Volume::new(newest.to_string(), file.to_string(), None))
        });
        let mut matching: Vec<(&Volume, &TemplateName)> = volumes
            .iter()
            .chain(arriving.as_ref())
            .filter_map(|v| v.name.as_ref().filter(|n| spec.matches(n, &node.arch)).map(|n| (v, n)))
            .collect();
        matching.sort_by(|a, b| compare_recency(b.1, a.1));
        let kept: Vec<String> = matching.iter().take(keep).map(|(v, _)| v.volid.to_string()).collect();
        if !kept.iter().any(|v| v == newest) {
            // A newer build than the one the template resolves to is there (put by hand): leave it all alone.
            return Vec::new();
        }
        let path = format!("/storage/{target}");
        let blocked = (!self.obs.permissions.has(&path, "Datastore.Allocate"))
            .then(|| BlockReason::NoAllocate { path: path.clone() });
        let shared = self.is_shared(&target);
        matching
            .iter()
            .skip(keep)
            .filter(|(v, _)| &*v.volid != newest)
            .filter(|(v, n)| {
                !cluster_templates
                    .iter()
                    .any(|o| !std::ptr::eq(*o, t) && o.source.accepts(&v.file, Some(n), &node.arch))
            })
            .map(|(v, _)| Deletion {
                cluster: self.obs.name.clone(),
                node: node.name.clone(),
                storage: target.clone(),
                shared,
                volid: v.volid.to_string(),
                template: t.label.clone(),
                kept: kept.clone(),
                blocked: blocked.clone(),
                after,
            })
            .collect()
    }
}
