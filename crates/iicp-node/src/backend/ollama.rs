//! Ollama's native API: `/api/tags`, `/api/chat` (NDJSON streaming), `/api/embed`.

use super::{
    completion, send, BackendError, CallContext, ChatStream, ModelInfo, Output, StreamEvent, Usage,
};
use futures_util::StreamExt;
use iicp_stream::lines;
use serde_json::{json, Map, Value};

#[derive(Clone)]
pub struct OllamaBackend {
    base: String,
    http: reqwest::Client,
}

/// OpenAI content parts → Ollama's `content` string plus base64 `images`.
fn message(m: &Value) -> Value {
    let role = m.get("role").cloned().unwrap_or(json!("user"));
    let mut out = Map::new();
    out.insert("role".into(), role);
    match m.get("content") {
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            let mut images = Vec::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        text.push_str(part.get("text").and_then(Value::as_str).unwrap_or(""))
                    }
                    Some("image_url") => {
                        let url = part
                            .get("image_url")
                            .and_then(|u| u.get("url").or(Some(u)))
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        // data:image/png;base64,AAAA → AAAA
                        let b64 = url.split_once("base64,").map_or(url, |(_, b)| b);
                        images.push(json!(b64));
                    }
                    _ => {}
                }
            }
            out.insert("content".into(), json!(text));
            if !images.is_empty() {
                out.insert("images".into(), Value::Array(images));
            }
        }
        Some(Value::String(s)) => {
            out.insert("content".into(), json!(s));
        }
        _ => {
            out.insert("content".into(), json!(""));
        }
    }
    for key in ["tool_calls", "images", "tool_name"] {
        if let Some(v) = m.get(key) {
            out.entry(key).or_insert_with(|| v.clone());
        }
    }
    Value::Object(out)
}

