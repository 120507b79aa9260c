//! Anthropic's Messages API: `/v1/messages` (plain and SSE), `/v1/models`.

use super::{
    completion, send, BackendError, CallContext, ChatStream, ModelInfo, Output, StreamEvent, Usage,
};
use futures_util::StreamExt;
use iicp_stream::lines;
use serde_json::{json, Value};

const API_VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; used when the task does not say.
const DEFAULT_MAX_TOKENS: u64 = 1024;

#[derive(Clone)]
pub struct AnthropicBackend {
    base: String,
    api_key: String,
    http: reqwest::Client,
}

fn content_blocks(content: &Value) -> Value {
    match content {
        Value::String(s) => json!([{"type": "text", "text": s}]),
        Value::Array(parts) => Value::Array(
            parts
                .iter()
                .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                    Some("text") => Some(json!({"type": "text", "text": p.get("text").cloned().unwrap_or_default()})),
                    Some("image_url") => {
                        let url = p.pointer("/image_url/url").and_then(Value::as_str)?;
                        let (meta, data) = url.strip_prefix("data:")?.split_once(";base64,")?;
                        Some(json!({"type": "image", "source": {"type": "base64", "media_type": meta, "data": data}}))
                    }
                    _ => None,
                })
                .collect(),
        ),
        _ => json!([]),
    }
}

fn request_body(payload: &Value, model: &str, stream: bool) -> Value {
    let mut system = Vec::new();
    let mut messages = Vec::new();
    for m in payload
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let content = m.get("content").cloned().unwrap_or_default();
        match m.get("role").and_then(Value::as_str) {
            Some("system") => {
                if let Some(s) = content.as_str() {
                    system.push(s.to_owned());
                }
            }
            Some("assistant") => {
                messages.push(json!({"role": "assistant", "content": content_blocks(&content)}))
            }
            _ => messages.push(json!({"role": "user", "content": content_blocks(&content)})),
        }
    }
    let mut body = json!({
        "model": model,
        "messages": messages,
        "max_tokens": payload.get("max_tokens").and_then(Value::as_u64).unwrap_or(DEFAULT_MAX_TOKENS),
        "stream": stream,
    });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n"));
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("stop", "stop_sequences"),
    ] {
        if let Some(v) = payload.get(from).filter(|v| !v.is_null()) {
            body[to] = v.clone();
        }
    }
    body
}

fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        _ => "stop",
    }
}

impl AnthropicBackend {
    pub fn new(base: &str, api_key: String) -> Self {
        AnthropicBackend {
            base: base.trim_end_matches('/').to_owned(),
            api_key,
            http: super::http_client(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.header("x-api-key", &self.api_key)
            .header("anthropic-version", API_VERSION)
    }

    pub async fn models(&self) -> Result<Vec<ModelInfo>, BackendError> {
        let v: Value = send(self.request(self.http.get(format!("{}/v1/models", self.base))))
            .await?
            .json()
            .await?;
        let data = v
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| BackendError::Decode("/v1/models has no data[]".into()))?;
        Ok(data
            .iter()
            .filter_map(|m| m.get("id").and_then(Value::as_str))
            .map(|id| ModelInfo {
                name: id.to_owned(),
                embedding: false,
            })
            .collect())
    }

    fn messages(&self, body: &Value, ctx: &CallContext) -> reqwest::RequestBuilder {
        ctx.apply(self.request(self.http.post(format!("{}/v1/messages", self.base))))
            .json(body)
    }

    pub async fn chat(
        &self,
        model: &str,
        payload: &Value,
        ctx: &CallContext,
    ) -> Result<Output, BackendError> {
        let v: Value = send(self.messages(&request_body(payload, model, false), ctx))
            .await?
            .json()
            .await?;
        let blocks = v
            .get("content")
            .and_then(Value::as_array)
            .ok_or_else(|| BackendError::Decode("message without content".into()))?;
        let text: String = blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect();
        let usage = v.get("usage").map(|u| Usage {
            prompt_tokens: u.get("input_tokens").and_then(Value::as_u64).unwrap_or(0),
            completion_tokens: u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0),
        });
        let reason = finish_reason(v.get("stop_reason").and_then(Value::as_str));
        Ok(Output {
            result: completion(model, &text, Some(reason), usage),
            raw_result: None,
            usage,
            model: model.to_owned(),
        })
    }

    pub async fn chat_stream(
        &self,
        model: &str,
        payload: &Value,
        ctx: &CallContext,
    ) -> Result<ChatStream, BackendError> {
        let resp = send(self.messages(&request_body(payload, model, true), ctx)).await?;
        let mut usage = Usage::default();
        let mut stop: Option<String> = None;
        let events = lines(resp.bytes_stream()).filter_map(move |line| {
            let out = match line {
                Err(e) => Some(Err(BackendError::Transport(e))),
                Ok(line) => match line.strip_prefix("data:").map(str::trim) {
                    None => None,
                    Some(data) => match serde_json::from_str::<Value>(data) {
                        Err(_) => Some(Err(BackendError::Decode("bad stream event".into()))),
                        Ok(ev) => match ev.get("type").and_then(Value::as_str) {
                            Some("message_start") => {
                                usage.prompt_tokens = ev
                                    .pointer("/message/usage/input_tokens")
                                    .and_then(Value::as_u64)
                                    .unwrap_or(0);
                                None
                            }
                            Some("content_block_delta") => ev
                                .pointer("/delta/text")
                                .and_then(Value::as_str)
                                .filter(|s| !s.is_empty())
                                .map(|s| Ok(StreamEvent::Delta(s.to_owned()))),
                            Some("message_delta") => {
                                stop = ev
                                    .pointer("/delta/stop_reason")
                                    .and_then(Value::as_str)
                                    .map(str::to_owned);
                                if let Some(n) =
                                    ev.pointer("/usage/output_tokens").and_then(Value::as_u64)
                                {
                                    usage.completion_tokens = n;
                                }
                                None
                            }
                            Some("message_stop") => Some(Ok(StreamEvent::Finish {
                                finish_reason: Some(finish_reason(stop.as_deref()).to_owned()),
                                usage: Some(usage),
                            })),
                            Some("error") => Some(Err(BackendError::Decode(
                                "backend reported an error mid-stream".into(),
                            ))),
                            _ => None,
                        },
                    },
                },
            };
            std::future::ready(out)
        });
        Ok(super::require_finish(events.boxed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_messages_move_to_the_system_field() {
        let body = request_body(
            &json!({"messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"}
            ], "stop": ["x"]}),
            "claude",
            true,
        );
        assert_eq!(body["system"], "be brief");
        assert_eq!(body["messages"].as_array().unwrap().len(), 1);
        assert_eq!(body["messages"][0]["content"][0]["text"], "hi");
        assert_eq!(body["max_tokens"], 1024);
        assert_eq!(body["stop_sequences"][0], "x");
    }
}
