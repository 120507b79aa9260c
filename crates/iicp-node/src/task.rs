//! The one admission pipeline and the execution of a task, for every transport.
//!
//! Admission, in order: envelope validation (422) → intent served (422 `unknown_intent`) →
//! credentials (401) → replayed `task_id` or `nonce` (409) → CIP tool gate (403) → model
//! (`IICP-E029`) → a concurrency slot (429 `capacity_exceeded`) → CX decryption (`IICP-E050`),
//! then the checks above that read the payload, on the decrypted one → `task_id` and `nonce`
//! recorded (409 for a copy that raced this one). A refused task never ran and may be retried
//! unchanged.
//! Execution runs the backend under the task's `timeout_ms`, measured from receipt (504
//! `task_timeout`); a backend failure is 502 `backend_error`, never a success with an error
//! inside. The slot is a RAII permit: it is released on every path, cancellation included.

use crate::admission::auth::Presented;
use crate::admission::gate::Permit;
use crate::backend::{BackendError, CallContext, Output};
use crate::state::NodeState;
use iicp_proto::intent::LLM_EMBEDDING_V1;
use iicp_proto::task::{TaskRequest, TaskResponse};
use iicp_proto::{ErrorCode, Rejection};
use serde_json::{Map, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What a transport hands to the pipeline.
pub struct Incoming<'a> {
    pub body: &'a [u8],
    pub presented: Presented<'a>,
    pub traceparent: Option<&'a str>,
    pub tracestate: Option<&'a str>,
    pub received: Instant,
}

/// A refusal or failure, with what the transport needs to render it.
#[derive(Debug)]
pub struct TaskError {
    pub code: ErrorCode,
    pub message: String,
    pub task_id: Option<Uuid>,
    /// Hints beside `code` (`qos_class`, `retry_after_ms`, `problems`, …).
    pub hints: Map<String, Value>,
    /// Set once execution started: the answer is a full RESPONSE envelope.
    pub executed: bool,
    pub latency_ms: u64,
}

impl TaskError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        TaskError {
            code,
            message: message.into(),
            task_id: None,
            hints: Map::new(),
            executed: false,
            latency_ms: 0,
        }
    }

    fn hint(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.hints.insert(key.into(), value.into());
        self
    }

    /// The answer body: the error envelope before execution, a RESPONSE envelope after.
    pub fn body(&self) -> Value {
        if let (true, Some(id)) = (self.executed, self.task_id) {
            let r = TaskResponse::failure(id, self.code, &self.message, self.latency_ms);
            return serde_json::to_value(r).unwrap_or_default();
        }
        let mut error = Map::new();
        error.insert("code".into(), self.code.as_str().into());
        error.insert("message".into(), self.message.clone().into());
        error.extend(self.hints.clone());
        let mut body = Map::new();
        body.insert("error".into(), Value::Object(error));
        if let Some(id) = self.task_id {
            body.insert("task_id".into(), id.to_string().into());
        }
        Value::Object(body)
    }
}

impl From<Rejection> for TaskError {
    fn from(r: Rejection) -> Self {
        let body = r.to_error_body();
        let mut e = TaskError::new(
            body.code().unwrap_or(ErrorCode::ValidationError),
            body.error.message,
        );
        e.hints = body.error.extra;
        e
    }
}

/// A task that passed admission and holds a slot.
pub struct Admitted {
    pub task: TaskRequest,
    pub payload: Value,
    pub model: String,
    pub ctx: CallContext,
    pub received: Instant,
    pub deadline: Instant,
    pub respond_encrypted: Option<crate::keys::ResponseSealer>,
    _permit: Permit,
}

impl Admitted {
    pub fn qos(&self) -> &'static str {
        self.task.constraints.qos.as_str()
    }

    pub fn is_embedding(&self) -> bool {
        self.task.intent == LLM_EMBEDDING_V1
    }

    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// A W3C trace context for the backend call: the caller's, or one derived from `trace.trace_id`.
