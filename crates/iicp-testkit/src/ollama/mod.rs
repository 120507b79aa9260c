//! Ollama's native API (v0.5.x). Streams are NDJSON and on by default; names without a tag
//! mean `:latest`; errors are `{"error":"…"}`; the `model` field echoes the request's name.

mod catalog;

use crate::server::{Out, Req, Shared};
use crate::text::{self, Events, Reply};
use axum::http::{Method, StatusCode};
use catalog::{find, Kind};
use serde::Serialize;
use serde_json::{json, Value};
use std::borrow::Cow;

pub(super) const JSON: &str = "application/json; charset=utf-8";
const NDJSON: &str = "application/x-ndjson";

pub(crate) fn handle(sh: &Shared, req: &Req<'_>) -> Out {
    match (req.method, req.path) {
        (&Method::GET | &Method::HEAD, "/") => Out::json(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            b"Ollama is running".to_vec(),
        ),
        (&Method::GET, "/api/version") => {
            Out::json(StatusCode::OK, JSON, br#"{"version":"0.5.7"}"#.to_vec())
        }
        (&Method::GET, "/api/tags") => catalog::tags(sh),
        (&Method::POST, "/api/chat") => generate(sh, req, true),
        (&Method::POST, "/api/generate") => generate(sh, req, false),
        (&Method::POST, "/api/embed") => embed(sh, req, false),
        (&Method::POST, "/api/embeddings") => embed(sh, req, true),
        (&Method::POST, "/api/show") => catalog::show(sh, req),
        // Gin's answer to an unknown route (or a wrong method).
        _ => Out::json(
            StatusCode::NOT_FOUND,
            "text/plain",
            b"404 page not found".to_vec(),
        ),
    }
}

pub(crate) fn error(status: StatusCode, message: &str) -> Out {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'a str,
    }
    Out::json(status, JSON, text::to_json(&Body { error: message }))
}

/// What Ollama says with `status`; a 404 names the requested model.
pub(crate) fn failure(status: StatusCode, req: &Req<'_>) -> Out {
    let model = match req.json {
        Ok(Some(v)) => v.get("model").and_then(Value::as_str).unwrap_or("unknown"),
        _ => "unknown",
    };
    match status.as_u16() {
        404 => error(status, &not_found(model)),
        500 => error(status, "llama runner process has terminated: exit status 2"),
        503 => error(
            status,
            "server busy, please try again.  maximum pending requests exceeded",
        ),
        _ => error(status, status.canonical_reason().unwrap_or("error")),
    }
}

fn not_found(model: &str) -> String {
    format!("model \"{model}\" not found, try pulling it first")
}

/// The request object and its (known, right-kind) model, or Ollama's refusal.
fn request<'a>(
    sh: &'a Shared,
    req: &'a Req<'_>,
    want: Kind,
    job: &str,
) -> Result<(&'a Value, &'a str), Out> {
    let body = match req.json {
        Ok(Some(v)) if v.is_object() => v,
        Ok(Some(_)) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "json: cannot unmarshal value into Go value of type api.Request",
            ))
        }
        Ok(None) => return Err(error(StatusCode::BAD_REQUEST, "missing request body")),
        Err(e) => return Err(error(StatusCode::BAD_REQUEST, &e.to_string())),
    };
    let Some(name) = body
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    else {
        return Err(error(StatusCode::BAD_REQUEST, "model is required"));
    };
    match find(sh, name) {
        None => Err(error(StatusCode::NOT_FOUND, &not_found(name))),
        Some((_, kind)) if kind != want => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("\"{name}\" does not support {job}"),
        )),
        Some(_) => Ok((body, name)),
    }
}

#[derive(Serialize)]
struct Metrics {
    total_duration: u64,
    load_duration: u64,
    prompt_eval_count: usize,
    prompt_eval_duration: u64,
    eval_count: usize,
    eval_duration: u64,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

/// `ChatResponse` in Ollama's Go field order.
#[derive(Serialize)]
struct ChatLine<'a> {
    model: &'a str,
    created_at: &'a str,
    message: Message<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'a str>,
    done: bool,
    #[serde(flatten)]
    metrics: Option<Metrics>,
}

/// `GenerateResponse` in Ollama's Go field order.
#[derive(Serialize)]
struct GenerateLine<'a> {
    model: &'a str,
    created_at: &'a str,
    response: &'a str,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<Vec<u32>>,
    #[serde(flatten)]
    metrics: Option<Metrics>,
}