fn request_body(payload: &Value, model: &str, stream: bool) -> Value {
    let messages: Vec<Value> = payload
        .get("messages")
        .and_then(Value::as_array)
        .map(|ms| ms.iter().map(message).collect())
        .unwrap_or_default();
    let mut options = Map::new();
    for (from, to) in [
        ("max_tokens", "num_predict"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("stop", "stop"),
        ("seed", "seed"),
        ("presence_penalty", "presence_penalty"),
        ("frequency_penalty", "frequency_penalty"),
    ] {
        if let Some(v) = payload.get(from).filter(|v| !v.is_null()) {
            options.insert(to.into(), v.clone());
        }
    }
    let mut body = json!({"model": model, "messages": messages, "stream": stream});
    if !options.is_empty() {
        body["options"] = Value::Object(options);
    }
    if let Some(tools) = payload.get("tools") {
        body["tools"] = tools.clone();
    }
    match payload.get("response_format") {
        Some(f) if f.get("type").and_then(Value::as_str) == Some("json_object") => {
            body["format"] = json!("json");
        }
        Some(f) => {
            if let Some(schema) = f.get("json_schema").and_then(|s| s.get("schema")) {
                body["format"] = schema.clone();
            }
        }
        None => {}
    }
    body
}

fn usage_of(v: &Value) -> Option<Usage> {
    let prompt = v.get("prompt_eval_count").and_then(Value::as_u64);
    let completion = v.get("eval_count").and_then(Value::as_u64);
    (prompt.is_some() || completion.is_some()).then(|| Usage {
        prompt_tokens: prompt.unwrap_or(0),
        completion_tokens: completion.unwrap_or(0),
    })
}

/// A non-empty list of Ollama tool calls, in OpenAI's shape.
fn tool_calls(calls: &Value) -> Option<Value> {
    let calls = calls.as_array().filter(|c| !c.is_empty())?;
    Some(iicp_proto::chat::tool_calls_from_ollama(calls))
}

impl OllamaBackend {
    pub fn new(base: &str) -> Self {
        OllamaBackend {
            base: base.trim_end_matches('/').to_owned(),
            http: super::http_client(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub async fn models(&self) -> Result<Vec<ModelInfo>, BackendError> {
        let v: Value = send(self.http.get(format!("{}/api/tags", self.base)))
            .await?
            .json()
            .await?;
        let models = v
            .get("models")
            .and_then(Value::as_array)
            .ok_or_else(|| BackendError::Decode("/api/tags has no models[]".into()))?;
        Ok(models
            .iter()
            .filter_map(|m| {
                let name = m.get("name").or(m.get("model"))?.as_str()?;
                let family = m
                    .pointer("/details/family")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                Some(ModelInfo {
                    name: name.to_owned(),
                    embedding: super::looks_like_embedding(name) || family.contains("bert"),
                })
            })
            .collect())
    }

    pub async fn chat(
        &self,
        model: &str,
        payload: &Value,
        ctx: &CallContext,
    ) -> Result<Output, BackendError> {
        let req = ctx.apply(
            self.http
                .post(format!("{}/api/chat", self.base))
                .json(&request_body(payload, model, false)),
        );
        let v: Value = send(req).await?.json().await?;
        let msg = v
            .get("message")
            .ok_or_else(|| BackendError::Decode("chat answer without message".into()))?;
        let content = msg.get("content").and_then(Value::as_str).unwrap_or("");
        let calls = msg.get("tool_calls").and_then(tool_calls);
        let finish = if calls.is_some() {
            Some("tool_calls")
        } else {
            v.get("done_reason")
                .and_then(Value::as_str)
                .or(Some("stop"))
        };
        let usage = usage_of(&v);
        let mut result = completion(model, content, finish, usage);
        if let Some(calls) = calls {
            result["choices"][0]["message"]["tool_calls"] = calls;
        }
        Ok(Output {
            result,
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
        let req = ctx.apply(
            self.http
                .post(format!("{}/api/chat", self.base))
                .json(&request_body(payload, model, true)),
        );
        let resp = send(req).await?;
        let events = lines(resp.bytes_stream()).filter_map(|line| {
            let out = match line {
                Err(e) => Some(Err(BackendError::Transport(e))),
                Ok(line) if line.trim().is_empty() => None,
                Ok(line) => match serde_json::from_str::<Value>(&line) {
                    Err(_) => Some(Err(BackendError::Decode("bad NDJSON line".into()))),
                    Ok(v) if v.get("error").is_some() => Some(Err(BackendError::Decode(
                        "backend reported an error mid-stream".into(),
                    ))),
                    Ok(v) if v.get("done").and_then(Value::as_bool) == Some(true) => {
                        Some(Ok(StreamEvent::Finish {
                            finish_reason: Some(
                                v.get("done_reason")
                                    .and_then(Value::as_str)
                                    .unwrap_or("stop")
                                    .to_owned(),
                            ),
                            usage: usage_of(&v),
                        }))
                    }
                    Ok(v) => v
                        .pointer("/message/content")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(|s| Ok(StreamEvent::Delta(s.to_owned()))),
                },
            };
            std::future::ready(out)
        });
        Ok(super::require_finish(events.boxed()))
    }

    pub async fn embed(
        &self,
        model: &str,
        payload: &Value,
        ctx: &CallContext,
    ) -> Result<Output, BackendError> {
        let input = payload.get("input").cloned().unwrap_or(Value::Null);
        let mut body = json!({"model": model, "input": input});
        if let Some(d) = payload.get("dimensions") {
            body["dimensions"] = d.clone();
        }
        let req = ctx.apply(
            self.http
                .post(format!("{}/api/embed", self.base))
                .json(&body),
        );
        let v: Value = send(req).await?.json().await?;
        let vectors = v
            .get("embeddings")
            .and_then(Value::as_array)
            .ok_or_else(|| BackendError::Decode("embed answer without embeddings".into()))?;
        let prompt = v
            .get("prompt_eval_count")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let data: Vec<Value> = vectors
            .iter()
            .enumerate()
            .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e}))
            .collect();
        Ok(Output {
            result: json!({
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
            }),
            raw_result: None,
            usage: Some(Usage {
                prompt_tokens: prompt,
                completion_tokens: 0,
            }),
            model: model.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_parts_become_ollama_text_and_images() {
        let payload = json!({
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is "},
                {"type": "text", "text": "this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}}
            ]}],
            "max_tokens": 7, "temperature": 0.2, "stop": ["\n"],
            "response_format": {"type": "json_object"}
        });
        let body = request_body(&payload, "llava", false);
        assert_eq!(body["messages"][0]["content"], "what is this?");
        assert_eq!(body["messages"][0]["images"][0], "QUJD");
        assert_eq!(body["options"]["num_predict"], 7);
        assert_eq!(body["options"]["stop"][0], "\n");
        assert_eq!(body["format"], "json");
        assert_eq!(body["stream"], false);
    }

    #[test]
    fn tool_call_arguments_become_strings() {
        let calls =
            tool_calls(&json!([{"function": {"name": "f", "arguments": {"a": 1}}}])).unwrap();
        assert_eq!(calls[0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(calls[0]["type"], "function");
    }
}
