//! Errors in the caller's API shape.
//!
//! OpenAI: `{"error":{"message","type","param","code"}}`; Ollama: `{"error":"…"}`. Statuses:
//! no candidate (`IICP-E033`) and `no_available_node` → 503, timeouts → 504, a request the node
//! refused as invalid → 400, a policy refusal → 403, an unknown model → 404, a failing backend
//! → 502. Messages come from the SDK's error kinds and the node's own (already caller-facing)
//! messages: never a payload, never a stack trace.

use crate::serve::X_IICP_ATTEMPTS;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use iicp_client::ClientError;
use iicp_proto::ErrorCode;
use serde_json::{json, Value};

/// Which API a request came in through: errors are written in its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Ollama,
}

impl Api {
    /// `/api/…` is Ollama's; everything else answers like OpenAI.
    pub fn of_path(path: &str) -> Api {
        if path.starts_with("/api/") || path == "/api" {
            Api::Ollama
        } else {
            Api::OpenAi
        }
    }
}

/// A failed request, before it is written in an API's shape.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    /// OpenAI's `error.code`: the IICP code (`IICP-E033`, `no_available_node`, …).
    pub code: String,
    pub message: String,
    /// OpenAI's `error.param`.
    pub param: Option<&'static str>,
    /// Attempts made, when known (sent as `x-iicp-attempts`).
    pub attempts: Option<u32>,
}

impl Failure {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            code: code.to_owned(),
            message: message.into(),
            param: None,
            attempts: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::ValidationError.as_str(),
            message,
        )
    }

    /// The body is not a JSON object.
    pub fn not_json(e: &serde_json::Error) -> Failure {
        Failure::bad_request(format!(
            "the request body is not a JSON object (line {}, column {})",
            e.line(),
            e.column()
        ))
    }

    pub fn model_not_found(api: Api, model: &str) -> Failure {
        let message = match api {
            Api::Ollama => format!("model \"{model}\" not found"),
            Api::OpenAi => {
                format!("The model `{model}` does not exist or no live node serves it right now.")
            }
        };
        Failure {
            param: Some("model"),
            ..Failure::new(StatusCode::NOT_FOUND, "model_not_found", message)
        }
    }

    /// The node's answer was not in the shape its intent promises.
    pub fn malformed_result() -> Failure {
        Failure::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::BackendError.as_str(),
            "the node answered with a result in an unexpected shape",
        )
    }

    /// What an SDK error means for the caller.
    pub fn from_client(e: &ClientError) -> Failure {
        let (status, attempts) = match e {
            ClientError::Invalid(_) => (StatusCode::BAD_REQUEST, None),
            ClientError::PolicyRefused(_) => (StatusCode::FORBIDDEN, Some(0)),
            ClientError::NoCandidates => (StatusCode::SERVICE_UNAVAILABLE, Some(0)),
            ClientError::NoAvailableNode { attempts, .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, Some(*attempts))
            }
            ClientError::Timeout { attempts } => (StatusCode::GATEWAY_TIMEOUT, Some(*attempts)),
            ClientError::Directory(_) => (StatusCode::SERVICE_UNAVAILABLE, Some(0)),
            ClientError::Node { status, .. } => (node_status(*status), None),
            ClientError::Stream(_) => (StatusCode::BAD_GATEWAY, None),
        };
        let (code, message) = match e {
            ClientError::Node { code, message, .. } => (code.clone(), message.clone()),
            ClientError::NoCandidates => (
                e.code().as_str().to_owned(),
                "no live node serves this request right now".to_owned(),
            ),
            other => (other.code().as_str().to_owned(), other.to_string()),
        };
        Failure {
            status,
            code,
            message,
            param: None,
            attempts,
        }
    }

    /// The error written in `api`'s shape.
    pub fn render(&self, api: Api) -> Response {
        let body = match api {
            Api::Ollama => json!({ "error": self.message }),
            Api::OpenAi => json!({"error": {
                "message": self.message,
                "type": openai_type(self.status),
                "param": self.param,
                "code": self.code,
            }}),
        };
        let mut response = iicp_server::error::json(self.status, &body);
        if let Some(n) = self.attempts {
            response
                .headers_mut()
                .insert(X_IICP_ATTEMPTS, HeaderValue::from(n));
        }
        response
    }

    /// The message for a stream that already started (the status line is gone).
    pub fn stream_error(&self, api: Api) -> Value {
        match api {
            Api::Ollama => json!({ "error": self.message }),
            Api::OpenAi => json!({"error": {
                "message": self.message,
                "type": openai_type(self.status),
                "param": Value::Null,
                "code": self.code,
            }}),
        }
    }
}

/// The caller's status for an error a node gave for the request itself.
fn node_status(status: u16) -> StatusCode {
    match status {
        400 | 422 => StatusCode::BAD_REQUEST,
        403 => StatusCode::FORBIDDEN,
        413 => StatusCode::PAYLOAD_TOO_LARGE,
        504 => StatusCode::GATEWAY_TIMEOUT,
        429 | 503 => StatusCode::SERVICE_UNAVAILABLE,
        // The node refused the gateway's credentials, replayed ids, backend failures: a bad
        // upstream as far as the caller can tell.
        _ => StatusCode::BAD_GATEWAY,
    }
}

fn openai_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

/// No such route.
pub async fn unknown_route() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// Gives the error answers that routing, extractors and body limits make on their own (404,
/// 405, 413, …; plain text or empty) the caller's API shape, keeping their status.
pub async fn shape_bare_errors(request: Request, next: Next) -> Response {
    let api = Api::of_path(request.uri().path());
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (code, message) = match status.as_u16() {
        404 => ("not_found", "no such route"),
        405 => ("method_not_allowed", "method not allowed on this route"),
        413 => ("payload_too_large", "request body too large"),
        415 => ("unsupported_media_type", "send application/json"),
        400 | 422 => ("validation_error", "malformed request"),
        _ => ("internal_error", "internal error"),
    };
    let mut shaped = Failure::new(status, code, message).render(api);
    // Keep headers such as `allow` on a 405.
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            shaped.headers_mut().insert(name.clone(), value.clone());
        }
    }
    drop(response.into_body());
    shaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_get_the_statuses_callers_expect() {
        let s = |e: ClientError| Failure::from_client(&e).status.as_u16();
        assert_eq!(s(ClientError::NoCandidates), 503);
        assert_eq!(
            s(ClientError::NoAvailableNode {
                attempts: 3,
                last: "x".into()
            }),
            503
        );
        assert_eq!(s(ClientError::Timeout { attempts: 3 }), 504);
        assert_eq!(s(ClientError::PolicyRefused("p".into())), 403);
        let node = |status: u16, code: &str| ClientError::Node {
            status,
            code: code.into(),
            message: "m".into(),
        };
        assert_eq!(s(node(422, "validation_error")), 400);
        assert_eq!(s(node(403, "IICP-POLICY-001")), 403);
        assert_eq!(s(node(502, "backend_error")), 502);
        assert_eq!(s(node(401, "unauthorized")), 502);
        let f = Failure::from_client(&ClientError::NoCandidates);
        assert_eq!(f.code, "IICP-E033");
        assert_eq!(f.attempts, Some(0));
    }

    #[test]
    fn paths_choose_the_error_shape() {
        assert_eq!(Api::of_path("/api/chat"), Api::Ollama);
        assert_eq!(Api::of_path("/v1/chat/completions"), Api::OpenAi);
        assert_eq!(Api::of_path("/apix"), Api::OpenAi);
    }
}