fn trace_context(task: &TaskRequest, incoming: &Incoming<'_>) -> CallContext {
    let trace_id = task.trace.as_ref().and_then(|t| t.trace_id.clone());
    let traceparent = incoming.traceparent.map(str::to_owned).or_else(|| {
        trace_id.as_ref().map(|id| {
            let mut span = [0u8; 8];
            getrandom::getrandom(&mut span).expect("the OS random source is available");
            format!("00-{}-{}-01", id.to_ascii_lowercase(), hex::encode(span))
        })
    });
    CallContext {
        traceparent,
        tracestate: incoming.tracestate.map(str::to_owned),
        trace_id,
    }
}

fn asks_for_tools(task: &TaskRequest, payload: &Value) -> bool {
    let is_cip = task.constraints.cip.is_some()
        || task
            .trace
            .as_ref()
            .is_some_and(|t| t.extra.contains_key("cip_role"));
    let wants_tools = payload.get("tools").is_some_and(|t| !t.is_null())
        || task.intent.as_str().starts_with("urn:iicp:intent:mcp:");
    is_cip && wants_tools
}

pub async fn admit(state: &Arc<NodeState>, incoming: Incoming<'_>) -> Result<Admitted, TaskError> {
    let mut task = TaskRequest::from_slice(incoming.body)?;
    let id = task.task_id;
    let fail = |e: TaskError| {
        let mut e = e;
        e.task_id = Some(id);
        e
    };
    let catalog = state.catalog();
    if !catalog.serves(task.intent.as_str()) {
        return Err(fail(TaskError::new(
            ErrorCode::UnknownIntent,
            format!("this node does not serve {}", task.intent),
        )));
    }
    let mut presented = incoming.presented;
    if let Some(t) = task.auth.as_ref().and_then(|a| a.node_token.as_deref()) {
        presented.node_token = Some(t);
    }
    let now_s = state.clock.now_s();
    if !state
        .creds
        .allows(state.config.auth, presented, task.intent.as_str(), now_s)
    {
        return Err(fail(TaskError::new(
            ErrorCode::Unauthorized,
            "missing or invalid credential",
        )));
    }
    // A task_id or nonce already taken here is refused at once. Both are recorded only once
    // the task is admitted (below), so a task refused before it ran (a 429 with Retry-After,
    // a CX key that rotated) can be sent again unchanged.
    let replayed_task = || {
        fail(TaskError::new(
            ErrorCode::Conflict,
            "this task_id was already submitted",
        ))
    };
    let replayed_nonce = || fail(TaskError::new(ErrorCode::Conflict, "nonce replayed"));
    let now_ms = state.clock.now_ms();
    if state.seen_tasks.seen(&id, now_ms) {
        return Err(replayed_task());
    }
    if let Some(nonce) = &task.nonce {
        if state.seen_nonces.seen(nonce, now_ms) {
            return Err(replayed_nonce());
        }
    }
    // Moved out, not copied: from here on the payload lives in `Admitted::payload`.
    let plaintext = task.payload.take().unwrap_or(Value::Null);
    // The tool gate and the model choice read the payload; for an encrypted one they run
    // again once it is readable (below).
    let tool_gate = |payload: &Value| {
        if asks_for_tools(&task, payload) && !state.config.allow_tool_execution {
            return Err(fail(TaskError::new(
                ErrorCode::ToolExecutionDenied,
                "this provider does not execute tools",
            )));
        }
        Ok(())
    };
    let pick_model = |payload: &Value| {
        let requested = payload.get("model").and_then(Value::as_str);
        catalog.pick(task.intent.as_str(), requested).map_err(|()| {
            fail(TaskError::new(
                ErrorCode::E029ModelNotServed,
                "the requested model is not served by this node",
            ))
        })
    };
    tool_gate(&plaintext)?;
    let mut model = pick_model(&plaintext)?;

    let deadline = incoming.received + Duration::from_millis(task.constraints.timeout_ms.into());
    let qos = task.constraints.qos;
    let wait = qos.waits_for_capacity().then(|| {
        state
            .config
            .interactive_wait
            .min(deadline.saturating_duration_since(Instant::now()))
    });
    let permit = state
        .gate
        .acquire(task.constraints.priority, wait)
        .await
        .map_err(|_| {
            let retry = state.retry_after_ms();
            fail(
                TaskError::new(
                    ErrorCode::CapacityExceeded,
                    "all slots are busy; try another node",
                )
                .hint("qos_class", qos.as_str())
                .hint("retry_after_ms", retry),
            )
        })?;

    let (payload, respond_encrypted) = match &task.iicp_conf {
        None => (plaintext, None),
        Some(conf) => {
            let keys = state.cx.as_ref().ok_or_else(|| {
                fail(TaskError::new(
                    ErrorCode::E050CxDecryptFailed,
                    "this node does not accept encrypted payloads",
                ))
            })?;
            let (payload, sealer) = keys
                .read()
                .open(&task, conf)
                .map_err(|m| fail(TaskError::new(ErrorCode::E050CxDecryptFailed, m)))?;
            let wants = task.cx_response_encryption.as_deref() == Some("required");
            (payload, wants.then_some(sealer))
        }
    };
    // Encrypted payloads are checked once they are readable: the intent schema, the CIP tool
    // gate and the requested model, exactly as a plaintext payload was above.
    if task.iicp_conf.is_some() {
        let mut problems = iicp_proto::Problems::new();
        iicp_proto::payload::check_payload(&task.intent, &payload, "$.payload", &mut problems);
        if !problems.is_empty() {
            let body = problems.to_error_body();
            return Err(fail(TaskError::new(
                ErrorCode::ValidationError,
                body.error.message,
            )));
        }
        tool_gate(&payload)?;
        model = pick_model(&payload)?;
    }
    // Recorded once admitted, atomically: of two copies racing for slots, only one runs.
    let now_ms = state.clock.now_ms();
    if !state.seen_tasks.first_sighting(id, now_ms) {
        return Err(replayed_task());
    }
    if let Some(nonce) = &task.nonce {
        if !state.seen_nonces.first_sighting(nonce.clone(), now_ms) {
            return Err(replayed_nonce());
        }
    }
    let ctx = trace_context(&task, &incoming);
    Ok(Admitted {
        payload,
        model,
        ctx,
        received: incoming.received,
        deadline,
        respond_encrypted,
        task,
        _permit: permit,
    })
}

