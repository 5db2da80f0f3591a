//! Property: for random clusters (nodes, architectures, shared and local storages, fresh, stale and empty
//! indexes, files already there) and configurations (policies, `prune`, `mirrors`, `oci:`), apply then plan leaves nothing to
//! download or delete, and everything the first plan meant to download is cached afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

use common::{TestSim, fast_options, write_config};
use vztmpld::reconcile::{self, Fleet, plan::ItemState};

/// xorshift: deterministic, so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const SPECS: &[&str] = &[
    "alpine",
    "alpine-3.22",
    "debian-12-standard",
    "ubuntu-24.04",
    "debian",
    "archlinux-base",
    "ubuntu-22.04-standard_22.04-1",
    "proxmox-mail-gateway",
];
const PRESETS: &[&str] = &[
    "alpine-3.22-default_20250617_amd64.tar.xz",
    "debian-12-standard_12.2-1_amd64.tar.zst",
    "ubuntu-24.04-standard_24.04-2_amd64.tar.zst",
];
const OLDER_BUILDS: &[&str] = &["alpine-3.22-default_20250101_amd64.tar.xz", "debian-12-standard_12.0-1_amd64.tar.zst"];

fn scenario(rng: &mut Rng) -> (String, Vec<String>) {
    let n = 1 + rng.below(4) as usize;
    let nodes: Vec<String> = (1..=n).map(|i| format!("pve{i}")).collect();
    let mut yaml = String::from("oci_images: {\"docker.io/library/alpine:3.22\": 40000}\nnodes:\n");
    for name in &nodes {
        let index = ["builtin", "builtin", "stale", "empty"][rng.below(4) as usize];
        let arch = if rng.chance(15) { "aarch64" } else { "x86_64" };
        yaml.push_str(&format!("  - {{name: {name}, arch: {arch}, index: {index}}}\n"));
    }
    yaml.push_str("storages:\n");
    let local_vztmpl = rng.chance(80);
    let content = if local_vztmpl { "[vztmpl, iso]" } else { "[iso]" };
    yaml.push_str(&format!("  - {{id: local, content: {content}}}\n"));
    let mut with_shared = Vec::new();
    if rng.chance(60) {
        let members: Vec<&String> = nodes.iter().filter(|_| rng.chance(75)).collect();
        if !members.is_empty() {
            let list: Vec<&str> = members.iter().map(|s| s.as_str()).collect();
            yaml.push_str(&format!("  - {{id: nfs, type: nfs, content: [vztmpl], nodes: [{}]}}\n", list.join(", ")));
            with_shared = list.iter().map(|s| s.to_string()).collect();
        }
    }
    if rng.chance(30) {
        yaml.push_str("  - {id: tank, type: dir, content: [vztmpl], total: 5000000000000}\n");
    }
    let mut presets = Vec::new();
    // Older builds on every node's `local`, often: what `prune` is there to remove.
    for p in OLDER_BUILDS {
        if local_vztmpl && rng.chance(60) {
            nodes.iter().for_each(|n| presets.push(format!("  - {{storage: local, node: {n}, file: {p}}}\n")));
        }
    }
    for p in PRESETS {
        if rng.chance(30) && !with_shared.is_empty() {
            presets.push(format!("  - {{storage: nfs, file: {p}}}\n"));
        } else if rng.chance(30) && local_vztmpl {
            let node = &nodes[rng.below(nodes.len() as u64) as usize];
            presets.push(format!("  - {{storage: local, node: {node}, file: {p}}}\n"));
        }
    }
    if !presets.is_empty() {
        yaml.push_str("templates:\n");
        presets.iter().for_each(|p| yaml.push_str(p));
    }
    let specs: Vec<String> = SPECS.iter().filter(|_| rng.chance(40)).map(|s| s.to_string()).collect();
    let specs = if specs.is_empty() { vec!["alpine".to_string()] } else { specs };
    (yaml, specs)
}

#[tokio::test]
async fn apply_then_plan_is_empty_for_random_clusters() {
    // Seeds run six at a time, each against its own simulator: the property is per seed, the wait is shared.
    let seeds: Vec<u64> = (1..=24).collect();
    for batch in seeds.chunks(6) {
        futures_util::future::join_all(batch.iter().map(|seed| check_seed(*seed))).await;
    }
    let pruned = PRUNED.load(std::sync::atomic::Ordering::Relaxed);
    let mirrored = MIRRORED.load(std::sync::atomic::Ordering::Relaxed);
    let pulled = PULLED.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "over all seeds: {pruned} superseded builds deleted, {mirrored} downloads from a mirror, {pulled} OCI pulls"
    );
    assert!(pruned > 0 && mirrored > 0 && pulled > 0, "some seeds exercise prune, mirrors and OCI");
}

