//! The JSON contracts, pinned: `plan --output json` / `apply --output json` (items, downloads, outcomes)
//! and `/api/v1/status`. Typed state inside must not change a byte of what scripts and dashboards read.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::json;
use vztmpld::daemon::Trigger;
use vztmpld::daemon::status::{NodeRetry, Status};
use vztmpld::pve::TaskFailure;
use vztmpld::reconcile::plan::{BlockReason, Download, ItemState, Plan, PlanItem, Scope, Source};
use vztmpld::reconcile::{Failure, Outcome};

const ALPINE: &str = "alpine-3.22-default_20250617_amd64.tar.xz";

fn item(cluster: &str, node: Scope, template: &str, state: ItemState) -> PlanItem {
    PlanItem { cluster: cluster.into(), node, template: template.into(), state }
}

fn plan() -> Plan {
    let node = |n: &str| Scope::Node(n.into());
    Plan {
        items: vec![
            item(
                "lab",
                node("pve1"),
                "alpine-3.22",
                ItemState::Cached { volid: format!("local:vztmpl/{ALPINE}").into() },
            ),
            item("lab", node("pve2"), "alpine-3.22", ItemState::Download { download: 0 }),
            item(
                "lab",
                node("pve3"),
                "alpine-3.22",
                ItemState::Blocked(Box::new(BlockReason::NodeOffline { node: "pve3".into() })),
            ),
            item(
                "dc2",
                Scope::Cluster,
                "alpine-3.22",
                ItemState::Blocked(Box::new(BlockReason::ClusterUnobserved {
                    error: "cluster dc2: TLS failed".into(),
                    retryable: false,
                })),
            ),
        ],
        downloads: vec![Download {
            cluster: "lab".into(),
            node: "pve2".into(),
            storage: "local".into(),
            shared: false,
            file: ALPINE.into(),
            source: Source::Appliance { template: ALPINE.into() },
            for_nodes: vec!["pve2".into()],
        }],
        deletions: vec![],
    }
}

#[test]
fn plan_json_is_unchanged() {
    let p = plan();
    let outcomes = [Outcome::Finished { upid: "UPID:pve2:1".into(), seconds: 3, bytes: Some(42), adopted: false }];
    let v = json!({ "items": p.items, "downloads": p.downloads, "outcomes": outcomes });
    assert_eq!(
        v,
        json!({
            "items": [
                {"cluster": "lab", "node": "pve1", "template": "alpine-3.22",
                 "state": {"state": "cached", "volid": format!("local:vztmpl/{ALPINE}")}},
                {"cluster": "lab", "node": "pve2", "template": "alpine-3.22",
                 "state": {"state": "download", "download": 0}},
                {"cluster": "lab", "node": "pve3", "template": "alpine-3.22",
                 "state": {"state": "blocked", "reason": "node pve3 is offline", "retryable": true, "kind": "node_offline"}},
                {"cluster": "dc2", "node": "*", "template": "alpine-3.22",
                 "state": {"state": "blocked", "reason": "cluster dc2: TLS failed", "retryable": false, "kind": "cluster_unobserved"}},
            ],
            "downloads": [{
                "cluster": "lab", "node": "pve2", "storage": "local", "shared": false, "file": ALPINE,
                "source": {"kind": "appliance", "template": ALPINE}, "for_nodes": ["pve2"],
            }],
            "outcomes": [{"outcome": "finished", "upid": "UPID:pve2:1", "seconds": 3, "bytes": 42, "adopted": false}],
        })
    );
    let failed = Outcome::failed(Failure::AwaitedDownloadFailed);
    assert_eq!(
        json!(failed),
        json!({"outcome": "failed", "upid": null, "retryable": true, "reason": "awaited_download_failed",
               "error": "not deleted: the newer build it makes room for did not arrive"})
    );
    let task = TaskFailure::parse("checksum mismatch: got 'a' != expect 'b'");
    let failed = Outcome::Failed {
        upid: Some("UPID:pve2:1".into()),
        failure: Failure::Task { upid: "UPID:pve2:1".into(), failure: task.clone() },
    };
    assert_eq!(
        json!(failed),
        json!({"outcome": "failed", "upid": "UPID:pve2:1", "retryable": false, "reason": "checksum_mismatch",
               "error": format!("task UPID:pve2:1 failed: {task}")})
    );
    assert_eq!(json!(Outcome::AlreadyAbsent), json!({"outcome": "already_absent"}));
}

