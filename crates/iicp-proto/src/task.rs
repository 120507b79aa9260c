//! The data plane: the CALL envelope (`POST /v1/task`) and its RESPONSE.

use crate::error::{ErrorCode, ErrorDetail};
use crate::payload;
use crate::validate::{self as v, Problems, Rejection};
use crate::Intent;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Bounds of `constraints.timeout_ms` (task.json).
pub const TIMEOUT_MS_MIN: u32 = 100;
pub const TIMEOUT_MS_MAX: u32 = 300_000;

/// Quality-of-service tier (digest §5.1).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Qos {
    Realtime,
    #[default]
    Interactive,
    Batch,
    /// Written `best-effort`; `best_effort` is read too.
    #[serde(alias = "best_effort")]
    BestEffort,
}

impl Qos {
    pub const WIRE: &'static [&'static str] = &[
        "realtime",
        "interactive",
        "batch",
        "best-effort",
        "best_effort",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Qos::Realtime => "realtime",
            Qos::Interactive => "interactive",
            Qos::Batch => "batch",
            Qos::BestEffort => "best-effort",
        }
    }

    /// Tiers with a human waiting: they may wait briefly for a slot; the others are refused at once.
    pub fn waits_for_capacity(self) -> bool {
        matches!(self, Qos::Realtime | Qos::Interactive)
    }
}

/// `constraints.priority`: orders tasks that compete for slots.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Critical,
}

impl Priority {
    pub const WIRE: &'static [&'static str] = &["low", "normal", "high", "critical"];
}

const CONSENSUS: &[&str] = &["none", "first_completed", "majority_of_3", "majority_of_5"];

/// `constraints` of a CALL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Constraints {
    pub timeout_ms: u32,
    #[serde(default)]
    pub qos: Qos,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consensus: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_profiles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optional_profiles: Vec<String>,
    /// CIP block, carried for the CIP layer (digest §7.6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cip: Option<Value>,
}

impl Constraints {
    pub fn new(timeout_ms: u32) -> Self {
        Constraints {
            timeout_ms,
            qos: Qos::default(),
            priority: Priority::default(),
            region: None,
            sensitivity: None,
            consensus: None,
            required_profiles: Vec::new(),
            optional_profiles: Vec::new(),
            cip: None,
        }
    }
}

/// `auth` of a CALL: the provider's own token, shared by its operator.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Auth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_token: Option<String>,
}

impl std::fmt::Debug for Auth {
    // Tokens never reach a log, including through Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field(
                "node_token",
                &self.node_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// `trace` of a CALL.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Trace {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_node: Option<String>,
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// CALL: a task sent straight to a provider node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRequest {
    pub task_id: Uuid,
    pub intent: Intent,
    /// Absent only when the payload travels encrypted in `iicp_conf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    pub constraints: Constraints,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Trace>,
    /// IICP-CX encrypted payload (digest §7.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iicp_conf: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cx_response_encryption: Option<String>,
}

impl TaskRequest {
    /// A plaintext CALL with a fresh v4 `task_id`.
    pub fn new(intent: Intent, payload: Value, constraints: Constraints) -> Self {
        TaskRequest {
            task_id: Uuid::new_v4(),
            intent,
            payload: Some(payload),
            constraints,
            auth: None,
            nonce: None,
            trace: None,
            iicp_conf: None,
            cx_response_encryption: None,
        }
    }

    /// Validates a parsed body and returns the typed CALL, or every problem found.
    pub fn from_value(mut value: Value) -> Result<TaskRequest, Problems> {
        let mut problems = Problems::new();
        check_task(&value, &mut problems);
        problems.into_result()?;
        // Moved around the typed conversion: deserializing the payload from a `Value` would
        // rebuild its whole tree.
        let payload = value
            .as_object_mut()
            .and_then(|envelope| envelope.remove("payload"))
            .filter(|payload| !payload.is_null());
        let mut task: TaskRequest = v::typed(value)?;
        task.payload = payload;
        Ok(task)
    }

    /// Parses and validates raw bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<TaskRequest, Rejection> {
        let value = v::parse_json(bytes)?;
        TaskRequest::from_value(value).map_err(Rejection::Invalid)
    }
}

