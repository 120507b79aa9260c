//! The control plane's messages: REGISTER/ACK, HEARTBEAT/PONG, deregistration and the discover
//! NODELIST (digest §2.1–2.5).

use crate::node::{self, AvailabilityWindow, Capability, Limits};
use crate::validate::{self as v, Problems, Rejection};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Grammar of `implementation_name` (fixture `directory-implementation-metadata-v1`).
fn is_implementation_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric() || b == b'@')
        && s.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"._/@+-".contains(&b))
}

/// Grammar of `implementation_version`, `sdk_version` and `sdk_compatibility_version`.
fn is_version_label(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && s.len() <= 32
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

/// `cx_public_key`: the node's IICP-CX X25519 key (digest §7.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CxPublicKey {
    pub algorithm: String,
    pub encoding: String,
    /// Unpadded base64url of the 32-byte key.
    pub key: String,
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Value>,
    #[serde(default)]
    pub hybrid_pq: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

/// REGISTER (INIT): `POST /v1/register`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_node_token: Option<String>,
    pub endpoint: String,
    pub region: String,
    pub capabilities: Vec<Capability>,
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub availability: Vec<AvailabilityWindow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cx_public_key: Option<CxPublicKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk_compatibility_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implementation_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implementation_version: Option<String>,
    /// Optional vocabulary the directory keeps but does not interpret (policy manifest, pricing,
    /// transport candidates, CIP levels, …).
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl std::fmt::Display for RegisterRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "register {} ({})", self.endpoint, self.region)
    }
}

impl RegisterRequest {
    pub fn from_value(value: Value) -> Result<RegisterRequest, Problems> {
        v::validated(value, check_register)
    }

    pub fn from_slice(bytes: &[u8]) -> Result<RegisterRequest, Rejection> {
        let value = v::parse_json(bytes)?;
        RegisterRequest::from_value(value).map_err(Rejection::Invalid)
    }

    /// `sdk_compatibility_version ?? sdk_version`.
    pub fn effective_sdk_compatibility_version(&self) -> Option<&str> {
        self.sdk_compatibility_version
            .as_deref()
            .or(self.sdk_version.as_deref())
    }
}

const TRANSPORT_METHODS: &[&str] = &[
    "direct",
    "upnp_mapped",
    "stun_hole_punch",
    "turn_relay",
    "external_tunnel",
    "webrtc_datachannel",
];
const NAT_TYPES: &[&str] = &[
    "full_cone",
    "restricted_cone",
    "port_restricted",
    "symmetric",
    "unknown",
];

/// Validates a REGISTER body (digest §2.1). Routability, risk and liveness are the directory's
/// admission steps, not schema checks, and are not done here.
pub fn check_register(value: &Value, p: &mut Problems) {
    let Some(obj) = v::object(value, "$", p) else {
        return;
    };
    if let Some(id) = v::get(obj, "node_id") {
        v::uuid_v4(id, "$.node_id", p);
    }
    if let Some(token) = v::get(obj, "current_node_token") {
        v::bounded_string(token, "$.current_node_token", 512, p);
    }
    let endpoint = v::required(obj, "$", "endpoint", p).and_then(|e| check_endpoint(e, p));
    if let Some(region) = v::required(obj, "$", "region", p) {
        v::bounded_string(region, "$.region", 64, p);
    }
    if let Some(caps) = v::required(obj, "$", "capabilities", p) {
        node::check_capabilities(caps, p);
    }
    if let Some(limits) = v::required(obj, "$", "limits", p) {
        node::check_limits(limits, p);
    }
    if let Some(windows) = v::get(obj, "availability") {
        node::check_availability(windows, p);
    }
    if let Some(t) = v::get(obj, "transport_endpoint") {
        check_transport_endpoint(t, endpoint.as_ref(), p);
    }
    if let Some(m) = v::get(obj, "transport_method") {
        v::one_of(m, "$.transport_method", TRANSPORT_METHODS, p);
    }
    if let Some(n) = v::get(obj, "nat_type") {
        v::one_of(n, "$.nat_type", NAT_TYPES, p);
    }
    if let Some(key) = v::get(obj, "cx_public_key") {
        check_cx_key(key, p);
    }
    for key in ["backend", "sdk_language"] {
        if let Some(s) = v::get(obj, key) {
            v::bounded_string(s, &v::key_path("$", key), 64, p);
        }
    }
    check_implementation_metadata(obj, p);
    if let Some(interval) = v::get(obj, "auto_update_interval_s") {
        v::integer(interval, "$.auto_update_interval_s", 300, i64::MAX, p);
    }
}

