//! Ollama's answer shapes: a whole answer with its statistics, and the NDJSON lines of a
//! stream, live from the node or replayed from a whole answer.

use super::API;
use crate::failure::Failure;
use crate::serve::rfc3339_now;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use iicp_client::{ClientError, StreamItem};
use iicp_proto::task::TaskResponse;
use serde_json::{json, Value};
use std::time::Instant;

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

/// The assistant message and done reason of a chat completion, in Ollama's shape.
pub(super) fn answer_message(result: &Value) -> (Value, &'static str) {
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
pub(super) fn counts(result: &Value, tokens_used: Option<u64>) -> (u64, u64) {
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
pub(super) enum Kind {
    Chat,
    Generate,
}

/// Writes Ollama answers (whole objects and NDJSON lines) for one request.
pub(super) struct Lines {
    model: String,
    kind: Kind,
    started: Instant,
    first: Option<Instant>,
}

impl Lines {
    pub(super) fn new(model: String, kind: Kind, started: Instant) -> Lines {
        Lines {
            model,
            kind,
            started,
            first: None,
        }
    }

    /// One streamed piece of text.
    pub(super) fn piece(&mut self, text: &str) -> Bytes {
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
    pub(super) fn whole(
        &self,
        message: Value,
        reason: &str,
        (prompt, completion): (u64, u64),
    ) -> Value {
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

    pub(super) fn last(&self, r: &TaskResponse) -> Bytes {
        let result = r.result.as_ref().unwrap_or(&Value::Null);
        let (_, reason) = answer_message(result);
        let empty = json!({"role": "assistant", "content": ""});
        let line = self.whole(empty, reason, counts(result, r.metrics.tokens_used));
        let mut out = line.to_string().into_bytes();
        out.push(b'\n');
        Bytes::from(out)
    }

    /// A whole answer as the lines a live stream would have sent.
    pub(super) fn replay(&self, result: &Value, tokens_used: Option<u64>) -> Bytes {
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
pub(super) fn live_stream(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