#[test]
fn status_json_is_unchanged() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut s = Status::new("/etc/vztmpld/config.yaml".into());
    s.version = "0.1.0".into();
    s.config_loaded(1, t0);
    s.start_pass(Trigger::Start, t0);
    let p = plan();
    s.publish_plan(&p, None, t0);
    let progress = vztmpld::reconcile::progress::Progress {
        download: 0,
        phase: vztmpld::reconcile::progress::Phase::Downloading,
        upid: Some("UPID:pve2:1".into()),
        done: Some(40 << 20),
        total: Some(100 << 20),
        rate: Some(f64::from(20 << 20)),
    };
    s.record_progress("lab", &[("pve2".into(), "alpine-3.22".into())], &progress);
    let live = serde_json::to_value(&s).unwrap()["clusters"][1]["nodes"][1]["templates"][0].clone();
    assert_eq!(
        live,
        json!({"template": "alpine-3.22", "state": "downloading", "volid": null, "storage": "local",
               "upid": "UPID:pve2:1", "progress": 40, "error": null, "next_retry": null,
               "bytes_done": 40 << 20, "bytes_total": 100 << 20, "rate_bytes_per_second": 20 << 20, "eta_seconds": 3}),
        "a download in flight adds bytes, rate and ETA"
    );
    let boom = Failure::Task { upid: "UPID:pve2:1".into(), failure: TaskFailure::parse("boom") };
    let outcomes = [Outcome::Failed { upid: Some("UPID:pve2:1".into()), failure: boom }];
    s.publish_plan(&p, Some(&outcomes), t0);
    let retries = BTreeMap::from([
        (("lab".to_string(), "pve2".to_string()), NodeRetry { failures: 1, after: Duration::from_secs(5) }),
        (("lab".to_string(), "pve3".to_string()), NodeRetry { failures: 2, after: Duration::from_secs(10) }),
    ]);
    s.finish_pass(Duration::from_millis(1234), &retries, t0);
    s.set_next_pass(t0 + Duration::from_secs(5));

    let at = "2027-01-15T08:00:00Z";
    let cond = |kind: &str, status: &str, reason: &str, message: &str| json!({"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": at});
    let template = |state: &str, extra: serde_json::Value| {
        let mut t = json!({"template": "alpine-3.22", "state": state, "volid": null, "storage": null, "upid": null,
                           "progress": null, "error": null, "next_retry": null});
        for (k, v) in extra.as_object().unwrap() {
            t[k] = v.clone();
        }
        t
    };
    let node_conds = |ready: bool, reconciling: bool, degraded: Option<(&str, &str)>, stalled: Option<&str>| {
        let tf = |b: bool| if b { "True" } else { "False" };
        json!([
            cond(
                "Ready",
                tf(ready),
                "TemplatesCached",
                if ready { "1 of 1 templates cached" } else { "0 of 1 templates cached" }
            ),
            cond("Reconciling", tf(reconciling), "Downloading", ""),
            cond("Degraded", tf(degraded.is_some()), degraded.map_or("Blocked", |d| d.0), degraded.map_or("", |d| d.1)),
            cond("Stalled", tf(stalled.is_some()), "Blocked", stalled.unwrap_or("")),
        ])
    };
    let expected = json!({
        "version": "0.1.0",
        "config": {"path": "/etc/vztmpld/config.yaml", "generation": 1, "loaded_at": at, "last_reload_error": null},
        "ready": true,
        "pass_running": false,
        "last_pass": {"trigger": "start", "started_at": at, "finished_at": at, "duration_seconds": 1.234,
                      "outcome": "degraded"},
        "next_pass_at": "2027-01-15T08:00:05Z",
        "reconcile_requested_at": null,
        "conditions": [
            cond("Reconciling", "False", "Idle", ""),
            cond("Ready", "False", "PassFinished", "last pass degraded"),
            cond("Degraded", "True", "NodesDegraded", "cluster dc2, lab/pve2, lab/pve3"),
            cond("Stalled", "True", "Blocked", ""),
        ],
        "clusters": [
            {"name": "dc2", "error": "cluster dc2: TLS failed", "nodes": [
                {"name": "*", "failures": 0, "next_retry": null,
                 "conditions": node_conds(false, false, Some(("Blocked", "alpine-3.22: cluster dc2: TLS failed")),
                                          Some("alpine-3.22: cluster dc2: TLS failed")),
                 "templates": [template("blocked", json!({"error": "cluster dc2: TLS failed"}))]},
            ]},
            {"name": "lab", "error": null, "nodes": [
                {"name": "pve1", "failures": 0, "next_retry": null,
                 "conditions": node_conds(true, false, None, None),
                 "templates": [template("cached", json!({"volid": format!("local:vztmpl/{ALPINE}"), "storage": "local"}))]},
                {"name": "pve2", "failures": 1, "next_retry": "2027-01-15T08:00:05Z",
                 "conditions": node_conds(false, false, Some(("DownloadFailed", "alpine-3.22: task UPID:pve2:1 failed: boom")), None),
                 "templates": [template("failed", json!({"storage": "local", "upid": "UPID:pve2:1", "error": "task UPID:pve2:1 failed: boom",
                                                          "next_retry": "2027-01-15T08:00:05Z"}))]},
                {"name": "pve3", "failures": 2, "next_retry": "2027-01-15T08:00:10Z",
                 "conditions": node_conds(false, false, Some(("Blocked", "alpine-3.22: node pve3 is offline")),
                                          Some("alpine-3.22: node pve3 is offline")),
                 "templates": [template("blocked", json!({"error": "node pve3 is offline",
                                                           "next_retry": "2027-01-15T08:00:10Z"}))]},
            ]},
        ],
    });
    let actual = serde_json::to_value(&s).unwrap();
    assert_eq!(actual, expected, "\nactual: {}", serde_json::to_string_pretty(&actual).unwrap());
    // And it reads back (what `vztmpld status` does).
    let back: Status = serde_json::from_value(actual).unwrap();
    assert!(!back.all_cached());
}