fn check_endpoint(value: &Value, p: &mut Problems) -> Option<url::Url> {
    let path = "$.endpoint";
    let s = v::bounded_string(value, path, 2048, p)?;
    let url = match url::Url::parse(s) {
        Ok(url) => url,
        Err(e) => {
            p.invalid(path, format!("must be an absolute URL ({e})"));
            return None;
        }
    };
    if !matches!(url.scheme(), "http" | "https") {
        p.invalid(path, "must be an http:// or https:// URL");
        return None;
    }
    if url.host().is_none() {
        p.invalid(path, "must name a host");
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        p.invalid(path, "must not carry credentials");
        return None;
    }
    if url.query().is_some() || url.fragment().is_some() {
        p.invalid(path, "must not carry a query or fragment");
        return None;
    }
    Some(url)
}

fn check_transport_endpoint(value: &Value, endpoint: Option<&url::Url>, p: &mut Problems) {
    let path = "$.transport_endpoint";
    let Some(s) = v::bounded_string(value, path, 2048, p) else {
        return;
    };
    let Ok(url) = url::Url::parse(s) else {
        p.invalid(
            path,
            "must be an iicp://host:port or iicpsec://host:port URL",
        );
        return;
    };
    if !matches!(url.scheme(), "iicp" | "iicpsec") || url.host_str().is_none() {
        p.invalid(
            path,
            "must be an iicp://host:port or iicpsec://host:port URL",
        );
        return;
    }
    if let Some(endpoint) = endpoint {
        if endpoint.host_str() != url.host_str() {
            p.invalid(path, "must name the same host as endpoint");
        }
    }
}

fn check_cx_key(value: &Value, p: &mut Problems) {
    let path = "$.cx_public_key";
    let Some(key) = v::object(value, path, p) else {
        return;
    };
    if let Some(a) = v::required(key, path, "algorithm", p) {
        v::one_of(a, "$.cx_public_key.algorithm", &["X25519"], p);
    }
    if let Some(e) = v::required(key, path, "encoding", p) {
        v::one_of(e, "$.cx_public_key.encoding", &["base64url"], p);
    }
    if let Some(k) = v::required(key, path, "key", p) {
        if let Some(s) = v::string(k, "$.cx_public_key.key", p) {
            // 32 bytes as unpadded base64url is exactly 43 characters.
            let charset_ok = s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if s.len() != 43 || !charset_ok {
                p.invalid(
                    "$.cx_public_key.key",
                    "must be a 32-byte key as unpadded base64url (43 characters)",
                );
            }
        }
    }
    if let Some(id) = v::required(key, path, "key_id", p) {
        v::bounded_string(id, "$.cx_public_key.key_id", 128, p);
    }
    if let Some(features) = v::get(key, "features") {
        if let Some(items) = v::array(features, "$.cx_public_key.features", p) {
            for (i, item) in items.iter().enumerate() {
                v::bounded_string(item, &v::index_path("$.cx_public_key.features", i), 128, p);
            }
        }
    }
}

fn check_implementation_metadata(obj: &Map<String, Value>, p: &mut Problems) {
    if let Some(name) = v::get(obj, "implementation_name") {
        if let Some(s) = v::string(name, "$.implementation_name", p) {
            if !is_implementation_name(s) {
                p.invalid(
                    "$.implementation_name",
                    "must match ^[A-Za-z0-9@][A-Za-z0-9._/@+-]{0,63}$",
                );
            }
        }
    }
    let mut versions = [None, None];
    for (slot, key) in [
        "implementation_version",
        "sdk_version",
        "sdk_compatibility_version",
    ]
    .into_iter()
    .enumerate()
    {
        let path = v::key_path("$", key);
        if let Some(s) = v::get(obj, key).and_then(|s| v::string(s, &path, p)) {
            if !is_version_label(s) {
                p.invalid(&path, "must match ^[0-9A-Za-z][0-9A-Za-z._+-]{0,31}$");
            } else if slot > 0 {
                versions[slot - 1] = Some(s);
            }
        }
    }
    if let [Some(legacy), Some(preferred)] = versions {
        if legacy != preferred {
            p.invalid(
                "$.sdk_compatibility_version",
                "conflicts with sdk_version; send one value or the same value in both",
            );
        }
    }
}

