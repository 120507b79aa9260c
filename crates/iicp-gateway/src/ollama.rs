//! Ollama's native API: `POST /api/chat` and `POST /api/generate` (NDJSON streams by default),
//! `POST /api/embed`, `POST /api/embeddings` (the older single-prompt form), `GET /api/tags`,
//! `GET /api/version`, and `GET /` ("Ollama is running", for tools that probe it).
//!
//! Requests become the IICP chat payload: messages with `images` become OpenAI content parts,
//! tool calls get their arguments as JSON strings, `options` map to the OpenAI names
//! (`num_predict` → `max_tokens`, `temperature`, `top_p`, `stop`, `seed`, penalties) and
//! `format` to `response_format`. Model names resolve with or without `:latest`.

use crate::failure::{Api, Failure};
use crate::serve::{flag, json_answer, object, rfc3339_now, stream_answer, take_model, NDJSON};
use crate::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use iicp_client::{ClientError, StreamItem};
use iicp_proto::intent::{LLM_CHAT_V1, LLM_EMBEDDING_V1};
use iicp_proto::task::TaskResponse;
use serde_json::{json, Map, Value};
use sha2::Digest;
use std::time::Instant;
use tracing::field::Empty;
use tracing::Instrument;

const API: Api = Api::Ollama;

/// The Ollama version reported to tools that check it.
pub const OLLAMA_VERSION: &str = "0.9.0";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/api/version", get(version))
        .route("/api/tags", get(tags))
        .route("/api/chat", post(chat))
        .route("/api/generate", post(generate))
        .route("/api/embed", post(embed))
        .route("/api/embeddings", post(embeddings))
}

async fn root() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Ollama is running",
    )
        .into_response()
}

async fn version() -> Response {
    iicp_server::error::json(StatusCode::OK, &json!({ "version": OLLAMA_VERSION }))
}

/// The media type of a base64 image, from its first bytes.
fn image_type(b64: &str) -> &'static str {
    if b64.starts_with("/9j/") {
        "image/jpeg"
    } else if b64.starts_with("R0lGOD") {
        "image/gif"
    } else if b64.starts_with("UklGR") {
        "image/webp"
    } else {
        "image/png"
    }
}

/// Ollama tool calls (arguments as an object) → OpenAI's (arguments as a JSON string).
fn openai_tool_calls(calls: &[Value]) -> Value {
    Value::Array(
        calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let f = c.get("function").cloned().unwrap_or_default();
                let arguments = match f.get("arguments") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => "{}".into(),
                };
                json!({"id": format!("call_{i}"), "type": "function", "function": {
                    "name": f.get("name").cloned().unwrap_or_default(),
                    "arguments": arguments}})
            })
            .collect(),
    )
}

/// OpenAI tool calls → Ollama's (arguments parsed back to an object).
fn ollama_tool_calls(calls: &[Value]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| {
                let f = c.get("function").cloned().unwrap_or_default();
                let arguments = match f.get("arguments") {
                    Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(json!({})),
                    Some(other) => other.clone(),
                    None => json!({}),
                };
                json!({"function": {"name": f.get("name").cloned().unwrap_or_default(),
                                    "arguments": arguments}})
            })
            .collect(),
    )
}

/// One Ollama message as an OpenAI-style chat message.
fn message(m: Value) -> Result<Value, Failure> {
    let Value::Object(mut m) = m else {
        return Err(Failure::bad_request("each message must be an object"));
    };
    let role = match m.remove("role") {
        Some(Value::String(r)) => r,
        _ => return Err(Failure::bad_request("each message needs a `role`")),
    };
    let text = match m.remove("content") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err(Failure::bad_request("message `content` must be a string")),
    };
    let mut out = Map::new();
    let images: Vec<Value> = match m.remove("images") {
        Some(Value::Array(images)) => images,
        _ => Vec::new(),
    };
    let content = if images.is_empty() {
        Value::String(text)
    } else {
        let mut parts = vec![json!({"type": "text", "text": text})];
        for img in &images {
            let b64 = img
                .as_str()
                .ok_or_else(|| Failure::bad_request("`images` must be base64 strings"))?;
            parts.push(json!({"type": "image_url", "image_url": {
                "url": format!("data:{};base64,{b64}", image_type(b64))}}));
        }
        Value::Array(parts)
    };
    out.insert("role".into(), Value::String(role));
    out.insert("content".into(), content);
    if let Some(calls) = m
        .get("tool_calls")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
    {
        out.insert("tool_calls".into(), openai_tool_calls(calls));
    }
    if let Some(name) = m.remove("tool_name").filter(Value::is_string) {
        out.insert("name".into(), name);
    }
    Ok(Value::Object(out))
}