/// Validates a CALL envelope (digest §3.1).
pub fn check_task(value: &Value, p: &mut Problems) {
    let Some(obj) = v::object(value, "$", p) else {
        return;
    };
    if let Some(id) = v::required(obj, "$", "task_id", p) {
        v::uuid_v4(id, "$.task_id", p);
    }
    let intent = v::required(obj, "$", "intent", p).and_then(|i| v::intent(i, "$.intent", p));

    let conf = v::get(obj, "iicp_conf");
    match (v::get(obj, "payload"), conf) {
        (Some(_), Some(_)) => p.invalid(
            "$.payload",
            "must be absent when the payload is sent encrypted in iicp_conf",
        ),
        (Some(payload), None) => match &intent {
            Some(intent) => payload::check_payload(intent, payload, "$.payload", p),
            None => {
                v::object(payload, "$.payload", p);
            }
        },
        (None, Some(conf)) => check_conf(conf, p),
        (None, None) => p.invalid("$.payload", "is required"),
    }

    if let Some(c) = v::required(obj, "$", "constraints", p) {
        check_constraints(c, p);
    }
    if let Some(auth) = v::get(obj, "auth") {
        if let Some(auth) = v::object(auth, "$.auth", p) {
            if let Some(token) = v::get(auth, "node_token") {
                v::bounded_string(token, "$.auth.node_token", 1024, p);
            }
        }
    }
    if let Some(nonce) = v::get(obj, "nonce") {
        v::bounded_string(nonce, "$.nonce", 256, p);
    }
    if let Some(trace) = v::get(obj, "trace") {
        check_trace(trace, p);
    }
    if let Some(mode) = v::get(obj, "cx_response_encryption") {
        v::one_of(
            mode,
            "$.cx_response_encryption",
            &["required", "preferred", "none"],
            p,
        );
    }
}

fn check_constraints(value: &Value, p: &mut Problems) {
    let path = "$.constraints";
    let Some(c) = v::object(value, path, p) else {
        return;
    };
    if let Some(t) = v::required(c, path, "timeout_ms", p) {
        v::integer(
            t,
            "$.constraints.timeout_ms",
            TIMEOUT_MS_MIN.into(),
            TIMEOUT_MS_MAX.into(),
            p,
        );
    }
    if let Some(q) = v::get(c, "qos") {
        v::one_of(q, "$.constraints.qos", Qos::WIRE, p);
    }
    if let Some(pr) = v::get(c, "priority") {
        v::one_of(pr, "$.constraints.priority", Priority::WIRE, p);
    }
    if let Some(r) = v::get(c, "region") {
        v::bounded_string(r, "$.constraints.region", 64, p);
    }
    if let Some(s) = v::get(c, "sensitivity") {
        v::bounded_string(s, "$.constraints.sensitivity", 64, p);
    }
    if let Some(s) = v::get(c, "consensus") {
        v::one_of(s, "$.constraints.consensus", CONSENSUS, p);
    }
    for key in ["required_profiles", "optional_profiles"] {
        if let Some(list) = v::get(c, key) {
            let path = v::key_path(path, key);
            if let Some(items) = v::array(list, &path, p) {
                for (i, item) in items.iter().enumerate() {
                    v::bounded_string(item, &v::index_path(&path, i), 256, p);
                }
            }
        }
    }
    if let Some(cip) = v::get(c, "cip") {
        v::object(cip, "$.constraints.cip", p);
    }
}

fn check_trace(value: &Value, p: &mut Problems) {
    let Some(t) = v::object(value, "$.trace", p) else {
        return;
    };
    if let Some(id) = v::get(t, "trace_id") {
        if let Some(s) = v::string(id, "$.trace.trace_id", p) {
            if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                p.invalid("$.trace.trace_id", "must be 32 hexadecimal characters");
            }
        }
    }
    if let Some(origin) = v::get(t, "origin_node") {
        v::bounded_string(origin, "$.trace.origin_node", 64, p);
    }
}

