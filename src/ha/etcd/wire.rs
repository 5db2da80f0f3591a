//! etcd's JSON-gateway answers as types. In this JSON, 64-bit integers are strings and fields at their zero
//! value are omitted, so every field has a default; keys and values are base64.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Deserializer};

/// etcd's own guard against client certificates with a Common Name on the gateway (`embed/serve.go`): a plain
/// text 400, not the gateway's JSON.
const COMMON_NAME_GUARD: &str =
    "CommonName of client sending a request against gateway will be ignored and not used as expected";

/// The gRPC status codes vztmpld acts on (`google.golang.org/grpc/codes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcCode {
    /// 3: a bad request, or a wrong user name or password.
    InvalidArgument,
    /// 5: e.g. `etcdserver: requested lease not found`.
    NotFound,
    /// 7: the user lacks a permission on the key.
    PermissionDenied,
    /// 14: the member cannot serve (no leader, stopping).
    Unavailable,
    /// 16: `etcdserver: invalid auth token` (simple tokens expire).
    Unauthenticated,
    /// Any other code.
    Other(i64),
}

impl GrpcCode {
    fn from_number(n: i64) -> Self {
        match n {
            3 => GrpcCode::InvalidArgument,
            5 => GrpcCode::NotFound,
            7 => GrpcCode::PermissionDenied,
            14 => GrpcCode::Unavailable,
            16 => GrpcCode::Unauthenticated,
            n => GrpcCode::Other(n),
        }
    }
}

/// What the gateway answered, before the caller reads its fields.
#[derive(Debug)]
pub(super) enum Answer<'a> {
    /// A success: the JSON object asked for.
    Ok(&'a str),
    /// etcd refused the call: its gRPC code and message.
    Refused { code: Option<GrpcCode>, message: String },
    /// The Common Name guard.
    CommonNameRefused,
}

/// A unary error (`{"code":5,"message":…}`) or a stream's (`{"error":{"grpc_code":5,"message":…}}`).
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    error: Option<StreamError>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StreamError {
    Detail {
        #[serde(default)]
        grpc_code: Option<i64>,
        #[serde(default)]
        message: Option<String>,
    },
    Text(String),
}

/// Reads an answer: the first JSON line of `body` (streaming calls answer one object per line), a refusal with
/// its code, or the Common Name guard. `Err` with a description when the body is none of these.
pub(super) fn read(status: u16, body: &[u8]) -> Result<Answer<'_>, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("HTTP {status}, not UTF-8: {e}"))?;
    if status == 400 && text.trim() == COMMON_NAME_GUARD {
        return Ok(Answer::CommonNameRefused);
    }
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
    let error: ErrorBody = serde_json::from_str(first).map_err(|e| {
        let shown: String = text.chars().take(200).collect();
        format!("HTTP {status}, not JSON ({e}): {shown}")
    })?;
    let (stream_code, stream_message) = match error.error {
        Some(StreamError::Detail { grpc_code, message }) => (grpc_code, message),
        Some(StreamError::Text(t)) => (None, Some(t)),
        None => (None, None),
    };
    let failed = !(200..300).contains(&status) || stream_code.is_some() || stream_message.is_some();
    if !failed {
        return Ok(Answer::Ok(first));
    }
    let code = error.code.or(stream_code).map(GrpcCode::from_number);
    let message = error.message.or(stream_message).unwrap_or_else(|| "no message".into());
    Ok(Answer::Refused { code, message: format!("HTTP {status}: {message}") })
}

/// An int64 as the gateway writes it (a string), or as a number; absent is 0.
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Text(String),
        Number(i64),
    }
    match Option::<Int>::deserialize(d)? {
        None => Ok(0),
        Some(Int::Number(n)) => Ok(n),
        Some(Int::Text(s)) => s.parse().map_err(serde::de::Error::custom),
    }
}

/// Base64 bytes; absent is empty.
fn base64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(Vec::new()),
        Some(s) => B64.decode(s).map_err(|e| serde::de::Error::custom(format!("not base64: {e}"))),
    }
}

/// `POST /v3/lease/grant`.
#[derive(Debug, Deserialize)]
pub(super) struct LeaseGrant {
    #[serde(rename = "ID", default, deserialize_with = "int64")]
    pub(super) id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    pub(super) ttl: i64,
}

/// `POST /v3/lease/keepalive`: through the gateway, one `{"result": …}` per request.
#[derive(Debug, Deserialize)]
pub(super) struct KeepAlive {
    #[serde(default)]
    pub(super) result: Option<LeaseTtl>,
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    pub(super) ttl: i64,
}

/// A lease's remaining TTL.
#[derive(Debug, Deserialize)]
pub(super) struct LeaseTtl {
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    pub(super) ttl: i64,
}

impl KeepAlive {
    /// The remaining TTL (0 or less: etcd no longer has the lease).
    pub(super) fn ttl(&self) -> i64 {
        self.result.as_ref().map_or(self.ttl, |r| r.ttl)
    }
}

/// `POST /v3/kv/range` (and a transaction's `response_range`).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Range {
    #[serde(default)]
    pub(super) kvs: Vec<KeyValue>,
}

/// One key of a range.
#[derive(Debug, Deserialize)]
pub(super) struct KeyValue {
    #[serde(default, deserialize_with = "base64")]
    pub(super) value: Vec<u8>,
    #[serde(default, deserialize_with = "int64")]
    pub(super) lease: i64,
}

/// `POST /v3/kv/txn`.
#[derive(Debug, Deserialize)]
pub(super) struct Txn {
    #[serde(default)]
    pub(super) succeeded: bool,
    #[serde(default)]
    pub(super) responses: Vec<TxnResponse>,
}

/// One operation's answer in a transaction.
#[derive(Debug, Deserialize)]
pub(super) struct TxnResponse {
    #[serde(default)]
    pub(super) response_range: Option<Range>,
}

/// `POST /v3/auth/authenticate`.
#[derive(Debug, Deserialize)]
pub(super) struct Authenticated {
    pub(super) token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int64_fields_come_as_strings_or_not_at_all() {
        let g: LeaseGrant =
            serde_json::from_str(r#"{"header":{},"ID":"7587","TTL":"10"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((g.id, g.ttl), (7587, 10));
        let k: KeepAlive = serde_json::from_str(r#"{"result":{"ID":"1"}}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k.ttl(), 0, "an expired lease's keepalive has no TTL");
    }

    #[test]
    fn refusals_carry_their_grpc_code() {
        let unary = br#"{"error":"etcdserver: requested lease not found","code":5,"message":"etcdserver: requested lease not found"}"#;
        assert!(matches!(read(404, unary), Ok(Answer::Refused { code: Some(GrpcCode::NotFound), .. })));
        let stream = br#"{"error":{"grpc_code":16,"http_code":401,"message":"etcdserver: invalid auth token","http_status":"Unauthorized"}}"#;
        assert!(matches!(read(200, stream), Ok(Answer::Refused { code: Some(GrpcCode::Unauthenticated), .. })));
        let guard = format!("{COMMON_NAME_GUARD}\n");
        assert!(matches!(read(400, guard.as_bytes()), Ok(Answer::CommonNameRefused)));
        assert!(matches!(read(200, b"{\"kvs\":[]}\n"), Ok(Answer::Ok(_))));
        assert!(read(502, b"<html>").is_err());
    }

    #[test]
    fn a_range_decodes_its_base64() {
        let r: Range = serde_json::from_str(r#"{"kvs":[{"key":"YQ==","value":"aGk=","lease":"42"}]}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.kvs[0].value.as_slice(), r.kvs[0].lease), (&b"hi"[..], 42));
    }
}
