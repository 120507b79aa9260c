//! Anthropic's Messages API: `x-api-key` and `anthropic-version` are required, `max_tokens`
//! too; errors are `{"type":"error","error":{"type","message"},"request_id"}`.

use crate::server::{Out, Req, Shared};
use crate::text::{self, Events, Reply};
use axum::http::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;

const JSON: &str = "application/json";
const SSE: &str = "text/event-stream; charset=utf-8";

pub(crate) fn handle(sh: &Shared, req: &Req<'_>) -> Out {
    let key = req.headers.get("x-api-key").and_then(|v| v.to_str().ok());
    match (key, &sh.api_key) {
        (None, _) => return error(StatusCode::UNAUTHORIZED, "x-api-key header is required"),
        (Some(k), Some(want)) if k != want => {
            return error(StatusCode::UNAUTHORIZED, "invalid x-api-key")
        }
        _ => {}
    }
    if !req.headers.contains_key("anthropic-version") {
        return error(
            StatusCode::BAD_REQUEST,
            "anthropic-version: header is required",
        );
    }
    match (req.method, req.path) {
        (&Method::POST, "/v1/messages") => messages(sh, req),
        (&Method::POST, "/v1/messages/count_tokens") => count_tokens(sh, req),
        (&Method::GET, "/v1/models") => models(sh),
        _ => error(StatusCode::NOT_FOUND, "Not found"),
    }
}

/// Anthropic's error type and wording for `status` (529 is `overloaded_error`).
pub(crate) fn failure(status: StatusCode) -> Out {
    let message = match status.as_u16() {
        401 => "invalid x-api-key",
        403 => "Your API key does not have permission to use the specified resource.",
        404 => "Not found",
        413 => "Request exceeds the maximum allowed number of bytes.",
        429 => "Number of request tokens has exceeded your per-minute rate limit",
        500 => "Internal server error",
        529 => "Overloaded",
        _ => status.canonical_reason().unwrap_or("Error"),
    };
    error(status, message)
}

pub(crate) fn error(status: StatusCode, message: &str) -> Out {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        504 => "timeout_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    };
    #[derive(Serialize)]
    struct Body<'a> {
        r#type: &'static str,
        error: Inner<'a>,
        request_id: &'a str,
    }
    #[derive(Serialize)]
    struct Inner<'a> {
        r#type: &'a str,
        message: &'a str,
    }
    let request_id = request_id(message.len() as u64 ^ u64::from(status.as_u16()));
    let body = Body {
        r#type: "error",
        error: Inner {
            r#type: kind,
            message,
        },
        request_id: &request_id,
    };
    Out::json(status, JSON, text::to_json(&body)).with_request_id(request_id)
}

fn request_id(seed: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    text::id("req_011", seed ^ nanos, 24, text::BASE58)
}

fn bad_request(message: &str) -> Out {
    error(StatusCode::BAD_REQUEST, message)
}

/// The body, its model and messages, checked in the order the API reports them.
fn parse<'a>(sh: &Shared, req: &'a Req<'_>) -> Result<(&'a Value, &'a str, &'a [Value]), Out> {
    let body = match req.json {
        Ok(Some(v)) if v.is_object() => v,
        Ok(_) => return Err(bad_request("Input should be a valid dictionary")),
        Err(e) => {
            return Err(bad_request(&format!(
                "There was an error parsing the body of your request: {e}"
            )))
        }
    };
    let Some(model) = body.get("model").and_then(Value::as_str) else {
        return Err(bad_request("model: Field required"));
    };
    let messages = match body.get("messages") {
        None => return Err(bad_request("messages: Field required")),
        Some(Value::Array(m)) if m.is_empty() => {
            return Err(bad_request("messages: at least one message is required"))
        }
        Some(Value::Array(m)) => m.as_slice(),
        Some(_) => return Err(bad_request("messages: Input should be a valid list")),
    };
    if !sh.models.chat.iter().any(|m| m == model) {
        return Err(error(StatusCode::NOT_FOUND, &format!("model: {model}")));
    }
    Ok((body, model, messages))
}

fn input_tokens(body: &Value, messages: &[Value]) -> usize {
    let system = text::content_text(body.get("system"));
    text::count_words(&system) + text::chat_prompt(messages).1
}

fn count_tokens(sh: &Shared, req: &Req<'_>) -> Out {
    match parse(sh, req) {
        Ok((body, _, messages)) => {
            let n = input_tokens(body, messages);
            Out::json(
                StatusCode::OK,
                JSON,
                format!(r#"{{"input_tokens":{n}}}"#).into_bytes(),
            )
        }
        Err(out) => out,
    }
}

#[derive(Serialize)]
struct Usage {
    input_tokens: usize,
    cache_creation_input_tokens: usize,
    cache_read_input_tokens: usize,
    output_tokens: usize,
}

#[derive(Serialize)]
struct Block<'a> {
    r#type: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct Message<'a> {
    id: &'a str,
    r#type: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<Block<'a>>,
    stop_reason: Option<&'a str>,
    stop_sequence: Option<&'a str>,
    usage: Usage,
}

