//! The fleet benchmark: the daemon's steady pass, memory and idle CPU over a simulated fleet, against the naive
//! per-deploy scan, in one run. `cargo bench --bench fleet` (100 clusters × 20 nodes) or `-- --quick` (CI smoke).
//!
//! - The simulators (one per cluster, 5 ms per API answer, pveproxy's 3 workers) run in this process, or in a
//!   child process with `--fleet-process` (measured: no difference beyond noise; README: benchmarks).
//! - The daemon is the real `vztmpld run` binary as a child process: its CPU time and memory come from
//!   `/proc/PID`, so the simulators' work is never counted as the daemon's.
//! - Passes are triggered through `POST /api/v1/reconcile`, spaced by `--spacing` (default 6 s, above pveproxy's
//!   5 s keep-alive timeout, so each pass reconnects as it does in production, where `interval` ≥ 10 s).
//! - The baseline scan runs between blocks of daemon passes (a slice of the clusters each time), so both are
//!   measured under the same conditions; its slices add up to one sequential scan of every node.
//!
//! Prints a table, then one JSON object as the last line. Asserts nothing about speed: machines are shared.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark that cannot set up fails, loudly.
#![allow(unreachable_pub)] // A binary: `pub` only says what the modules offer each other.

mod baseline;
mod daemon;
mod resolve_load;
mod sims;

