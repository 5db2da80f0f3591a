//! The planner's decisions on hand-built observations.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::config::{
    ClusterConfig, DownloadSettings, NodeSelector, Policy, Secret, StorageSelector, TemplateSource, TlsMode,
};
use crate::observation::{IndexEntry, NodeObservation, PermissionMap, StorageObservation, StorageOnNode, Volume};
use crate::template::TemplateSpec;

const ALPINE: &str = "alpine-3.22-default_20250617_amd64.tar.xz";

fn config(storage: StorageSelector, templates: &[&str]) -> Config {
    Config {
        path: PathBuf::from("t.yaml"),
        interval: Duration::from_secs(600),
        clusters: vec![ClusterConfig {
            name: "lab".into(),
            endpoints: vec![],
            token_id: "a@pve!t".into(),
            secret: Secret::default(),
            tls: TlsMode::Insecure,
            nodes: NodeSelector::All,
            storage,
            max_parallel_downloads: 4,
            max_downloads_per_node: 1,
            mirrors: vec![],
        }],
        templates: templates
            .iter()
            .map(|t| TemplateConfig {
                label: t.to_string(),
                source: TemplateSource::Appliance(TemplateSpec::parse(t).unwrap()),
                policy: Policy::Present,
                clusters: None,
                nodes: None,
                storage: None,
                prune: None,
                verify: None,
                repair: false,
            })
            .collect(),
        server_listen: None,
        server_token: None,
        server_allow_unauthenticated: false,
        downloads: DownloadSettings::default(),
        ha: None,
        state_dir: None,
        warnings: vec![],
    }
}

fn node(name: &str) -> NodeObservation {
    NodeObservation { name: name.into(), online: true, arch: "amd64".into(), error: None }
}

fn storage(id: &str, shared: bool, nodes: &[&str], avail: u64, files: &[&str]) -> StorageObservation {
    let on_nodes = nodes.iter().map(|n| (n.to_string(), StorageOnNode { active: true, avail: Some(avail) })).collect();
    let vols = |_: Option<&str>| {
        Ok(files.iter().map(|f| Volume::new(format!("{id}:vztmpl/{f}"), f.to_string(), Some(1))).collect())
    };
    let (shared_volumes, node_volumes) = if shared {
        (Some(vols(None)), BTreeMap::new())
    } else {
        (None, nodes.iter().map(|n| (n.to_string(), vols(Some(n)))).collect())
    };
    StorageObservation { id: id.into(), shared, on_nodes, shared_volumes, node_volumes }
}

fn observed(nodes: &[&str], storages: Vec<StorageObservation>) -> ClusterObservation {
    let entry = IndexEntry {
        template: ALPINE.into(),
        name: crate::template::TemplateName::parse(ALPINE),
        location: Some(format!("http://mirror/{ALPINE}")),
        sha512: Some("ab".repeat(64)),
    };
    ClusterObservation {
        name: "lab".into(),
        nodes: nodes.iter().map(|n| node(n)).collect(),
        storages: storages.into_iter().map(|s| (s.id.clone(), s)).collect(),
        indexes: nodes.iter().map(|n| (n.to_string(), Ok(vec![entry.clone()]))).collect(),
        permissions: PermissionMap::unknown(),
        ..Default::default()
    }
}

const GB: u64 = 1 << 30;

#[test]
fn auto_prefers_a_shared_storage_all_nodes_see_and_plans_it_once() {
    let obs = observed(
        &["a", "b", "c"],
        vec![
            storage("local", false, &["a", "b", "c"], 10 * GB, &[]),
            storage("nfs", true, &["a", "b", "c"], 10 * GB, &[]),
        ],
    );
    let p = plan(&config(StorageSelector::Auto, &["alpine-3.22"]), &[obs]);
    assert_eq!(p.downloads.len(), 1);
    assert_eq!(p.downloads[0].storage, "nfs");
    assert_eq!(p.downloads[0].for_nodes, ["a", "b", "c"]);
    assert!(p.items.iter().all(|i| i.state == ItemState::Download { download: 0 }));
}

