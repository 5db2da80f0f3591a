//! Proxmox's HTTP conventions: the `{"data":..}` envelope, error statuses with the message in the
//! reason phrase (and, since PVE 8.3, in the body), and parameter parsing and validation.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

/// An error answer, shaped as pveproxy would send it.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: u16,
    /// Full message; its first line becomes the reason phrase.
    pub message: String,
    /// Per-parameter errors (400 `Parameter verification failed.`).
    pub errors: BTreeMap<String, String>,
    /// 401 and 59x answers carry no body at all.
    pub empty_body: bool,
}

impl ApiError {
    /// A handler's `die`: status 500 with the message.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::with_status(500, message)
    }

    /// Any status with a JSON body.
    pub(crate) fn with_status(status: u16, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), errors: BTreeMap::new(), empty_body: false }
    }

    /// 400 with per-parameter errors.
    pub(crate) fn params(errors: BTreeMap<String, String>) -> Self {
        Self { status: 400, message: "Parameter verification failed.".into(), errors, empty_body: false }
    }

    /// 400 for one parameter.
    pub(crate) fn param(name: &str, message: impl Into<String>) -> Self {
        Self::params(BTreeMap::from([(name.to_string(), message.into())]))
    }

    /// 401: empty body, reason only in the status line.
    pub(crate) fn unauthorized(reason: &str) -> Self {
        Self { status: 401, message: reason.into(), errors: BTreeMap::new(), empty_body: true }
    }

    /// 403 from a failed permission check on `path` for `privs` (joined with `|` for any-of checks).
    pub(crate) fn permission(path: &str, privs: &str) -> Self {
        Self::with_status(403, format!("Permission check failed ({path}, {privs})"))
    }

    /// 403 from a failed composite (`or`) check, which names nothing.
    pub(crate) fn permission_plain() -> Self {
        Self::with_status(403, "Permission check failed")
    }

    /// 501 for a path or method that does not exist.
    pub(crate) fn not_implemented(method: &str, path: &str) -> Self {
        Self::with_status(501, format!("Method '{method} {path}' not implemented"))
    }

    /// A 595 from pveproxy when the node it forwards to cannot be reached.
    pub(crate) fn unreachable(reason: &str) -> Self {
        Self { status: 595, message: reason.into(), errors: BTreeMap::new(), empty_body: true }
    }
}

/// Headers every pveproxy answer carries.
pub(crate) fn common_headers(resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.insert(header::SERVER, HeaderValue::from_static("pve-api-daemon/3.0"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=0"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::EXPIRES, HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"));
}

/// Serialises a successful answer: `{"data": ..}` plus `total` for list endpoints that set it.
pub(crate) fn success(data: Value, total: Option<usize>, numbers_as_strings: bool) -> Response<Body> {
    let data = if numbers_as_strings { stringify_integers(data) } else { data };
    let mut body = json!({ "data": data });
    if let Some(total) = total {
        body["total"] = json!(total);
    }
    let mut resp = Response::new(Body::from(body.to_string()));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json;charset=UTF-8"));
    common_headers(&mut resp);
    resp
}

/// Serialises an error with the reason phrase taken from the message's first line.
pub(crate) fn failure(err: &ApiError, with_message: bool) -> Response<Body> {
    let mut resp = if err.empty_body {
        Response::new(Body::empty())
    } else {
        let mut body = json!({ "data": null });
        if with_message {
            let mut msg = err.message.clone();
            if !msg.ends_with('\n') {
                msg.push('\n');
            }
            body["message"] = json!(msg);
        }
        if !err.errors.is_empty() {
            body["errors"] = json!(err.errors);
        }
        let mut r = Response::new(Body::from(body.to_string()));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json;charset=UTF-8"));
        r
    };
    *resp.status_mut() = StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = err.message.lines().next().unwrap_or_default().to_string();
    if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reason.into_bytes()) {
        resp.extensions_mut().insert(phrase);
    }
    // pveproxy closes the connection after every error answer.
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    common_headers(&mut resp);
    resp
}

/// Turns every integer in a JSON tree into a string, as untyped Perl sometimes sends them.
pub(crate) fn stringify_integers(value: Value) -> Value {
    match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => Value::String(n.to_string()),
        Value::Array(items) => Value::Array(items.into_iter().map(stringify_integers).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, stringify_integers(v))).collect()),
        other => other,
    }
}

/// Parameters of one request: URI parameters, query and body merged (query wins over body).
pub(crate) type Params = BTreeMap<String, String>;

