//! Prometheus metrics (prometheus-client: an explicit registry, no globals), served as text on `/metrics`.
//! Written only through the `record_*` methods; every label is low-cardinality (no template names, no UPIDs).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::status::{PassOutcome, Status};
use crate::pve::ApiAnswer;
use crate::reconcile::Outcome;
use crate::reconcile::plan::ItemState;

/// `{outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// `{cluster,state}`: per cluster, not per node, so the series do not grow with the fleet (the status API
/// has every node).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TemplateLabels {
    cluster: String,
    state: &'static str,
}

/// `{cluster,ready}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    cluster: String,
    ready: &'static str,
}

/// `{cluster,outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DownloadLabels {
    cluster: String,
    outcome: &'static str,
}

/// `{result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabel {
    result: &'static str,
}

/// `{cluster,code}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    cluster: String,
    code: String,
}

/// `{cluster,kind}`: `PveError::kind()`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiErrorLabels {
    cluster: String,
    kind: String,
}

/// Every metric vztmpld exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconcile_total: Family<OutcomeLabel, Counter>,
    reconcile_duration: Histogram,
    templates: Family<TemplateLabels, Gauge>,
    nodes: Family<NodeLabels, Gauge>,
    downloads_total: Family<DownloadLabels, Counter>,
    download_bytes_total: Counter,
    cache_lookups_total: Family<LookupLabel, Counter>,
    api_requests_total: Family<ApiLabels, Counter>,
    api_errors_total: Family<ApiErrorLabels, Counter>,
    config_reloads_total: Family<OutcomeLabel, Counter>,
    config_generation: Gauge,
    leader: Gauge,
    verifications_total: Family<DownloadLabels, Counter>,
    ha_elections_total: Counter,
    ha_lease_losses_total: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `vztmpld_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vztmpld");
        let m = Self {
            reconcile_total: Family::default(),
            reconcile_duration: Histogram::new([0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0]),
            templates: Family::default(),
            nodes: Family::default(),
            downloads_total: Family::default(),
            download_bytes_total: Counter::default(),
            cache_lookups_total: Family::default(),
            api_requests_total: Family::default(),
            api_errors_total: Family::default(),
            config_reloads_total: Family::default(),
            config_generation: Gauge::default(),
            leader: Gauge::default(),
            verifications_total: Family::default(),
            ha_elections_total: Counter::default(),
            ha_lease_losses_total: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("reconcile", "Reconcile passes by outcome", m.reconcile_total.clone());
        registry.register("reconcile_duration_seconds", "Duration of reconcile passes", m.reconcile_duration.clone());
        registry.register("templates", "Templates (node × template) per cluster by state", m.templates.clone());
        registry.register("nodes", "Targeted nodes per cluster, by whether every template is cached", m.nodes.clone());
        registry.register("downloads", "Finished downloads by outcome", m.downloads_total.clone());
        registry.register("download_bytes", "Bytes downloaded by finished downloads", m.download_bytes_total.clone());
        registry.register("cache_lookups", "Cache lookups (hit: template present)", m.cache_lookups_total.clone());
        registry.register("api_requests", "Proxmox API answers by status code", m.api_requests_total.clone());
        registry.register("api_errors", "Failed Proxmox API calls by kind of error", m.api_errors_total.clone());
        registry.register("config_reloads", "Configuration reloads by outcome", m.config_reloads_total.clone());
        registry.register("config_generation", "Generation of the configuration in force", m.config_generation.clone());
        registry.register(
            "leader",
            "1 when this daemon reconciles (the HA leader, or alone without ha)",
            m.leader.clone(),
        );
        registry.register("ha_elections", "Times this daemon became the HA leader", m.ha_elections_total.clone());
        registry.register(
            "ha_lease_losses",
            "Times this daemon lost its etcd lease while leading",
            m.ha_lease_losses_total.clone(),
        );
        registry.register(
            "verifications",
            "Deep verifications by result (good, corrupt, repaired, failed)",
            m.verifications_total.clone(),
        );
        m.leader.set(1);
        Self { registry, ..m }
    }

    /// The registry in Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// What records each answer (or failure) of a cluster's API, with the counter of `200` answers looked up
    /// once: nearly every answer is one, and a lookup costs two strings and a hash.
    pub fn api_observer(&self, cluster: &str) -> impl Fn(ApiAnswer<'_>) + Send + Sync + 'static + use<> {
        let ok = self
            .api_requests_total
            .get_or_create(&ApiLabels { cluster: cluster.to_string(), code: "200".into() })
            .clone();
        let (requests, errors, cluster) =
            (self.api_requests_total.clone(), self.api_errors_total.clone(), cluster.to_string());
        move |answer| match answer {
            ApiAnswer::Status(200) => {
                ok.inc();
            }
            ApiAnswer::Status(code) => {
                requests.get_or_create(&ApiLabels { cluster: cluster.clone(), code: code.to_string() }).inc();
            }
            ApiAnswer::Failed(e) => {
                if e.status().is_none() {
                    requests.get_or_create(&ApiLabels { cluster: cluster.clone(), code: "error".into() }).inc();
                }
                errors.get_or_create(&ApiErrorLabels { cluster: cluster.clone(), kind: e.metric_label().into() }).inc();
            }
        }
    }

    /// A configuration (re)load: `Some(generation)` when it took effect, `None` when it was rejected.
    pub fn record_reload(&self, generation: Option<u64>) {
        let outcome = if generation.is_some() { "success" } else { "failure" };
        self.config_reloads_total.get_or_create(&OutcomeLabel { outcome }).inc();
        if let Some(g) = generation {
            self.config_generation.set(i64::try_from(g).unwrap_or(i64::MAX));
        }
    }

    /// A deep verification ended (`result`: good, corrupt, repaired, failed).
    pub fn record_verification(&self, cluster: &str, result: &'static str) {
        let labels = DownloadLabels { cluster: cluster.to_string(), outcome: result };
        self.verifications_total.get_or_create(&labels).inc();
    }

    /// The HA election changed from `before` to `now`.
    pub fn record_ha(&self, before: &crate::ha::HaStatus, now: &crate::ha::HaStatus) {
        self.leader.set(i64::from(now.role == crate::ha::Role::Leader));
        self.ha_elections_total.inc_by(now.elections.saturating_sub(before.elections));
        self.ha_lease_losses_total.inc_by(now.lease_losses.saturating_sub(before.lease_losses));
    }

    /// The first configuration, before any reload.
    pub fn record_initial_config(&self) {
        self.config_generation.set(1);
    }

    /// A finished pass: its duration and outcome, lookups, downloads, and templates per node and state.
    pub fn record_pass(
        &self,
        clusters: &[crate::reconcile::ClusterPass],
        status: &Status,
        elapsed: Duration,
        outcome: PassOutcome,
    ) {
        self.reconcile_duration.observe(elapsed.as_secs_f64());
        self.reconcile_total.get_or_create(&OutcomeLabel { outcome: outcome.as_str() }).inc();
        let items = || clusters.iter().flat_map(|c| &c.plan.items);
        let hits = items().filter(|i| matches!(i.state, ItemState::Cached { .. })).count();
        let misses = items().count() - hits;
        self.cache_lookups_total.get_or_create(&LookupLabel { result: "hit" }).inc_by(hits as u64);
        self.cache_lookups_total.get_or_create(&LookupLabel { result: "miss" }).inc_by(misses as u64);
        let downloads = clusters.iter().flat_map(|c| c.plan.downloads.iter().zip(&c.outcomes));
        for (d, o) in downloads {
            if let Outcome::Finished { bytes, .. } = o {
                self.download_bytes_total.inc_by(bytes.unwrap_or(0));
            }
            let outcome = o.metric_label();
            self.downloads_total.get_or_create(&DownloadLabels { cluster: d.cluster.clone(), outcome }).inc();
        }
        self.templates.clear();
        self.nodes.clear();
        for ((cluster, state), count) in status.counts() {
            self.templates.get_or_create(&TemplateLabels { cluster: cluster.into(), state: state.as_str() }).set(count);
        }
        for c in &status.clusters {
            let ready = c.nodes.iter().filter(|n| n.is_ready()).count();
            let not_ready = c.nodes.len() - ready;
            for (label, count) in [("true", ready), ("false", not_ready)] {
                let labels = NodeLabels { cluster: c.name.clone(), ready: label };
                self.nodes.get_or_create(&labels).set(i64::try_from(count).unwrap_or(i64::MAX));
            }
        }
    }
}
