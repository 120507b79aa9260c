//! What a double is (its flavor and models) and how it behaves (latency, failures, length).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Which backend's wire format a double speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// The OpenAI-compatible API as served by llama.cpp's `llama-server`, vLLM and LM Studio
    /// (`/v1/models`, `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/health`).
    OpenAi,
    /// Ollama's native API (`/api/tags`, `/api/version`, `/api/chat`, `/api/generate`,
    /// `/api/embed`, `/api/embeddings`, `/api/show`).
    Ollama,
    /// Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`, `/v1/models`).
    Anthropic,
}

impl Flavor {
    /// The flag spelling: `openai`, `ollama` or `anthropic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::OpenAi => "openai",
            Flavor::Ollama => "ollama",
            Flavor::Anthropic => "anthropic",
        }
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Flavor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "openai" | "open-ai" | "llamacpp" | "llama.cpp" | "vllm" | "lmstudio" => {
                Ok(Flavor::OpenAi)
            }
            "ollama" => Ok(Flavor::Ollama),
            "anthropic" => Ok(Flavor::Anthropic),
            other => Err(format!(
                "unknown flavor {other:?} (expected openai, ollama or anthropic)"
            )),
        }
    }
}

/// How a failing double answers. Applies to every request while set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Answer with this HTTP status and the flavor's realistic error body
    /// (e.g. Anthropic 529 → `overloaded_error`, llama.cpp 503 → `unavailable_error`).
    Status(u16),
    /// `200 OK` with a JSON content type and a body that is not JSON.
    Garbage,
    /// Never answer. Hung requests are dropped when the double stops or is killed.
    Hang,
    /// Successful replies only: send this many stream events (SSE events or NDJSON lines),
    /// then drop the connection without ending the response. A non-streaming reply is cut in
    /// the middle of its JSON body instead.
    CutStreamAfter(usize),
}

/// Runtime-adjustable behaviour (see `BackendDouble::set_behavior`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Behavior {
    /// Waited before any answer (before the status line), on every request.
    pub delay: Duration,
    /// Waited between two events of a streamed reply.
    pub token_delay: Duration,
    /// When set, requests fail this way.
    pub fail: Option<Failure>,
    /// Words in a reply; the request's `max_tokens`/`num_predict` caps it (and then the reply
    /// ends for `length`/`max_tokens` instead of `stop`/`end_turn`).
    pub tokens: usize,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            delay: Duration::ZERO,
            token_delay: Duration::ZERO,
            fail: None,
            tokens: 5,
        }
    }
}

impl Behavior {
    /// The default behaviour failing with `failure`.
    pub fn failing(failure: Failure) -> Self {
        Behavior {
            fail: Some(failure),
            ..Behavior::default()
        }
    }
}

/// The models a double serves. Chat models answer chat/generate/messages; embedding models
/// answer embeddings; asking one for the other's job gets the backend's own refusal. Any name
/// may appear (vision models such as `llava:7b` or `qwen2-vl` are simply listed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Models {
    /// Chat (completion) models.
    pub chat: Vec<String>,
    /// Embedding models.
    pub embedding: Vec<String>,
}

impl Models {
    /// Models from two lists of names.
    pub fn new<C, E>(chat: C, embedding: E) -> Self
    where
        C: IntoIterator,
        C::Item: Into<String>,
        E: IntoIterator,
        E::Item: Into<String>,
    {
        Models {
            chat: chat.into_iter().map(Into::into).collect(),
            embedding: embedding.into_iter().map(Into::into).collect(),
        }
    }

    /// Typical models for a flavor, used by the binary when none are given.
    pub fn default_for(flavor: Flavor) -> Self {
        match flavor {
            Flavor::OpenAi => Models::new(["tiny-llama"], ["all-minilm"]),
            Flavor::Ollama => Models::new(["llama3.2:latest"], ["nomic-embed-text:latest"]),
            Flavor::Anthropic => {
                Models::new(["claude-sonnet-4-20250514"], std::iter::empty::<String>())
            }
        }
    }

    /// Every model, chat models first.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        self.chat.iter().chain(&self.embedding).map(String::as_str)
    }

    pub(crate) fn len(&self) -> usize {
        self.chat.len() + self.embedding.len()
    }
}