/// Ollama `options` → the chat payload's OpenAI-named fields.
fn options_into(payload: &mut Map<String, Value>, options: Option<Value>) -> Result<(), Failure> {
    let options = match options {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(Failure::bad_request("`options` must be an object")),
    };
    for (key, value) in options {
        match key.as_str() {
            // -1 (no limit) and -2 (fill the context) leave the node's default.
            "num_predict" => {
                if let Some(n) = value.as_i64().filter(|n| *n >= 1) {
                    payload.insert("max_tokens".into(), json!(n));
                }
            }
            "stop" => match value {
                Value::String(s) => {
                    payload.insert("stop".into(), json!([s]));
                }
                Value::Array(_) => {
                    payload.insert("stop".into(), value);
                }
                _ => {}
            },
            "temperature" | "top_p" | "seed" | "presence_penalty" | "frequency_penalty"
                if !value.is_null() =>
            {
                payload.insert(key, value);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Ollama `format` → `response_format`.
fn format_into(payload: &mut Map<String, Value>, format: Option<Value>) -> Result<(), Failure> {
    match format {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(f)) if f.is_empty() => Ok(()),
        Some(Value::String(f)) if f == "json" => {
            payload.insert("response_format".into(), json!({"type": "json_object"}));
            Ok(())
        }
        Some(schema @ Value::Object(_)) => {
            payload.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}),
            );
            Ok(())
        }
        Some(_) => Err(Failure::bad_request(
            "`format` must be \"json\" or a JSON schema",
        )),
    }
}

/// The model an Ollama request names; Ollama insists on one.
fn required_model(req: &mut Map<String, Value>) -> Result<String, Failure> {
    take_model(req)?.ok_or_else(|| Failure::bad_request("model is required"))
}

/// The assistant message and done reason of a chat completion, in Ollama's shape.
fn answer_message(result: &Value) -> (Value, &'static str) {
    let msg = result.pointer("/choices/0/message");
    let content = msg
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut out = json!({"role": "assistant", "content": content});
    if let Some(calls) = msg
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
    {
        out["tool_calls"] = ollama_tool_calls(calls);
    }
    let reason = match result
        .pointer("/choices/0/finish_reason")
        .and_then(Value::as_str)
    {
        Some("length") => "length",
        _ => "stop",
    };
    (out, reason)
}

