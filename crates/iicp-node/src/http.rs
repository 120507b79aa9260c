//! The node's HTTP transport: `POST /v1/task` (JSON, or SSE with `Accept: text/event-stream`),
//! `GET /iicp/health`, `GET /metrics`, and CORS for any origin.
//!
//! Stream format: `event: delta` with `{"content": "<text>"}` for each piece of text as the
//! backend produces it, then `event: done` with the full RESPONSE envelope (the whole
//! completion, usage and metrics). A failure after the first piece ends the stream with
//! `event: error` carrying a RESPONSE envelope with `status: "error"` (or `"timeout"`). A failure
//! before the first piece is an ordinary JSON error answer, so a client can still fail over.
//! Embeddings, and tasks whose response must be sealed (`cx_response_encryption: "required"`),
//! are answered with one JSON RESPONSE even when SSE is asked for.

use crate::admission::auth::Presented;
use crate::backend::{completion, StreamEvent, Usage};
use crate::state::NodeState;
use crate::task::{self, Admitted, Incoming, TaskError};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;
use iicp_proto::ErrorCode;
use iicp_server::error::json;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

pub fn router(state: Arc<NodeState>) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/v1/task", post(submit))
        .route("/iicp/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::map_response(cors_and_envelope))
        .with_state(state)
}

async fn fallback(method: Method) -> Response {
    if method == Method::OPTIONS {
        // CORS preflight for any route.
        return StatusCode::NO_CONTENT.into_response();
    }
    iicp_server::error::envelope_for_status(StatusCode::NOT_FOUND)
}

async fn cors_and_envelope(response: Response) -> Response {
    let mut response = iicp_server::error::envelope_errors(response);
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "content-type, authorization, x-iicp-consumer-token, traceparent, tracestate, x-iicp-version",
        ),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    response
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn error_response(e: &TaskError) -> Response {
    let status = match (e.executed, e.code) {
        (true, ErrorCode::TaskTimeout) => StatusCode::GATEWAY_TIMEOUT,
        (true, ErrorCode::E029ModelNotServed) => StatusCode::NOT_FOUND,
        (true, _) => StatusCode::BAD_GATEWAY,
        (false, code) => {
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST)
        }
    };
    let mut response = json(status, &e.body());
    if let Some(ms) = e.hints.get("retry_after_ms").and_then(|v| v.as_u64()) {
        let secs = ms.div_ceil(1000).max(1).to_string();
        if let Ok(v) = HeaderValue::from_str(&secs) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    response
}

async fn submit(State(state): State<Arc<NodeState>>, headers: HeaderMap, body: Bytes) -> Response {
    let received = Instant::now();
    if let Err(e) = iicp_server::error::require_json(&headers) {
        return e.into_response();
    }
    let bearer = iicp_server::error::bearer(&headers);
    let incoming = Incoming {
        body: &body,
        presented: Presented {
            node_token: bearer,
            consumer_token: header_str(&headers, "x-iicp-consumer-token"),
        },
        traceparent: header_str(&headers, "traceparent"),
        tracestate: header_str(&headers, "tracestate"),
        received,
    };
    let admitted = match task::admit(&state, incoming).await {
        Ok(a) => a,
        Err(e) => return error_response(&e),
    };
    let trace_id = admitted.ctx.trace_id.clone();
    let wants_stream =
        header_str(&headers, "accept").is_some_and(|a| a.contains("text/event-stream"));
    // A response the caller asked to be sealed is never streamed: deltas would be plaintext.
    let streams = wants_stream && !admitted.is_embedding() && admitted.respond_encrypted.is_none();
    let mut response = if streams {
        stream(state, admitted).await
    } else {
        match task::execute(&state, admitted).await {
            Ok(finished) => match finished.to_json() {
                Ok(bytes) => (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    bytes,
                )
                    .into_response(),
                Err(_) => iicp_server::error::ApiError::new(
                    ErrorCode::InternalError,
                    "response could not be encoded",
                )
                .into_response(),
            },
            Err(e) => error_response(&e),
        }
    };
    if let Some(id) = trace_id.and_then(|t| HeaderValue::from_str(&t).ok()) {
        response.headers_mut().insert("x-iicp-trace-id", id);
    }
    response
}

struct Streaming {
    state: Arc<NodeState>,
    admitted: Admitted,
    events: crate::backend::ChatStream,
    pending: Option<StreamEvent>,
    content: String,
    done: bool,
}

fn delta(text: &str) -> Event {
    Event::default()
        .event("delta")
        .data(json!({ "content": text }).to_string())
}

