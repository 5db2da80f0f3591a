//! `prune: {keep: N}`: superseded builds are deleted on the storage vztmpld fills — the newest N kept, never a
//! file another configured template matches, never before the newest is there — in the same apply that
//! brings the newest, so apply then plan is empty.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

use common::{TestSim, fast_options, write_config};
use vztmpld::reconcile::Fleet;
use vztmpld::reconcile::apply;
use vztmpld::reconcile::{Failure, Outcome};

const NEWEST: &str = "debian-12-standard_12.12-1_amd64.tar.zst";
const OLD: &str = "debian-12-standard_12.2-1_amd64.tar.zst";
const OLDER: &str = "debian-12-standard_12.0-1_amd64.tar.zst";

/// pve1's `local` holds two old builds; the index's newest is 12.12-1.
async fn sim(extra: &str) -> TestSim {
    TestSim::with(&format!(
        "storages: [{{id: local, content: [vztmpl]}}]\ntemplates:\n  - {{storage: local, node: pve1, file: {OLD}}}\n  - {{storage: local, node: pve1, file: {OLDER}}}\n{extra}"
    ))
    .await
}

fn fleet(sim: &TestSim, templates: &str) -> Fleet {
    let cfg = write_config(&sim.server, "nodes: [pve1]\nstorage: local\n", &format!("templates:\n{templates}"));
    Fleet::new(vztmpld::config::load(&cfg).unwrap(), fast_options()).unwrap()
}

const KEEP_2: &str = "  - template: debian-12-standard\n    policy: latest\n    prune: {keep: 2}\n";

#[tokio::test]
async fn keeps_the_newest_n_and_deletes_the_rest_in_the_same_apply() {
    let sim = sim("").await;
    let fleet = fleet(&sim, KEEP_2);
    let plan = fleet.plan().await;
    assert_eq!(plan.downloads.len(), 1);
    assert_eq!(plan.deletions.len(), 1, "{:?}", plan.deletions);
    let d = &plan.deletions[0];
    assert_eq!(d.volid, format!("local:vztmpl/{OLDER}"));
    assert_eq!(d.kept, [format!("local:vztmpl/{NEWEST}"), format!("local:vztmpl/{OLD}")]);
    assert_eq!(d.after, Some(0), "deleted only once the newest arrived");

    let outcomes = apply::apply(&fleet, &plan, None).await;
    assert!(outcomes.iter().all(Outcome::succeeded), "{outcomes:?}");
    let mut files = sim.volids("pve1", "local").await;
    files.sort();
    assert_eq!(files, [format!("local:vztmpl/{NEWEST}"), format!("local:vztmpl/{OLD}")]);
    let again = fleet.plan().await;
    assert!(again.downloads.is_empty() && again.deletions.is_empty(), "apply then plan is empty: {again:?}");
}

#[tokio::test]
async fn nothing_is_deleted_while_the_newest_is_not_there() {
    let sim = sim(&format!("download_faults: [{{template: {NEWEST}, kind: corrupt}}]\n")).await;
    let fleet = fleet(&sim, "  - template: debian-12-standard\n    policy: latest\n    prune: {keep: 1}\n");
    let plan = fleet.plan().await;
    assert_eq!(plan.deletions.len(), 2);
    let outcomes = apply::apply(&fleet, &plan, None).await;
    match &outcomes[1..] {
        [Outcome::Failed { failure: a, .. }, Outcome::Failed { failure: b, .. }] => {
            assert_eq!((a, b), (&Failure::AwaitedDownloadFailed, &Failure::AwaitedDownloadFailed));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.volids("pve1", "local").await.len(), 2, "both old builds stay");
    assert!(sim.stats().await["requests"].get("DELETE /nodes/{node}/storage/{storage}/content/{volume}").is_none());
}

#[tokio::test]
async fn a_file_another_template_wants_is_never_deleted() {
    let sim = sim("").await;
    let templates =
        format!("  - template: debian-12-standard\n    policy: latest\n    prune: {{keep: 1}}\n  - template: {OLD}\n");
    let fleet = fleet(&sim, &templates);
    let plan = fleet.plan().await;
    let doomed: Vec<&str> = plan.deletions.iter().map(|d| d.volid.as_str()).collect();
    assert_eq!(doomed, [format!("local:vztmpl/{OLDER}")], "{OLD} is configured by name");
    apply::apply(&fleet, &plan, None).await;
    let again = fleet.plan().await;
    assert!(again.deletions.is_empty(), "{:?}", again.deletions);
    assert!(sim.volids("pve1", "local").await.contains(&format!("local:vztmpl/{OLD}")));
}

#[tokio::test]
async fn the_delete_privilege_is_named_and_plan_lists_deletions() {
    let sim = sim(
        "tokens:\n  - id: \"vztmpld@pve!cache\"\n    acl: [{path: /storage, privs: [Datastore.Audit, Datastore.AllocateTemplate]}, {path: /nodes, privs: [Sys.Audit]}]\n",
    )
    .await;
    let cfg = write_config(&sim.server, "nodes: [pve1]\nstorage: local\n", &format!("templates:\n{KEEP_2}"));
    let (code, out, err) = common::vztmpld_async(vec!["plan".into(), "-c".into(), cfg.display().to_string()]).await;
    assert_eq!(code, 2, "a download is pending: {out}{err}");
    assert!(out.contains("blocked") && out.contains("Datastore.Allocate on /storage/local"), "{out}");
    assert!(out.contains(OLDER), "{out}");
    let args = vec!["plan".into(), "-c".into(), cfg.display().to_string(), "--output".into(), "json".into()];
    let (_, json, _) = common::vztmpld_async(args).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["deletions"][0],
        serde_json::json!({"cluster": "lab", "node": "pve1", "storage": "local", "shared": false,
            "volid": format!("local:vztmpl/{OLDER}"), "template": "debian-12-standard",
            "kept": [format!("local:vztmpl/{NEWEST}"), format!("local:vztmpl/{OLD}")],
            "blocked": "deleting needs Datastore.Allocate on /storage/local (AllocateTemplate is not enough); grant it, or remove prune",
            "after": 0}),
        "the JSON contract of a deletion"
    );
    let (code, out, _) = common::vztmpld_async(vec!["apply".into(), "-c".into(), cfg.display().to_string()]).await;
    assert_eq!(code, 1, "the deletion stays blocked: {out}");
    assert!(sim.volids("pve1", "local").await.contains(&format!("local:vztmpl/{OLDER}")));
}

#[tokio::test]
async fn a_build_another_writer_deleted_first_is_already_absent_not_present() {
    let sim = sim("").await;
    let fleet = fleet(&sim, KEEP_2);
    let plan = fleet.plan().await;
    assert_eq!(plan.deletions.len(), 1);
    // Another writer deletes the old build between the plan and the apply.
    let volid = format!("local:vztmpl/{OLDER}");
    let answer = sim.delete(&format!("/nodes/pve1/storage/local/content/{volid}")).await;
    let upid = answer.data().as_str().expect("a UPID").to_string();
    sim.wait_task(&upid).await;
    let outcomes = apply::apply(&fleet, &plan, None).await;
    assert!(matches!(outcomes[0], Outcome::Finished { .. }), "{outcomes:?}");
    assert_eq!(outcomes[1], Outcome::AlreadyAbsent, "the deletion's task said the volume does not exist");
    assert!(outcomes[1].succeeded());
}