/// Maps a backend failure to the caller's error; details stay in the node's log.
pub fn backend_failure(e: &BackendError) -> (ErrorCode, &'static str) {
    match e {
        BackendError::ModelNotFound => (
            ErrorCode::E029ModelNotServed,
            "the requested model is not served by this node",
        ),
        _ => (ErrorCode::BackendError, "the inference backend failed"),
    }
}

/// A success RESPONSE, ready to send.
pub struct Finished {
    pub response: TaskResponse,
    /// The backend's result exactly as it came (a JSON object), sent in the place of
    /// `response.result`, which is then `None`.
    pub raw_result: Option<Vec<u8>>,
}

impl Finished {
    /// The RESPONSE as JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        // Sized for the envelope around a short result: no regrowth on the common path.
        let mut bytes = Vec::with_capacity(512);
        serde_json::to_writer(&mut bytes, &self.response)?;
        let Some(raw) = &self.raw_result else {
            return Ok(bytes);
        };
        // `"result":null` at the top level, before any nested object: the envelope's own.
        const FIELD: &[u8] = b"\"result\":null";
        let at = bytes
            .windows(FIELD.len())
            .position(|w| w == FIELD)
            .filter(|&at| !bytes[1..at].contains(&b'{'));
        match at {
            Some(at) => {
                let null = at + FIELD.len() - 4;
                let mut out = Vec::with_capacity(bytes.len() - 4 + raw.len());
                out.extend_from_slice(&bytes[..null]);
                out.extend_from_slice(raw);
                out.extend_from_slice(&bytes[null + 4..]);
                Ok(out)
            }
            None => {
                let mut response = self.response.clone();
                response.result = Some(serde_json::from_slice(raw)?);
                serde_json::to_vec(&response)
            }
        }
    }
}

