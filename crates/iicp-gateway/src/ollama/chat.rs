//! `/api/chat` and `/api/generate`: Ollama messages, `options` and `format` become the IICP
//! chat payload (OpenAI names); the call runs streamed or whole.

use super::stream::{answer_message, counts, live_stream, Kind, Lines};
use super::{record, request, API};
use crate::failure::Failure;
use crate::serve::call_span;
use crate::serve::{flag, json_answer, rfc3339_now, stream_answer, NDJSON};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use iicp_proto::chat::tool_calls_from_ollama;
use iicp_proto::intent::LLM_CHAT_V1;
use serde_json::{json, Map, Value};
use std::time::Instant;
use tracing::Instrument;

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
        out.insert("tool_calls".into(), tool_calls_from_ollama(calls));
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

/// `options` and `format` of the request → the payload.
fn tuning_into(
    payload: &mut Map<String, Value>,
    req: &mut Map<String, Value>,
) -> Result<(), Failure> {
    options_into(payload, req.remove("options"))?;
    format_into(payload, req.remove("format"))
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

/// `POST /api/chat`: Ollama messages (tools allowed), streamed unless `stream: false`.
pub(super) async fn chat(State(s): State<AppState>, body: Bytes) -> Response {
    let started = Instant::now();
    let (mut req, model) = match request(body) {
        Ok(r) => r,
        Err(f) => return f.render(API),
    };
    let stream = flag(req.remove("stream"), true);
    let span = call_span!("ollama.chat", model, stream);
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
    if let Err(f) = tuning_into(&mut payload, &mut req) {
        return f.render(API);
    }
    converse(s, model, payload, stream, Kind::Chat, started)
        .instrument(span)
        .await
}

/// `POST /api/generate`: one prompt (with an optional system prompt and images) as a chat.
pub(super) async fn generate(State(s): State<AppState>, body: Bytes) -> Response {
    let started = Instant::now();
    let (mut req, model) = match request(body) {
        Ok(r) => r,
        Err(f) => return f.render(API),
    };
    let stream = flag(req.remove("stream"), true);
    let span = call_span!("ollama.generate", model, stream);
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
    if let Err(f) = tuning_into(&mut payload, &mut req) {
        return f.render(API);
    }
    converse(s, model, payload, stream, Kind::Generate, started)
        .instrument(span)
        .await
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
}
