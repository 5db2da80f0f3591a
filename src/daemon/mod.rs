//! `vztmpld run`: reconcile at start, then every `interval` (with jitter), at once after a config change, on
//! SIGHUP or `POST /api/v1/reconcile`; one pass at a time, never stacked.
//!
//! The loop is one `select!` over explicit events. A pass runs as its own task so that the loop keeps
//! serving signals, reloads and the systemd watchdog while downloads are followed.

mod watch;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{self, Config};
use crate::metrics::{ApiLabels, DownloadLabels, LookupLabel, Metrics, OutcomeLabel, TemplateLabels};
use crate::pve::{Client, ClientOptions};
use crate::reconcile::{self, apply::Outcome, plan::ItemState, plan::Plan};
use crate::server::{self, Shared};
use crate::status::{self, ClusterStatus, ConfigStatus, NodeStatus, PassStatus, Status, timestamp};

/// Where the status server listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9811";

/// Quiet time after the last file event before the config is re-read.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// First retry delay for a node that failed; doubles per failing pass, capped at the interval.
const RETRY_BASE: Duration = Duration::from_secs(5);
/// Longest graceful shutdown (systemd's default TimeoutStopSec is 90 s; we stay far below).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How the daemon is started.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub config_path: PathBuf,
    /// Overrides `server.listen`.
    pub listen: Option<SocketAddr>,
    pub client_options: ClientOptions,
}

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("cannot listen on {addr} for the status server: {source} (use --listen or server.listen)")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot watch the configuration: {0}")]
    Watch(#[from] notify::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("{0}")]
    Client(#[from] crate::pve::PveError),
}

/// What a finished pass hands back to the loop.
struct PassResult {
    plan: Plan,
    outcomes: Vec<Outcome>,
    started: Instant,
    started_at: SystemTime,
    trigger: String,
}

/// The configuration in force and what is derived from it.
struct Active {
    config: Arc<Config>,
    clients: HashMap<String, Arc<Client>>,
    hash: [u8; 32],
    generation: u64,
}

/// Runs until SIGTERM/SIGINT; returns after a graceful stop.
pub async fn run(opts: DaemonOptions) -> Result<(), DaemonError> {
    // Signal streams first: from here on a signal is queued, never the default action.
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;

    let (cfg, hash) = load(&opts.config_path)?;
    let (reconcile_tx, mut reconcile_rx) = mpsc::channel::<()>(1);
    let shared =
        Arc::new(Shared { status: RwLock::new(Status::default()), metrics: Metrics::new(), reconcile: reconcile_tx });
    let mut active = activate(cfg, hash, 1, &opts, &shared)?;
    shared.metrics.config_generation.set(1);
    shared.update(|s| {
        s.version = env!("CARGO_PKG_VERSION").into();
        s.config = ConfigStatus {
            path: opts.config_path.display().to_string(),
            generation: 1,
            loaded_at: Some(timestamp(SystemTime::now())),
            last_reload_error: None,
        };
    });

    let listen = opts
        .listen
        .or(active.config.server_listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9811))));
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|source| DaemonError::Listen { addr: listen, source })?;
    let bound = listener.local_addr().unwrap_or(listen);
    let stop_server = tokio_util::sync::CancellationToken::new();
    let server = {
        let stop = stop_server.clone();
        let app = server::router(Arc::clone(&shared));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        })
    };
    tracing::info!(listen = %bound, config = %opts.config_path.display(), "vztmpld running; status at http://{bound}/api/v1/status");

    let (watch_tx, mut watch_rx) = mpsc::channel::<()>(1);
    let watcher = watch::watch(&opts.config_path, watch_tx)?;
    tracing::debug!(dirs = ?watcher.dirs, "watching the configuration");

    notify(&[sd_notify::NotifyState::Ready]);
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));

    let mut next_pass = Instant::now();
    let mut next_trigger = "start".to_string();
    let mut pending: Option<String> = None;
    let mut pass: Option<JoinHandle<PassResult>> = None;
    let mut reload_at: Option<Instant> = None;
    let mut failures: BTreeMap<(String, String), u32> = BTreeMap::new();

    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                if reload(&mut active, true, &opts, &shared) {
                    queue(&mut pass, &mut pending, &mut next_pass, &mut next_trigger, "signal");
                }
            }
            Some(()) = watch_rx.recv() => { reload_at = Some(Instant::now() + DEBOUNCE); }
            _ = sleep_until(reload_at), if reload_at.is_some() => {
                reload_at = None;
                if reload(&mut active, false, &opts, &shared) {
                    queue(&mut pass, &mut pending, &mut next_pass, &mut next_trigger, "config");
                }
            }
            Some(()) = reconcile_rx.recv() => {
                queue(&mut pass, &mut pending, &mut next_pass, &mut next_trigger, "api");
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => { notify(&[sd_notify::NotifyState::Watchdog]); }
            _ = tokio::time::sleep_until(next_pass.into()), if pass.is_none() => {
                // A periodic re-read catches edits no event reported (network file systems).
                if next_trigger == "interval" && reload(&mut active, false, &opts, &shared) {
                    next_trigger = "config".into();
                }
                pass = Some(start_pass(&active, &shared, std::mem::take(&mut next_trigger)));
            }
            result = join(&mut pass), if pass.is_some() => {
                pass = None;
                match result {
                    Some(r) => {
                        let retry = finish_pass(r, &active, &shared, &mut failures);
                        let (due, trigger) = schedule(active.config.interval, retry);
                        next_pass = due;
                        next_trigger = trigger;
                    }
                    None => {
                        tracing::error!("the reconcile pass ended abnormally; retrying soon");
                        next_pass = Instant::now() + RETRY_BASE;
                        next_trigger = "retry".into();
                    }
                }
                if let Some(trigger) = pending.take() {
                    next_pass = Instant::now();
                    next_trigger = trigger;
                }
                let at = SystemTime::now() + next_pass.saturating_duration_since(Instant::now());
                shared.update(|s| s.next_pass_at = Some(timestamp(at)));
            }
        }
    }

    notify(&[sd_notify::NotifyState::Stopping]);
    // Proxmox keeps running its own tasks; the next start adopts them. Stop following now.
    if let Some(p) = pass.take() {
        p.abort();
        shared.update(|s| {
            s.pass_running = false;
            if let Some(last) = s.last_pass.as_mut().filter(|l| l.finished_at.is_none()) {
                last.outcome = "interrupted".into();
            }
        });
    }
    stop_server.cancel();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, server).await;
    tracing::info!("stopped");
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn join(pass: &mut Option<JoinHandle<PassResult>>) -> Option<PassResult> {
    match pass.as_mut() {
        Some(handle) => handle.await.ok(),
        None => std::future::pending().await,
    }
}

