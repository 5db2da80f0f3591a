//! `vztmpld available`: what the clusters' appliance indexes offer, like `pveam available` for every node at
//! once — and which nodes' indexes list each template (a stale node shows up as missing entries).

use std::collections::BTreeMap;
use std::path::Path;

use futures_util::future::join_all;
use serde::Serialize;

use super::{ExitStatus, Output, print};
use crate::reconcile::Fleet;
use crate::template::{TemplateName, TemplateSpec};

/// One template an index offers, and where.
#[derive(Debug, Serialize)]
struct Offer {
    cluster: String,
    /// The file name Proxmox downloads.
    template: String,
    os: Option<String>,
    version: Option<String>,
    /// What to write in `templates:` for it (version-agnostic of the build).
    spec: Option<String>,
    /// Online nodes whose index lists it.
    nodes: Vec<String>,
    /// Online nodes whose index does not (stale: `pveam update` there).
    missing_on: Vec<String>,
}

/// Lists the templates of every (or one) cluster's indexes, filtered by a spec or a word.
pub(super) async fn run(
    path: &Path,
    cluster: Option<&str>,
    filter: Option<&str>,
    output: Output,
) -> anyhow::Result<ExitStatus> {
    let fleet = Fleet::new(super::oneshot::load(path)?, Default::default())?;
    let clusters: Vec<_> = fleet.clusters.iter().filter(|c| cluster.is_none_or(|n| n == c.config.name)).collect();
    if clusters.is_empty() {
        let names: Vec<&str> = fleet.clusters.iter().map(|c| c.config.name.as_str()).collect();
        anyhow::bail!(
            "no cluster named '{}'{} (known: {})",
            cluster.unwrap_or_default(),
            crate::suggest::hint(cluster.unwrap_or_default(), names.iter().copied()),
            names.join(", ")
        );
    }
    let spec = filter.and_then(|f| TemplateSpec::parse(f).ok());
    let mut offers = Vec::new();
    let mut failed = false;
    for c in clusters {
        let nodes = match c.client.cluster_nodes().await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(cluster = %c.config.name, error = %e, "cannot list the cluster's nodes");
                failed = true;
                continue;
            }
        };
        let online: Vec<String> = nodes.into_iter().filter(|n| n.online).map(|n| n.node).collect();
        let indexes = join_all(online.iter().map(|n| c.client.appliances(n))).await;
        let mut by_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (node, index) in online.iter().zip(indexes) {
            match index {
                Ok(list) => {
                    for a in list.into_iter().filter(|a| a.kind.as_deref().is_none_or(|k| k == "lxc")) {
                        by_file.entry(a.template).or_default().push(node.clone());
                    }
                }
                Err(e) => {
                    tracing::warn!(cluster = %c.config.name, %node, error = %e, "cannot read the node's appliance index");
                }
            }
        }
        for (file, mut listed) in by_file {
            let name = TemplateName::parse(&file);
            let wanted = match (filter, &spec, &name) {
                (None, _, _) => true,
                (Some(_), Some(spec), Some(n)) if spec.matches(n, &n.arch) => true,
                (Some(word), _, _) => file.contains(word),
            };
            if !wanted {
                continue;
            }
            listed.sort();
            let missing_on = online.iter().filter(|n| !listed.contains(n)).cloned().collect();
            offers.push(Offer {
                cluster: c.config.name.clone(),
                spec: name.as_ref().map(|n| n.package.clone()),
                os: name.as_ref().map(|n| n.os.clone()),
                version: name.as_ref().and_then(|n| n.version.clone()),
                template: file,
                nodes: listed,
                missing_on,
            });
        }
    }
    match output {
        Output::Json => print(&(serde_json::to_string_pretty(&offers)? + "\n"))?,
        Output::Text => print(&render(&offers))?,
    }
    Ok(if failed { ExitStatus::Failure } else { ExitStatus::Success })
}

fn render(offers: &[Offer]) -> String {
    let rows: Vec<[String; 4]> = offers
        .iter()
        .map(|o| {
            let on = if o.missing_on.is_empty() {
                format!("all {} nodes", o.nodes.len())
            } else {
                format!("{} (not on {}: stale index)", o.nodes.join(", "), o.missing_on.join(", "))
            };
            [o.cluster.clone(), o.spec.clone().unwrap_or_default(), o.template.clone(), on]
        })
        .collect();
    let header = ["CLUSTER".to_string(), "SPEC".into(), "TEMPLATE".into(), "IN THE INDEX OF".into()];
    let width = |i: usize| rows.iter().chain([&header]).map(|r| r[i].chars().count()).max().unwrap_or(0);
    let (w0, w1, w2) = (width(0), width(1), width(2));
    let mut out = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        out.push_str(&format!("{:<w0$}  {:<w1$}  {:<w2$}  {}\n", r[0], r[1], r[2], r[3]));
    }
    if rows.is_empty() {
        out.push_str("(no template matches)\n");
    }
    out
}