async fn stream(state: Arc<NodeState>, a: Admitted) -> Response {
    let opened = tokio::time::timeout(
        a.remaining(),
        state.backend.chat_stream(&a.model, &a.payload, &a.ctx),
    )
    .await;
    let mut events = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(task_id = %a.task.task_id, error = %e, "backend stream failed to open");
            let (code, message) = task::backend_failure(&e);
            return error_response(&task::failed(
                &state,
                &a,
                code,
                message,
                a.received.elapsed(),
            ));
        }
        Err(_) => {
            let e = task::failed(
                &state,
                &a,
                ErrorCode::TaskTimeout,
                "the task did not finish within timeout_ms",
                a.received.elapsed(),
            );
            return error_response(&e);
        }
    };
    // Nothing is committed until the first event: an early failure is still a plain error.
    let first = match tokio::time::timeout(a.remaining(), events.next()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => {
            tracing::warn!(task_id = %a.task.task_id, error = %e, "backend stream failed");
            let (code, message) = task::backend_failure(&e);
            return error_response(&task::failed(
                &state,
                &a,
                code,
                message,
                a.received.elapsed(),
            ));
        }
        Ok(None) => {
            return error_response(&task::failed(
                &state,
                &a,
                ErrorCode::BackendError,
                "the inference backend failed",
                a.received.elapsed(),
            ));
        }
        Err(_) => {
            let e = task::failed(
                &state,
                &a,
                ErrorCode::TaskTimeout,
                "the task did not finish within timeout_ms",
                a.received.elapsed(),
            );
            return error_response(&e);
        }
    };
    let run = Streaming {
        state,
        admitted: a,
        events,
        pending: Some(first),
        content: String::new(),
        done: false,
    };
    let body = futures_util::stream::unfold(run, |mut s| async move {
        if s.done {
            return None;
        }
        let next = match s.pending.take() {
            Some(ev) => Ok(Some(Ok(ev))),
            None => tokio::time::timeout(s.admitted.remaining(), s.events.next()).await,
        };
        let event = match next {
            Ok(Some(Ok(StreamEvent::Delta(text)))) => {
                s.content.push_str(&text);
                delta(&text)
            }
            Ok(Some(Ok(StreamEvent::Finish {
                finish_reason,
                usage,
            }))) => {
                s.done = true;
                let output = crate::backend::Output {
                    result: completion(
                        &s.admitted.model,
                        &s.content,
                        finish_reason.as_deref(),
                        usage,
                    ),
                    raw_result: None,
                    usage: usage.or(Some(Usage::default())).filter(|u| u.total() > 0),
                    model: s.admitted.model.clone(),
                };
                let r = task::finish(&s.state, &s.admitted, output, s.admitted.received.elapsed());
                let done = r.to_json().unwrap_or_default();
                Event::default()
                    .event("done")
                    .data(String::from_utf8(done).unwrap_or_default())
            }
            other => {
                s.done = true;
                let (code, message) = match other {
                    Err(_) => (
                        ErrorCode::TaskTimeout,
                        "the task did not finish within timeout_ms",
                    ),
                    Ok(Some(Err(e))) => {
                        tracing::warn!(task_id = %s.admitted.task.task_id, error = %e, "backend stream broke");
                        task::backend_failure(&e)
                    }
                    _ => (ErrorCode::BackendError, "the inference backend failed"),
                };
                let e = task::failed(
                    &s.state,
                    &s.admitted,
                    code,
                    message,
                    s.admitted.received.elapsed(),
                );
                Event::default().event("error").data(e.body().to_string())
            }
        };
        Some((Ok::<Event, Infallible>(event), s))
    });
    Sse::new(body).into_response()
}

async fn health(State(state): State<Arc<NodeState>>) -> Response {
    let catalog = state.catalog();
    let mut intents: Vec<&str> = catalog
        .capabilities
        .iter()
        .map(|c| c.intent.as_str())
        .collect();
    intents.dedup();
    json(
        StatusCode::OK,
        &json!({
            "status": if state.backend_up.load(std::sync::atomic::Ordering::Relaxed) { "ok" } else { "degraded" },
            "node_id": state.node_id(),
            "load": state.load(),
            "active_jobs": state.gate.in_use(),
            "max_concurrent": state.config.max_concurrent,
            "available": state.available(),
            "models": catalog.all_models(),
            "intents": intents,
            // What REGISTER advertises (models × intent × input modalities), so an operator
            // can check it without a directory.
            "capabilities": &catalog.capabilities,
            "backend": state.backend.kind().as_str(),
            "version": env!("CARGO_PKG_VERSION"),
        }),
    )
}

async fn metrics(State(state): State<Arc<NodeState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.metrics.render(),
    )
        .into_response()
}