/// ACK: the 201 answer to REGISTER. `node_token` is shown exactly once.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterAck {
    #[serde(default = "ack")]
    pub message_type: String,
    pub node_id: Uuid,
    pub node_token: String,
    #[serde(default)]
    pub expires_at: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_source_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_hmac_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_token: Option<String>,
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

fn ack() -> String {
    "ACK".to_owned()
}

impl std::fmt::Debug for RegisterAck {
    // Credentials never reach a log, including through Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterAck")
            .field("node_id", &self.node_id)
            .field("observed_source_ip", &self.observed_source_ip)
            .finish_non_exhaustive()
    }
}

/// Heartbeat `metrics`: task outcomes since the last acknowledged batch.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HeartbeatMetrics {
    #[serde(default)]
    pub tasks_success: u64,
    #[serde(default)]
    pub tasks_failed: u64,
    #[serde(default)]
    pub tasks_timeout: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_latency_ms: Option<f64>,
    /// Some peers put the batch id inside `metrics`; it is read from either place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_batch_id: Option<String>,
}

/// HEARTBEAT (PING): `POST /v1/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_jobs: Option<u64>,
    /// Absent means available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_p95_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<HeartbeatMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_batch_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge_response: Option<String>,
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl Heartbeat {
    pub fn new(node_id: Uuid) -> Self {
        Heartbeat {
            node_id,
            load: None,
            active_jobs: None,
            available: None,
            sla_p95_ms: None,
            metrics: None,
            metrics_batch_id: None,
            challenge_response: None,
            extra: Map::new(),
        }
    }

    pub fn from_value(value: Value) -> Result<Heartbeat, Problems> {
        v::validated(value, check_heartbeat)
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Heartbeat, Rejection> {
        let value = v::parse_json(bytes)?;
        Heartbeat::from_value(value).map_err(Rejection::Invalid)
    }

    /// The batch id, wherever the sender put it.
    pub fn batch_id(&self) -> Option<&str> {
        self.metrics_batch_id.as_deref().or(self
            .metrics
            .as_ref()
            .and_then(|m| m.metrics_batch_id.as_deref()))
    }

    pub fn is_available(&self) -> bool {
        self.available.unwrap_or(true)
    }
}

fn is_batch_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Validates a HEARTBEAT body (digest §2.2).
pub fn check_heartbeat(value: &Value, p: &mut Problems) {
    let Some(obj) = v::object(value, "$", p) else {
        return;
    };
    if let Some(id) = v::required(obj, "$", "node_id", p) {
        v::uuid_v4(id, "$.node_id", p);
    }
    if let Some(load) = v::get(obj, "load") {
        v::number(load, "$.load", 0.0, 1.0, p);
    }
    if let Some(jobs) = v::get(obj, "active_jobs") {
        v::integer(jobs, "$.active_jobs", 0, i64::MAX, p);
    }
    if let Some(a) = v::get(obj, "available") {
        v::boolean(a, "$.available", p);
    }
    if let Some(sla) = v::get(obj, "sla_p95_ms") {
        v::number(sla, "$.sla_p95_ms", 0.0, f64::MAX, p);
    }
    let mut batch_ids = Vec::new();
    if let Some(id) = v::get(obj, "metrics_batch_id") {
        batch_ids.push(("$.metrics_batch_id", id));
    }
    let metrics = v::get(obj, "metrics");
    if let Some(m) = metrics.and_then(|m| v::object(m, "$.metrics", p)) {
        for key in ["tasks_success", "tasks_failed", "tasks_timeout"] {
            if let Some(n) = v::get(m, key) {
                v::integer(n, &v::key_path("$.metrics", key), 0, i64::MAX, p);
            }
        }
        if let Some(avg) = v::get(m, "avg_latency_ms") {
            v::number(avg, "$.metrics.avg_latency_ms", 0.0, f64::MAX, p);
        }
        if let Some(id) = v::get(m, "metrics_batch_id") {
            batch_ids.push(("$.metrics.metrics_batch_id", id));
        }
    }
    for (path, id) in &batch_ids {
        if let Some(s) = v::string(id, path, p) {
            if !is_batch_id(s) {
                p.invalid(*path, "must be 1 to 64 printable ASCII characters");
            }
        }
    }
    if metrics.is_some() && batch_ids.is_empty() {
        p.invalid(
            "$.metrics_batch_id",
            "is required when metrics are sent, so the batch is applied at most once",
        );
    }
    if let Some(r) = v::get(obj, "challenge_response") {
        if let Some(s) = v::string(r, "$.challenge_response", p) {
            if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                p.invalid(
                    "$.challenge_response",
                    "must be 64 hex characters (HMAC-SHA256)",
                );
            }
        }
    }
}

