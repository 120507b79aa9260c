//! Finding a local backend when none is configured: each usual port is asked with that server's
//! own endpoint, so an answer means that server and not just an open port.

use crate::backend::{Backend, OllamaBackend, OpenAiBackend};
use std::time::Duration;

/// (what, base URL, probe path, check on the JSON answer)
const CANDIDATES: &[(&str, &str, &str, &str)] = &[
    ("Ollama", "http://127.0.0.1:11434", "/api/tags", "models"),
    ("LM Studio", "http://127.0.0.1:1234", "/v1/models", "data"),
    ("llama.cpp", "http://127.0.0.1:8080", "/v1/models", "data"),
    ("vLLM", "http://127.0.0.1:8000", "/v1/models", "data"),
];

/// The first backend that answers like itself, with its name for the operator.
pub async fn detect() -> Option<(&'static str, Backend)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .ok()?;
    for (name, base, path, field) in CANDIDATES {
        let Ok(resp) = http.get(format!("{base}{path}")).send().await else {
            continue;
        };
        let Ok(v) = resp.json::<serde_json::Value>().await else {
            continue;
        };
        if v.get(*field).is_some_and(|f| f.is_array()) {
            let backend = if *name == "Ollama" {
                Backend::Ollama(OllamaBackend::new(base))
            } else {
                Backend::OpenAi(OpenAiBackend::new(base, None))
            };
            return Some((name, backend));
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
