//! Wire shapes of exactly the endpoints vztmpld uses, decoded leniently: Perl sends numbers and booleans as
//! numbers, strings or JSON booleans, adds fields freely and omits optional ones.

use std::collections::BTreeMap;

use serde::de::Visitor;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// `{"data": T, "total"?: N}`.
#[derive(Debug, Deserialize)]
pub struct Envelope<T> {
    pub data: T,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub total: Option<u64>,
}

/// An error body (PVE ≥ 8.3 has `message`; every version may have `errors`).
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub errors: Option<BTreeMap<String, Value>>,
}

/// A node row of `GET /cluster/resources?type=node`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterNode {
    pub node: String,
    /// `status` is `online`.
    #[serde(default, rename = "status", deserialize_with = "is_online")]
    pub online: bool,
    #[serde(default, rename = "host-arch")]
    pub host_arch: Option<String>,
}

/// A row of `GET /nodes`.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeListItem {
    pub node: String,
    /// SHA-256 of the node's API certificate, `AA:BB:…`.
    #[serde(default)]
    pub ssl_fingerprint: Option<String>,
}

/// A storage row of `GET /cluster/resources?type=storage` (one per storage and node).
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterStorage {
    pub storage: String,
    pub node: String,
    /// `status` is `available` (the storage is active on the node).
    #[serde(default, rename = "status", deserialize_with = "is_available")]
    pub available: bool,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub shared: Option<bool>,
    /// `content` lists `vztmpl`.
    #[serde(default, rename = "content", deserialize_with = "holds_vztmpl")]
    pub vztmpl: bool,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub disk: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub maxdisk: Option<u64>,
}

/// A volume of `GET /nodes/{node}/storage/{storage}/content`.
#[derive(Debug, Clone, Deserialize)]
pub struct StorageVolume {
    pub volid: String,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub size: Option<u64>,
    #[serde(default)]
    pub content: Option<String>,
}

/// An appliance of `GET /nodes/{node}/aplinfo`.
#[derive(Debug, Clone, Deserialize)]
pub struct Appliance {
    /// The file name (never construct it from package and version).
    pub template: String,
    #[serde(default)]
    pub package: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub sha512sum: Option<String>,
    #[serde(default)]
    pub md5sum: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskStatus {
    pub status: String,
    #[serde(default)]
    pub exitstatus: Option<String>,
}

impl TaskStatus {
    /// Whether the task has ended.
    pub fn is_stopped(&self) -> bool {
        self.status == "stopped"
    }

    /// How the task ended (meaningful once it is stopped).
    pub fn exit(&self) -> super::exit::TaskExit {
        super::exit::TaskExit::parse(self.exitstatus.as_deref())
    }

    /// Proxmox's `status_is_error` inverted: `OK` or `WARNINGS: N` count as success.
    pub fn succeeded(&self) -> bool {
        !matches!(self.exit(), super::exit::TaskExit::Failed(_))
    }
}

/// A line of `GET /nodes/{node}/tasks/{upid}/log`.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskLogLine {
    #[serde(default, deserialize_with = "lenient_u64")]
    pub n: Option<u64>,
    #[serde(default)]
    pub t: String,
}

/// An item of `GET /nodes/{node}/tasks`.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskListItem {
    pub upid: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
}

/// `GET /access/permissions`: path → privilege → propagate.
pub type Permissions = BTreeMap<String, BTreeMap<String, Value>>;

// The views are decoded every pass (a row per node, and per storage and node): their status and content
// strings are tested as they are read, never kept (or allocated).

fn is_online<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    d.deserialize_any(StrTest(|s| s == "online"))
}

fn is_available<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    d.deserialize_any(StrTest(|s| s == "available"))
}

fn holds_vztmpl<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    d.deserialize_any(StrTest(|s| s.split(',').any(|c| c.trim() == "vztmpl")))
}