/// The streaming events other than `message_start`, each `{"type": <event name>, …}`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart {
        message: Message<'a>,
    },
    ContentBlockStart {
        index: u32,
        content_block: Block<'a>,
    },
    ContentBlockDelta {
        index: u32,
        delta: TextDelta<'a>,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: StopDelta<'a>,
        usage: OutputUsage,
    },
    MessageStop,
}

#[derive(Serialize)]
struct TextDelta<'a> {
    r#type: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct StopDelta<'a> {
    stop_reason: &'a str,
    stop_sequence: Option<&'a str>,
}

#[derive(Serialize)]
struct OutputUsage {
    output_tokens: usize,
}

fn messages(sh: &Shared, req: &Req<'_>) -> Out {
    let (body, model, messages) = match parse(sh, req) {
        Ok(p) => p,
        Err(out) => return out,
    };
    let Some(max_tokens) = body.get("max_tokens") else {
        return bad_request("max_tokens: Field required");
    };
    let Some(max_tokens) = max_tokens.as_u64().filter(|n| *n >= 1) else {
        return bad_request("max_tokens: Input should be greater than or equal to 1");
    };
    let prompt = text::chat_prompt(messages).0;
    let input_tokens = input_tokens(body, messages);
    let reply = Reply::new(&prompt, req.behavior.tokens, Some(max_tokens));
    let stop_reason = if reply.truncated {
        "max_tokens"
    } else {
        "end_turn"
    };
    let id = text::id(
        "msg_01",
        text::hash(reply.text.as_bytes()) ^ sh.requests(),
        22,
        text::BASE58,
    );
    let request_id = request_id(sh.requests());
    let message = |content, stop_reason, output_tokens| Message {
        id: &id,
        r#type: "message",
        role: "assistant",
        model,
        content,
        stop_reason,
        stop_sequence: None,
        usage: Usage {
            input_tokens,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 0,
            output_tokens,
        },
    };
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        let block = Block {
            r#type: "text",
            text: &reply.text,
        };
        let json = text::to_json(&message(vec![block], Some(stop_reason), reply.count()));
        return Out::json(StatusCode::OK, JSON, json).with_request_id(request_id);
    }
    let mut ev = Events::default();
    ev.buf.reserve(160 * (reply.count() + 8));
    let start = Event::MessageStart {
        message: message(Vec::new(), None, 1),
    };
    ev.sse(Some("message_start"), &start);
    let block = Block {
        r#type: "text",
        text: "",
    };
    let block_start = Event::ContentBlockStart {
        index: 0,
        content_block: block,
    };
    ev.sse(Some("content_block_start"), &block_start);
    ev.raw(b"event: ping\ndata: {\"type\": \"ping\"}\n\n");
    for token in reply.tokens() {
        let delta = TextDelta {
            r#type: "text_delta",
            text: token,
        };
        ev.sse(
            Some("content_block_delta"),
            &Event::ContentBlockDelta { index: 0, delta },
        );
    }
    ev.sse(
        Some("content_block_stop"),
        &Event::ContentBlockStop { index: 0 },
    );
    let delta = Event::MessageDelta {
        delta: StopDelta {
            stop_reason,
            stop_sequence: None,
        },
        usage: OutputUsage {
            output_tokens: reply.count(),
        },
    };
    ev.sse(Some("message_delta"), &delta);
    ev.sse(Some("message_stop"), &Event::MessageStop);
    Out::stream(SSE, ev).with_request_id(request_id)
}

/// `/v1/models`: ids, display names (`claude-3-5-haiku-20241022` → `Claude 3.5 Haiku`) and
/// release dates taken from the id's date suffix.
fn models(sh: &Shared) -> Out {
    #[derive(Serialize)]
    struct Model<'a> {
        r#type: &'static str,
        id: &'a str,
        display_name: String,
        created_at: String,
    }
    #[derive(Serialize)]
    struct List<'a> {
        data: Vec<Model<'a>>,
        has_more: bool,
        first_id: Option<&'a str>,
        last_id: Option<&'a str>,
    }
    let data: Vec<Model<'_>> = sh
        .models
        .chat
        .iter()
        .map(|id| Model {
            r#type: "model",
            id,
            display_name: display_name(id),
            created_at: created_at(id),
        })
        .collect();
    let list = List {
        first_id: data.first().map(|m| m.id),
        last_id: data.last().map(|m| m.id),
        data,
        has_more: false,
    };
    Out::json(StatusCode::OK, JSON, text::to_json(&list))
}

fn is_date(part: &str) -> bool {
    part.len() == 8 && part.bytes().all(|b| b.is_ascii_digit())
}

fn display_name(id: &str) -> String {
    let mut name = String::new();
    let mut prev_digit = false;
    for part in id.split('-').filter(|p| !is_date(p) && *p != "latest") {
        let digit = part.bytes().all(|b| b.is_ascii_digit());
        if !name.is_empty() {
            name.push(if digit && prev_digit { '.' } else { ' ' });
        }
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            name.extend(first.to_uppercase());
            name.push_str(chars.as_str());
        }
        prev_digit = digit;
    }
    name
}

fn created_at(id: &str) -> String {
    match id.split('-').find(|p| is_date(p)) {
        Some(d) => format!("{}-{}-{}T00:00:00Z", &d[..4], &d[4..6], &d[6..]),
        None => "2025-01-01T00:00:00Z".to_owned(),
    }
}