/// Decodes a form or JSON body into parameters; JSON booleans become `1`/`0`.
pub(crate) fn body_params(content_type: Option<&str>, body: &[u8]) -> Result<Params, ApiError> {
    if body.is_empty() {
        return Ok(Params::new());
    }
    let is_json = content_type.is_some_and(|ct| ct.trim_start().starts_with("application/json"));
    if !is_json {
        return Ok(form_urlencoded::parse(body).into_owned().collect());
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::param("body", format!("unable to parse JSON body - {e}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::param("body", "JSON body must be an object"));
    };
    Ok(map
        .into_iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s,
                Value::Bool(b) => if b { "1" } else { "0" }.to_string(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (k, s)
        })
        .collect())
}

/// What a parameter must look like.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// Free text up to a length.
    Text(usize),
    /// A node name (`pve-node`).
    Node,
    /// A storage ID (`pve-storage-id`).
    StorageId,
    /// One of a fixed list.
    Enum(&'static [&'static str]),
    /// A comma list whose items are each one of a fixed list.
    EnumList(&'static [&'static str]),
    /// `0` or `1` exactly (form encoding never accepts `true`).
    Bool,
    /// An integer within bounds.
    Int(i64, i64),
    /// A URL matching `https?://.*`.
    HttpUrl,
}

/// One parameter of an endpoint's schema.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Param {
    pub name: &'static str,
    pub kind: Kind,
    pub optional: bool,
}

/// Shorthand for a required parameter.
pub(crate) const fn req(name: &'static str, kind: Kind) -> Param {
    Param { name, kind, optional: false }
}

/// Shorthand for an optional parameter.
pub(crate) const fn opt(name: &'static str, kind: Kind) -> Param {
    Param { name, kind, optional: true }
}

/// Validates parameters against a schema, collecting every error as Proxmox does.
pub(crate) fn validate(params: &Params, schema: &[Param]) -> Result<(), ApiError> {
    let mut errors = BTreeMap::new();
    for name in params.keys() {
        if name != "_dc" && !schema.iter().any(|p| p.name == name) {
            errors.insert(
                name.clone(),
                "property is not defined in schema and the schema does not allow additional properties".to_string(),
            );
        }
    }
    for p in schema {
        match params.get(p.name) {
            None if !p.optional => {
                errors.insert(p.name.to_string(), "property is missing and it is not optional".to_string());
            }
            None => {}
            Some(value) => {
                if let Err(e) = check_kind(value, p.kind) {
                    errors.insert(p.name.to_string(), e);
                }
            }
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(ApiError::params(errors)) }
}

fn check_kind(value: &str, kind: Kind) -> Result<(), String> {
    match kind {
        Kind::Text(max) if value.len() > max => Err(format!("value may only be {max} characters long")),
        Kind::Text(_) => Ok(()),
        Kind::Node if super::scenario::valid_node_name(value) => Ok(()),
        Kind::Node => Err("invalid format - value does not look like a valid node name".into()),
        Kind::StorageId if super::scenario::valid_storage_id(value) => Ok(()),
        Kind::StorageId => Err(format!("invalid format - storage ID '{value}' contains illegal characters")),
        Kind::Enum(list) if list.contains(&value) => Ok(()),
        Kind::Enum(list) => {
            Err(format!("value '{value}' does not have a value in the enumeration '{}'", list.join(", ")))
        }
        Kind::EnumList(list) => match value.split(',').find(|v| !list.contains(v)) {
            None => Ok(()),
            Some(bad) => Err(format!("invalid format - invalid content type '{bad}'")),
        },
        Kind::Bool if value == "0" || value == "1" => Ok(()),
        Kind::Bool => Err(format!("type check ('boolean') failed - got '{value}'")),
        Kind::Int(min, max) => match value.parse::<i64>() {
            Err(_) => Err(format!("type check ('integer') failed - got '{value}'")),
            Ok(n) if n < min => Err(format!("value must have a minimum value of {min}")),
            Ok(n) if n > max => Err(format!("value must have a maximum value of {max}")),
            Ok(_) => Ok(()),
        },
        Kind::HttpUrl if value.starts_with("http://") || value.starts_with("https://") => Ok(()),
        Kind::HttpUrl => Err("value does not match the regex pattern".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_are_strict() {
        let schema = [opt("enabled", Kind::Bool)];
        let mut p = Params::new();
        p.insert("enabled".into(), "true".into());
        let err = validate(&p, &schema).unwrap_err();
        assert_eq!(err.errors["enabled"], "type check ('boolean') failed - got 'true'");
        p.insert("enabled".into(), "1".into());
        validate(&p, &schema).unwrap();
    }

    #[test]
    fn unknown_and_missing_parameters_are_reported_together() {
        let schema = [req("storage", Kind::StorageId)];
        let mut p = Params::new();
        p.insert("bogus".into(), "1".into());
        let err = validate(&p, &schema).unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(err.errors.len(), 2);
        assert!(err.errors["storage"].contains("not optional"));
    }

    #[test]
    fn json_bodies_accept_real_booleans() {
        let p = body_params(Some("application/json"), br#"{"a":true,"b":3,"c":"x"}"#).unwrap();
        assert_eq!(p["a"], "1");
        assert_eq!(p["b"], "3");
        assert_eq!(p["c"], "x");
        let f = body_params(None, b"storage=local&template=a%2Bb").unwrap();
        assert_eq!(f["template"], "a+b");
    }

    #[test]
    fn integers_become_strings_but_floats_stay() {
        let v = stringify_integers(json!({"a": 1, "b": [2, 0.5], "c": "x"}));
        assert_eq!(v, json!({"a": "1", "b": ["2", 0.5], "c": "x"}));
    }
}