/// A string field decoded into what a test says of it; `null` is `false`, any other type an error (as it was
/// for the string the field used to be).
struct StrTest(fn(&str) -> bool);

impl Visitor<'_> for StrTest {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<bool, E> {
        Ok((self.0)(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Number(n)) => n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Some(Value::String(s)) => s
            .trim()
            .parse::<u64>()
            .ok()
            .or_else(|| s.trim().parse::<f64>().ok().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f as u64)),
        // Proxmox never sends a count or a size as a JSON boolean: treat one as unknown, not as 0 or 1.
        _ => None,
    })
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Bool(b)) => Some(b),
        Some(Value::Number(n)) => Some(n.as_f64().is_some_and(|f| f != 0.0)),
        Some(Value::String(s)) => match s.trim() {
            "1" | "true" | "yes" | "on" => Some(true),
            "0" | "false" | "no" | "off" | "" => Some(false),
            _ => None,
        },
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_booleans_decode_from_any_shape() {
        let rows: Vec<ClusterStorage> = serde_json::from_str(
            r#"[{"storage":"a","node":"n","shared":1,"disk":"5","maxdisk":10.0},
                {"storage":"b","node":"n","shared":"0","disk":7,"extra":{"x":1}},
                {"storage":"c","node":"n","shared":true}]"#,
        )
        .unwrap();
        assert_eq!((rows[0].shared, rows[0].disk, rows[0].maxdisk), (Some(true), Some(5), Some(10)));
        assert_eq!((rows[1].shared, rows[1].disk), (Some(false), Some(7)));
        assert_eq!((rows[2].shared, rows[2].disk), (Some(true), None));
    }

    #[test]
    fn sizes_of_the_wrong_type_are_unknown_not_zero_or_one() {
        let rows: Vec<ClusterStorage> = serde_json::from_str(
            r#"[{"storage":"a","node":"n","disk":true,"maxdisk":false},
                {"storage":"b","node":"n","disk":"-5","maxdisk":"lots"},
                {"storage":"c","node":"n","disk":"NaN","maxdisk":[1]}]"#,
        )
        .unwrap();
        for r in rows {
            assert_eq!((r.disk, r.maxdisk), (None, None), "{}", r.storage);
        }
    }

    #[test]
    fn view_strings_decode_into_what_is_tested_of_them() {
        let rows: Vec<ClusterStorage> = serde_json::from_str(
            r#"[{"storage":"a","node":"n","status":"available","content":"iso, vztmpl"},
                {"storage":"b","node":"n","status":"unknown","content":"images,rootdir"},
                {"storage":"c","node":"n","status":null},
                {"storage":"d","node":"n","status":"av\u0061ilable","content":"vztmpl"}]"#,
        )
        .unwrap();
        let got: Vec<(bool, bool)> = rows.iter().map(|r| (r.available, r.vztmpl)).collect();
        assert_eq!(got, [(true, true), (false, false), (false, false), (true, true)]);
        let nodes: Vec<ClusterNode> =
            serde_json::from_str(r#"[{"node":"a","status":"online"},{"node":"b","status":"offline"},{"node":"c"}]"#)
                .unwrap();
        assert_eq!(nodes.iter().map(|n| n.online).collect::<Vec<_>>(), [true, false, false]);
        let wrong = serde_json::from_str::<Vec<ClusterNode>>(r#"[{"node":"a","status":1}]"#).unwrap_err();
        assert!(wrong.to_string().contains("expected a string"), "{wrong}");
    }

    #[test]
    fn task_success_follows_proxmox() {
        let t = |s: &str| TaskStatus { status: "stopped".into(), exitstatus: Some(s.into()) };
        assert!(t("OK").succeeded());
        assert!(t("WARNINGS: 2").succeeded());
        assert!(!t("unexpected status").succeeded());
        assert!(!t("checksum mismatch: got 'a' != expect 'b'").succeeded());
    }
}
