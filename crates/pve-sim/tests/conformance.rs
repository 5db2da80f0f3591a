//! Conformance: the simulator's answers checked against the shapes recorded in `shared/pve-api.md`
//! (envelopes, field sets, value types, UPID and fingerprint formats) and its built-in index against
//! Proxmox's real shipped index (`shared/fixtures/aplinfo-pve-9.dat`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

use std::collections::{BTreeMap, BTreeSet};

use pve_sim::testing::{ALPINE, TestSim, encode, fixture};
use serde_json::{Map, Value};

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap_or(&Map::new()).keys().cloned().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn is_bool01(v: &Value) -> bool {
    v == 0 || v == 1
}

/// `([A-F0-9]{2}:){31}[A-F0-9]{2}` (pve-api.md §1, as the GUI shows it).
fn is_fingerprint(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 32
        && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)))
}

/// `UPID:<node>:<pid %08X>:<pstart 8-9 hex>:<starttime %08X>:<type>:<id>:<user>:` (pve-api.md §8).
fn is_upid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("UPID:").and_then(|r| r.strip_suffix(':')) else { return false };
    let f: Vec<&str> = rest.splitn(7, ':').collect();
    let hex = |x: &str, n: &[usize]| {
        n.contains(&x.len()) && x.chars().all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
    };
    f.len() == 7
        && !f[0].is_empty()
        && hex(f[1], &[8])
        && hex(f[2], &[8, 9])
        && hex(f[3], &[8])
        && !f[4].is_empty()
        && !f[5].contains(['/', ' '])
        && f[6].contains('@')
}

#[tokio::test]
async fn envelopes_and_headers() {
    let sim = TestSim::start().await;
    let ok = sim.get("/nodes").await;
    assert_eq!(keys(&ok.json), set(&["data"]));
    assert_eq!(ok.headers["content-type"], "application/json;charset=UTF-8");
    assert_eq!(ok.headers["cache-control"], "max-age=0");
    assert_eq!(ok.headers["pragma"], "no-cache");
    let list = sim.get_query("/nodes/pve1/tasks", &[("source", "all")]).await;
    assert_eq!(keys(&list.json), set(&["data", "total"]));

    let e400 = sim.get_query("/nodes/pve1/storage", &[("enabled", "yes")]).await;
    assert_eq!(keys(&e400.json), set(&["data", "message", "errors"]));
    assert!(e400.json["data"].is_null());
    assert_eq!(e400.json["message"], "Parameter verification failed.\n");
    assert_eq!(e400.headers["connection"], "close");
    let e500 = sim.get("/nodes/pve1/storage/missing/content").await;
    assert_eq!(keys(&e500.json), set(&["data", "message"]));
    assert!(e500.json["message"].as_str().unwrap().ends_with('\n'));
    let e501 = sim.get("/cluster/nothing").await;
    assert_eq!(e501.status, 501);
    assert_eq!(keys(&e501.json), set(&["data", "message"]));
    let e401 = sim.get_with_auth("/nodes", None).await;
    assert_eq!((e401.status.as_u16(), e401.body.as_str()), (401, ""));
}

#[tokio::test]
async fn version_shape() {
    let sim = TestSim::start().await;
    let v = sim.get("/version").await;
    assert!(set(&["version", "release", "repoid"]).is_subset(&keys(v.data())));
}

#[tokio::test]
async fn node_shapes() {
    let sim = TestSim::start().await;
    for n in sim.get("/nodes").await.data().as_array().unwrap() {
        assert!(set(&["id", "type", "node", "status", "level", "ssl_fingerprint"]).is_subset(&keys(n)));
        assert!(is_fingerprint(n["ssl_fingerprint"].as_str().unwrap()));
        assert!(["online", "offline", "unknown"].contains(&n["status"].as_str().unwrap()));
        assert!(n["cpu"].is_f64() && n["maxmem"].is_u64() && n["uptime"].is_u64());
    }
    let res = sim.get_query("/cluster/resources", &[("type", "node")]).await;
    for n in res.data().as_array().unwrap() {
        assert!(["x86_64", "aarch64"].contains(&n["host-arch"].as_str().unwrap()));
        assert_eq!(n["type"], "node");
    }
    let res = sim.get_query("/cluster/resources", &[("type", "storage")]).await;
    for s in res.data().as_array().unwrap() {
        let expect =
            set(&["id", "storage", "node", "type", "plugintype", "status", "shared", "content", "disk", "maxdisk"]);
        assert_eq!(keys(s), expect);
        assert_eq!(s["id"], format!("storage/{}/{}", s["node"].as_str().unwrap(), s["storage"].as_str().unwrap()));
        assert!(is_bool01(&s["shared"]));
        assert!(["available", "unknown"].contains(&s["status"].as_str().unwrap()));
    }
}

