//! `check`, `plan` and `apply`: one pass from the command line, with Terraform-style exit statuses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{ExitStatus, Output, print, report};
use crate::config::{self, Config};
use crate::reconcile::Fleet;
use crate::reconcile::Outcome;
use crate::reconcile::plan::Plan;
use crate::reconcile::progress::{Phase, Progress, ProgressSink};

/// Loads a configuration, logging its warnings.
pub(super) fn load(path: &Path) -> anyhow::Result<Config> {
    let c = config::load(path)?;
    for w in &c.warnings {
        tracing::warn!("{w}");
    }
    Ok(c)
}

/// `vztmpld check`: 0 when valid; the problems are the error otherwise.
pub(super) fn check(path: &Path) -> anyhow::Result<ExitStatus> {
    let c = load(path)?;
    print(&format!(
        "{}: OK ({} cluster(s), {} template(s), interval {})\n",
        path.display(),
        c.clusters.len(),
        c.templates.len(),
        humantime::format_duration(c.interval)
    ))?;
    Ok(ExitStatus::Success)
}

/// The clients for a one-shot command; a pinned cluster starts from the node fingerprints the daemon learned
/// (`--state-dir`, else the configuration's `state_dir`), read only: a missing or unusable file is a warning.
fn fleet(config: Config, state_dir: Option<PathBuf>) -> anyhow::Result<Fleet> {
    let book = crate::pve::PinBook::default();
    if let Some(dir) = state_dir.or_else(|| config.state_dir.clone()) {
        let dir = crate::state::StateDir::read_only(&dir);
        match dir.load::<crate::pve::SavedPins>(crate::state::PINS) {
            Ok(Some((pins, _))) => book.restore(pins),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the learned node fingerprints; going on without them"),
        }
    }
    Ok(Fleet::with_pins(config, Default::default(), &book)?)
}