/// Runs an admitted, non-streaming task to its RESPONSE.
pub async fn execute(state: &Arc<NodeState>, a: Admitted) -> Result<Finished, TaskError> {
    let call = async {
        if a.is_embedding() {
            state.backend.embed(&a.model, &a.payload, &a.ctx).await
        } else {
            state.backend.chat(&a.model, &a.payload, &a.ctx).await
        }
    };
    let outcome = tokio::time::timeout(a.remaining(), call).await;
    let latency = a.received.elapsed();
    match outcome {
        Ok(Ok(output)) => Ok(finish(state, &a, output, latency)),
        Ok(Err(e)) => {
            tracing::warn!(task_id = %a.task.task_id, error = %e, "backend call failed");
            let (code, message) = backend_failure(&e);
            Err(failed(state, &a, code, message, latency))
        }
        Err(_) => Err(failed(
            state,
            &a,
            ErrorCode::TaskTimeout,
            "the task did not finish within timeout_ms",
            latency,
        )),
    }
}

/// Builds the success RESPONSE and books the outcome.
pub fn finish(state: &NodeState, a: &Admitted, output: Output, latency: Duration) -> Finished {
    let ms = latency.as_millis() as u64;
    let tokens = output.usage.map(|u| u.total());
    let mut raw_result = output.raw_result;
    let mut result = output.result;
    if let (Some(_), Some(raw)) = (&a.respond_encrypted, &raw_result) {
        // A sealed result is encrypted from its parsed form, as any other.
        result = serde_json::from_slice(raw).unwrap_or_default();
        raw_result = None;
    }
    let mut response = TaskResponse::success(a.task.task_id, result, ms);
    if raw_result.is_some() {
        response.result = None;
    }
    response.metrics.tokens_used = tokens;
    response.model_used = Some(output.model);
    if let Some(sealer) = &a.respond_encrypted {
        let result = response.result.take().unwrap_or_default();
        response
            .extra
            .insert("iicp_conf_resp".into(), sealer.seal(&a.task, &result));
    }
    book(state, a, "success", latency, tokens.unwrap_or(0));
    Finished {
        response,
        raw_result,
    }
}

/// Books a failed execution and builds its error.
pub fn failed(
    state: &NodeState,
    a: &Admitted,
    code: ErrorCode,
    message: &str,
    latency: Duration,
) -> TaskError {
    let status = if code == ErrorCode::TaskTimeout {
        "timeout"
    } else {
        "error"
    };
    book(state, a, status, latency, 0);
    let mut e = TaskError::new(code, message);
    e.task_id = Some(a.task.task_id);
    e.executed = true;
    e.latency_ms = latency.as_millis() as u64;
    e
}

fn book(state: &NodeState, a: &Admitted, status: &'static str, latency: Duration, tokens: u64) {
    let o = &state.outcomes;
    match status {
        "success" => o.success.fetch_add(1, Ordering::Relaxed),
        "timeout" => o.timeout.fetch_add(1, Ordering::Relaxed),
        _ => o.failed.fetch_add(1, Ordering::Relaxed),
    };
    let ms = latency.as_secs_f64() * 1000.0;
    o.latency_ms_sum.fetch_add(ms as u64, Ordering::Relaxed);
    state.record_latency(ms);
    state.metrics.task(
        status,
        a.task.intent.as_str(),
        a.qos(),
        latency.as_micros() as u64,
        tokens,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn finished(raw: Option<&str>) -> Finished {
        let mut response = TaskResponse::success(Uuid::nil(), Value::Null, 12);
        response.model_used = Some("m".into());
        response.result = raw.is_none().then(|| json!({"choices": []}));
        Finished {
            response,
            raw_result: raw.map(|r| r.as_bytes().to_vec()),
        }
    }

    #[test]
    fn a_raw_result_takes_the_place_of_the_envelopes_result() {
        let raw = r#"{"choices":[{"message":{"content":"hi"}}],"x":{"result":null}}"#;
        let sent: Value = serde_json::from_slice(&finished(Some(raw)).to_json().unwrap()).unwrap();
        let mut expected = serde_json::to_value(&finished(None).response).unwrap();
        expected["result"] = serde_json::from_str(raw).unwrap();
        assert_eq!(sent, expected);
        assert_eq!(sent["status"], "success");
        assert_eq!(sent["model_used"], "m");
    }

    #[test]
    fn without_a_raw_result_the_envelope_is_sent_as_it_is() {
        let f = finished(None);
        assert_eq!(
            f.to_json().unwrap(),
            serde_json::to_vec(&f.response).unwrap()
        );
    }
}