/// The heartbeat liveness answer: `lowercase_hex(HMAC-SHA256(node_hmac_key, challenge))`, with
/// the key and the challenge both taken as the UTF-8 bytes of their hex strings (as CIP does;
/// the spec leaves the encoding open, digest C19).
pub fn challenge_response(node_hmac_key: &str, challenge: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(node_hmac_key.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(challenge.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a heartbeat's `challenge_response` in constant time.
pub fn challenge_matches(node_hmac_key: &str, challenge: &str, response: &str) -> bool {
    use hmac::{Hmac, Mac};
    let Ok(expected) = hex::decode(response) else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(node_hmac_key.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(challenge.as_bytes());
    mac.verify_slice(&expected).is_ok()
}

/// PONG: the answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pong {
    pub ok: bool,
    pub next_heartbeat_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reputation_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reputation_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reputation_epoch: Option<String>,
    #[serde(default)]
    pub metrics_batch_accepted: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// Body of `DELETE /v1/register` and `POST /v1/deregister`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deregister {
    pub node_id: Uuid,
}

/// One node of a NODELIST. Only `score` and `available` are required by the schema; everything
/// else is optional and kept (`extra`) so a client forwards nothing away.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub score: f64,
    pub available: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reputation_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_modalities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cx_public_key: Option<CxPublicKey>,
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// NODELIST: the answer to `GET /v1/discover`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeList {
    pub nodes: Vec<NodeEntry>,
    #[serde(default)]
    pub count: usize,
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn register() -> Value {
        json!({
            "endpoint": "https://node.example.com",
            "region": "eu-central",
            "capabilities": [{"intent": "urn:iicp:intent:llm:chat:v1", "models": ["m"], "max_tokens": 4096}],
            "limits": {"max_concurrent": 1, "tokens_per_min": 1000}
        })
    }

    fn problem_paths(value: Value) -> Vec<String> {
        match RegisterRequest::from_value(value) {
            Ok(_) => vec![],
            Err(p) => p.iter().map(|p| p.path.clone()).collect(),
        }
    }

    #[test]
    fn accepts_the_conformance_registration() {
        let r = RegisterRequest::from_value(register()).unwrap();
        assert_eq!(r.limits.max_concurrent, 1);
        assert_eq!(r.capabilities[0].models, vec!["m"]);
    }

    #[test]
    fn missing_required_fields_are_each_named() {
        assert_eq!(
            problem_paths(json!({})),
            vec!["$.endpoint", "$.region", "$.capabilities", "$.limits"]
        );
    }

    #[test]
    fn capability_and_limit_problems_are_field_precise() {
        let mut r = register();
        r["capabilities"] = json!([
            {"intent": "urn:iicp:intent:llm:chat:v1", "models": [], "input_modalities": ["smell"]},
            {"intent": "llm", "max_tokens": 0}
        ]);
        r["limits"]["max_concurrent"] = json!(257);
        r["availability"] = json!([{"start": "25:00", "end": "06:00", "share": 2}]);
        assert_eq!(
            problem_paths(r),
            vec![
                "$.capabilities[0].models",
                "$.capabilities[0].input_modalities[0]",
                "$.capabilities[1].intent",
                "$.capabilities[1].max_tokens",
                "$.limits.max_concurrent",
                "$.availability[0].start",
                "$.availability[0].share",
            ]
        );
    }

    #[test]
    fn duplicate_capabilities_and_variants_are_refused() {
        let mut r = register();
        let cap = r["capabilities"][0].clone();
        r["capabilities"] = json!([cap.clone(), cap]);
        assert_eq!(problem_paths(r), vec!["$.capabilities[1]"]);
        let mut r = register();
        r["capabilities"] = json!([
            {"intent": "urn:iicp:intent:llm:chat:v1", "variant_id": "a", "models": ["x"]},
            {"intent": "urn:iicp:intent:llm:chat:v1", "variant_id": "a", "models": ["y"]},
            {"intent": "urn:iicp:intent:llm:chat:v1", "input_modalities": ["image"]}
        ]);
        assert_eq!(problem_paths(r), vec!["$.capabilities[1].variant_id"]);
    }

    #[test]
    fn endpoint_must_be_a_plain_http_url() {
        for bad in [
            "node.example.com",
            "ftp://node.example.com",
            "https://user:pw@node.example.com",
            "https://node.example.com/?q=1",
        ] {
            let mut r = register();
            r["endpoint"] = json!(bad);
            assert_eq!(problem_paths(r), vec!["$.endpoint"], "{bad}");
        }
    }

    #[test]
    fn transport_endpoint_must_share_the_host() {
        let mut r = register();
        r["transport_endpoint"] = json!("iicp://node.example.com:9484");
        assert!(problem_paths(r.clone()).is_empty());
        r["transport_endpoint"] = json!("iicp://other.example.com:9484");
        assert_eq!(problem_paths(r), vec!["$.transport_endpoint"]);
    }

    #[test]
    fn cx_key_must_be_32_bytes_of_base64url() {
        let mut r = register();
        r["cx_public_key"] = json!({"algorithm": "X25519", "encoding": "base64url",
            "key": "A".repeat(43), "key_id": "k1", "not_after": 1900000000});
        assert!(problem_paths(r.clone()).is_empty());
        r["cx_public_key"]["key"] = json!("short");
        assert_eq!(problem_paths(r), vec!["$.cx_public_key.key"]);
    }

    #[test]
    fn unknown_fields_are_kept_not_refused() {
        let mut r = register();
        r["policy_manifest"] = json!({"version": "1"});
        r["capabilities"][0]["extensions"] = json!({"x.acme": {"a": 1}});
        let req = RegisterRequest::from_value(r).unwrap();
        assert!(req.extra.contains_key("policy_manifest"));
        assert!(req.capabilities[0].extra.contains_key("extensions"));
    }

    #[test]
    fn heartbeat_requires_a_batch_id_with_metrics_in_either_place() {
        let id = Uuid::new_v4().to_string();
        let bad = json!({"node_id": id, "metrics": {"tasks_success": 1}});
        assert!(Heartbeat::from_value(bad).is_err());
        let top = json!({"node_id": id, "metrics": {"tasks_success": 1}, "metrics_batch_id": "b1"});
        assert_eq!(Heartbeat::from_value(top).unwrap().batch_id(), Some("b1"));
        let inside =
            json!({"node_id": id, "metrics": {"tasks_success": 1, "metrics_batch_id": "b2"}});
        assert_eq!(
            Heartbeat::from_value(inside).unwrap().batch_id(),
            Some("b2")
        );
    }

    #[test]
    fn heartbeat_fields_are_range_checked() {
        let id = Uuid::new_v4().to_string();
        let bad = json!({"node_id": id, "load": 1.5, "active_jobs": -1, "available": "yes",
            "challenge_response": "zz"});
        let paths: Vec<_> = Heartbeat::from_value(bad)
            .unwrap_err()
            .iter()
            .map(|p| p.path.clone())
            .collect();
        assert_eq!(
            paths,
            vec![
                "$.load",
                "$.active_jobs",
                "$.available",
                "$.challenge_response"
            ]
        );
        let ok = Heartbeat::from_value(json!({"node_id": id})).unwrap();
        assert!(ok.is_available());
    }

    #[test]
    fn challenge_answers_verify_only_with_the_key_and_challenge() {
        let answer = challenge_response("k", "c0ffee");
        assert_eq!(answer.len(), 64);
        assert!(challenge_matches("k", "c0ffee", &answer));
        assert!(!challenge_matches("k2", "c0ffee", &answer));
        assert!(!challenge_matches("k", "c0ffef", &answer));
        assert!(!challenge_matches("k", "c0ffee", "zz"));
    }

    #[test]
    fn ack_debug_hides_credentials() {
        let ack = RegisterAck {
            message_type: "ACK".into(),
            node_id: Uuid::new_v4(),
            node_token: "s3cret".into(),
            expires_at: None,
            directory: None,
            observed_source_ip: None,
            node_hmac_key: Some("hmac-s3cret".into()),
            proxy_token: None,
            extra: Map::new(),
        };
        assert!(!format!("{ack:?}").contains("s3cret"));
    }
}