fn check_conf(value: &Value, p: &mut Problems) {
    let path = "$.iicp_conf";
    let Some(c) = v::object(value, path, p) else {
        return;
    };
    if let Some(version) = v::required(c, path, "version", p) {
        v::integer(version, "$.iicp_conf.version", 1, 1, p);
    }
    for key in [
        "recipient_key_id",
        "kem_ciphertext",
        "encrypted_body",
        "nonce",
    ] {
        if let Some(field) = v::required(c, path, key, p) {
            v::bounded_string(field, &v::key_path(path, key), 16 * 1024 * 1024, p);
        }
    }
}

/// RESPONSE `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Written `success`; `completed` (older peers) is read as success.
    #[serde(alias = "completed")]
    Success,
    Error,
    Timeout,
}

/// RESPONSE `metrics`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TaskMetrics {
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_used: Option<u64>,
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// RESPONSE to a CALL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResponse {
    pub task_id: Uuid,
    pub status: TaskStatus,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub metrics: TaskMetrics,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_used: Option<String>,
    #[serde(default = "yes")]
    pub generated_by_ai: bool,
    #[serde(default)]
    pub error: Option<ErrorDetail>,
    /// CIP trace, receipts, billing, `iicp_conf_resp`: kept so nothing a peer sent is lost.
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

fn yes() -> bool {
    true
}

impl TaskResponse {
    /// A successful RESPONSE.
    pub fn success(task_id: Uuid, result: Value, latency_ms: u64) -> Self {
        TaskResponse {
            task_id,
            status: TaskStatus::Success,
            result: Some(result),
            metrics: TaskMetrics {
                latency_ms,
                ..TaskMetrics::default()
            },
            model_used: None,
            generated_by_ai: true,
            error: None,
            extra: Map::new(),
        }
    }

    /// A failed RESPONSE: `status:"error"` (or `timeout`), `result:null`, and the error.
    pub fn failure(task_id: Uuid, code: ErrorCode, message: &str, latency_ms: u64) -> Self {
        let status = if matches!(code, ErrorCode::TaskTimeout | ErrorCode::Timeout) {
            TaskStatus::Timeout
        } else {
            TaskStatus::Error
        };
        TaskResponse {
            task_id,
            status,
            result: None,
            metrics: TaskMetrics {
                latency_ms,
                ..TaskMetrics::default()
            },
            model_used: None,
            generated_by_ai: true,
            error: Some(code.with_message(message).error),
            extra: Map::new(),
        }
    }

