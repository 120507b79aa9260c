//! The OpenAI-compatible API as llama.cpp's `llama-server` speaks it (vLLM and LM Studio answer
//! the same shapes). Error bodies follow llama.cpp: `{"error":{"code","message","type"}}`.

mod completion;

use crate::server::{Out, Req, Shared};
use crate::text;
use axum::http::{header, Method, StatusCode};
use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

pub(super) const JSON: &str = "application/json; charset=utf-8";

pub(crate) fn handle(sh: &Shared, req: &Req<'_>) -> Out {
    // llama-server answers with and without the `/v1` prefix.
    let path = req.path.strip_prefix("/v1").unwrap_or(req.path);
    if let Some(key) = &sh.api_key {
        if path != "/health" && !authorized(req, key) {
            return error(StatusCode::UNAUTHORIZED, "Invalid API Key");
        }
    }
    match (req.method, path) {
        (&Method::GET, "/health") => {
            Out::json(StatusCode::OK, JSON, br#"{"status":"ok"}"#.to_vec())
        }
        (&Method::GET, "/models") => models(sh),
        (&Method::POST, "/chat/completions") => completion::completion(sh, req, true),
        (&Method::POST, "/completions") => completion::completion(sh, req, false),
        (&Method::POST, "/embeddings") => embeddings(sh, req),
        _ => error(StatusCode::NOT_FOUND, "File Not Found"),
    }
}

fn authorized(req: &Req<'_>, key: &str) -> bool {
    let bearer = req
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let x_api_key = req.headers.get("x-api-key").and_then(|v| v.to_str().ok());
    bearer == Some(key) || x_api_key == Some(key)
}

/// The body llama.cpp sends for `status`, with the type it maps the status to.
pub(crate) fn failure(status: StatusCode) -> Out {
    let message = match status.as_u16() {
        503 => "Loading model",
        401 => "Invalid API Key",
        404 => "File Not Found",
        429 => "Rate limit reached",
        _ => status.canonical_reason().unwrap_or("Error"),
    };
    error(status, message)
}

pub(crate) fn error(status: StatusCode, message: &str) -> Out {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        501 => "not_supported_error",
        503 => "unavailable_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    };
    #[derive(Serialize)]
    struct Body<'a> {
        error: Inner<'a>,
    }
    #[derive(Serialize)]
    struct Inner<'a> {
        code: u16,
        message: &'a str,
        r#type: &'a str,
    }
    let body = Body {
        error: Inner {
            code: status.as_u16(),
            message,
            r#type: kind,
        },
    };
    Out::json(status, JSON, text::to_json(&body))
}

pub(super) fn bad_request(message: &str) -> Out {
    error(StatusCode::BAD_REQUEST, message)
}

fn models(sh: &Shared) -> Out {
    #[derive(Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<Model<'a>>,
    }
    #[derive(Serialize)]
    struct Model<'a> {
        id: &'a str,
        object: &'static str,
        created: u64,
        owned_by: &'static str,
    }
    let data = sh
        .models
        .all()
        .map(|id| Model {
            id,
            object: "model",
            created: sh.started,
            owned_by: "llamacpp",
        })
        .collect();
    let list = List {
        object: "list",
        data,
    };
    Out::json(StatusCode::OK, JSON, text::to_json(&list))
}

/// The request body as an object, or llama.cpp's 400.
pub(super) fn body<'a>(req: &'a Req<'_>) -> Result<&'a Value, Out> {
    match req.json {
        Ok(Some(v)) if v.is_object() => Ok(v),
        Ok(_) => Err(bad_request("the request body must be a JSON object")),
        Err(e) => Err(bad_request(&format!("parse error: {e}"))),
    }
}

/// Resolves `model` like llama-server: a single-model server ignores a missing name, a
/// multi-model (router) server requires it; the wrong kind of model cannot do the job.
pub(super) fn model<'a>(sh: &'a Shared, body: &'a Value, chat: bool) -> Result<&'a str, Out> {
    let name = match body.get("model").and_then(Value::as_str) {
        Some(name) => name,
        None if sh.models.len() == 1 => sh.models.all().next().unwrap_or_default(),
        None => return Err(bad_request("model name is missing from the request")),
    };
    let (own, other) = if chat {
        (&sh.models.chat, &sh.models.embedding)
    } else {
        (&sh.models.embedding, &sh.models.chat)
    };
    if own.iter().any(|m| m == name) {
        Ok(name)
    } else if other.iter().any(|m| m == name) {
        let message = if chat {
            "This server does not support completions. Start it without `--embeddings`"
        } else {
            "This server does not support embeddings. Start it with `--embeddings`"
        };
        Err(error(StatusCode::NOT_IMPLEMENTED, message))
    } else {
        Err(bad_request(&format!("model '{name}' not found")))
    }
}

/// `/v1/embeddings` for a string, strings, token ids or arrays of token ids.
fn embeddings(sh: &Shared, req: &Req<'_>) -> Out {
    let body = match body(req) {
        Ok(b) => b,
        Err(out) => return out,
    };
    let inputs: Vec<String> = match body.get("input").or_else(|| body.get("content")) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.iter().all(Value::is_number) && !a.is_empty() => {
            vec![Value::Array(a.clone()).to_string()]
        }
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect(),
        _ => return bad_request("\"input\" must be a non-empty string or array"),
    };
    let model = match model(sh, body, false) {
        Ok(m) => m,
        Err(out) => return out,
    };
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Vector {
        Floats([f32; text::EMBEDDING_DIMS]),
        Base64(String),
    }
    #[derive(Serialize)]
    struct Item {
        object: &'static str,
        index: usize,
        embedding: Vector,
    }
    #[derive(Serialize)]
    struct Usage {
        prompt_tokens: usize,
        total_tokens: usize,
    }
    #[derive(Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<Item>,
        model: &'a str,
        usage: Usage,
    }
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let v = text::embedding(input);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Vector::Floats(v)
            };
            Item {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let tokens = inputs.iter().map(|s| text::count_words(s).max(1)).sum();
    let list = List {
        object: "list",
        data,
        model,
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    };
    Out::json(StatusCode::OK, JSON, text::to_json(&list))
}