#[tokio::test]
async fn storage_and_content_shapes() {
    let sim = TestSim::with(&format!(
        "templates: [{{storage: shared, file: {ALPINE}}}, {{storage: shared, file: Debian-12-standard_12.12-1_amd64.tar.zst}}, {{storage: shared, file: archlinux-base_20260420-1_amd64.tar.zst}}]"
    ))
    .await;
    for s in sim.get("/nodes/pve1/storage").await.data().as_array().unwrap() {
        let base = set(&["storage", "type", "content", "enabled", "active", "shared", "total", "used", "avail"]);
        assert!(base.is_subset(&keys(s)), "{s}");
        assert!(is_bool01(&s["enabled"]) && is_bool01(&s["active"]) && is_bool01(&s["shared"]));
        assert!(s["total"].is_u64() && s["used"].is_u64() && s["avail"].is_u64());
    }
    let content = sim.get_query("/nodes/pve1/storage/shared/content", &[("content", "vztmpl")]).await;
    let rows = content.data().as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for v in rows {
        assert_eq!(keys(v), set(&["volid", "format", "size", "ctime", "content"]));
        assert!(["tar", "tgz", "txz", "tzst", "tbz2"].contains(&v["format"].as_str().unwrap()));
        assert!(v["volid"].as_str().unwrap().starts_with("shared:vztmpl/"));
    }
    let volids: Vec<String> = rows.iter().map(|v| v["volid"].as_str().unwrap().to_lowercase()).collect();
    let mut sorted = volids.clone();
    sorted.sort();
    assert_eq!(volids, sorted, "sorted by lower-case volid");
}

#[tokio::test]
async fn aplinfo_entry_shape() {
    let sim = TestSim::start().await;
    let entries = sim.get("/nodes/pve1/aplinfo").await;
    for e in entries.data().as_array().unwrap() {
        let expect = set(&[
            "package",
            "version",
            "type",
            "os",
            "section",
            "maintainer",
            "architecture",
            "location",
            "md5sum",
            "sha512sum",
            "infopage",
            "headline",
            "description",
            "source",
            "template",
        ]);
        assert_eq!(keys(e), expect, "{e}");
        assert!(e.as_object().unwrap().values().all(Value::is_string));
        let location = e["location"].as_str().unwrap();
        assert!(location.starts_with(e["source"].as_str().unwrap()));
        assert!(location.ends_with(&format!("/{}", e["template"].as_str().unwrap())));
        assert_eq!(e["sha512sum"].as_str().unwrap().len(), 128);
        assert_eq!(e["md5sum"].as_str().unwrap().len(), 32);
        assert_ne!(e["package"], "pve-web-news");
    }
}

#[tokio::test]
async fn task_shapes() {
    let sim = TestSim::start().await;
    let upid = sim.download("pve2", "local", ALPINE).await;
    assert!(is_upid(&upid), "{upid}");
    let status = sim.wait_task(&upid).await;
    let expect =
        set(&["upid", "node", "pid", "pstart", "starttime", "type", "id", "user", "tokenid", "status", "exitstatus"]);
    assert_eq!(keys(&status), expect);
    assert_eq!(status["upid"], upid);
    assert_eq!(status["node"], "pve2");
    let list = sim.get("/nodes/pve2/tasks").await;
    let item = &list.data()[0];
    let expect =
        set(&["upid", "node", "pid", "pstart", "starttime", "type", "id", "user", "tokenid", "endtime", "status"]);
    assert_eq!(keys(item), expect);
    let log = sim.get(&format!("/nodes/pve2/tasks/{}/log", encode(&upid))).await;
    assert_eq!(keys(&log.json), set(&["data", "total"]));
    for line in log.data().as_array().unwrap() {
        assert_eq!(keys(line), set(&["n", "t"]));
    }
}

#[tokio::test]
async fn permissions_shape() {
    let sim = TestSim::start().await;
    let a = sim.get("/access/permissions").await;
    for (path, privs) in a.data().as_object().unwrap() {
        assert!(path.starts_with('/'));
        assert!(privs.as_object().unwrap().values().all(is_bool01));
    }
    let a = sim.get_query("/access/permissions", &[("path", "/storage/local")]).await;
    assert_eq!(keys(a.data()), set(&["/storage/local"]));
}

/// The fixture parsed independently of the simulator's parser: package → fields.
fn fixture_records(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for record in text.split("\n\n") {
        let mut fields = BTreeMap::new();
        for line in record.lines() {
            if line.starts_with([' ', '\t']) {
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                fields.insert(k.to_lowercase(), v.trim().to_string());
            }
        }
        if let Some(p) = fields.get("package").cloned() {
            out.insert(p, fields);
        }
    }
    out
}

#[tokio::test]
async fn builtin_index_is_modelled_on_the_real_pve9_index() {
    let Some(path) = fixture("aplinfo-pve-9.dat") else { return };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let real = fixture_records(&text);
    let sim = TestSim::start().await;
    let entries = sim.get("/nodes/pve1/aplinfo").await;
    for e in entries.data().as_array().unwrap() {
        let package = e["package"].as_str().unwrap();
        let r = real.get(package).unwrap_or_else(|| panic!("{package} is not in the real index"));
        for field in ["version", "type", "os", "section", "maintainer", "architecture", "infopage"] {
            assert_eq!(e[field].as_str(), r.get(field).map(String::as_str), "{package}.{field}");
        }
        assert_eq!(e["headline"].as_str(), r.get("description").map(String::as_str), "{package}.headline");
        let file = r["location"].rsplit('/').next().unwrap();
        assert_eq!(e["template"], file, "{package}.template");
    }
}