/// Token counts of a result: (prompt, completion).
fn counts(result: &Value, tokens_used: Option<u64>) -> (u64, u64) {
    let u = result.get("usage");
    let p = u
        .and_then(|u| u.get("prompt_tokens"))
        .and_then(Value::as_u64);
    let c = u
        .and_then(|u| u.get("completion_tokens"))
        .and_then(Value::as_u64);
    match (p, c) {
        (None, None) => (0, tokens_used.unwrap_or(0)),
        (p, c) => (p.unwrap_or(0), c.unwrap_or(0)),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Generate,
}

/// Writes Ollama answers (whole objects and NDJSON lines) for one request.
struct Lines {
    model: String,
    kind: Kind,
    started: Instant,
    first: Option<Instant>,
}

impl Lines {
    fn new(model: String, kind: Kind, started: Instant) -> Lines {
        Lines {
            model,
            kind,
            started,
            first: None,
        }
    }

    /// One streamed piece of text.
    fn piece(&mut self, text: &str) -> Bytes {
        self.first.get_or_insert_with(Instant::now);
        let model = Value::from(self.model.as_str());
        let text = Value::from(text);
        let now = rfc3339_now();
        Bytes::from(match self.kind {
            Kind::Chat => format!(
                "{{\"model\":{model},\"created_at\":\"{now}\",\"message\":{{\"role\":\"assistant\",\"content\":{text}}},\"done\":false}}\n"
            ),
            Kind::Generate => format!(
                "{{\"model\":{model},\"created_at\":\"{now}\",\"response\":{text},\"done\":false}}\n"
            ),
        })
    }

    /// A whole answer (`done: true`) with its statistics. `message` is the assistant message
    /// (chat) or `{"content": …}` (generate).
    fn whole(&self, message: Value, reason: &str, (prompt, completion): (u64, u64)) -> Value {
        let total = self.started.elapsed().as_nanos() as u64;
        let (prompt_ns, eval_ns) = match self.first {
            Some(first) => {
                let p = first.duration_since(self.started).as_nanos() as u64;
                (p, total.saturating_sub(p))
            }
            None => (0, total),
        };
        let mut out = json!({"model": self.model, "created_at": rfc3339_now()});
        match self.kind {
            Kind::Chat => out["message"] = message,
            Kind::Generate => out["response"] = message["content"].clone(),
        }
        let stats = json!({
            "done_reason": reason, "done": true, "total_duration": total, "load_duration": 0,
            "prompt_eval_count": prompt, "prompt_eval_duration": prompt_ns,
            "eval_count": completion, "eval_duration": eval_ns,
        });
        if let (Some(o), Value::Object(s)) = (out.as_object_mut(), stats) {
            o.extend(s);
        }
        out
    }

    fn last(&self, r: &TaskResponse) -> Bytes {
        let result = r.result.as_ref().unwrap_or(&Value::Null);
        let (_, reason) = answer_message(result);
        let empty = json!({"role": "assistant", "content": ""});
        let line = self.whole(empty, reason, counts(result, r.metrics.tokens_used));
        let mut out = line.to_string().into_bytes();
        out.push(b'\n');
        Bytes::from(out)
    }

    /// A whole answer as the lines a live stream would have sent.
    fn replay(&self, result: &Value, tokens_used: Option<u64>) -> Bytes {
        let (message, reason) = answer_message(result);
        let mut first = json!({"model": self.model, "created_at": rfc3339_now(), "done": false});
        match self.kind {
            Kind::Chat => first["message"] = message,
            Kind::Generate => first["response"] = message["content"].clone(),
        }
        let empty = json!({"role": "assistant", "content": ""});
        let last = self.whole(empty, reason, counts(result, tokens_used));
        Bytes::from(format!("{first}\n{last}\n"))
    }
}

fn stream_error(e: &ClientError) -> Bytes {
    Bytes::from(format!("{}\n", Failure::from_client(e).stream_error(API)))
}

/// The node's stream as NDJSON: one line per delta, then the `done` line with statistics. A
/// failure after the first token ends the stream with an `{"error": …}` line.
fn live_stream(
    items: BoxStream<'static, Result<StreamItem, ClientError>>,
    lines: Lines,
) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
    futures_util::stream::unfold(
        (items, lines, false),
        |(mut items, mut lines, finished)| async move {
            if finished {
                return None;
            }
            let (out, finished) = match items.next().await {
                Some(Ok(StreamItem::Delta(text))) => (lines.piece(&text), false),
                Some(Ok(StreamItem::Done(r))) if r.is_success() => (lines.last(&r), true),
                Some(Ok(StreamItem::Done(_))) => (
                    stream_error(&ClientError::Stream("the node reported a failure".into())),
                    true,
                ),
                Some(Err(e)) => (stream_error(&e), true),
                None => (
                    stream_error(&ClientError::Stream(
                        "the stream ended before it finished".into(),
                    )),
                    true,
                ),
            };
            Some((out, (items, lines, finished)))
        },
    )
}

/// The answer to a request without input: Ollama loads the model and says so.
async fn load_only(s: &AppState, model: &str, kind: Kind) -> Response {
    let Some(model) = s.resolve_tagged(LLM_CHAT_V1, model).await else {
        return Failure::model_not_found(API, model).render(API);
    };
    let mut out = json!({"model": model, "created_at": rfc3339_now(),
                         "done_reason": "load", "done": true});
    match kind {
        Kind::Chat => out["message"] = json!({"role": "assistant", "content": ""}),
        Kind::Generate => out["response"] = json!(""),
    }
    iicp_server::error::json(StatusCode::OK, &out)
}

