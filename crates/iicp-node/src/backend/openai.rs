//! OpenAI-compatible servers: llama.cpp `llama-server`, vLLM, LM Studio and the like.
//! `/v1/models`, `/v1/chat/completions` (plain and SSE), `/v1/embeddings`.

use super::{send, BackendError, CallContext, ChatStream, ModelInfo, Output, StreamEvent, Usage};
use futures_util::StreamExt;
use iicp_h1::H1;
use iicp_stream::lines;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Value};
use std::fmt;
use std::sync::Arc;

#[derive(Clone)]
pub struct OpenAiBackend {
    base: String,
    /// `{base}/v1/chat/completions` and `{base}/v1/embeddings`, parsed once (`None` when the
    /// base is not a URL: each call then fails the way the unparsed URL does).
    chat_url: Option<reqwest::Url>,
    embeddings_url: Option<reqwest::Url>,
    api_key: Option<String>,
    http: reqwest::Client,
    /// Whole-JSON calls (chat, embeddings) to a backend on this machine over plain HTTP.
    lean: Option<Arc<H1>>,
}

fn usage_of(v: &Value) -> Option<Usage> {
    usage_in(v.get("usage")?)
}

/// Token counts from a `usage` object (no `prompt_tokens`: none).
fn usage_in(u: &Value) -> Option<Usage> {
    Some(Usage {
        prompt_tokens: u.get("prompt_tokens")?.as_u64().unwrap_or(0),
        completion_tokens: u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

/// The payload as the backend's request: every field passes through (tools, response_format,
/// sampling options), with the model and streaming mode set by the node. Serialized straight
/// from the borrowed payload (no copy of it is made).
struct RequestBody<'a> {
    payload: &'a Value,
    model: &'a str,
    stream: bool,
}

fn request_body<'a>(payload: &'a Value, model: &'a str, stream: bool) -> RequestBody<'a> {
    RequestBody {
        payload,
        model,
        stream,
    }
}

impl Serialize for RequestBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if let Some(fields) = self.payload.as_object() {
            for (key, value) in fields {
                if !matches!(key.as_str(), "model" | "stream" | "stream_options") {
                    map.serialize_entry(key, value)?;
                }
            }
        }
        map.serialize_entry("model", self.model)?;
        map.serialize_entry("stream", &self.stream)?;
        if self.stream {
            map.serialize_entry("stream_options", &json!({"include_usage": true}))?;
        }
        map.end()
    }
}

impl OpenAiBackend {
    pub fn new(base: &str, api_key: Option<String>) -> Self {
        let base = base.trim_end_matches('/').to_owned();
        let url = |path: &str| reqwest::Url::parse(&format!("{base}{path}")).ok();
        let chat_url = url("/v1/chat/completions");
        OpenAiBackend {
            lean: chat_url.as_ref().and_then(H1::for_url).map(Arc::new),
            chat_url,
            embeddings_url: url("/v1/embeddings"),
            base,
            api_key,
            http: super::http_client(),
        }
    }