/// `/api/chat` (`chat`) or `/api/generate`: NDJSON unless `"stream": false`.
fn generate(sh: &Shared, req: &Req<'_>, chat: bool) -> Out {
    let job = if chat { "chat" } else { "generate" };
    let (body, model) = match request(sh, req, Kind::Chat, job) {
        Ok(r) => r,
        Err(out) => return out,
    };
    let created_at = text::rfc3339_now();
    let raw = body.get("raw").and_then(Value::as_bool) == Some(true);
    let write =
        |buf: &mut Vec<u8>, content: &str, done_reason: Option<&str>, metrics: Option<Metrics>| {
            let done = done_reason.is_some();
            if chat {
                let message = Message {
                    role: "assistant",
                    content,
                };
                let line = ChatLine {
                    model,
                    created_at: &created_at,
                    message,
                    done_reason,
                    done,
                    metrics,
                };
                text::write_json(buf, &line);
            } else {
                // The deprecated `context` (prompt and reply token ids) still ends each generation.
                let context = metrics.as_ref().filter(|_| !raw).map(|m| {
                    let mut s = text::hash(content.as_bytes());
                    let n = m.prompt_eval_count + m.eval_count;
                    (0..n)
                        .map(|_| (text::splitmix(&mut s) % 128_000) as u32)
                        .collect()
                });
                let line = GenerateLine {
                    model,
                    created_at: &created_at,
                    response: content,
                    done,
                    done_reason,
                    context,
                    metrics,
                };
                text::write_json(buf, &line);
            }
        };
    let whole = |content: &str, done_reason, metrics| {
        let mut buf = Vec::with_capacity(256 + content.len());
        write(&mut buf, content, done_reason, metrics);
        Out::json(StatusCode::OK, JSON, buf)
    };
    let (prompt, prompt_tokens) = if chat {
        match body.get("messages").and_then(Value::as_array) {
            Some(m) if !m.is_empty() => text::chat_prompt(m),
            _ => return whole("", Some("load"), None),
        }
    } else {
        match body
            .get("prompt")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
        {
            Some(p) => (Cow::Borrowed(p), text::count_words(p)),
            None => return whole("", Some("load"), None),
        }
    };
    let cap = body
        .get("options")
        .and_then(|o| text::cap(o, &["num_predict"]));
    let reply = Reply::new(&prompt, req.behavior.tokens, cap);
    let done_reason = Some(if reply.truncated { "length" } else { "stop" });
    let (load, per_prompt, per_token) = (1_000_000, 100_000, 1_000_000);
    let eval_duration = (per_token * reply.count()) as u64
        + (req.behavior.token_delay.as_nanos() as u64) * reply.count() as u64;
    let prompt_eval_duration = (per_prompt * prompt_tokens.max(1)) as u64;
    let metrics = || Metrics {
        total_duration: (req.received.elapsed().as_nanos() as u64)
            .max(load + prompt_eval_duration + eval_duration),
        load_duration: load,
        prompt_eval_count: prompt_tokens,
        prompt_eval_duration,
        eval_count: reply.count(),
        eval_duration,
    };
    if body.get("stream").and_then(Value::as_bool) == Some(false) {
        return whole(&reply.text, done_reason, Some(metrics()));
    }
    let mut ev = Events::default();
    ev.buf.reserve(160 * (reply.count() + 2));
    for token in reply.tokens() {
        write(&mut ev.buf, token, None, None);
        ev.end_line();
    }
    write(&mut ev.buf, "", done_reason, Some(metrics()));
    ev.end_line();
    Out::stream(NDJSON, ev)
}

/// `/api/embed` (`{"embeddings":[[…]]}`) or the legacy `/api/embeddings` (`{"embedding":[…]}`).
fn embed(sh: &Shared, req: &Req<'_>, legacy: bool) -> Out {
    let (body, model) = match request(sh, req, Kind::Embedding, "embeddings") {
        Ok(r) => r,
        Err(out) => return out,
    };
    if legacy {
        let prompt = body.get("prompt").and_then(Value::as_str).unwrap_or("");
        let v: &[f32] = if prompt.is_empty() {
            &[]
        } else {
            &text::embedding(prompt)
        };
        return Out::json(
            StatusCode::OK,
            JSON,
            text::to_json(&json!({ "embedding": v })),
        );
    }
    let inputs: Vec<&str> = match body.get("input") {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    #[derive(Serialize)]
    struct Embed<'a> {
        model: &'a str,
        embeddings: Vec<[f32; text::EMBEDDING_DIMS]>,
        total_duration: u64,
        load_duration: u64,
        prompt_eval_count: usize,
    }
    let embed = Embed {
        model,
        embeddings: inputs.iter().map(|s| text::embedding(s)).collect(),
        total_duration: (req.received.elapsed().as_nanos() as u64).max(1_500_000),
        load_duration: 1_000_000,
        prompt_eval_count: inputs.iter().map(|s| text::count_words(s).max(1)).sum(),
    };
    Out::json(StatusCode::OK, JSON, text::to_json(&embed))
}
