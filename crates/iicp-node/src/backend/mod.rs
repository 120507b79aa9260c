//! Backend adapters: each speaks one server's own API, behind one enum.
//!
//! The node's canonical chat shape is the IICP chat payload (OpenAI-like `messages`) in and an
//! OpenAI-shaped chat completion out; each adapter maps both ways. One pooled keep-alive HTTP
//! client per backend.

mod anthropic;
mod ollama;
mod openai;

pub use anthropic::AnthropicBackend;
pub use ollama::OllamaBackend;
pub use openai::OpenAiBackend;

use futures_util::stream::BoxStream;
use serde_json::Value;
use std::time::Duration;

/// Which API a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// OpenAI-compatible: llama.cpp, vLLM, LM Studio, and anything else speaking `/v1/*`.
    OpenAi,
    Ollama,
    Anthropic,
}

impl BackendKind {
    /// The REGISTER `backend` value.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::OpenAi => "custom",
            BackendKind::Ollama => "ollama",
            BackendKind::Anthropic => "anthropic",
        }
    }
}

/// A model the backend serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub name: String,
    /// True when the backend says (or the name shows) it is an embedding model.
    pub embedding: bool,
}

/// Why a backend call failed. Messages are for the node's operator log, never for the caller.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend answered HTTP {status}")]
    Status { status: u16 },
    #[error("backend unreachable: {0}")]
    Transport(String),
    #[error("backend answered something that is not its API: {0}")]
    Decode(String),
    #[error("backend does not serve this model")]
    ModelNotFound,
    #[error("this backend has no {0} endpoint")]
    Unsupported(&'static str),
}

impl From<reqwest::Error> for BackendError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_decode() {
            BackendError::Decode(e.to_string())
        } else {
            BackendError::Transport(e.without_url().to_string())
        }
    }
}

/// Trace headers forwarded to the backend.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub trace_id: Option<String>,
}

impl CallContext {
    fn apply(&self, mut req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if let Some(v) = &self.traceparent {
            req = req.header("traceparent", v);
        }
        if let Some(v) = &self.tracestate {
            req = req.header("tracestate", v);
        }
        if let Some(v) = &self.trace_id {
            req = req.header("x-iicp-trace-id", v);
        }
        req
    }

    /// The same headers as (name, value) pairs.
    fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("traceparent", &self.traceparent),
            ("tracestate", &self.tracestate),
            ("x-iicp-trace-id", &self.trace_id),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value.as_deref()?)))
    }
}

/// Token counts of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    pub fn total(self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    pub fn to_json(self) -> Value {
        serde_json::json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total(),
        })
    }
}

/// A finished chat or embedding call: the OpenAI-shaped result and its accounting.
#[derive(Debug, Clone)]
pub struct Output {
    pub result: Value,
    /// The result exactly as the backend sent it (checked to be a JSON object), when it is
    /// passed on unchanged; `result` is then `Null`. Spares parsing it into a tree and writing
    /// that tree out again.
    pub raw_result: Option<Vec<u8>>,
    pub usage: Option<Usage>,
    pub model: String,
}

/// One piece of a streamed chat.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Delta(String),
    Finish {
        finish_reason: Option<String>,
        usage: Option<Usage>,
    },
}

pub type ChatStream = BoxStream<'static, Result<StreamEvent, BackendError>>;

/// Builds the one pooled client a backend keeps for its lifetime.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client builds")
}

/// Sends a request and insists on a 2xx answer.
pub(crate) async fn send(req: reqwest::RequestBuilder) -> Result<reqwest::Response, BackendError> {
    let resp = req.send().await?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    // Read (and bound) the body so the connection can be reused; its text is not passed on.
    let body = resp.text().await.unwrap_or_default();
    Err(status_error(status.as_u16(), &body))
}

/// The failure a non-2xx answer with this body stands for.
pub(crate) fn status_error(status: u16, body: &str) -> BackendError {
    if status == 404 && body.contains("not found") && body.contains("model") {
        return BackendError::ModelNotFound;
    }
    BackendError::Status { status }
}

/// A configured backend.
#[derive(Clone)]
pub enum Backend {
    OpenAi(OpenAiBackend),
    Ollama(OllamaBackend),
    Anthropic(AnthropicBackend),
}

impl Backend {
    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::OpenAi(_) => BackendKind::OpenAi,
            Backend::Ollama(_) => BackendKind::Ollama,
            Backend::Anthropic(_) => BackendKind::Anthropic,
        }
    }

    pub fn base_url(&self) -> &str {
        match self {
            Backend::OpenAi(b) => b.base_url(),
            Backend::Ollama(b) => b.base_url(),
            Backend::Anthropic(b) => b.base_url(),
        }
    }

    pub async fn models(&self) -> Result<Vec<ModelInfo>, BackendError> {
        match self {
            Backend::OpenAi(b) => b.models().await,
            Backend::Ollama(b) => b.models().await,
            Backend::Anthropic(b) => b.models().await,
        }
    }

    pub async fn chat(
        &self,
        model: &str,
        payload: &Value,
        ctx: &CallContext,
    ) -> Result<Output, BackendError> {
        match self {
            Backend::OpenAi(b) => b.chat(model, payload, ctx).await,
            Backend::Ollama(b) => b.chat(model, payload, ctx).await,
            Backend::Anthropic(b) => b.chat(model, payload, ctx).await,
        }
    }

    pub async fn chat_stream(
        &self,
        model: &str,
        payload: &Value,
        ctx: &CallContext,
    ) -> Result<ChatStream, BackendError> {
        match self {
            Backend::OpenAi(b) => b.chat_stream(model, payload, ctx).await,
            Backend::Ollama(b) => b.chat_stream(model, payload, ctx).await,
            Backend::Anthropic(b) => b.chat_stream(model, payload, ctx).await,
        }
    }

    pub async fn embed(
        &self,
        model: &str,
        payload: &Value,
        ctx: &CallContext,
    ) -> Result<Output, BackendError> {
        match self {
            Backend::OpenAi(b) => b.embed(model, payload, ctx).await,
            Backend::Ollama(b) => b.embed(model, payload, ctx).await,
            Backend::Anthropic(_) => Err(BackendError::Unsupported("embedding")),
        }
    }
}

/// An OpenAI-shaped chat completion around one assistant message.
pub(crate) fn completion(
    model: &str,
    content: &str,
    finish_reason: Option<&str>,
    usage: Option<Usage>,
) -> Value {
    let mut v = serde_json::json!({
        "object": "chat.completion",
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": finish_reason,
        }],
    });
    if let Some(u) = usage {
        v["usage"] = u.to_json();
    }
    v
}

/// True for model names that are embedding models by convention.
pub fn looks_like_embedding(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "embed",
        "minilm",
        "bge-",
        "bge_",
        "e5-",
        "gte-",
        "nomic-embed",
        "arctic-embed",
    ]
    .iter()
    .any(|k| n.contains(k))
}

/// Ends a stream with an error when the backend closed it without finishing: a cut stream
/// must never look like a complete answer.
pub(crate) fn require_finish(inner: ChatStream) -> ChatStream {
    use futures_util::StreamExt;
    futures_util::stream::unfold((inner, false), |(mut inner, finished)| async move {
        if finished {
            return None;
        }
        match inner.next().await {
            Some(Ok(ev @ StreamEvent::Finish { .. })) => Some((Ok(ev), (inner, true))),
            Some(other) => Some((other, (inner, false))),
            None => Some((
                Err(BackendError::Decode(
                    "stream ended before it finished".into(),
                )),
                (inner, true),
            )),
        }
    })
    .boxed()
}