/// Asks for a pass now, or right after the running one.
fn queue(
    pass: &mut Option<JoinHandle<PassResult>>,
    pending: &mut Option<String>,
    next_pass: &mut Instant,
    next_trigger: &mut String,
    trigger: &str,
) {
    if pass.is_some() {
        *pending = Some(trigger.to_string());
    } else {
        *next_pass = Instant::now();
        *next_trigger = trigger.to_string();
    }
}

fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

fn load(path: &Path) -> Result<(Config, [u8; 32]), config::ConfigError> {
    let cfg = config::load(path)?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    Ok((cfg, file_hash(path).unwrap_or_default()))
}

fn file_hash(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|bytes| Sha256::digest(bytes).into())
}

fn activate(
    config: Config,
    hash: [u8; 32],
    generation: u64,
    opts: &DaemonOptions,
    shared: &Arc<Shared>,
) -> Result<Active, DaemonError> {
    let clients = reconcile::clients(&config, opts.client_options)?;
    for (name, client) in &clients {
        let shared = Arc::clone(shared);
        let cluster = name.clone();
        client.set_observer(Arc::new(move |code: &str| {
            shared
                .metrics
                .api_requests_total
                .get_or_create(&ApiLabels { cluster: cluster.clone(), code: code.to_string() })
                .inc();
        }));
    }
    Ok(Active { config: Arc::new(config), clients, hash, generation })
}

