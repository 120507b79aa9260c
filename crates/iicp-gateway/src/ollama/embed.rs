//! `/api/embed` (a string or a list of inputs) and the older `/api/embeddings` (one prompt).

use super::{record, request, API};
use crate::failure::Failure;
use crate::serve::call_span;
use crate::serve::json_answer;
use crate::AppState;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use iicp_proto::intent::LLM_EMBEDDING_V1;
use serde_json::{json, Map, Value};
use std::time::Instant;
use tracing::Instrument;

/// Runs an embedding call; the vectors in index order.
async fn embed_call(
    s: &AppState,
    model: String,
    input: Value,
    dimensions: Option<Value>,
) -> Result<(Vec<Value>, u64, String, iicp_client::Answer), Failure> {
    let model = s
        .resolve_tagged(LLM_EMBEDDING_V1, &model)
        .await
        .unwrap_or(model);
    let mut payload = Map::new();
    payload.insert("input".into(), input);
    if let Some(d) = dimensions.filter(|d| !d.is_null()) {
        payload.insert("dimensions".into(), d);
    }
    let call = s.call(LLM_EMBEDDING_V1, payload, Some(model.clone()), None);
    let mut answer = s.run(API, call).await?;
    record(&answer.node_id, answer.attempts);
    let mut result = answer.response.result.take().unwrap_or_default();
    let Some(Value::Array(mut data)) = result.get_mut("data").map(Value::take) else {
        return Err(Failure::malformed_result());
    };
    data.sort_by_key(|d| d.get("index").and_then(Value::as_u64).unwrap_or(0));
    let vectors = data
        .into_iter()
        .map(|mut d| d.get_mut("embedding").map(Value::take))
        .collect::<Option<Vec<Value>>>()
        .ok_or_else(Failure::malformed_result)?;
    let prompt = result
        .pointer("/usage/prompt_tokens")
        .and_then(Value::as_u64)
        .or(answer.response.metrics.tokens_used)
        .unwrap_or(0);
    Ok((vectors, prompt, model, answer))
}

/// `POST /api/embed`: a string or a non-empty list of inputs, one vector each.
pub(super) async fn embed(State(s): State<AppState>, body: Bytes) -> Response {
    let started = Instant::now();
    let (mut req, model) = match request(body) {
        Ok(r) => r,
        Err(f) => return f.render(API),
    };
    let input = match req.remove("input") {
        Some(i @ Value::String(_)) => i,
        Some(Value::Array(a)) if !a.is_empty() => Value::Array(a),
        _ => {
            return Failure::bad_request("`input` must be a string or a non-empty array")
                .render(API)
        }
    };
    let span = call_span!("ollama.embed", model);
    async move {
        match embed_call(&s, model, input, req.remove("dimensions")).await {
            Ok((vectors, prompt, model, answer)) => {
                let body = json!({"model": model, "embeddings": vectors,
                    "total_duration": started.elapsed().as_nanos() as u64,
                    "load_duration": 0, "prompt_eval_count": prompt});
                json_answer(&body, &answer, false)
            }
            Err(f) => f.render(API),
        }
    }
    .instrument(span)
    .await
}

/// The older `/api/embeddings`: one `prompt`, one `embedding`.
pub(super) async fn embeddings(State(s): State<AppState>, body: Bytes) -> Response {
    let (mut req, model) = match request(body) {
        Ok(r) => r,
        Err(f) => return f.render(API),
    };
    let prompt = match req.remove("prompt") {
        Some(p @ Value::String(_)) => p,
        _ => return Failure::bad_request("`prompt` must be a string").render(API),
    };
    let span = call_span!("ollama.embeddings", model);
    async move {
        match embed_call(&s, model, prompt, None).await {
            Ok((mut vectors, _, _, answer)) => {
                let embedding = vectors.pop().unwrap_or(json!([]));
                json_answer(&json!({ "embedding": embedding }), &answer, false)
            }
            Err(f) => f.render(API),
        }
    }
    .instrument(span)
    .await
}
