//! Prometheus metrics (prometheus-client: an explicit registry, no globals), served as text on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `{outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// `{cluster,node,state}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TemplateLabels {
    pub cluster: String,
    pub node: String,
    pub state: String,
}

/// `{cluster,outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DownloadLabels {
    pub cluster: String,
    pub outcome: String,
}

/// `{result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabel {
    pub result: String,
}

/// `{cluster,code}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub cluster: String,
    pub code: String,
}

/// Every metric vztmpld exports.
pub struct Metrics {
    pub registry: Registry,
    pub reconcile_total: Family<OutcomeLabel, Counter>,
    pub reconcile_duration: Histogram,
    pub templates: Family<TemplateLabels, Gauge>,
    pub downloads_total: Family<DownloadLabels, Counter>,
    pub download_bytes_total: Counter,
    pub cache_lookups_total: Family<LookupLabel, Counter>,
    pub api_requests_total: Family<ApiLabels, Counter>,
    pub config_reloads_total: Family<OutcomeLabel, Counter>,
    pub config_generation: Gauge,
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
            downloads_total: Family::default(),
            download_bytes_total: Counter::default(),
            cache_lookups_total: Family::default(),
            api_requests_total: Family::default(),
            config_reloads_total: Family::default(),
            config_generation: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("reconcile", "Reconcile passes by outcome", m.reconcile_total.clone());
        registry.register("reconcile_duration_seconds", "Duration of reconcile passes", m.reconcile_duration.clone());
        registry.register("templates", "Templates per node by state", m.templates.clone());
        registry.register("downloads", "Finished downloads by outcome", m.downloads_total.clone());
        registry.register("download_bytes", "Bytes downloaded by finished downloads", m.download_bytes_total.clone());
        registry.register("cache_lookups", "Cache lookups (hit: template present)", m.cache_lookups_total.clone());
        registry.register("api_requests", "Proxmox API answers by status code", m.api_requests_total.clone());
        registry.register("config_reloads", "Configuration reloads by outcome", m.config_reloads_total.clone());
        registry.register("config_generation", "Generation of the configuration in force", m.config_generation.clone());
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
}