/// OCI pulls over all seeds.
static PULLED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Downloads fetched from a mirror over all seeds.
static MIRRORED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Deletions applied over all seeds (the property must not hold vacuously for `prune`).
static PRUNED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One random cluster: apply, then plan again.
async fn check_seed(seed: u64) {
    {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (seed * 0x1000_0001));
        let (yaml, specs) = scenario(&mut rng);
        // `prune` mostly comes with `latest`: a newer build arriving is what makes an older one superseded.
        let prune = rng.chance(60);
        let latest = prune || rng.chance(50);
        let sim = TestSim::with(&yaml).await;
        let mut templates = String::from("templates:\n");
        for s in &specs {
            templates.push_str(&format!("  - template: {s}\n"));
            if latest && s.contains('-') {
                templates.push_str("    policy: latest\n");
            }
            if prune {
                templates.push_str("    prune: {keep: 1}\n");
            }
        }
        // Half the seeds fetch index templates from a mirror (download-url with the index's sha512).
        let mirrors = if rng.chance(50) {
            // The simulator's mirror answers on its control listener, under /_mirror/ (any path).
            let base = format!("{}/_mirror", sim.server.control);
            format!("mirrors:\n  \"{base}/images/\": \"{base}/lan/images/\"\n")
        } else {
            String::new()
        };
        // Some seeds also keep an OCI image (one fixed file, pulled by oci-registry-pull).
        let oci = rng.chance(40);
        if oci {
            templates.push_str("  - oci: docker.io/library/alpine:3.22\n");
        }
        let path = write_config(&sim.server, &mirrors, &templates);
        let templates = format!("{mirrors}{templates}");
        let config = vztmpld::config::load(&path).unwrap();
        let fleet = Fleet::new(config, fast_options()).unwrap();

        let first = fleet.plan().await;
        let outcomes = reconcile::apply::apply(&fleet, &first, None).await;
        PRUNED.fetch_add(first.deletions.len(), std::sync::atomic::Ordering::Relaxed);
        let failed: Vec<_> = outcomes.iter().filter(|o| matches!(o, reconcile::Outcome::Failed { .. })).collect();
        assert!(failed.is_empty(), "seed {seed}: {failed:?}\nscenario:\n{yaml}\n{templates}");

        let second = fleet.plan().await;
        assert!(
            second.downloads.is_empty(),
            "seed {seed}: still to download {:?}\nscenario:\n{yaml}\n{templates}",
            second.downloads
        );
        assert!(
            second.deletions.is_empty(),
            "seed {seed}: still to prune {:?}\nscenario:\n{yaml}\n{templates}",
            second.deletions
        );
        for (a, b) in first.items.iter().zip(&second.items) {
            assert_eq!((&a.node, &a.template), (&b.node, &b.template));
            if matches!(a.state, ItemState::Download { .. }) {
                assert!(
                    matches!(b.state, ItemState::Cached { .. }),
                    "seed {seed}: {a:?} became {b:?}\nscenario:\n{yaml}\n{templates}"
                );
            }
            // Cached stays cached (a newer matching file fetched for another spec may now be the one shown).
            if matches!(a.state, ItemState::Cached { .. }) {
                assert!(matches!(b.state, ItemState::Cached { .. }), "seed {seed}: {a:?} became {b:?}");
            }
        }
        let stats = sim.stats().await;
        assert_eq!(stats["downloads_started"].as_u64().unwrap(), first.downloads.len() as u64, "seed {seed}");
        if oci {
            let pulls =
                stats["requests"]["POST /nodes/{node}/storage/{storage}/oci-registry-pull"].as_u64().unwrap_or(0);
            PULLED.fetch_add(pulls as usize, std::sync::atomic::Ordering::Relaxed);
        }
        if !mirrors.is_empty() {
            let via_url = stats["requests"]["POST /nodes/{node}/storage/{storage}/download-url"].as_u64().unwrap_or(0);
            MIRRORED.fetch_add(via_url as usize, std::sync::atomic::Ordering::Relaxed);
        }
        sim.server.shutdown().await;
    }
}
