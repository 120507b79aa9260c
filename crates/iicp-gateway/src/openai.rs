//! The OpenAI API: `POST /v1/chat/completions` (plain and SSE), `POST /v1/embeddings`,
//! `GET /v1/models`, `GET /v1/models/{id}`.
//!
//! The request body is the IICP chat payload almost as it is (messages, tools, tool_choice,
//! response_format, sampling options pass through); the gateway only takes out what is its own
//! (`model`, `stream`, `stream_options`, `encoding_format`) and smooths what the intent schema
//! is stricter about (`stop` as a string, `developer` messages, assistant messages without
//! `content`, explicit nulls). The node's result is already an OpenAI chat completion; the
//! gateway makes sure every field the official client reads is there.

use crate::failure::{Api, Failure};
use crate::serve::call_span;
use crate::serve::{flag, json_answer, request, stream_answer, unix_now, EVENT_STREAM};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use iicp_client::{ClientError, StreamItem};
use iicp_proto::intent::{LLM_CHAT_V1, LLM_EMBEDDING_V1};
use iicp_proto::task::TaskResponse;
use serde_json::{json, Map, Value};
use tracing::Instrument;
use uuid::Uuid;

const API: Api = Api::OpenAi;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{*id}", get(get_model))
}

/// Makes an OpenAI chat request acceptable to the chat intent's schema, in place.
pub fn normalize_chat(req: &mut Map<String, Value>) -> Result<(), Failure> {
    // An explicit null means "the default", which is what leaving the field out says.
    req.retain(|_, v| !v.is_null());
    let Some(messages) = req
        .get_mut("messages")
        .and_then(Value::as_array_mut)
        .filter(|m| !m.is_empty())
    else {
        return Err(Failure::bad_request("`messages` must be a non-empty array"));
    };
    for m in messages.iter_mut() {
        let Some(m) = m.as_object_mut() else {
            return Err(Failure::bad_request("each message must be an object"));
        };
        if m.get("role").and_then(Value::as_str) == Some("developer") {
            m.insert("role".into(), json!("system"));
        }
        // Assistant turns that only call tools may leave `content` out.
        m.entry("content").or_insert(Value::Null);
    }
    if let Some(Value::String(s)) = req.get("stop") {
        let one = Value::Array(vec![Value::String(s.clone())]);
        req.insert("stop".into(), one);
    }
    if let Some(n) = req.remove("max_completion_tokens") {
        req.entry("max_tokens").or_insert(n);
    }
    Ok(())
}

/// True when a message carries an image part (only vision nodes can take it).
pub fn has_images(payload: &Map<String, Value>) -> bool {
    payload
        .get("messages")
        .and_then(Value::as_array)
        .is_some_and(|ms| {
            ms.iter().any(|m| {
                m.get("content")
                    .and_then(Value::as_array)
                    .is_some_and(|parts| {
                        parts.iter().any(|p| {
                            matches!(
                                p.get("type").and_then(Value::as_str),
                                Some("image_url" | "input_image")
                            )
                        })
                    })
            })
        })
}

fn wants_tools(payload: &Map<String, Value>) -> bool {
    payload
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty())
}

/// The usage object of a result, or one made from the RESPONSE's token count.
pub fn usage_of(result: &Value, tokens_used: Option<u64>) -> Value {
    match result.get("usage").filter(|u| u.is_object()) {
        Some(u) => {
            let p = u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0);
            let c = u
                .get("completion_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let mut u = u.clone();
            u["prompt_tokens"] = json!(p);
            u["completion_tokens"] = json!(c);
            if u.get("total_tokens").and_then(Value::as_u64).is_none() {
                u["total_tokens"] = json!(p + c);
            }
            u
        }
        None => {
            let t = tokens_used.unwrap_or(0);
            json!({"prompt_tokens": 0, "completion_tokens": t, "total_tokens": t})
        }
    }
}

