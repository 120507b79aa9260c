//! Finding a local backend when none is configured: each usual port is asked with that server's
//! own endpoint, so an answer means that server and not just an open port.

use crate::backend::{Backend, OllamaBackend, OpenAiBackend};
use std::time::Duration;

/// Which API a candidate is asked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `GET /api/tags` answering `{"models": [...]}`.
    Ollama,
    /// `GET /v1/models` answering `{"data": [...]}`.
    OpenAi,
}

/// A place a backend may be listening, and the server it would be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// What to call it when found ("Ollama", "llama.cpp", …).
    pub name: &'static str,
    /// Base URL without a trailing slash.
    pub base_url: String,
    pub api: Api,
}

impl Candidate {
    pub fn new(name: &'static str, base_url: &str, api: Api) -> Self {
        Candidate {
            name,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api,
        }
    }
}

/// The usual local ports: Ollama 11434, LM Studio 1234, llama.cpp 8080, vLLM 8000.
pub fn usual_candidates() -> Vec<Candidate> {
    vec![
        Candidate::new("Ollama", "http://127.0.0.1:11434", Api::Ollama),
        Candidate::new("LM Studio", "http://127.0.0.1:1234", Api::OpenAi),
        Candidate::new("llama.cpp", "http://127.0.0.1:8080", Api::OpenAi),
        Candidate::new("vLLM", "http://127.0.0.1:8000", Api::OpenAi),
    ]
}

/// The first of the usual local backends that answers like itself, with its name for the
/// operator.
pub async fn detect() -> Option<(&'static str, Backend)> {
    detect_among(&usual_candidates()).await
}

/// The first candidate that answers like itself, in order.
pub async fn detect_among(candidates: &[Candidate]) -> Option<(&'static str, Backend)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .ok()?;
    for c in candidates {
        let (path, field) = match c.api {
            Api::Ollama => ("/api/tags", "models"),
            Api::OpenAi => ("/v1/models", "data"),
        };
        let Ok(resp) = http.get(format!("{}{path}", c.base_url)).send().await else {
            continue;
        };
        let Ok(v) = resp.json::<serde_json::Value>().await else {
            continue;
        };
        if v.get(field).is_some_and(|f| f.is_array()) {
            let backend = match c.api {
                Api::Ollama => Backend::Ollama(OllamaBackend::new(&c.base_url)),
                Api::OpenAi => Backend::OpenAi(OpenAiBackend::new(&c.base_url, None)),
            };
            return Some((c.name, backend));
        }
    }
    None
}

/// Builds a backend for an explicit URL, guessing the API from how it answers.
pub async fn for_url(base: &str, anthropic_key: Option<String>) -> Backend {
    if let Some(key) = anthropic_key {
        return Backend::Anthropic(crate::backend::AnthropicBackend::new(base, key));
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(1500))
        .build()
        .expect("HTTP client builds");
    let base = base.trim_end_matches('/');
    let ollama = http
        .get(format!("{base}/api/tags"))
        .send()
        .await
        .ok()
        .filter(|r| r.status().is_success());
    if let Some(r) = ollama {
        if r.json::<serde_json::Value>()
            .await
            .ok()
            .is_some_and(|v| v.get("models").is_some_and(|m| m.is_array()))
        {
            return Backend::Ollama(OllamaBackend::new(base));
        }
    }
    Backend::OpenAi(OpenAiBackend::new(base, None))
}
