//! `health-responder`: the liveness dial-back target of benchmark nodes.
//!
//! Answers `GET /iicp/health` (and the same path under any prefix, so nodes may register
//! `http://127.0.0.1:PORT/some/prefix`) with 200 and a small JSON body; 404 otherwise.

use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use std::io::Write;
use std::net::SocketAddr;

const HEALTH: &str = r#"{"status":"ok","node":"iicp-bench","active_jobs":0,"load":0.0}"#;

async fn answer(request: Request) -> Response {
    if request.method() == Method::GET && request.uri().path().ends_with("/iicp/health") {
        ([(header::CONTENT_TYPE, "application/json")], HEALTH).into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

/// Binds `listen`, prints the bound address on stdout and serves until killed.
pub async fn serve(listen: SocketAddr) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{bound}");
        let _ = out.flush();
    }
    let app = axum::Router::new().fallback(answer);
    axum::serve(listener, app)
        .await
        .map_err(|e| format!("health responder stopped: {e}"))
}