/// Runs a chat-intent call for `/api/chat` or `/api/generate` and answers in Ollama's shape.
async fn converse(
    s: AppState,
    model: String,
    payload: Map<String, Value>,
    stream: bool,
    kind: Kind,
    started: Instant,
) -> Response {
    // `llama3.2` reaches nodes serving `llama3.2:latest` and the other way round.
    let model = s.resolve_tagged(LLM_CHAT_V1, &model).await.unwrap_or(model);
    let modality = crate::openai::has_images(&payload).then_some("image");
    let tools = payload
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    let call = s.call(LLM_CHAT_V1, payload, Some(model.clone()), modality);
    let lines = Lines::new(model, kind, started);
    // The node streams text only: a call that may answer with tool calls runs whole.
    if stream && !tools {
        let answer = match s.run_stream(API, call).await {
            Ok(a) => a,
            Err(f) => return f.render(API),
        };
        record(&answer.node_id, answer.attempts);
        let body = live_stream(answer.items, lines);
        return stream_answer(NDJSON, body, &answer.node_id, answer.attempts);
    }
    let answer = match s.run(API, call).await {
        Ok(a) => a,
        Err(f) => return f.render(API),
    };
    record(&answer.node_id, answer.attempts);
    let Some(result) = answer
        .response
        .result
        .as_ref()
        .filter(|r| r.pointer("/choices/0").is_some())
    else {
        return Failure::malformed_result().render(API);
    };
    let tokens = answer.response.metrics.tokens_used;
    if stream {
        let body = lines.replay(result, tokens);
        return stream_answer(
            NDJSON,
            futures_util::stream::once(std::future::ready(body)),
            &answer.node_id,
            answer.attempts,
        );
    }
    let (message, reason) = answer_message(result);
    let body = lines.whole(message, reason, counts(result, tokens));
    json_answer(&body, &answer, true)
}

fn record(node: &str, attempts: u32) {
    let span = tracing::Span::current();
    span.record("node", node);
    span.record("attempts", attempts);
    tracing::debug!("answered");
}

async fn chat(State(s): State<AppState>, body: Bytes) -> Response {
    let started = Instant::now();
    let mut req = match object(&body) {
        Ok(r) => r,
        Err(f) => return f.render(API),
    };
    drop(body);
    let model = match required_model(&mut req) {
        Ok(m) => m,
        Err(f) => return f.render(API),
    };
    let stream = flag(req.remove("stream"), true);
    let span = tracing::info_span!(
        "ollama.chat",
        model = %model,
        stream,
        node = Empty,
        attempts = Empty
    );
    let messages = match req.remove("messages") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ms)) => ms,
        Some(_) => return Failure::bad_request("`messages` must be an array").render(API),
    };
    if messages.is_empty() {
        return load_only(&s, &model, Kind::Chat).instrument(span).await;
    }
    let mut payload = Map::new();
    match messages.into_iter().map(message).collect() {
        Ok(ms) => payload.insert("messages".into(), Value::Array(ms)),
        Err(f) => return f.render(API),
    };
    if let Some(tools) = req.remove("tools").filter(|t| !t.is_null()) {
        payload.insert("tools".into(), tools);
    }
    let mapped = options_into(&mut payload, req.remove("options"))
        .and_then(|()| format_into(&mut payload, req.remove("format")));
    if let Err(f) = mapped {
        return f.render(API);
    }
    converse(s, model, payload, stream, Kind::Chat, started)
        .instrument(span)
        .await
}

async fn generate(State(s): State<AppState>, body: Bytes) -> Response {
    let started = Instant::now();
    let mut req = match object(&body) {
        Ok(r) => r,
        Err(f) => return f.render(API),
    };
    drop(body);
    let model = match required_model(&mut req) {
        Ok(m) => m,
        Err(f) => return f.render(API),
    };
    let stream = flag(req.remove("stream"), true);
    let span = tracing::info_span!(
        "ollama.generate",
        model = %model,
        stream,
        node = Empty,
        attempts = Empty
    );
    let prompt = match req.remove("prompt") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(p)) => p,
        Some(_) => return Failure::bad_request("`prompt` must be a string").render(API),
    };
    if prompt.is_empty() {
        return load_only(&s, &model, Kind::Generate).instrument(span).await;
    }
    let mut messages = Vec::with_capacity(2);
    if let Some(Value::String(system)) = req.remove("system") {
        if !system.is_empty() {
            messages.push(json!({"role": "system", "content": system}));
        }
    }
    let mut user = json!({"role": "user", "content": prompt});
    if let Some(images) = req.remove("images").filter(|i| !i.is_null()) {
        user["images"] = images;
    }
    match message(user) {
        Ok(m) => messages.push(m),
        Err(f) => return f.render(API),
    }
    let mut payload = Map::new();
    payload.insert("messages".into(), Value::Array(messages));
    let mapped = options_into(&mut payload, req.remove("options"))
        .and_then(|()| format_into(&mut payload, req.remove("format")));
    if let Err(f) = mapped {
        return f.render(API);
    }
    converse(s, model, payload, stream, Kind::Generate, started)
        .instrument(span)
        .await
}