    /// POSTs `body` to `url` and reads a successful answer's body: through the lean client when
    /// the backend is local plain HTTP, else through reqwest.
    async fn call<T: Serialize>(
        &self,
        url: &Option<reqwest::Url>,
        path: &str,
        ctx: &CallContext,
        body: &T,
    ) -> Result<Vec<u8>, BackendError> {
        let (Some(h1), Some(url)) = (&self.lean, url) else {
            let req = self.post(url, path, ctx).json(body);
            return Ok(send(req).await?.bytes().await?.to_vec());
        };
        let mut json = Vec::with_capacity(512);
        serde_json::to_writer(&mut json, body).map_err(|e| BackendError::Decode(e.to_string()))?;
        let body = json;
        let auth = self.api_key.as_ref().map(|k| format!("Bearer {k}"));
        let mut headers: Vec<(&str, &str)> = ctx.headers().collect();
        if let Some(auth) = &auth {
            headers.push(("authorization", auth));
        }
        let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let reply = h1
            .post_json(target, &headers, &body)
            .await
            .map_err(|e| BackendError::Transport(e.to_string()))?;
        if !(200..300).contains(&reply.status) {
            let text = String::from_utf8_lossy(&reply.body);
            return Err(super::status_error(reply.status, &text));
        }
        Ok(reply.body)
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn post(
        &self,
        url: &Option<reqwest::Url>,
        path: &str,
        ctx: &CallContext,
    ) -> reqwest::RequestBuilder {
        let mut req = match url {
            Some(url) => self.http.post(url.clone()),
            None => self.http.post(format!("{}{path}", self.base)),
        };
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
        let body = request_body(payload, model, false);
        let answer = self
            .call(&self.chat_url, "/v1/chat/completions", ctx, &body)
            .await?;
        // The completion is the result as it came: only what the node needs is read from it.
        let text = std::str::from_utf8(&answer).map_err(|e| BackendError::Decode(e.to_string()))?;
        let peek: Peek =
            serde_json::from_str(text).map_err(|e| BackendError::Decode(e.to_string()))?;
        if !peek.choices {
            return Err(BackendError::Decode(
                "chat completion without choices".into(),
            ));
        }
        Ok(Output {
            usage: peek.usage,
            model: peek.model.unwrap_or_else(|| model.to_owned()),
            result: Value::Null,
            raw_result: Some(answer),
        })
    }

    pub async fn chat_stream(
        &self,
        model: &str,
        payload: &Value,
        ctx: &CallContext,
    ) -> Result<ChatStream, BackendError> {
        let req = self
            .post(&self.chat_url, "/v1/chat/completions", ctx)
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
        let answer = self
            .call(&self.embeddings_url, "/v1/embeddings", ctx, &body)
            .await?;
        let v: Value =
            serde_json::from_slice(&answer).map_err(|e| BackendError::Decode(e.to_string()))?;
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
            raw_result: None,
        })
    }
}

/// What the node reads from a chat completion it passes on unchanged: whether `choices` is an
/// array, a string `model`, and `usage`. Everything else is checked to be JSON and skipped
/// without being stored. A repeated key counts once, the last time, as in a parsed `Value`.
#[derive(Default)]
struct Peek {
    choices: bool,
    model: Option<String>,
    usage: Option<Usage>,
}

impl<'de> Deserialize<'de> for Peek {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Peek, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Field {
            Choices,
            Model,
            Usage,
            #[serde(other)]
            Other,
        }
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Peek;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a chat completion object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Peek, A::Error> {
                let mut peek = Peek::default();
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::Choices => {
                            let Peeked(choices) = map.next_value::<Peeked<Skipped>>()?;
                            peek.choices = matches!(choices, Skipped::Array);
                        }
                        Field::Model => {
                            peek.model = match map.next_value::<Value>()? {
                                Value::String(s) => Some(s),
                                _ => None,
                            }
                        }
                        Field::Usage => {
                            let Peeked(PeekUsage(usage)) = map.next_value()?;
                            peek.usage = usage;
                        }
                        Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(peek)
            }
        }
        d.deserialize_map(Fields)
    }
}

/// What the peek reads from one JSON value of any kind: objects are handed to `object`, the
/// rest is skipped and reported by kind.
trait PeekValue<'de>: Sized {
    fn object<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
    fn array() -> Self;
    fn unsigned(n: u64) -> Self;
    fn other() -> Self;
}

/// Deserializes any JSON value as a [`PeekValue`].
struct Peeked<T>(T);