    pub fn is_success(&self) -> bool {
        self.status == TaskStatus::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "task_id": "550e8400-e29b-41d4-a716-446655440000",
            "intent": "urn:iicp:intent:llm:chat:v1",
            "payload": {"messages": [{"role": "user", "content": "Hello"}]},
            "constraints": {"timeout_ms": 5000, "qos": "interactive"},
            "auth": {"node_token": "tok"}
        })
    }

    fn paths(value: Value) -> Vec<String> {
        match TaskRequest::from_value(value) {
            Ok(_) => vec![],
            Err(p) => p.iter().map(|p| p.path.clone()).collect(),
        }
    }

    #[test]
    fn accepts_a_minimal_call_and_defaults_qos_and_priority() {
        let task = TaskRequest::from_value(valid()).unwrap();
        assert_eq!(task.constraints.qos, Qos::Interactive);
        assert_eq!(task.constraints.priority, Priority::Normal);
        assert_eq!(task.auth.unwrap().node_token.as_deref(), Some("tok"));
    }

    #[test]
    fn the_payload_comes_through_whole_and_a_null_one_is_absent() {
        let task = TaskRequest::from_value(valid()).unwrap();
        assert_eq!(task.payload, Some(valid()["payload"].clone()));
        let mut sealed = valid();
        sealed["payload"] = Value::Null;
        sealed["iicp_conf"] = json!({
            "version": 1, "recipient_key_id": "k", "kem_ciphertext": "a",
            "encrypted_body": "b", "nonce": "c"
        });
        let task = TaskRequest::from_value(sealed).unwrap();
        assert_eq!(task.payload, None);
        assert!(task.iicp_conf.is_some());
    }

    #[test]
    fn reads_best_effort_in_both_spellings_and_writes_the_hyphen() {
        for spelling in ["best-effort", "best_effort"] {
            let mut t = valid();
            t["constraints"]["qos"] = json!(spelling);
            let task = TaskRequest::from_value(t).unwrap();
            assert_eq!(task.constraints.qos, Qos::BestEffort);
            let out = serde_json::to_value(&task).unwrap();
            assert_eq!(out["constraints"]["qos"], "best-effort");
        }
    }

    #[test]
    fn reports_every_bad_field_with_its_path() {
        let bad = json!({
            "task_id": "550e8400-e29b-11d4-a716-446655440000",
            "intent": "urn:iicp:intent:llm:chat:v1+fast",
            "payload": {"messages": []},
            "constraints": {"timeout_ms": 50, "qos": "urgent", "priority": "max"},
            "trace": {"trace_id": "xyz"}
        });
        let problems = TaskRequest::from_value(bad).unwrap_err();
        let got: Vec<_> = problems
            .iter()
            .map(|p| (p.path.as_str(), p.code.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("$.task_id", "validation_error"),
                ("$.intent", "IICP-E028"),
                ("$.constraints.timeout_ms", "validation_error"),
                ("$.constraints.qos", "validation_error"),
                ("$.constraints.priority", "validation_error"),
                ("$.trace.trace_id", "validation_error"),
            ]
        );
    }

    #[test]
    fn payload_is_checked_against_the_intent_schema() {
        let mut t = valid();
        t["payload"] = json!({"messages": []});
        t["intent"] = json!("urn:iicp:intent:llm:chat:v1");
        assert_eq!(paths(t), vec!["$.payload.messages"]);
    }

    #[test]
    fn timeout_bounds_are_inclusive() {
        for (ms, ok) in [(99, false), (100, true), (300_000, true), (300_001, false)] {
            let mut t = valid();
            t["constraints"]["timeout_ms"] = json!(ms);
            assert_eq!(TaskRequest::from_value(t).is_ok(), ok, "{ms}");
        }
    }

    #[test]
    fn encrypted_calls_replace_the_payload() {
        let mut t = valid();
        t.as_object_mut().unwrap().remove("payload");
        t["iicp_conf"] = json!({"version": 1, "recipient_key_id": "k", "kem_ciphertext": "a",
            "encrypted_body": "b", "nonce": "c", "aad": "x", "plaintext_size": 3});
        assert!(TaskRequest::from_value(t.clone()).is_ok());
        t["payload"] = json!({"messages": [{"role": "user", "content": "x"}]});
        assert_eq!(paths(t), vec!["$.payload"]);
        let mut none = valid();
        none.as_object_mut().unwrap().remove("payload");
        assert_eq!(paths(none), vec!["$.payload"]);
    }

    #[test]
    fn unknown_fields_are_ignored_and_nulls_read_as_absent() {
        let mut t = valid();
        t["future_field"] = json!({"x": 1});
        t["trace"] = Value::Null;
        assert!(TaskRequest::from_value(t).is_ok());
    }

    #[test]
    fn response_reads_completed_as_success_and_writes_success() {
        let wire = json!({"task_id": "550e8400-e29b-41d4-a716-446655440000", "status": "completed",
            "result": {"choices": []}, "metrics": {"latency_ms": 12}});
        let r: TaskResponse = serde_json::from_value(wire).unwrap();
        assert!(r.is_success());
        assert!(r.generated_by_ai);
        assert_eq!(serde_json::to_value(&r).unwrap()["status"], "success");
    }

    #[test]
    fn failure_response_has_null_result_and_the_error() {
        let id = Uuid::new_v4();
        let r = TaskResponse::failure(id, ErrorCode::BackendError, "backend failed", 7);
        let out = serde_json::to_value(&r).unwrap();
        assert_eq!(out["status"], "error");
        assert_eq!(out["result"], Value::Null);
        assert_eq!(out["error"]["code"], "backend_error");
        let t = TaskResponse::failure(id, ErrorCode::TaskTimeout, "too slow", 7);
        assert_eq!(t.status, TaskStatus::Timeout);
    }

    #[test]
    fn auth_debug_never_shows_the_token() {
        let auth = Auth {
            node_token: Some("secret-token".into()),
        };
        assert!(!format!("{auth:?}").contains("secret"));
    }
}
