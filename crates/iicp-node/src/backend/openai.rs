//! OpenAI-compatible servers: llama.cpp `llama-server`, vLLM, LM Studio and the like.
//! `/v1/models`, `/v1/chat/completions` (plain and SSE), `/v1/embeddings`.

use super::{send, BackendError, CallContext, ChatStream, ModelInfo, Output, StreamEvent, Usage};
use futures_util::StreamExt;
use iicp_stream::lines;
use serde_json::{json, Value};

#[derive(Clone)]
pub struct OpenAiBackend {
    base: String,
    api_key: Option<String>,
    http: reqwest::Client,
}

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?;
    Some(Usage {
        prompt_tokens: u.get("prompt_tokens")?.as_u64().unwrap_or(0),
        completion_tokens: u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

/// The payload as the backend's request: every field passes through (tools, response_format,
/// sampling options), with the model and streaming mode set by the node.
fn request_body(payload: &Value, model: &str, stream: bool) -> Value {
    let mut body = payload.as_object().cloned().unwrap_or_default();
    body.insert("model".into(), json!(model));
    body.insert("stream".into(), json!(stream));
    if stream {
        body.insert("stream_options".into(), json!({"include_usage": true}));
    } else {
        body.remove("stream_options");
    }
    Value::Object(body)
}

impl OpenAiBackend {
    pub fn new(base: &str, api_key: Option<String>) -> Self {
        OpenAiBackend {
            base: base.trim_end_matches('/').to_owned(),
            api_key,
            http: super::http_client(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn post(&self, path: &str, ctx: &CallContext) -> reqwest::RequestBuilder {
        let mut req = self.http.post(format!("{}{path}", self.base));
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        ctx.apply(req)
    }

    pub async fn models(&self) -> Result<Vec<ModelInfo>, BackendError> {
        let mut req = self.http.get(format!("{}/v1/models", self.base));
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let v: Value = send(req).await?.json().await?;
        let data = v
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| BackendError::Decode("/v1/models has no data[]".into()))?;
        Ok(data
            .iter()
            .filter_map(|m| m.get("id").and_then(Value::as_str))
            .map(|id| ModelInfo {
                name: id.to_owned(),
                embedding: super::looks_like_embedding(id),
            })
            .collect())
    }

    pub async fn chat(
        &self,
        model: &str,
        payload: &Value,
        ctx: &CallContext,
    ) -> Result<Output, BackendError> {
        let req = self
            .post("/v1/chat/completions", ctx)
            .json(&request_body(payload, model, false));
        let v: Value = send(req).await?.json().await?;
        if v.get("choices").and_then(Value::as_array).is_none() {
            return Err(BackendError::Decode(
                "chat completion without choices".into(),
            ));
        }
        Ok(Output {
            usage: usage_of(&v),
            model: v
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or(model)
                .to_owned(),
            result: v,
        })
    }

    pub async fn chat_stream(
        &self,
        model: &str,
        payload: &Value,
        ctx: &CallContext,
    ) -> Result<ChatStream, BackendError> {
        let req = self
            .post("/v1/chat/completions", ctx)
            .json(&request_body(payload, model, true));
        let resp = send(req).await?;
        let mut finish_reason: Option<String> = None;
        let mut usage: Option<Usage> = None;
        let events = lines(resp.bytes_stream()).filter_map(move |line| {
            let out = match line {
                Err(e) => Some(Err(BackendError::Transport(e))),
                Ok(line) => match line.strip_prefix("data:").map(str::trim) {
                    None => None,
                    Some("[DONE]") => Some(Ok(StreamEvent::Finish {
                        finish_reason: finish_reason.take(),
                        usage: usage.take(),
                    })),
                    Some(data) => match serde_json::from_str::<Value>(data) {
                        Err(_) => Some(Err(BackendError::Decode("bad stream chunk".into()))),
                        Ok(chunk) => {
                            if let Some(u) = usage_of(&chunk) {
                                usage = Some(u);
                            }
                            let choice = chunk.get("choices").and_then(|c| c.get(0));
                            if let Some(r) = choice
                                .and_then(|c| c.get("finish_reason"))
                                .and_then(Value::as_str)
                            {
                                finish_reason = Some(r.to_owned());
                            }
                            choice
                                .and_then(|c| c.get("delta"))
                                .and_then(|d| d.get("content"))
                                .and_then(Value::as_str)
                                .filter(|s| !s.is_empty())
                                .map(|s| Ok(StreamEvent::Delta(s.to_owned())))
                        }
                    },
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
        let mut body = payload.as_object().cloned().unwrap_or_default();
        body.insert("model".into(), json!(model));
        let req = self.post("/v1/embeddings", ctx).json(&body);
        let v: Value = send(req).await?.json().await?;
        if v.get("data").and_then(Value::as_array).is_none() {
            return Err(BackendError::Decode("embeddings without data".into()));
        }
        Ok(Output {
            usage: usage_of(&v),
            model: v
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or(model)
                .to_owned(),
            result: v,
        })
    }
}