/// `vztmpld plan`: 0 all cached, 2 downloads pending, 1 something blocked.
pub(super) async fn plan(path: &Path, output: Output, state_dir: Option<PathBuf>) -> anyhow::Result<ExitStatus> {
    let fleet = fleet(load(path)?, state_dir)?;
    let plan = fleet.plan().await;
    let running = fleet.running_downloads(&plan).await;
    print(&render(&plan, None, &running, output))?;
    Ok(if plan.has_downloads() || plan.runnable_deletions().next().is_some() {
        ExitStatus::Pending
    } else if plan.has_blocked() {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}

/// `vztmpld apply`: 0 when everything converged, 1 when anything failed or stayed blocked.
pub(super) async fn apply(path: &Path, output: Output, state_dir: Option<PathBuf>) -> anyhow::Result<ExitStatus> {
    let mut fleet = fleet(load(path)?, state_dir)?;
    // With `ha`, a one-shot apply is a short-lived member of the election: it runs only as the leader.
    let ha = match fleet.config.ha.clone() {
        Some(cfg) => Some(lead_for_apply(&cfg).await?),
        None => None,
    };
    if let Some(ha) = &ha {
        fleet.gate = crate::daemon::fencing::gate(ha);
    }
    let result = apply_fleet(&fleet, output).await;
    if let Some(ha) = ha {
        ha.resign().await;
    }
    result
}

/// Joins the election and waits to lead; refuses when a daemon leads (it downloads what is missing).
async fn lead_for_apply(cfg: &crate::config::HaConfig) -> anyhow::Result<crate::ha::Ha> {
    use crate::ha::Role;
    let mut ha = crate::ha::Ha::start(cfg, None)?;
    let status = ha.decided(cfg.lease_ttl + std::time::Duration::from_secs(5)).await;
    match status.role {
        Role::Leader => Ok(ha),
        Role::Standby => {
            let leader = status.leader.unwrap_or_else(|| crate::ha::LeaderRecord {
                id: "another daemon".into(),
                status_url: None,
                since: None,
            });
            let at = leader.status_url.map(|u| format!(" (status at {u})")).unwrap_or_default();
            ha.resign().await;
            anyhow::bail!(
                "ha: {}{at} leads the clusters under {}, and only the leader downloads; it reconciles on its own (POST /api/v1/reconcile to hurry it). Nothing was started",
                leader.id,
                cfg.prefix
            )
        }
        Role::Connecting => {
            let why = status.etcd_error.unwrap_or_else(|| "no answer".into());
            ha.resign().await;
            anyhow::bail!(
                "ha: cannot join the election ({why}); with ha configured, apply starts nothing without the lease"
            )
        }
    }
}

async fn apply_fleet(fleet: &Fleet, output: Output) -> anyhow::Result<ExitStatus> {
    let bars = (output == Output::Text && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(indicatif::MultiProgress::new);
    super::logs::set_bars(bars.clone());
    // The tasks started so far, to name them if the person presses Ctrl-C.
    let started: Arc<Mutex<Vec<String>>> = Arc::default();
    // Each cluster starts downloading as soon as its own plan is made; its bars appear then.
    let pass = fleet.reconcile(
        |plan, _| {
            // A fresh log: a one-shot run reports every lookup.
            crate::reconcile::lookups::LookupLog::default().log_changes(plan);
            let bar = bars.as_ref().map(|multi| progress_bars(multi, plan));
            Some(remember_tasks(plan, Arc::clone(&started), bar))
        },
        |_, _| {},
    );
    let (plan, outcomes) = tokio::select! {
        done = pass => crate::reconcile::merge(&done),
        _ = tokio::signal::ctrl_c() => {
            super::logs::set_bars(None);
            if let Some(multi) = &bars {
                let _ = multi.clear();
            }
            let tasks = started.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            let mut text = String::from("interrupted: vztmpld stopped following; Proxmox keeps running its tasks");
            if tasks.is_empty() {
                text.push_str(" (none had started)");
            } else {
                text.push_str(", and the next `apply` (or the daemon) adopts them:\n");
                for t in &tasks {
                    text.push_str(&format!("  {t}\n"));
                }
            }
            eprintln!("{}", text.trim_end());
            return Ok(ExitStatus::Failure);
        }
    };
    super::logs::set_bars(None);
    if let Some(multi) = bars {
        let _ = multi.clear();
    }
    print(&render(&plan, Some(&outcomes), &Default::default(), output))?;
    let failed = outcomes.iter().any(|o| matches!(o, Outcome::Failed { .. }));
    Ok(if failed || plan.has_blocked() { ExitStatus::Failure } else { ExitStatus::Success })
}

/// One bar per download of a cluster's plan: its phase, bytes, rate and time left, moving between wget's
/// 32 MiB log lines by interpolation.
fn progress_bars(multi: &indicatif::MultiProgress, plan: &Plan) -> ProgressSink {
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:>40} [{bar:30}] {msg:<11} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {eta:>4}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    let bars: Vec<indicatif::ProgressBar> = plan
        .downloads
        .iter()
        .map(|d| {
            let bar = multi.add(indicatif::ProgressBar::new(0));
            bar.set_style(style.clone());
            bar.set_prefix(format!("{} → {}/{}", d.file, d.node, d.storage));
            bar.set_message("planned");
            bar
        })
        .collect();
    Arc::new(move |p: Progress| {
        let Some(bar) = bars.get(p.download) else { return };
        bar.set_message(match p.phase {
            Phase::Queued => "queued",
            Phase::Downloading => "downloading",
            Phase::Verifying => "verifying",
        });
        if let Some(total) = p.total {
            bar.set_length(total);
        }
        if let Some(done) = p.done {
            bar.set_position(done);
        }
    })
}

fn render(plan: &Plan, outcomes: Option<&[Outcome]>, running: &BTreeMap<usize, String>, output: Output) -> String {
    match output {
        Output::Text => report::render_text(plan, outcomes, running),
        Output::Json => report::render_json(plan, outcomes, running) + "\n",
    }
}

/// Passes progress on to `next` and remembers each started task (`file → node/storage: UPID`).
fn remember_tasks(plan: &Plan, started: Arc<Mutex<Vec<String>>>, next: Option<ProgressSink>) -> ProgressSink {
    let names: Vec<String> = plan.downloads.iter().map(|d| format!("{} → {}/{}", d.file, d.node, d.storage)).collect();
    Arc::new(move |p: Progress| {
        if let (Some(upid), Some(name)) = (&p.upid, names.get(p.download)) {
            let line = format!("{name}: {upid}");
            let mut list = started.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !list.contains(&line) {
                list.push(line);
            }
        }
        if let Some(next) = &next {
            next(p);
        }
    })
}