#[test]
fn auto_falls_back_to_local_when_the_shared_storage_misses_a_node() {
    let obs = observed(
        &["a", "b"],
        vec![storage("local", false, &["a", "b"], 10 * GB, &[]), storage("nfs", true, &["a"], 10 * GB, &[])],
    );
    let p = plan(&config(StorageSelector::Auto, &["alpine-3.22"]), &[obs]);
    assert_eq!(p.downloads.len(), 2);
    assert!(p.downloads.iter().all(|d| d.storage == "local" && !d.shared));
}

#[test]
fn a_storage_without_room_is_never_chosen() {
    let obs = observed(
        &["a"],
        vec![storage("local", false, &["a"], 10 * 1024 * 1024, &[]), storage("big", false, &["a"], 10 * GB, &[])],
    );
    let p = plan(&config(StorageSelector::Auto, &["alpine-3.22"]), std::slice::from_ref(&obs));
    assert_eq!(p.downloads[0].storage, "big");
    let p = plan(&config(StorageSelector::Named("local".into()), &["alpine-3.22"]), &[obs]);
    assert!(
        matches!(&p.items[0].state, ItemState::Blocked(b) if matches!(**b, BlockReason::NamedStorageFull { free_mib: 10, need_mib: 512, .. }) && b.retryable()),
        "{p:?}"
    );
}

#[test]
fn a_file_on_any_visible_storage_satisfies_the_spec() {
    let obs = observed(
        &["a"],
        vec![storage("local", false, &["a"], GB, &[]), storage("other", false, &["a"], GB, &[ALPINE])],
    );
    let p = plan(&config(StorageSelector::Auto, &["alpine"]), &[obs]);
    assert_eq!(p.items[0].state, ItemState::Cached { volid: format!("other:vztmpl/{ALPINE}").into() });
    assert!(p.downloads.is_empty());
}

#[test]
fn no_vztmpl_storage_is_blocked_with_the_fix() {
    let obs = observed(&["a"], vec![]);
    let p = plan(&config(StorageSelector::Auto, &["alpine"]), &[obs]);
    assert!(
        matches!(&p.items[0].state, ItemState::Blocked(b) if matches!(**b, BlockReason::NoTemplateStorage { .. }) && !b.retryable() && b.to_string().contains("enable 'Container template'"))
    );
}

#[test]
fn plan_is_deterministic() {
    let obs = observed(&["a", "b"], vec![storage("nfs", true, &["a", "b"], GB, &[])]);
    let cfg = config(StorageSelector::Auto, &["alpine", "alpine-3.22"]);
    assert_eq!(plan(&cfg, std::slice::from_ref(&obs)), plan(&cfg, &[obs]));
}

#[test]
fn an_unreadable_index_is_named_in_the_reason() {
    let mut obs = observed(&["a", "b"], vec![storage("local", false, &["a", "b"], GB, &[])]);
    obs.indexes.insert("b".into(), Err("cluster lab: GET /nodes/b/aplinfo: unexpected answer: bad JSON".into()));
    let p = plan(&config(StorageSelector::Auto, &["debian-13"]), &[obs]);
    let ItemState::Blocked(b) = &p.items[0].state else { panic!("{p:?}") };
    let text = b.to_string();
    assert!(text.contains("unreadable: b: cluster lab: GET /nodes/b/aplinfo: unexpected answer"), "{text}");
}

#[test]
fn typos_get_a_suggestion_and_a_wrong_storage_is_reported_even_when_cached() {
    let obs = observed(&["a"], vec![storage("local", false, &["a"], GB, &[ALPINE])]);
    let p = plan(&config(StorageSelector::Auto, &["alpne-3.22"]), std::slice::from_ref(&obs));
    let ItemState::Blocked(b) = &p.items[0].state else { panic!("{p:?}") };
    assert!(b.to_string().contains("did you mean 'alpine-3.22'?"), "{b}");

    let p = plan(&config(StorageSelector::Named("lcoal".into()), &["alpine-3.22"]), &[obs]);
    let ItemState::Blocked(b) = &p.items[0].state else { panic!("cached, but the named storage is wrong: {p:?}") };
    assert!(
        matches!(&**b, BlockReason::WrongStorage { storage, usable, .. } if storage == "lcoal" && usable == &["local"]),
        "{b}"
    );
    assert!(b.to_string().contains("storage lcoal is not") && b.to_string().contains("did you mean 'local'?"), "{b}");
}