/// The node's result as a complete `chat.completion` (id from the task id). `None` when the
/// result is not a chat completion at all.
pub fn completion(
    result: Option<Value>,
    task_id: Uuid,
    model: &str,
    tokens_used: Option<u64>,
) -> Option<Value> {
    let mut result = result?;
    let usage = usage_of(&result, tokens_used);
    let obj = result.as_object_mut()?;
    let choices = obj.get_mut("choices")?.as_array_mut()?;
    for (i, choice) in choices.iter_mut().enumerate() {
        let c = choice.as_object_mut()?;
        c.entry("index").or_insert(json!(i));
        let reason = c.entry("finish_reason").or_insert(Value::Null);
        if reason.is_null() {
            *reason = json!("stop");
        }
        c.entry("logprobs").or_insert(Value::Null);
        let message = c
            .entry("message")
            .or_insert_with(|| json!({}))
            .as_object_mut()?;
        message.entry("role").or_insert(json!("assistant"));
        message.entry("content").or_insert(Value::Null);
    }
    obj.insert(
        "id".into(),
        Value::String(format!("chatcmpl-{}", task_id.simple())),
    );
    obj.insert("object".into(), json!("chat.completion"));
    if !obj.get("created").is_some_and(Value::is_u64) {
        obj.insert("created".into(), json!(unix_now()));
    }
    if !obj.get("model").is_some_and(Value::is_string) {
        obj.insert("model".into(), json!(model));
    }
    obj.insert("usage".into(), usage);
    Some(result)
}

async fn chat_completions(State(s): State<AppState>, body: Bytes) -> Response {
    let (mut req, model) = match request(body) {
        Ok(r) => r,
        Err(f) => return f.render(API),
    };
    let stream = flag(req.remove("stream"), false);
    let include_usage = req
        .remove("stream_options")
        .and_then(|o| o.get("include_usage").and_then(Value::as_bool))
        .unwrap_or(false);
    if let Err(f) = normalize_chat(&mut req) {
        return f.render(API);
    }
    let modality = has_images(&req).then_some("image");
    let tools = wants_tools(&req);
    let name = model.clone().unwrap_or_default();
    let span = call_span!("openai.chat", name, stream);
    let call = s.call(LLM_CHAT_V1, req, model, modality);
    async move {
        // The node streams text only, so a call that may answer with tool calls runs whole and
        // is replayed as a stream.
        if stream && !tools {
            let answer = match s.run_stream(API, call).await {
                Ok(a) => a,
                Err(f) => return f.render(API),
            };
            record(&answer.node_id, answer.attempts);
            let chunks = Chunks::new(&format!("chatcmpl-{}", Uuid::new_v4().simple()), &name);
            let body = live_stream(answer.items, chunks, include_usage);
            return stream_answer(EVENT_STREAM, body, &answer.node_id, answer.attempts);
        }
        let mut answer = match s.run(API, call).await {
            Ok(a) => a,
            Err(f) => return f.render(API),
        };
        record(&answer.node_id, answer.attempts);
        let r = &mut answer.response;
        let Some(body) = completion(r.result.take(), r.task_id, &name, r.metrics.tokens_used)
        else {
            return Failure::malformed_result().render(API);
        };
        if !stream {
            return json_answer(&body, &answer, true);
        }
        let chunks = Chunks::new(body["id"].as_str().unwrap_or("chatcmpl"), &name);
        let replay = chunks.replay(&body, include_usage);
        stream_answer(
            EVENT_STREAM,
            futures_util::stream::once(std::future::ready(replay)),
            &answer.node_id,
            answer.attempts,
        )
    }
    .instrument(span)
    .await
}

fn record(node: &str, attempts: u32) {
    let span = tracing::Span::current();
    span.record("node", node);
    span.record("attempts", attempts);
    tracing::debug!("answered");
}

/// Writes `chat.completion.chunk` events for one completion.
pub struct Chunks {
    /// `data: {"id":…,"object":"chat.completion.chunk","created":…,"model":…,`
    head: String,
}

const DONE: &[u8] = b"data: [DONE]\n\n";

impl Chunks {
    pub fn new(id: &str, model: &str) -> Chunks {
        let head = format!(
            "data: {{\"id\":{},\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{},\"system_fingerprint\":null,",
            Value::from(id),
            unix_now(),
            Value::from(model)
        );
        Chunks { head }
    }