/// Runs an embedding call; the vectors in index order.
async fn embed_call(
    s: &AppState,
    model: String,
    input: Value,
    dimensions: Option<Value>,
) -> Result<(Vec<Value>, u64, String, iicp_client::Answer), Failure> {
    let model = s
        .resolve_tagged(LLM_EMBEDDING_V1, &model)
        .await
        .unwrap_or(model);
    let mut payload = Map::new();
    payload.insert("input".into(), input);
    if let Some(d) = dimensions.filter(|d| !d.is_null()) {
        payload.insert("dimensions".into(), d);
    }
    let call = s.call(LLM_EMBEDDING_V1, payload, Some(model.clone()), None);
    let mut answer = s.run(API, call).await?;
    record(&answer.node_id, answer.attempts);
    let mut result = answer.response.result.take().unwrap_or_default();
    let Some(Value::Array(mut data)) = result.get_mut("data").map(Value::take) else {
        return Err(Failure::malformed_result());
    };
    data.sort_by_key(|d| d.get("index").and_then(Value::as_u64).unwrap_or(0));
    let vectors = data
        .into_iter()
        .map(|mut d| d.get_mut("embedding").map(Value::take))
        .collect::<Option<Vec<Value>>>()
        .ok_or_else(Failure::malformed_result)?;
    let prompt = result
        .pointer("/usage/prompt_tokens")
        .and_then(Value::as_u64)
        .or(answer.response.metrics.tokens_used)
        .unwrap_or(0);
    Ok((vectors, prompt, model, answer))
}

async fn embed(State(s): State<AppState>, body: Bytes) -> Response {
    let started = Instant::now();
    let mut req = match object(&body) {
        Ok(r) => r,
        Err(f) => return f.render(API),
    };
    drop(body);
    let model = match required_model(&mut req) {
        Ok(m) => m,
        Err(f) => return f.render(API),
    };
    let input = match req.remove("input") {
        Some(i @ Value::String(_)) => i,
        Some(Value::Array(a)) if !a.is_empty() => Value::Array(a),
        _ => {
            return Failure::bad_request("`input` must be a string or a non-empty array")
                .render(API)
        }
    };
    let span = tracing::info_span!("ollama.embed", model = %model, node = Empty, attempts = Empty);
    async move {
        match embed_call(&s, model, input, req.remove("dimensions")).await {
            Ok((vectors, prompt, model, answer)) => {
                let body = json!({"model": model, "embeddings": vectors,
                    "total_duration": started.elapsed().as_nanos() as u64,
                    "load_duration": 0, "prompt_eval_count": prompt});
                json_answer(&body, &answer, false)
            }
            Err(f) => f.render(API),
        }
    }
    .instrument(span)
    .await
}

/// The older `/api/embeddings`: one `prompt`, one `embedding`.
async fn embeddings(State(s): State<AppState>, body: Bytes) -> Response {
    let mut req = match object(&body) {
        Ok(r) => r,
        Err(f) => return f.render(API),
    };
    drop(body);
    let model = match required_model(&mut req) {
        Ok(m) => m,
        Err(f) => return f.render(API),
    };
    let prompt = match req.remove("prompt") {
        Some(p @ Value::String(_)) => p,
        _ => return Failure::bad_request("`prompt` must be a string").render(API),
    };
    let span = tracing::info_span!(
        "ollama.embeddings",
        model = %model,
        node = Empty,
        attempts = Empty
    );
    async move {
        match embed_call(&s, model, prompt, None).await {
            Ok((mut vectors, _, _, answer)) => {
                let embedding = vectors.pop().unwrap_or(json!([]));
                json_answer(&json!({ "embedding": embedding }), &answer, false)
            }
            Err(f) => f.render(API),
        }
    }
    .instrument(span)
    .await
}

