//! One reconcile pass: observe every cluster, plan (pure), apply, and report.
//!
//! - [`observe`]: API → [`observe::ClusterObservation`], with the fewest calls.
//! - [`plan`]: desired × observed → [`plan::Plan`]; pure.
//! - [`apply`]: starts, adopts and follows downloads.

pub mod apply;
pub mod observe;
pub mod plan;

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::join_all;

use crate::config::Config;
use crate::pve::{Client, ClientOptions, PveError};

/// Builds one client per configured cluster.
pub fn clients(config: &Config, options: ClientOptions) -> Result<HashMap<String, Arc<Client>>, PveError> {
    config.clusters.iter().map(|c| Ok((c.name.clone(), Arc::new(Client::new(c, options)?)))).collect()
}

/// Observes every cluster concurrently.
pub async fn observe_all(config: &Config, clients: &HashMap<String, Arc<Client>>) -> Vec<observe::ClusterObservation> {
    let jobs = config.clusters.iter().map(|c| {
        let client = clients.get(&c.name).cloned();
        async move {
            match client {
                Some(client) => observe::observe_cluster(c, &client, &config.templates).await,
                None => observe::ClusterObservation {
                    name: c.name.clone(),
                    error: Some(format!("no client for cluster {}", c.name)),
                    ..Default::default()
                },
            }
        }
    });
    join_all(jobs).await
}

/// Logs the cache lookups of a plan, one line each (`CACHE HIT` / `CACHE MISS`), for admins to grep.
pub fn log_lookups(plan: &plan::Plan) {
    for item in &plan.items {
        match &item.state {
            plan::ItemState::Cached { volid } => {
                tracing::info!(cluster = %item.cluster, node = %item.node, template = %item.template, %volid, "CACHE HIT");
            }
            plan::ItemState::Download { download } => {
                let d = &plan.downloads[*download];
                tracing::info!(cluster = %item.cluster, node = %item.node, template = %item.template, storage = %d.storage, file = %d.file, "CACHE MISS");
            }
            plan::ItemState::Blocked { reason, .. } => {
                tracing::warn!(cluster = %item.cluster, node = %item.node, template = %item.template, %reason, "CACHE MISS (blocked)");
            }
        }
    }
}