    fn event(&self, choices: &str, usage: Option<&Value>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + choices.len() + 32);
        out.extend_from_slice(self.head.as_bytes());
        out.extend_from_slice(b"\"choices\":");
        out.extend_from_slice(choices.as_bytes());
        if let Some(u) = usage {
            out.extend_from_slice(b",\"usage\":");
            out.extend_from_slice(u.to_string().as_bytes());
        }
        out.extend_from_slice(b"}\n\n");
        out
    }

    fn delta(&self, delta: &str, finish_reason: Option<&str>) -> Vec<u8> {
        let reason = finish_reason.map_or(Value::Null, Value::from);
        self.event(
            &format!(
                "[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{reason}}}]"
            ),
            None,
        )
    }

    pub fn role(&self) -> Bytes {
        Bytes::from(self.delta(r#"{"role":"assistant","content":""}"#, None))
    }

    pub fn content(&self, text: &str) -> Bytes {
        Bytes::from(self.delta(&format!("{{\"content\":{}}}", Value::from(text)), None))
    }

    /// The finish chunk, the usage chunk when asked for, and `[DONE]`.
    fn closing(&self, out: &mut Vec<u8>, finish_reason: &str, usage: Option<&Value>) {
        out.extend(self.delta("{}", Some(finish_reason)));
        if let Some(u) = usage {
            out.extend(self.event("[]", Some(u)));
        }
        out.extend_from_slice(DONE);
    }

    fn done(&self, r: &TaskResponse, include_usage: bool) -> Bytes {
        let result = r.result.as_ref().unwrap_or(&Value::Null);
        let reason = result
            .pointer("/choices/0/finish_reason")
            .and_then(Value::as_str)
            .unwrap_or("stop");
        let usage = include_usage.then(|| usage_of(result, r.metrics.tokens_used));
        let mut out = Vec::new();
        self.closing(&mut out, reason, usage.as_ref());
        Bytes::from(out)
    }

    /// A whole completion as the events a live stream would have sent.
    pub fn replay(&self, completion: &Value, include_usage: bool) -> Bytes {
        let mut out = self.role().to_vec();
        let message = completion.pointer("/choices/0/message");
        if let Some(text) = message
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            out.extend(self.content(text));
        }
        if let Some(calls) = message
            .and_then(|m| m.get("tool_calls"))
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty())
        {
            let indexed: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut c = c.clone();
                    if let Some(o) = c.as_object_mut() {
                        o.insert("index".into(), json!(i));
                    }
                    c
                })
                .collect();
            out.extend(self.delta(&json!({ "tool_calls": indexed }).to_string(), None));
        }
        let reason = completion
            .pointer("/choices/0/finish_reason")
            .and_then(Value::as_str)
            .unwrap_or("stop");
        let usage = include_usage.then(|| completion["usage"].clone());
        self.closing(&mut out, reason, usage.as_ref());
        Bytes::from(out)
    }

    fn error(&self, e: &ClientError) -> Bytes {
        let body = Failure::from_client(e).stream_error(API);
        Bytes::from(format!("data: {body}\n\n"))
    }
}

enum Phase {
    Role,
    Body,
    End,
}

/// The node's stream as OpenAI SSE: a role chunk, one chunk per delta, the finish chunk, the
/// usage chunk when asked for, `[DONE]`. A failure after the first token ends the stream with
/// an `error` event (the official client raises it).
fn live_stream(
    items: BoxStream<'static, Result<StreamItem, ClientError>>,
    chunks: Chunks,
    include_usage: bool,
) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
    futures_util::stream::unfold(
        (items, chunks, Phase::Role),
        move |(mut items, chunks, phase)| async move {
            match phase {
                Phase::End => None,
                Phase::Role => {
                    let role = chunks.role();
                    Some((role, (items, chunks, Phase::Body)))
                }
                Phase::Body => {
                    let (out, next) = match items.next().await {
                        Some(Ok(StreamItem::Delta(text))) => (chunks.content(&text), Phase::Body),
                        Some(Ok(StreamItem::Done(r))) if r.is_success() => {
                            (chunks.done(&r, include_usage), Phase::End)
                        }
                        Some(Ok(StreamItem::Done(_))) => (
                            chunks
                                .error(&ClientError::Stream("the node reported a failure".into())),
                            Phase::End,
                        ),
                        Some(Err(e)) => (chunks.error(&e), Phase::End),
                        None => (
                            chunks.error(&ClientError::Stream(
                                "the stream ended before it finished".into(),
                            )),
                            Phase::End,
                        ),
                    };
                    Some((out, (items, chunks, next)))
                }
            }
        },
    )
}