/// Re-reads the config; `force` reloads even when the bytes did not change (SIGHUP re-reads secrets).
/// Returns whether a new configuration took effect.
fn reload(active: &mut Active, force: bool, opts: &DaemonOptions, shared: &Arc<Shared>) -> bool {
    let Some(hash) = file_hash(&opts.config_path) else {
        if force {
            tracing::error!(config = %opts.config_path.display(), "cannot read the configuration; keeping the running one");
        }
        return false;
    };
    if !force && hash == active.hash {
        return false;
    }
    notify(&[sd_notify::NotifyState::Reloading]);
    if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
        notify(&[now]);
    }
    let outcome = match load(&opts.config_path) {
        Ok((cfg, hash)) => {
            let old: Vec<String> = active.config.clusters.iter().map(|c| c.name.clone()).collect();
            match activate(cfg, hash, active.generation + 1, opts, shared) {
                Ok(new) => {
                    for gone in old.iter().filter(|o| !new.config.clusters.iter().any(|c| &c.name == *o)) {
                        tracing::info!(cluster = %gone, "cluster removed from the configuration; its running downloads are left to finish on Proxmox");
                    }
                    *active = new;
                    tracing::info!(generation = active.generation, "configuration reloaded");
                    shared.metrics.config_generation.set(active.generation as i64);
                    shared.update(|s| {
                        s.config.generation = active.generation;
                        s.config.loaded_at = Some(timestamp(SystemTime::now()));
                        s.config.last_reload_error = None;
                    });
                    true
                }
                Err(e) => {
                    reject(active, hash, &e.to_string(), shared);
                    false
                }
            }
        }
        Err(e) => {
            reject(active, hash, &e.to_string(), shared);
            false
        }
    };
    let label = OutcomeLabel { outcome: if outcome { "success" } else { "failure" }.into() };
    shared.metrics.config_reloads_total.get_or_create(&label).inc();
    notify(&[sd_notify::NotifyState::Ready]);
    outcome
}

fn reject(active: &mut Active, hash: [u8; 32], error: &str, shared: &Arc<Shared>) {
    // Remember the rejected bytes so the same bad file is not re-reported on every event.
    active.hash = hash;
    tracing::error!(generation = active.generation, "configuration rejected, keeping the running one:\n{error}");
    shared.update(|s| s.config.last_reload_error = Some(error.to_string()));
}

fn start_pass(active: &Active, shared: &Arc<Shared>, trigger: String) -> JoinHandle<PassResult> {
    let config = Arc::clone(&active.config);
    let clients = active.clients.clone();
    let shared = Arc::clone(shared);
    let started_at = SystemTime::now();
    shared.update(|s| {
        s.pass_running = true;
        s.reconcile_requested_at = None;
        let now = timestamp(started_at);
        status::set_condition(
            &mut s.conditions,
            "Reconciling",
            true,
            "PassRunning",
            format!("trigger {trigger}"),
            &now,
        );
        s.last_pass = Some(PassStatus {
            trigger: trigger.clone(),
            started_at: timestamp(started_at),
            finished_at: None,
            duration_seconds: None,
            outcome: "running".into(),
        });
    });
    tracing::debug!(%trigger, "reconcile pass started");
    tokio::spawn(async move {
        let started = Instant::now();
        let observed = reconcile::observe_all(&config, &clients).await;
        let plan = reconcile::plan::plan(&config, &observed);
        reconcile::log_lookups(&plan);
        publish(&shared, &plan, None);
        let progress_plan = Arc::new(plan.clone());
        let sink_shared = Arc::clone(&shared);
        let sink: reconcile::apply::ProgressSink = Arc::new(move |p: reconcile::apply::Progress| {
            let Some(d) = progress_plan.downloads.get(p.download) else { return };
            let labels: Vec<(String, String)> = progress_plan
                .items
                .iter()
                .filter(|i| i.state == ItemState::Download { download: p.download })
                .map(|i| (i.node.clone(), i.template.clone()))
                .collect();
            sink_shared.update(|s| {
                for c in s.clusters.iter_mut().filter(|c| c.name == d.cluster) {
                    for n in c.nodes.iter_mut() {
                        for t in n.templates.iter_mut() {
                            if labels.iter().any(|(node, tpl)| *node == n.name && *tpl == t.template) {
                                t.state = "downloading".into();
                                t.upid = Some(p.upid.clone());
                                t.progress = p.percent;
                            }
                        }
                    }
                }
            });
        });
        let outcomes = reconcile::apply::apply(&config, &clients, &plan, Some(sink)).await;
        PassResult { plan, outcomes, started, started_at, trigger }
    })
}