impl<'de, T: PeekValue<'de>> Deserialize<'de> for Peeked<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Peeked<T>, D::Error> {
        struct Kind<T>(std::marker::PhantomData<T>);
        impl<'de, T: PeekValue<'de>> Visitor<'de> for Kind<T> {
            type Value = Peeked<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Peeked<T>, A::Error> {
                T::object(map).map(Peeked)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Peeked<T>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Peeked(T::array()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Peeked<T>, E> {
                Ok(Peeked(T::unsigned(n)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Peeked<T>, E> {
                Ok(Peeked(T::other()))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Peeked<T>, E> {
                Ok(Peeked(T::other()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Peeked<T>, E> {
                Ok(Peeked(T::other()))
            }
            fn visit_str<E>(self, _: &str) -> Result<Peeked<T>, E> {
                Ok(Peeked(T::other()))
            }
            fn visit_unit<E>(self) -> Result<Peeked<T>, E> {
                Ok(Peeked(T::other()))
            }
        }
        d.deserialize_any(Kind(std::marker::PhantomData))
    }
}

/// Any JSON value, skipped; what the peek needs to know of it.
enum Skipped {
    Array,
    Unsigned(u64),
    Other,
}

impl<'de> PeekValue<'de> for Skipped {
    fn object<A: MapAccess<'de>>(mut map: A) -> Result<Skipped, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Skipped::Other)
    }
    fn array() -> Skipped {
        Skipped::Array
    }
    fn unsigned(n: u64) -> Skipped {
        Skipped::Unsigned(n)
    }
    fn other() -> Skipped {
        Skipped::Other
    }
}

/// `usage` read without building a tree, as [`usage_in`] reads a parsed one: counts only from
/// an object with `prompt_tokens`, and a count that is not an unsigned integer reads as 0.
struct PeekUsage(Option<Usage>);

impl<'de> PeekValue<'de> for PeekUsage {
    fn object<A: MapAccess<'de>>(mut map: A) -> Result<PeekUsage, A::Error> {
        #[derive(serde::Deserialize)]
        #[serde(field_identifier, rename_all = "snake_case")]
        enum Field {
            PromptTokens,
            CompletionTokens,
            #[serde(other)]
            Other,
        }
        let count = |value: Peeked<Skipped>| match value.0 {
            Skipped::Unsigned(n) => n,
            _ => 0,
        };
        let (mut prompt, mut completion) = (None, 0);
        while let Some(field) = map.next_key::<Field>()? {
            let value = map.next_value::<Peeked<Skipped>>()?;
            match field {
                Field::PromptTokens => prompt = Some(count(value)),
                Field::CompletionTokens => completion = count(value),
                Field::Other => {}
            }
        }
        Ok(PeekUsage(prompt.map(|prompt_tokens| Usage {
            prompt_tokens,
            completion_tokens: completion,
        })))
    }
    fn array() -> PeekUsage {
        PeekUsage(None)
    }
    fn unsigned(_: u64) -> PeekUsage {
        PeekUsage(None)
    }
    fn other() -> PeekUsage {
        PeekUsage(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peek(s: &str) -> Result<Peek, serde_json::Error> {
        serde_json::from_str(s)
    }

    #[test]
    fn a_completion_is_read_as_a_parsed_value_would_be() {
        let p = peek(
            r#"{"id":"x","choices":[{"message":{"content":"hi"}}],"model":"m",
                "usage":{"prompt_tokens":3,"completion_tokens":2},"extra":{"a":[1,2.5,null]}}"#,
        )
        .unwrap();
        assert!(p.choices);
        assert_eq!(p.model.as_deref(), Some("m"));
        assert_eq!(
            p.usage,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 2
            })
        );
        let p = peek(r#"{"choices":{"0":1},"model":7,"usage":"n/a"}"#).unwrap();
        assert!(!p.choices && p.model.is_none());
        assert_eq!(p.usage, None);
        for usage in [
            r#"{"prompt_tokens":3}"#,
            r#"{"prompt_tokens":"3","completion_tokens":-1}"#,
            r#"{"completion_tokens":2,"prompt_tokens":1.5,"x":{"y":[1]}}"#,
            r#"{"completion_tokens":2}"#,
            r#"[1,{"prompt_tokens":1}]"#,
            "null",
        ] {
            let text = format!(r#"{{"choices":[],"usage":{usage}}}"#);
            let parsed: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(peek(&text).unwrap().usage, usage_of(&parsed), "{usage}");
        }
        assert!(!peek(r#"{"model":"m"}"#).unwrap().choices);
        assert!(peek(r#"{"choices":[1}"#).is_err());
        assert!(peek(r#"{"choices":[]} trailing"#).is_err());
        assert!(peek("[1,2]").is_err());
        assert!(
            peek("{\"choices\":[],\"x\":\"a\u{1}b\"}").is_err(),
            "raw control character"
        );
    }

    #[test]
    fn the_backend_request_carries_the_payload_and_the_nodes_settings() {
        let payload = json!({"messages": [], "model": "theirs", "stream": true,
            "stream_options": {"x": 1}, "temperature": 0.5});
        let plain: Value = serde_json::to_value(request_body(&payload, "ours", false)).unwrap();
        assert_eq!(
            plain,
            json!({"messages": [], "model": "ours", "stream": false, "temperature": 0.5})
        );
        let streamed: Value = serde_json::to_value(request_body(&payload, "ours", true)).unwrap();
        assert_eq!(streamed["stream_options"], json!({"include_usage": true}));
        assert_eq!(streamed["stream"], json!(true));
    }
}
