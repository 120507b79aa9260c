//! Ollama's native API: `POST /api/chat` and `POST /api/generate` (NDJSON streams by default),
//! `POST /api/embed`, `POST /api/embeddings` (the older single-prompt form), `GET /api/tags`,
//! `GET /api/version`, and `GET /` ("Ollama is running", for tools that probe it).
//!
//! Requests become the IICP chat payload: messages with `images` become OpenAI content parts,
//! tool calls get their arguments as JSON strings, `options` map to the OpenAI names
//! (`num_predict` → `max_tokens`, `temperature`, `top_p`, `stop`, `seed`, penalties) and
//! `format` to `response_format`. Model names resolve with or without `:latest`.
//!
//! `chat` maps `/api/chat` and `/api/generate` requests to the chat payload and runs them,
//! `stream` writes the answers (whole, or as NDJSON lines live or replayed), `embed` serves
//! the two embedding routes.

mod chat;
mod embed;
mod stream;

use crate::failure::{Api, Failure};
use crate::serve::rfc3339_now;
use crate::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use sha2::Digest;

const API: Api = Api::Ollama;

/// The Ollama version reported to tools that check it.
pub const OLLAMA_VERSION: &str = "0.9.0";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/api/version", get(version))
        .route("/api/tags", get(tags))
        .route("/api/chat", post(chat::chat))
        .route("/api/generate", post(chat::generate))
        .route("/api/embed", post(embed::embed))
        .route("/api/embeddings", post(embed::embeddings))
}

async fn root() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Ollama is running",
    )
        .into_response()
}

async fn version() -> Response {
    iicp_server::error::json(StatusCode::OK, &json!({ "version": OLLAMA_VERSION }))
}

/// The request object and the model it names; Ollama insists on one.
fn request(body: Bytes) -> Result<(Map<String, Value>, String), Failure> {
    let (req, model) = crate::serve::request(body)?;
    let model = model.ok_or_else(|| Failure::bad_request("model is required"))?;
    Ok((req, model))
}

fn record(node: &str, attempts: u32) {
    let span = tracing::Span::current();
    span.record("node", node);
    span.record("attempts", attempts);
    tracing::debug!("answered");
}

fn tag(name: &str, modified_at: &str) -> Value {
    let digest = hex::encode(sha2::Sha256::digest(name.as_bytes()));
    json!({
        "name": name, "model": name, "modified_at": modified_at, "size": 0, "digest": digest,
        "details": {"parent_model": "", "format": "gguf", "family": "", "families": Value::Null,
                    "parameter_size": "", "quantization_level": ""},
    })
}

async fn tags(State(s): State<AppState>) -> Response {
    match s.live_models().await {
        Ok(names) => {
            let now = rfc3339_now();
            let models: Vec<Value> = names.iter().map(|n| tag(n, &now)).collect();
            iicp_server::error::json(StatusCode::OK, &json!({ "models": models }))
        }
        Err(e) => Failure::from_client(&e).render(API),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_have_ollamas_shape() {
        let t = tag("llama3.2:latest", "2025-01-01T00:00:00.000000Z");
        assert_eq!(t["name"], "llama3.2:latest");
        assert_eq!(t["digest"].as_str().unwrap().len(), 64);
        assert_eq!(t["details"]["format"], "gguf");
    }
}