fn tag(name: &str, modified_at: &str) -> Value {
    let digest = hex::encode(sha2::Sha256::digest(name.as_bytes()));
    json!({
        "name": name, "model": name, "modified_at": modified_at, "size": 0, "digest": digest,
        "details": {"parent_model": "", "format": "gguf", "family": "", "families": Value::Null,
                    "parameter_size": "", "quantization_level": ""},
    })
}

async fn tags(State(s): State<AppState>) -> Response {
    match s.live_models().await {
        Ok(names) => {
            let now = rfc3339_now();
            let models: Vec<Value> = names.iter().map(|n| tag(n, &now)).collect();
            iicp_server::error::json(StatusCode::OK, &json!({ "models": models }))
        }
        Err(e) => Failure::from_client(&e).render(API),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_format_map_to_openai_names() {
        let mut p = Map::new();
        options_into(
            &mut p,
            Some(
                json!({"num_predict": 12, "temperature": 0.1, "top_p": 0.9, "seed": 4,
                        "stop": "END", "num_ctx": 4096}),
            ),
        )
        .unwrap();
        assert_eq!(p["max_tokens"], 12);
        assert_eq!(p["temperature"], 0.1);
        assert_eq!(p["top_p"], 0.9);
        assert_eq!(p["seed"], 4);
        assert_eq!(p["stop"], json!(["END"]));
        assert!(!p.contains_key("num_ctx"));
        let mut unlimited = Map::new();
        options_into(&mut unlimited, Some(json!({"num_predict": -1}))).unwrap();
        assert!(!unlimited.contains_key("max_tokens"));
        format_into(&mut p, Some(json!("json"))).unwrap();
        assert_eq!(p["response_format"]["type"], "json_object");
        format_into(&mut p, Some(json!({"type": "object"}))).unwrap();
        assert_eq!(
            p["response_format"]["json_schema"]["schema"]["type"],
            "object"
        );
        assert!(format_into(&mut p, Some(json!("yaml"))).is_err());
    }

    #[test]
    fn messages_with_images_and_tool_calls_become_openai_messages() {
        let m = message(json!({"role": "user", "content": "what is this?",
                               "images": ["/9j/AAAA"]}))
        .unwrap();
        assert_eq!(m["content"][0]["text"], "what is this?");
        assert_eq!(
            m["content"][1]["image_url"]["url"],
            "data:image/jpeg;base64,/9j/AAAA"
        );
        let a = message(json!({"role": "assistant", "tool_calls": [
            {"function": {"name": "get", "arguments": {"city": "Paris"}}}]}))
        .unwrap();
        assert_eq!(a["content"], "");
        assert_eq!(
            a["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert!(message(json!({"content": "no role"})).is_err());
    }

    #[test]
    fn completions_become_ollama_messages() {
        let result = json!({"choices": [{"message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "c", "type": "function",
                            "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 3, "completion_tokens": 4}});
        let (m, reason) = answer_message(&result);
        assert_eq!(m["content"], "");
        assert_eq!(m["tool_calls"][0]["function"]["arguments"]["a"], 1);
        assert_eq!(reason, "stop");
        assert_eq!(counts(&result, None), (3, 4));
        let lines = Lines::new("m".into(), Kind::Generate, Instant::now());
        let text = String::from_utf8(lines.replay(&result, None).to_vec()).unwrap();
        let parsed: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(parsed[0]["done"], false);
        assert_eq!(parsed[1]["done"], true);
        assert_eq!(parsed[1]["eval_count"], 4);
        assert_eq!(parsed[1]["response"], "");
    }

    #[test]
    fn tags_have_ollamas_shape() {
        let t = tag("llama3.2:latest", "2025-01-01T00:00:00.000000Z");
        assert_eq!(t["name"], "llama3.2:latest");
        assert_eq!(t["digest"].as_str().unwrap().len(), 64);
        assert_eq!(t["details"]["format"], "gguf");
    }
}