/// `encoding_format`: floats (default) or base64 of little-endian f32 (what the official
/// Python client asks for when the caller does not choose).
fn base64_floats(v: &Value) -> Option<Value> {
    let floats = v.as_array()?;
    let mut bytes = Vec::with_capacity(floats.len() * 4);
    for f in floats {
        bytes.extend_from_slice(&(f.as_f64()? as f32).to_le_bytes());
    }
    Some(Value::String(
        base64::engine::general_purpose::STANDARD.encode(bytes),
    ))
}

/// The node's result as a complete OpenAI embedding list.
pub fn embedding_list(
    result: Option<Value>,
    model: &str,
    tokens_used: Option<u64>,
    base64: bool,
) -> Option<Value> {
    let mut result = result?;
    let obj = result.as_object_mut()?;
    let data = obj.get_mut("data")?.as_array_mut()?;
    for (i, item) in data.iter_mut().enumerate() {
        let item = item.as_object_mut()?;
        item.insert("object".into(), json!("embedding"));
        item.entry("index").or_insert(json!(i));
        if base64 {
            let encoded = base64_floats(item.get("embedding")?)?;
            item.insert("embedding".into(), encoded);
        }
    }
    obj.insert("object".into(), json!("list"));
    if !obj.get("model").is_some_and(Value::is_string) {
        obj.insert("model".into(), json!(model));
    }
    if !obj.get("usage").is_some_and(Value::is_object) {
        let t = tokens_used.unwrap_or(0);
        obj.insert(
            "usage".into(),
            json!({"prompt_tokens": t, "total_tokens": t}),
        );
    }
    Some(result)
}

async fn embeddings(State(s): State<AppState>, body: Bytes) -> Response {
    let (mut req, model) = match request(body) {
        Ok(r) => r,
        Err(f) => return f.render(API),
    };
    req.retain(|_, v| !v.is_null());
    let base64 = match req.remove("encoding_format") {
        None => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(_) => {
            return Failure::bad_request("`encoding_format` must be \"float\" or \"base64\"")
                .render(API)
        }
    };
    match req.get("input") {
        Some(Value::String(_)) => {}
        Some(Value::Array(a)) if !a.is_empty() => {}
        _ => {
            return Failure::bad_request("`input` must be a string or a non-empty array")
                .render(API)
        }
    }
    let name = model.clone().unwrap_or_default();
    let span = call_span!("openai.embeddings", name);
    let call = s.call(LLM_EMBEDDING_V1, req, model, None);
    async move {
        let mut answer = match s.run(API, call).await {
            Ok(a) => a,
            Err(f) => return f.render(API),
        };
        record(&answer.node_id, answer.attempts);
        let r = &mut answer.response;
        match embedding_list(r.result.take(), &name, r.metrics.tokens_used, base64) {
            Some(body) => json_answer(&body, &answer, false),
            None => Failure::malformed_result().render(API),
        }
    }
    .instrument(span)
    .await
}

fn model_object(id: &str, created: u64) -> Value {
    json!({"id": id, "object": "model", "created": created, "owned_by": "iicp"})
}

async fn list_models(State(s): State<AppState>) -> Response {
    match s.live_models().await {
        Ok(names) => {
            let now = unix_now();
            let data: Vec<Value> = names.iter().map(|n| model_object(n, now)).collect();
            iicp_server::error::json(StatusCode::OK, &json!({"object": "list", "data": data}))
        }
        Err(e) => Failure::from_client(&e).render(API),
    }
}

