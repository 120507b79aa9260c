//! The HTTP API: every route under both `/v1` and `/api/v1` (the prose and the conformance
//! runner disagree, digest C2), plus `/iicp/health` and `/metrics`.

mod discover;
mod dispatch;
mod heartbeat;
mod info;
mod register;
mod view;

use crate::state::Shared;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

fn api() -> Router<Shared> {
    Router::new()
        .route(
            "/register",
            post(register::register).delete(register::deregister),
        )
        .route("/deregister", post(register::deregister))
        .route("/heartbeat", post(heartbeat::heartbeat))
        .route("/me", get(info::me))
        .route("/discover", get(discover::discover))
        .route("/node/{id}", get(info::node))
        .route("/bootstrap", get(info::bootstrap))
        .route("/stats", get(info::stats))
        .route("/probe", get(info::probe))
        .route("/dispatch/ticket", post(dispatch::ticket))
        .route("/directory-key", get(dispatch::directory_key))
        .route("/consumer-token", post(dispatch::consumer_token))
        .route("/telemetry", post(info::telemetry))
        .route("/credits/balance", get(info::credits))
        .route("/credits/transactions", get(info::credits))
        .route("/credits/award", post(info::credits))
}

pub fn router(state: Shared) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .nest("/v1", api())
        .nest("/api/v1", api())
        .route("/iicp/health", get(info::health))
        .route("/metrics", get(info::metrics))
        .fallback(|| async {
            iicp_server::error::envelope_for_status(axum::http::StatusCode::NOT_FOUND)
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Route label for metrics: the matched template without its prefix.
fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    const ROUTES: &[&str] = &[
        "/register",
        "/deregister",
        "/heartbeat",
        "/me",
        "/discover",
        "/node/{id}",
        "/bootstrap",
        "/stats",
        "/probe",
        "/dispatch/ticket",
        "/directory-key",
        "/consumer-token",
        "/telemetry",
        "/credits/balance",
        "/credits/transactions",
        "/credits/award",
        "/iicp/health",
        "/metrics",
    ];
    let Some(path) = matched.map(MatchedPath::as_str) else {
        return "unmatched";
    };
    let bare = path
        .strip_prefix("/api/v1")
        .or_else(|| path.strip_prefix("/v1"))
        .unwrap_or(path);
    ROUTES
        .iter()
        .find(|r| **r == bare)
        .copied()
        .unwrap_or("unmatched")
}

/// Counts every request by route and status, and gives every error the spec envelope, even
/// those produced below the handlers (unknown method, oversized body, bad path parameter).
async fn observe(State(s): State<Shared>, request: Request, next: Next) -> Response {
    let route = route_label(request.extensions().get::<MatchedPath>());
    let response = next.run(request).await;
    s.metrics.request(route, response.status().as_u16());
    iicp_server::error::envelope_errors(response)
}
