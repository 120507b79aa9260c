//! `/v1/chat/completions` and the legacy `/v1/completions`, whole or as SSE chunks.

use super::{bad_request, body, model, JSON};
use crate::server::{Out, Req, Shared};
use crate::text::{self, Events, Reply};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;

const SSE: &str = "text/event-stream";

#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: usize,
    completion_tokens: usize,
    total_tokens: usize,
}

#[derive(Serialize)]
struct Envelope<'a, C> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: C,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

/// What every completion object and chunk of one reply shares.
struct Head<'a> {
    id: &'a str,
    created: u64,
    model: &'a str,
}

impl<'a> Head<'a> {
    fn envelope<C: Serialize>(
        &self,
        object: &'static str,
        choices: C,
        usage: Option<Usage>,
    ) -> Envelope<'a, C> {
        Envelope {
            id: self.id,
            object,
            created: self.created,
            model: self.model,
            choices,
            usage,
        }
    }
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: Message<'a>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct DeltaChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

/// `/v1/chat/completions` (`chat`) or the legacy `/v1/completions`, whole or streamed.
pub(super) fn completion(sh: &Shared, req: &Req<'_>, chat: bool) -> Out {
    let body = match body(req) {
        Ok(b) => b,
        Err(out) => return out,
    };
    let model = match model(sh, body, true) {
        Ok(m) => m,
        Err(out) => return out,
    };
    let (prompt, prompt_tokens) = if chat {
        match body.get("messages") {
            None => return bad_request("'messages' is required"),
            Some(Value::Array(m)) if !m.is_empty() => text::chat_prompt(m),
            Some(_) => return bad_request("'messages' must be a non-empty array"),
        }
    } else {
        let p = match body.get("prompt") {
            Some(Value::Array(a)) => text::content_text(a.first()),
            p => text::content_text(p),
        };
        let n = text::count_words(&p);
        (p, n)
    };
    let cap = text::cap(body, &["max_completion_tokens", "max_tokens", "n_predict"]);
    let reply = Reply::new(&prompt, req.behavior.tokens, cap);
    let finish = if reply.truncated { "length" } else { "stop" };
    let usage = Usage {
        prompt_tokens,
        completion_tokens: reply.count(),
        total_tokens: prompt_tokens + reply.count(),
    };
    let seed = text::hash(reply.text.as_bytes()) ^ req.received.elapsed().as_nanos() as u64;
    let (prefix, object) = match chat {
        true => ("chatcmpl-", "chat.completion"),
        false => ("cmpl-", "text_completion"),
    };
    let id = text::id(prefix, seed ^ sh.requests(), 32, text::ALNUM);
    let head = Head {
        id: &id,
        created: text::unix_now(),
        model,
    };
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        let json = if chat {
            let message = Message {
                role: "assistant",
                content: &reply.text,
            };
            let choice = ChatChoice {
                index: 0,
                message,
                finish_reason: finish,
            };
            text::to_json(&head.envelope(object, [choice], Some(usage)))
        } else {
            let choice = TextChoice {
                text: &reply.text,
                index: 0,
                logprobs: None,
                finish_reason: Some(finish),
            };
            text::to_json(&head.envelope(object, [choice], Some(usage)))
        };
        return Out::json(StatusCode::OK, JSON, json);
    }
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    let mut ev = Events::default();
    ev.buf.reserve(256 * (reply.count() + 4));
    if chat {
        let object = "chat.completion.chunk";
        let delta = |role, content, finish_reason| {
            let choice = DeltaChoice {
                index: 0,
                delta: Delta { role, content },
                finish_reason,
            };
            head.envelope(object, [choice], None)
        };
        ev.sse(None, &delta(Some("assistant"), Some(""), None));
        for token in reply.tokens() {
            ev.sse(None, &delta(None, Some(token), None));
        }
        ev.sse(None, &delta(None, None, Some(finish)));
        if include_usage {
            ev.sse(None, &head.envelope(object, [(); 0], Some(usage)));
        }
    } else {
        let chunk = |text, finish_reason| {
            let choice = TextChoice {
                text,
                index: 0,
                logprobs: None,
                finish_reason,
            };
            head.envelope(object, [choice], None)
        };
        for token in reply.tokens() {
            ev.sse(None, &chunk(token, None));
        }
        ev.sse(None, &chunk("", Some(finish)));
        if include_usage {
            ev.sse(None, &head.envelope(object, [(); 0], Some(usage)));
        }
    }
    ev.raw(b"data: [DONE]\n\n");
    Out::stream(SSE, ev)
}
