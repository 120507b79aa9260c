//! What both APIs share: answer headers, JSON and streamed bodies, clocks, the call itself.

use crate::failure::{Api, Failure};
use crate::Shared;
use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::Stream;
use futures_util::StreamExt;
use iicp_client::{Answer, Call, ClientError, StreamAnswer};
use iicp_proto::ErrorCode;
use serde_json::{Map, Value};
use std::convert::Infallible;

/// The node (id or prefix) that served the answer.
pub const X_IICP_NODE: HeaderName = HeaderName::from_static("x-iicp-node");
/// How many nodes were tried, the serving one included.
pub const X_IICP_ATTEMPTS: HeaderName = HeaderName::from_static("x-iicp-attempts");
/// The IICP task id of a non-streamed answer.
pub const X_IICP_TASK_ID: HeaderName = HeaderName::from_static("x-iicp-task-id");
/// Marks model-generated content.
pub const X_IICP_GENERATED_BY_AI: HeaderName = HeaderName::from_static("x-iicp-generated-by-ai");

pub const NDJSON: &str = "application/x-ndjson";
pub const EVENT_STREAM: &str = "text/event-stream";

/// Adds the serving node, the attempts and (for generated content) the AI marker.
pub fn mark(response: &mut Response, node: &str, attempts: u32, generated: bool) {
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(node) {
        h.insert(X_IICP_NODE, v);
    }
    h.insert(X_IICP_ATTEMPTS, HeaderValue::from(attempts));
    if generated {
        h.insert(X_IICP_GENERATED_BY_AI, HeaderValue::from_static("true"));
    }
}

/// A 200 JSON answer from a node's RESPONSE.
pub fn json_answer(body: &Value, answer: &Answer, generated: bool) -> Response {
    let mut response = iicp_server::error::json(StatusCode::OK, body);
    mark(
        &mut response,
        &answer.node_id,
        answer.attempts,
        generated && answer.response.generated_by_ai,
    );
    if let Ok(v) = HeaderValue::from_str(&answer.response.task_id.to_string()) {
        response.headers_mut().insert(X_IICP_TASK_ID, v);
    }
    response
}

/// A 200 streamed answer.
pub fn stream_answer<S>(content_type: &'static str, body: S, node: &str, attempts: u32) -> Response
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    let mut response = Response::new(Body::from_stream(body.map(Ok::<Bytes, Infallible>)));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies such as nginx must pass tokens on as they come.
    h.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    mark(&mut response, node, attempts, true);
    response
}

/// The span of one API call: the model asked for (and whether it streams); the serving node
/// and the attempts are recorded on it once known.
macro_rules! call_span {
    ($name:literal, $model:expr) => {
        tracing::info_span!(
            $name,
            model = %$model,
            node = tracing::field::Empty,
            attempts = tracing::field::Empty
        )
    };
    ($name:literal, $model:expr, $stream:expr) => {
        tracing::info_span!(
            $name,
            model = %$model,
            stream = $stream,
            node = tracing::field::Empty,
            attempts = tracing::field::Empty
        )
    };
}
pub(crate) use call_span;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Now as RFC 3339 in UTC with microseconds (`2025-01-02T03:04:05.123456Z`), the way Ollama
/// writes `created_at`.
pub fn rfc3339_now() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

pub fn rfc3339(t: time::OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Parses a request body as a JSON object.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, Failure> {
    serde_json::from_slice::<Map<String, Value>>(body).map_err(|e| Failure::not_json(&e))
}

/// Takes the request's `model`: a non-empty string, or absent.
pub fn take_model(req: &mut Map<String, Value>) -> Result<Option<String>, Failure> {
    match req.remove("model") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Failure::bad_request("`model` must be a string")),
    }
}

/// A request body as a JSON object ([`object`]) and its `model` ([`take_model`]). The body is
/// dropped once parsed, so its bytes are not held through the call.
pub fn request(body: Bytes) -> Result<(Map<String, Value>, Option<String>), Failure> {
    let mut req = object(&body)?;
    drop(body);
    let model = take_model(&mut req)?;
    Ok((req, model))
}

/// True when the value is a JSON `true` (Ollama and OpenAI both accept only booleans).
pub fn flag(v: Option<Value>, default: bool) -> bool {
    v.and_then(|v| v.as_bool()).unwrap_or(default)
}

impl Shared {
    /// A call of `intent` with the gateway's timeout.
    pub fn call(
        &self,
        intent: &str,
        payload: Map<String, Value>,
        model: Option<String>,
        modality: Option<&str>,
    ) -> Call {
        let mut call = Call::new(intent, Value::Object(payload));
        call.model = model;
        call.modality = modality.map(str::to_owned);
        call.timeout = self.task_timeout;
        call
    }

    /// Runs a call; a failure comes back explained for `api`.
    pub async fn run(&self, api: Api, call: Call) -> Result<Answer, Failure> {
        let (intent, model) = (call.intent.clone(), call.model.clone());
        match self.client.call(call).await {
            Ok(a) => Ok(a),
            Err(e) => Err(self.explain(api, e, &intent, model.as_deref()).await),
        }
    }

    /// Runs a streamed call (failover happens until the first token).
    pub async fn run_stream(&self, api: Api, call: Call) -> Result<StreamAnswer, Failure> {
        let (intent, model) = (call.intent.clone(), call.model.clone());
        match self.client.call_stream(call).await {
            Ok(a) => Ok(a),
            Err(e) => Err(self.explain(api, e, &intent, model.as_deref()).await),
        }
    }

    /// Turns "no node for this request" into "no such model" when live nodes serve the intent
    /// but none serves the model.
    async fn explain(
        &self,
        api: Api,
        e: ClientError,
        intent: &str,
        model: Option<&str>,
    ) -> Failure {
        let nobody = matches!(
            e,
            ClientError::NoCandidates | ClientError::NoAvailableNode { attempts: 0, .. }
        );
        if let (true, Some(m)) = (nobody, model) {
            if let Ok(all) = self.client.discover(intent, None, None).await {
                if !all.is_empty() && !all.iter().any(|c| c.models.iter().any(|x| x == m)) {
                    return Failure::model_not_found(api, m);
                }
            }
        }
        // Nodes list all their models whatever the intent, so a node may be chosen for a model
        // it serves only for another intent; it then refuses with IICP-E029.
        if let (ClientError::NoAvailableNode { last, .. }, Some(m)) = (&e, model) {
            if last.contains(ErrorCode::E029ModelNotServed.as_str()) {
                return Failure::model_not_found(api, m);
            }
        }
        let failure = Failure::from_client(&e);
        if failure.status.is_server_error() {
            tracing::warn!(code = %failure.code, status = failure.status.as_u16(), "call failed");
        } else {
            tracing::debug!(code = %failure.code, status = failure.status.as_u16(), "call refused");
        }
        failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_look_like_ollamas() {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123456Z");
    }

    #[test]
    fn models_are_optional_strings() {
        let mut m = object(br#"{"model": "x"}"#).unwrap();
        assert_eq!(take_model(&mut m).unwrap().as_deref(), Some("x"));
        let mut m = object(br#"{"model": ""}"#).unwrap();
        assert_eq!(take_model(&mut m).unwrap(), None);
        let mut m = object(br#"{"model": 3}"#).unwrap();
        assert!(take_model(&mut m).is_err());
        assert!(object(b"[1]").is_err());
    }
}
