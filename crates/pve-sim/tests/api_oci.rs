//! `oci-registry-pull` as pve-storage's `Status.pm` defines it: the reference pattern, both privileges, the
//! checks before the worker (skopeo, file-based storage, vztmpl content, an existing file), the worker's type,
//! id, log and result, and an unknown image failing as skopeo does.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

use pve_sim::testing::TestSim;

const PULL: &str = "/nodes/pve1/storage/local/oci-registry-pull";

#[tokio::test]
async fn the_endpoint_behaves_like_pve_storage() {
    let sim = TestSim::with("oci_images: {\"docker.io/library/alpine:3.22\": 5000}").await;
    // The reference must end in :tag; no digest.
    for bad in ["docker.io/library/alpine", "alpine@sha256:0123", "Alpine:3"] {
        let a = sim.post(PULL, &[("reference", bad)]).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert!(a.json["errors"]["reference"].is_string(), "{}", a.body);
    }
    // A storage that is not file based, or has no vztmpl content.
    let a = sim.post("/nodes/pve1/storage/local-lvm/oci-registry-pull", &[("reference", "alpine:1")]).await;
    assert_eq!(a.status, 500);
    assert!(a.body.contains("not a file based storage"), "{}", a.body);

    let a = sim.post(PULL, &[("reference", "docker.io/library/alpine:3.22")]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let upid = a.data().as_str().unwrap().to_string();
    assert!(upid.contains(":ociregistrypull:alpine_3.22.tar:"), "type and id: {upid}");
    let status = sim.wait_task(&upid).await;
    assert_eq!(status["exitstatus"], "OK");
    assert!(sim.task_log(&upid).await.iter().any(|l| l.contains("Writing manifest to image destination")));
    assert_eq!(sim.volids("pve1", "local").await, ["local:vztmpl/alpine_3.22.tar"]);

    // The same file again is refused before any worker starts.
    let a = sim.post(PULL, &[("reference", "docker.io/library/alpine:3.22")]).await;
    assert_eq!(a.status, 500);
    assert!(a.body.contains("refusing to override existing file 'alpine_3.22.tar'"), "{}", a.body);
    // A custom file name is normalised and gets .tar.
    let a = sim.post(PULL, &[("reference", "docker.io/library/alpine:3.22"), ("filename", "my base")]).await;
    let upid = a.data().as_str().unwrap().to_string();
    sim.wait_task(&upid).await;
    assert!(sim.volids("pve1", "local").await.contains(&"local:vztmpl/my_base.tar".to_string()));

    // An image the registry does not have: the task fails as skopeo does.
    let a = sim.post(PULL, &[("reference", "docker.io/library/nosuch:1")]).await;
    let upid = a.data().as_str().unwrap().to_string();
    let status = sim.wait_task(&upid).await;
    let exit = status["exitstatus"].as_str().unwrap();
    assert!(
        exit.starts_with("command 'skopeo copy docker://docker.io/library/nosuch:1") && exit.ends_with("exit code 1"),
        "{exit}"
    );
}

#[tokio::test]
async fn both_privileges_and_skopeo_are_required() {
    let sim = TestSim::with(
        "skopeo: false\ntokens:\n  - id: \"vztmpld@pve!cache\"\n    acl: [{path: /, privs: [Sys.Audit, Sys.Modify, Datastore.AllocateTemplate]}]\n",
    )
    .await;
    // Sys.Audit + Sys.Modify on / is not an alternative to Sys.AccessNetwork here.
    let a = sim.post(PULL, &[("reference", "alpine:3")]).await;
    assert_eq!(a.status, 403, "{}", a.body);
    let sim = TestSim::with("skopeo: false").await;
    let a = sim.post(PULL, &[("reference", "alpine:3")]).await;
    assert_eq!(a.status, 500);
    assert!(a.body.contains("Install 'skopeo' to pull OCI images from registries."), "{}", a.body);
}