use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "vztmpld's fleet benchmark")]
struct Args {
    /// Simulated clusters.
    #[arg(long, default_value_t = 100)]
    clusters: usize,
    /// Nodes per cluster.
    #[arg(long, default_value_t = 20)]
    nodes: usize,
    /// Steady passes of the daemon (RSS growth is the last pass minus the fifth).
    #[arg(long, default_value_t = 50)]
    passes: usize,
    /// Time between the end of a pass and the next trigger.
    #[arg(long, default_value = "6s", value_parser = humantime::parse_duration)]
    spacing: Duration,
    /// Latency of every simulated API answer.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// Idle window measured after the passes (reported per 30 s).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// Blocks of daemon passes, each followed by a slice of the baseline scan.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Resolve API load: requests per second.
    #[arg(long, default_value_t = 1000)]
    resolve_rate: u32,
    /// Resolve API load: for how long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    resolve_for: Duration,
    /// CI smoke: 4 clusters × 5 nodes, 8 passes, 5 s idle, 2 s of resolve load.
    #[arg(long)]
    quick: bool,
    /// Skip the naive scan (profiling runs); the ratio is then not measured.
    #[arg(long)]
    skip_baseline: bool,
    /// Run the simulators in a child process instead of this one.
    #[arg(long)]
    fleet_process: bool,
    /// Internal: serve the simulators and print them (what `--fleet-process` runs).
    #[arg(long, hide = true)]
    serve_fleet: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    if args.quick {
        (args.clusters, args.nodes, args.passes, args.idle) = (4, 5, 8, Duration::from_secs(5));
        args.resolve_for = Duration::from_secs(2);
        args.rounds = args.rounds.min(2);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let shape = sims::Shape { clusters: args.clusters, nodes: args.nodes, latency: args.latency };
    let rounds = args.rounds.clamp(1, args.clusters.max(1));
    let dir = std::env::temp_dir().join(format!("vztmpld-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");

    if args.serve_fleet {
        sims::serve(shape, &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }

    let started = Instant::now();
    let fleet = if args.fleet_process { sims::start_in_child(shape) } else { sims::start(shape, &dir).await };
    let config = sims::write_config(&fleet.clusters, &dir);
    let stats = sims::Stats::new();
    eprintln!(
        "fleet: {} clusters × {} nodes, {} templates, {:?} per API answer, simulators {}; started in {:.1} s",
        shape.clusters,
        shape.nodes,
        sims::SPECS.len(),
        shape.latency,
        fleet.child_pid().map_or("in this process".to_string(), |pid| format!("in process {pid}")),
        started.elapsed().as_secs_f64()
    );

    // Cold start: nothing is cached; the daemon's start-up pass downloads and follows everything.
    let cold = Instant::now();
    let mut daemon = daemon::Daemon::start(&config).await;
    let first = daemon.next_pass(Duration::from_secs(1800)).await;
    let cold_converge_ms = cold.elapsed().as_secs_f64() * 1000.0;
    let after_cold = stats.totals(&fleet.clusters).await;
    assert_eq!(first.outcome, "converged", "the cold pass");
    assert_eq!(after_cold.downloads_succeeded, after_cold.downloads_started, "every cold download succeeded");
    // Every spec lands once on the cluster's shared storage, which every node sees.
    let target_storages = (shape.clusters * sims::SPECS.len()) as u64;
    let (rss_after_cold, cold_peak_rss) = (daemon.usage().rss_kib, daemon.usage().peak_rss_kib);
    // `rss_mib` is the peak over the steady passes; the cold start's own peak is reported beside it.
    daemon.reset_peak();
    eprintln!(
        "cold start: {} downloads in {:.1} s; daemon pid {}, RSS {:.1} MiB",
        after_cold.downloads_started,
        cold_converge_ms / 1000.0,
        daemon.pid(),
        mib(rss_after_cold)
    );

    let mut scanners: Vec<baseline::Scanner> = fleet.clusters.iter().map(baseline::Scanner::new).collect();
    let (mut pass_ms, mut wall_ms, mut requests) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu, mut lines, mut rss) = (Duration::ZERO, 0u64, Vec::new());
    let (mut baseline_time, mut baseline_requests, mut baseline_found) = (Duration::ZERO, 0u64, 0usize);
    let per_round = args.passes.div_ceil(rounds);
    let mut last_end = Instant::now();
    for round in 0..rounds {
        for _ in 0..per_round {
            if pass_ms.len() == args.passes {
                break;
            }
            tokio::time::sleep_until((last_end + args.spacing).into()).await;
            let (before, u0, l0) = (stats.totals(&fleet.clusters).await, daemon.usage(), daemon.log_lines());
            let t = Instant::now();
            daemon.trigger().await;
            let pass = daemon.next_pass(Duration::from_secs(300)).await;
            last_end = Instant::now();
            let (u1, l1) = (daemon.usage(), daemon.log_lines());
            let after = stats.totals(&fleet.clusters).await;
            assert_eq!(pass.outcome, "converged", "steady pass");
            assert_eq!(after.downloads_started, before.downloads_started, "a steady pass downloads nothing");
            pass_ms.push(pass.seconds * 1000.0);
            wall_ms.push(last_end.duration_since(t).as_secs_f64() * 1000.0);
            requests.push((after.requests - before.requests) as f64);
            cpu += u1.cpu.saturating_sub(u0.cpu);
            lines += l1 - l0;
            rss.push(u1.rss_kib);
        }
        // A slice of the baseline: every `rounds`-th cluster, from `round`.
        let slice = scanners.iter_mut().enumerate().filter(|(i, _)| i % rounds == round && !args.skip_baseline);
        for (i, scanner) in slice {
            let before = scanner.requests;
            let (took, found) = scanner.scan().await;
            assert_eq!(found, shape.nodes * sims::SPECS.len(), "baseline finds every template on cluster {i}");
            baseline_time += took;
            baseline_found += found;
            baseline_requests += scanner.requests - before;
        }
        eprintln!("round {}/{rounds}: {} passes, baseline slice done", round + 1, pass_ms.len());
    }
    let passes = pass_ms.len();
    // The peak of the passes alone; `peak_rss` below also covers the resolve load and the status and metrics reads.
    let passes_peak_rss = daemon.usage().peak_rss_kib;

    // Idle: no pass is due (interval 1 h); what the daemon burns doing nothing.
    let u0 = daemon.usage();
    tokio::time::sleep(args.idle).await;
    let idle_cpu_ms = daemon.usage().cpu.saturating_sub(u0.cpu).as_secs_f64() * 1000.0 * 30.0 / args.idle.as_secs_f64();
    // The resolve API at deploy-tool rates, against the daemon that tracks the whole fleet.
    let u1 = daemon.usage();
    let load = resolve_load::load(daemon.addr, shape.clusters, shape.nodes, args.resolve_rate, args.resolve_for).await;
    let resolve_cpu_ms = daemon.usage().cpu.saturating_sub(u1.cpu).as_secs_f64() * 1000.0;
    assert_eq!(load.errors, 0, "every resolve request answered 200 or 404");
    assert!(load.hits > 0, "some resolve requests hit");
    let before_status_peak_rss = daemon.usage().peak_rss_kib;
    let status_bytes = daemon.get("/api/v1/status").await.len();
    let metrics_bytes = daemon.get("/metrics").await.len();
    let peak_rss = daemon.usage().peak_rss_kib;
    daemon.stop();

    // The cold start without vztmpld, on one fresh cluster of the same shape (every cluster is the same).
    let one = sims::start(sims::Shape { clusters: 1, ..shape }, &dir).await;
    let baseline_cold_per_cluster =
        if args.skip_baseline { 0 } else { baseline::Scanner::new(&one.clusters[0]).cold_start().await };
    let baseline_cold_downloads = baseline_cold_per_cluster * shape.clusters as u64;

    let pass = median(&mut pass_ms);
    let wall = median(&mut wall_ms);
    let reqs = median(&mut requests);
    let baseline_pass_ms = baseline_time.as_secs_f64() * 1000.0;
    // The floor: one membership and one storage view per cluster, each shared storage listed once, each
    // node's local storage listed once.
    let min_requests = shape.clusters * (2 + 1 + shape.nodes);
    let cpu_ms_per_pass = cpu.as_secs_f64() * 1000.0 / passes as f64;
    let rss_at = |n: usize| rss.get(n.saturating_sub(1)).copied().unwrap_or(0);
    let rss_growth_kib = rss_at(passes).saturating_sub(rss_at(5.min(passes)));
    let log_lines_per_pass = lines as f64 / passes as f64;

    let row = |what: &str, ours: String, base: String, target: String| {
        println!("{what:<28} {ours:>14} {base:>14} {target:>16}");
    };
    println!();
    row("", "vztmpld".into(), "naive scan".into(), "target".into());
    row("pass (median ms)", format!("{pass:.1}"), format!("{baseline_pass_ms:.0}"), "≤ 500".into());
    row("pass, trigger to end (ms)", format!("{wall:.1}"), String::new(), String::new());
    row("ratio", format!("{:.0}×", baseline_pass_ms / pass), String::new(), "≥ 500".into());
    row(
        "requests per pass",
        format!("{reqs:.0}"),
        format!("{baseline_requests}"),
        format!("≤ {}", min_requests + shape.clusters),
    );
    row("requests floor", format!("{min_requests}"), String::new(), String::new());
    row("CPU per pass (ms)", format!("{cpu_ms_per_pass:.1}"), String::new(), "≤ 100".into());
    row("peak RSS, steady (MiB)", format!("{:.1}", mib(peak_rss)), String::new(), "≤ 40".into());
    row("  of the passes alone (MiB)", format!("{:.1}", mib(passes_peak_rss)), String::new(), String::new());
    row("  before /api/v1/status (MiB)", format!("{:.1}", mib(before_status_peak_rss)), String::new(), String::new());
    row("cold start peak RSS (MiB)", format!("{:.1}", mib(cold_peak_rss)), String::new(), String::new());
    row("RSS after cold start (MiB)", format!("{:.1}", mib(rss_after_cold)), String::new(), String::new());
    row(
        &format!("RSS growth, pass 5→{passes} (MiB)"),
        format!("{:.2}", mib(rss_growth_kib)),
        String::new(),
        "≤ 1".into(),
    );
    row("idle CPU (ms per 30 s)", format!("{idle_cpu_ms:.0}"), String::new(), "≤ 150".into());
    row("log lines per pass", format!("{log_lines_per_pass:.1}"), String::new(), format!("≤ {}", shape.clusters + 1));
    row(
        &format!("resolve p99 at {:.0}/s (ms)", load.achieved_rps),
        format!("{:.2}", load.p99_ms),
        String::new(),
        "≤ 2".into(),
    );
    row("resolve p50 / max (ms)", format!("{:.2} / {:.1}", load.p50_ms, load.max_ms), String::new(), String::new());
    row(
        "resolve CPU (ms per 1000)",
        format!("{:.0}", resolve_cpu_ms * 1000.0 / load.requests.max(1) as f64),
        String::new(),
        String::new(),
    );
    row("status (bytes)", format!("{status_bytes}"), String::new(), String::new());
    row("metrics (bytes)", format!("{metrics_bytes}"), String::new(), String::new());
    row(
        "cold downloads",
        format!("{}", after_cold.downloads_started),
        format!("{baseline_cold_downloads}"),
        format!("= {target_storages}"),
    );
    row("cold converge (ms)", format!("{cold_converge_ms:.0}"), String::new(), String::new());
    let json = serde_json::json!({
        "pass_ms": round1(pass),
        "baseline_pass_ms": round1(baseline_pass_ms),
        "ratio": round1(baseline_pass_ms / pass),
        "requests": reqs,
        "baseline_requests": baseline_requests,
        "min_requests": min_requests,
        "cpu_ms_per_pass": round1(cpu_ms_per_pass),
        "rss_mib": round1(mib(peak_rss)),
        "rss_growth_mib": (mib(rss_growth_kib) * 100.0).round() / 100.0,
        "rss_passes_mib": round1(mib(passes_peak_rss)),
        "rss_before_status_mib": round1(mib(before_status_peak_rss)),
        "cold_rss_mib": round1(mib(cold_peak_rss)),
        "idle_cpu_ms": round1(idle_cpu_ms),
        "log_lines_per_pass": round1(log_lines_per_pass),
        "status_bytes": status_bytes,
        "metrics_bytes": metrics_bytes,
        "cold_downloads": after_cold.downloads_started,
        "target_storages": target_storages,
        "baseline_cold_downloads": baseline_cold_downloads,
        "cold_converge_ms": round1(cold_converge_ms),
        "passes": passes,
        "resolve": {"requests": load.requests, "hits": load.hits, "rps": round1(load.achieved_rps),
                    "p50_ms": (load.p50_ms * 100.0).round() / 100.0, "p99_ms": (load.p99_ms * 100.0).round() / 100.0,
                    "max_ms": round1(load.max_ms),
                    "cpu_ms_per_1000": round1(resolve_cpu_ms * 1000.0 / load.requests.max(1) as f64)},
        "baseline_answers": baseline_found,
        "fleet_process": args.fleet_process,
        "scale": {"clusters": shape.clusters, "nodes": shape.nodes, "templates": sims::SPECS.len(),
                  "latency_ms": shape.latency.as_secs_f64() * 1000.0},
    });
    println!("{json}");
    fleet.stop().await;
    one.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}
