//! Turning the protocol's errors into HTTP answers, and reading requests the same way in every
//! route of every server: JSON bodies with spec errors, bearer tokens, query strings.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use iicp_proto::{ErrorBody, ErrorCode, Rejection};

/// An error answer: the spec envelope with its status.
#[derive(Debug)]
pub struct ApiError(pub ErrorBody);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(code.with_message(message))
    }

    pub fn with(self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        ApiError(self.0.with(key, value))
    }
}

impl From<ErrorBody> for ApiError {
    fn from(body: ErrorBody) -> Self {
        ApiError(body)
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        ApiError(r.to_error_body())
    }
}

impl From<iicp_proto::Problems> for ApiError {
    fn from(p: iicp_proto::Problems) -> Self {
        ApiError(p.to_error_body())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::BAD_REQUEST);
        let mut response = (status, self.0.to_json()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// A JSON response with the right content type.
pub fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(_) => {
            ApiError::new(ErrorCode::InternalError, "response could not be encoded").into_response()
        }
    }
}

/// Refuses bodies that are not JSON. A missing content type is read as JSON.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("send application/json (got {essence})"),
        ))
    }
}

/// The token of `Authorization: Bearer <token>`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub fn unauthorized() -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, "missing or invalid bearer token")
}

/// Query-string pairs, percent-decoded.
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

pub fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The envelope for an error status some layer produced without one (unknown route, wrong
/// method, body too large, …). The status is kept as the layer chose it.
pub fn envelope_for_status(status: StatusCode) -> Response {
    let (code, message) = match status.as_u16() {
        400 => (ErrorCode::BadRequest, "malformed request"),
        404 => (ErrorCode::NotFound, "no such route"),
        405 => (
            ErrorCode::MethodNotAllowed,
            "method not allowed on this route",
        ),
        413 => (ErrorCode::PayloadTooLarge, "request body too large"),
        415 => (ErrorCode::UnsupportedMediaType, "send application/json"),
        422 => (ErrorCode::ValidationError, "request could not be processed"),
        _ => (ErrorCode::InternalError, "internal error"),
    };
    let mut response = ApiError::new(code, message).into_response();
    *response.status_mut() = status;
    response
}

/// True when the response already carries a JSON body.
fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Gives an error response made without the envelope (by routing, extractors or body limits)
/// the spec envelope, keeping its status. Use in a middleware after `next.run`.
pub fn envelope_errors(response: Response) -> Response {
    let status = response.status();
    if (status.is_client_error() || status.is_server_error()) && !is_json(&response) {
        return envelope_for_status(status);
    }
    response
}