async fn get_model(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    match s.live_models().await {
        Ok(names) if names.contains(&id) => {
            iicp_server::error::json(StatusCode::OK, &model_object(&id, unix_now()))
        }
        Ok(_) => Failure::model_not_found(API, &id).render(API),
        Err(e) => Failure::from_client(&e).render(API),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::object;

    #[test]
    fn requests_are_smoothed_for_the_chat_schema() {
        let mut req = object(
            br#"{"messages":[{"role":"developer","content":"be brief"},
                {"role":"assistant","tool_calls":[]},{"role":"user","content":"hi"}],
                "stop":"\n","max_completion_tokens":9,"temperature":null,
                "tools":[{"type":"function","function":{"name":"f"}}]}"#,
        )
        .unwrap();
        normalize_chat(&mut req).unwrap();
        assert_eq!(req["messages"][0]["role"], "system");
        assert!(req["messages"][1]["content"].is_null());
        assert_eq!(req["stop"], json!(["\n"]));
        assert_eq!(req["max_tokens"], 9);
        assert!(!req.contains_key("temperature") && !req.contains_key("max_completion_tokens"));
        assert!(wants_tools(&req));
        let mut empty = object(br#"{"messages":[]}"#).unwrap();
        assert_eq!(normalize_chat(&mut empty).unwrap_err().status, 400);
    }

    #[test]
    fn images_ask_for_vision_nodes() {
        let req = object(
            br#"{"messages":[{"role":"user","content":[{"type":"text","text":"?"},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]}]}"#,
        )
        .unwrap();
        assert!(has_images(&req));
        let plain = object(br#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert!(!has_images(&plain));
    }

    #[test]
    fn completions_get_every_field_the_client_reads() {
        let id = Uuid::new_v4();
        let result = json!({"object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                         "finish_reason": null}]});
        let c = completion(Some(result), id, "asked", Some(7)).unwrap();
        assert_eq!(c["id"], format!("chatcmpl-{}", id.simple()));
        assert_eq!(c["object"], "chat.completion");
        assert!(c["created"].is_u64());
        assert_eq!(c["model"], "m");
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
        assert_eq!(c["usage"]["total_tokens"], 7);
        assert!(completion(Some(json!({"data": []})), id, "m", None).is_none());
    }

    #[test]
    fn chunks_are_openai_sse() {
        let c = Chunks::new("chatcmpl-1", "m\"x");
        let role = String::from_utf8(c.role().to_vec()).unwrap();
        let v: Value = serde_json::from_str(role.strip_prefix("data: ").unwrap().trim()).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        assert_eq!(v["model"], "m\"x");
        assert_eq!(v["choices"][0]["delta"]["role"], "assistant");
        let body = json!({"choices": [{"message": {"content": "a\nb", "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 1}});
        let text = String::from_utf8(c.replay(&body, true).to_vec()).unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 6);
        let parse = |e: &str| -> Value { serde_json::from_str(&e[6..]).unwrap() };
        assert_eq!(parse(events[1])["choices"][0]["delta"]["content"], "a\nb");
        assert_eq!(
            parse(events[2])["choices"][0]["delta"]["tool_calls"][0]["index"],
            0
        );
        assert_eq!(
            parse(events[3])["choices"][0]["finish_reason"],
            "tool_calls"
        );
        assert_eq!(parse(events[4])["choices"], json!([]));
        assert_eq!(events[5], "data: [DONE]");
    }

    #[test]
    fn base64_embeddings_are_little_endian_f32() {
        let list = json!({"data": [{"embedding": [1.0, -2.5]}]});
        let out = embedding_list(Some(list), "e", None, true).unwrap();
        let b = base64::engine::general_purpose::STANDARD
            .decode(out["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        assert_eq!(&b[..4], &1.0f32.to_le_bytes());
        assert_eq!(&b[4..], &(-2.5f32).to_le_bytes());
        assert_eq!(out["object"], "list");
        assert_eq!(out["model"], "e");
        assert_eq!(out["data"][0]["index"], 0);
    }
}
