//! What can go wrong for a caller, kept distinct as the spec requires: a local policy refusal,
//! a directory with no candidate (`IICP-E033`), candidates that all failed
//! (`no_available_node`), all timing out (`timeout`), and errors the node gave for the request
//! itself (not retried: the request is at fault).

use iicp_proto::ErrorCode;
use serde_json::Value;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Invalid(String),
    #[error("refused locally ({0})")]
    PolicyRefused(String),
    #[error("the directory returned no candidate for this request")]
    NoCandidates,
    #[error("every candidate failed ({attempts} attempts): {last}")]
    NoAvailableNode { attempts: u32, last: String },
    #[error("every attempt timed out ({attempts} attempts)")]
    Timeout { attempts: u32 },
    #[error("directory: {0}")]
    Directory(String),
    /// The node refused or failed the request in a way retrying elsewhere cannot fix.
    #[error("node answered {status} {code}: {message}")]
    Node {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the stream broke after it started: {0}")]
    Stream(String),
}

impl ClientError {
    /// The catalogue code a gateway reports this error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::Invalid(_) => ErrorCode::ValidationError,
            ClientError::PolicyRefused(_) => ErrorCode::PolicyRefused,
            ClientError::NoCandidates => ErrorCode::E033NoCandidates,
            ClientError::NoAvailableNode { .. } => ErrorCode::NoAvailableNode,
            ClientError::Timeout { .. } => ErrorCode::Timeout,
            ClientError::Directory(_) => ErrorCode::TemporarilyUnavailable,
            ClientError::Node { code, .. } => {
                ErrorCode::parse(code).unwrap_or(ErrorCode::BackendError)
            }
            ClientError::Stream(_) => ErrorCode::BackendError,
        }
    }

    /// The HTTP status a gateway answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            ClientError::Node { status, .. } => *status,
            other => other.code().http_status(),
        }
    }

    /// Reads a `{"error":{"code","message"}}` answer.
    pub fn from_error_body(status: u16, body: &Value) -> ClientError {
        ClientError::Node {
            status,
            code: body
                .pointer("/error/code")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_owned(),
            message: body
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no message")
                .to_owned(),
        }
    }
}
