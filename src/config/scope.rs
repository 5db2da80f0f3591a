//! Which clusters and nodes a template may target, indexed once per configuration so that checking each
//! template costs the same however many there are (validation stays linear in the file's size).

use std::collections::{HashMap, HashSet};

use super::{ClusterConfig, NodeSelector};

/// The clusters and their nodes, indexed once so each template is checked in time independent of the others.
pub(super) struct TemplateScope<'a> {
    pub(super) names: HashSet<&'a str>,
    ordered: &'a [String],
    /// Per cluster: `None` for `nodes: all`, else its listed nodes.
    nodes: HashMap<&'a str, Option<HashSet<&'a str>>>,
    /// Whether any cluster takes all its nodes, and every node listed anywhere.
    any_all: bool,
    listed: HashSet<&'a str>,
    /// The global `verify` and `repair`, each template's default.
    pub(super) verify: Option<std::time::Duration>,
    pub(super) repair: bool,
}

impl<'a> TemplateScope<'a> {
    pub(super) fn new(names: &'a [String], clusters: &'a [ClusterConfig]) -> Self {
        let mut nodes = HashMap::new();
        let mut listed = HashSet::new();
        let mut any_all = false;
        for c in clusters {
            let set = match &c.nodes {
                NodeSelector::All => {
                    any_all = true;
                    None
                }
                NodeSelector::Only(ns) => {
                    listed.extend(ns.iter().map(String::as_str));
                    Some(ns.iter().map(String::as_str).collect())
                }
            };
            nodes.insert(c.name.as_str(), set);
        }
        let names_set = names.iter().map(String::as_str).collect();
        Self { names: names_set, ordered: names, nodes, any_all, listed, verify: None, repair: false }
    }

    /// Every node a cluster lists (for suggestions).
    pub(super) fn listed_nodes(&self) -> impl Iterator<Item = &str> {
        self.listed.iter().copied()
    }

    pub(super) fn known(&self) -> String {
        let shown: Vec<&str> = self.ordered.iter().take(20).map(String::as_str).collect();
        let more = self.ordered.len().saturating_sub(shown.len());
        if more > 0 { format!("{}, … {more} more", shown.join(", ")) } else { shown.join(", ") }
    }

    /// Whether `node` can be among the nodes of the targeted clusters (all clusters when `clusters` is `None`).
    pub(super) fn may_target(&self, clusters: Option<&[String]>, node: &str) -> bool {
        match clusters {
            None => self.any_all || self.listed.contains(node),
            Some(list) => list.iter().any(|c| match self.nodes.get(c.as_str()) {
                Some(None) => true,
                Some(Some(set)) => set.contains(node),
                None => false,
            }),
        }
    }
}