/// Replaces the cluster/node/template part of the status with a plan's view.
fn publish(shared: &Arc<Shared>, plan: &Plan, outcomes: Option<&[Outcome]>) {
    let now = timestamp(SystemTime::now());
    let templates = status::templates_from(plan, outcomes);
    shared.update(|s| {
        let mut clusters: Vec<ClusterStatus> = Vec::new();
        for ((cluster, node), ts) in templates {
            let prev = s.node(&cluster, &node).cloned().unwrap_or_default();
            let c = match clusters.iter_mut().position(|c| c.name == cluster) {
                Some(i) => &mut clusters[i],
                None => {
                    clusters.push(ClusterStatus { name: cluster.clone(), ..Default::default() });
                    clusters.last_mut().unwrap_or_else(|| unreachable!())
                }
            };
            if node == "*" {
                c.error = ts.first().and_then(|t| t.error.clone());
            }
            let mut n = NodeStatus {
                name: node,
                conditions: prev.conditions,
                failures: prev.failures,
                next_retry: prev.next_retry,
                templates: ts,
            };
            status::node_conditions(&mut n, &now);
            c.nodes.push(n);
        }
        s.clusters = clusters;
    });
}

/// Records a finished pass in status and metrics; returns the earliest retry delay a failing node needs.
fn finish_pass(
    r: PassResult,
    active: &Active,
    shared: &Arc<Shared>,
    failures: &mut BTreeMap<(String, String), u32>,
) -> Option<Duration> {
    publish(shared, &r.plan, Some(&r.outcomes));
    let elapsed = r.started.elapsed();
    let m = &shared.metrics;
    m.reconcile_duration.observe(elapsed.as_secs_f64());
    for item in &r.plan.items {
        let hit = matches!(item.state, ItemState::Cached { .. });
        m.cache_lookups_total.get_or_create(&LookupLabel { result: if hit { "hit" } else { "miss" }.into() }).inc();
    }
    for (d, o) in r.plan.downloads.iter().zip(&r.outcomes) {
        let outcome = match o {
            Outcome::Finished { bytes, .. } => {
                m.download_bytes_total.inc_by(bytes.unwrap_or(0));
                "success"
            }
            Outcome::Failed { .. } => "failure",
        };
        m.downloads_total.get_or_create(&DownloadLabels { cluster: d.cluster.clone(), outcome: outcome.into() }).inc();
    }

    // Per-node backoff: a node with a retryable failure is retried sooner, later each time.
    let mut retry: Option<Duration> = None;
    let mut retryable_nodes: BTreeMap<(String, String), bool> = BTreeMap::new();
    for item in &r.plan.items {
        let key = (item.cluster.clone(), item.node.clone());
        let failing = match &item.state {
            ItemState::Blocked { retryable, .. } => *retryable,
            ItemState::Download { download } => {
                matches!(r.outcomes.get(*download), Some(Outcome::Failed { retryable: true, .. }))
            }
            ItemState::Cached { .. } => false,
        };
        *retryable_nodes.entry(key).or_default() |= failing;
    }
    let interval = active.config.interval;
    let now = SystemTime::now();
    let mut next_retry: BTreeMap<(String, String), String> = BTreeMap::new();
    for (key, failing) in retryable_nodes {
        if failing {
            let n = failures.entry(key.clone()).or_default();
            *n += 1;
            // Up to +20% jitter, so nodes (and daemons) that failed together do not retry in lockstep.
            let delay = (RETRY_BASE * (1u32 << (*n - 1).min(10))).mul_f64(1.0 + jitter_fraction() * 0.2).min(interval);
            retry = Some(retry.map_or(delay, |r| r.min(delay)));
            next_retry.insert(key, timestamp(now + delay));
        } else {
            failures.remove(&key);
        }
    }

    let mut counts: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    let degraded;
    {
        let snapshot = shared.status();
        for c in &snapshot.clusters {
            for n in &c.nodes {
                for t in &n.templates {
                    *counts.entry((c.name.clone(), n.name.clone(), t.state.clone())).or_default() += 1;
                }
            }
        }
        degraded =
            snapshot.clusters.iter().flat_map(|c| &c.nodes).any(|n| n.templates.iter().any(|t| t.state != "cached"));
    }
    m.templates.clear();
    for ((cluster, node, state), count) in counts {
        m.templates.get_or_create(&TemplateLabels { cluster, node, state }).set(count);
    }
    let outcome = if degraded { "degraded" } else { "converged" };
    m.reconcile_total.get_or_create(&OutcomeLabel { outcome: outcome.into() }).inc();
    let stamp = timestamp(now);
    shared.update(|s| {
        s.pass_running = false;
        s.ready = true;
        s.last_pass = Some(PassStatus {
            trigger: r.trigger.clone(),
            started_at: timestamp(r.started_at),
            finished_at: Some(stamp.clone()),
            duration_seconds: Some((elapsed.as_secs_f64() * 1000.0).round() / 1000.0),
            outcome: outcome.into(),
        });
        for c in s.clusters.iter_mut() {
            for n in c.nodes.iter_mut() {
                let key = (c.name.clone(), n.name.clone());
                n.failures = failures.get(&key).copied().unwrap_or(0);
                n.next_retry = next_retry.get(&key).cloned();
                for t in n.templates.iter_mut().filter(|t| t.state == "failed" || t.state == "blocked") {
                    t.next_retry = n.next_retry.clone();
                }
            }
        }
        let nodes: Vec<&NodeStatus> = s.clusters.iter().flat_map(|c| &c.nodes).collect();
        let degraded_nodes: Vec<String> = nodes
            .iter()
            .filter(|n| n.conditions.iter().any(|c| c.kind == "Degraded" && c.status == "True"))
            .map(|n| n.name.clone())
            .collect();
        let stalled = nodes.iter().any(|n| n.conditions.iter().any(|c| c.kind == "Stalled" && c.status == "True"));
        let mut conds = std::mem::take(&mut s.conditions);
        status::set_condition(&mut conds, "Ready", !degraded, "PassFinished", format!("last pass {outcome}"), &stamp);
        status::set_condition(&mut conds, "Reconciling", false, "Idle", String::new(), &stamp);
        status::set_condition(
            &mut conds,
            "Degraded",
            !degraded_nodes.is_empty(),
            "NodesDegraded",
            degraded_nodes.join(", "),
            &stamp,
        );
        status::set_condition(&mut conds, "Stalled", stalled, "Blocked", String::new(), &stamp);
        s.conditions = conds;
    });
    tracing::info!(outcome, seconds = elapsed.as_secs_f64(), trigger = %r.trigger, "reconcile pass finished");
    retry
}

/// A number in [0, 1) from the clock: jitter needs spread, not cryptographic randomness.
fn jitter_fraction() -> f64 {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1000) / 1000.0
}

/// The next pass: the interval with up to 5% jitter, or a node's retry when that comes first.
fn schedule(interval: Duration, retry: Option<Duration>) -> (Instant, String) {
    let jitter = interval.mul_f64(jitter_fraction() * 0.05);
    let regular = interval + jitter;
    match retry {
        Some(r) if r < regular => (Instant::now() + r, "retry".into()),
        _ => (Instant::now() + regular, "interval".into()),
    }
}