#[test]
fn the_ha_section_of_the_status_is_pinned() {
    use vztmpld::ha::{HaStatus, LeaderRecord, Role};
    let mut status = Status::new("/etc/vztmpld/config.yaml".into());
    assert!(serde_json::to_value(&status).unwrap().get("ha").is_none(), "absent without ha");
    status.set_ha(HaStatus {
        role: Role::Standby,
        id: "mgmt2:812".into(),
        since: Some("2026-12-01T10:00:00Z".parse().unwrap()),
        leader: Some(LeaderRecord {
            id: "mgmt1:733".into(),
            status_url: Some("http://mgmt1:9811".into()),
            since: Some("2026-12-01T09:00:00Z".parse().unwrap()),
        }),
        etcd_error: None,
        retry_at: None,
        elections: 2,
        lease_losses: 1,
        lease_ttl_seconds: 15,
        prefix: "/vztmpld/prod/".into(),
    });
    let v = serde_json::to_value(&status).unwrap();
    assert_eq!(
        v["ha"],
        json!({
            "role": "standby",
            "id": "mgmt2:812",
            "since": "2026-12-01T10:00:00Z",
            "leader": {"id": "mgmt1:733", "status_url": "http://mgmt1:9811", "since": "2026-12-01T09:00:00Z"},
            "etcd_error": null,
            "retry_at": null,
            "elections": 2,
            "lease_losses": 1,
            "lease_ttl_seconds": 15,
            "prefix": "/vztmpld/prod/"
        })
    );
    let back: Status = serde_json::from_value(v).unwrap();
    assert_eq!(back.ha().unwrap().role, Role::Standby, "`vztmpld status` reads it back");
}

#[test]
fn the_resolve_answer_is_pinned() {
    use vztmpld::daemon::resolve_api::Resolution;
    let cached = Resolution {
        cluster: "lab".into(),
        node: "pve1".into(),
        template: "alpine-3.22".into(),
        state: "cached".into(),
        configured: true,
        volid: Some(format!("local:vztmpl/{ALPINE}")),
        storage: Some("local".into()),
        size: Some(3_280_348),
        observed_at: Some("2026-12-01T10:00:00Z".parse().unwrap()),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_value(&cached).unwrap(),
        json!({"cluster": "lab", "node": "pve1", "template": "alpine-3.22", "state": "cached", "configured": true,
               "volid": format!("local:vztmpl/{ALPINE}"), "storage": "local", "size": 3_280_348,
               "observed_at": "2026-12-01T10:00:00Z"})
    );
    let downloading = Resolution {
        cluster: "lab".into(),
        node: "pve2".into(),
        template: "debian-12".into(),
        state: "downloading".into(),
        configured: true,
        upid: Some("UPID:pve2:1".into()),
        progress: Some(42),
        bytes_done: Some(42),
        bytes_total: Some(100),
        eta_seconds: Some(3),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_value(&downloading).unwrap(),
        json!({"cluster": "lab", "node": "pve2", "template": "debian-12", "state": "downloading", "configured": true,
               "upid": "UPID:pve2:1", "progress": 42, "bytes_done": 42, "bytes_total": 100, "eta_seconds": 3})
    );
    let blocked = Resolution {
        state: "blocked".into(),
        reason: Some("node pve3 is offline".into()),
        next_retry: Some("2026-12-01T10:00:05Z".parse().unwrap()),
        ..Default::default()
    };
    let v = serde_json::to_value(&blocked).unwrap();
    assert_eq!((&v["reason"], &v["next_retry"]), (&json!("node pve3 is offline"), &json!("2026-12-01T10:00:05Z")));
}