#[test]
fn the_steady_key_covers_everything_an_all_cached_plan_reads() {
    let cfg = config(StorageSelector::Auto, &["alpine-3.22"]);
    let steady = |avail: u64| {
        let mut obs = observed(&["a", "b"], vec![storage("local", false, &["a", "b"], avail, &[ALPINE])]);
        obs.indexes.clear();
        obs
    };
    let obs = steady(GB);
    assert!(!obs.fetched_beyond_listings());
    let first = plan(&cfg, std::slice::from_ref(&obs));
    assert!(first.all_cached(), "{first:?}");
    let key = obs.steady_key().unwrap();

    // Free space is not read by an all-cached plan, and not in the key: a full disk plans the same.
    for avail in [0, 1, 7 * GB] {
        let other = steady(avail);
        assert_eq!(other.steady_key(), Some(key));
        assert_eq!(plan(&cfg, std::slice::from_ref(&other)), first, "avail {avail}");
    }
    // Everything it does read changes the key.
    let mut changes: Vec<(&str, ClusterObservation)> = Vec::new();
    let mut o = steady(GB);
    o.nodes[1].online = false;
    changes.push(("a node went offline", o));
    let mut o = steady(GB);
    o.storages.get_mut("local").unwrap().on_nodes.get_mut("b").unwrap().active = false;
    changes.push(("a storage went inactive", o));
    let mut o = steady(GB);
    o.storages.get_mut("local").unwrap().node_volumes.insert("b".into(), Ok(vec![]));
    changes.push(("a file went away", o));
    let mut o = steady(GB);
    o.storages.get_mut("local").unwrap().node_volumes.insert("b".into(), Err("timeout".into()));
    changes.push(("a listing failed", o));
    let mut o = steady(GB);
    o.nodes[0].arch = "arm64".into();
    changes.push(("an architecture changed", o));
    let mut o = steady(GB);
    o.storages.insert("nfs".into(), storage("nfs", true, &["a", "b"], GB, &[]));
    changes.push(("a storage appeared", o));
    for (what, o) in changes {
        assert_ne!(o.steady_key(), Some(key), "{what}");
    }
    let mut unobserved = steady(GB);
    unobserved.error = Some("unreachable".into());
    assert_eq!(unobserved.steady_key(), None, "a cluster not observed has no key");

    // Observed over the API, the listings count by their digest as they arrived (decoded only on a change).
    let digested = |digest: u64, files: &[&str]| {
        let mut o = observed(&["a", "b"], vec![storage("local", false, &["a", "b"], GB, files)]);
        o.indexes.clear();
        o.listings_digest = Some(digest);
        o
    };
    let key = digested(1, &[ALPINE]).steady_key();
    assert_eq!(digested(1, &[]).steady_key(), key, "undecoded volumes do not count, the digest does");
    assert_ne!(digested(2, &[ALPINE]).steady_key(), key, "another digest, another key");
    let mut o = digested(1, &[ALPINE]);
    o.nodes[1].online = false;
    assert_ne!(o.steady_key(), key, "the views still count");
}

#[test]
fn plan_items_stay_small_for_fleets_that_keep_tens_of_thousands() {
    // A converged fleet keeps one item per (node, template): a block reason inline would quadruple each.
    assert!(std::mem::size_of::<ItemState>() <= 24, "{}", std::mem::size_of::<ItemState>());
    assert!(std::mem::size_of::<PlanItem>() <= 80, "{}", std::mem::size_of::<PlanItem>());
}
