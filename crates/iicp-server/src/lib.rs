//! # iicp-server: what every IICP HTTP server shares
//!
//! - [`error`]: the spec error envelope as an axum response ([`ApiError`]), JSON bodies with the
//!   right content type, bearer tokens, query strings, and the envelope for errors produced
//!   below the handlers (404, 405, 413, …) via [`error::envelope_errors`].
//! - [`prometheus`]: a lock-free histogram rendered in text format 0.0.4.
//! - [`clock`]: injected wall-clock time, so expiry and windows are testable.
//! - [`bind`]: a listener and the address it got (port 0 picks a free one).
#![forbid(unsafe_code)]

pub mod clock;
pub mod error;
pub mod prometheus;

pub use error::ApiError;

/// A listener could not be bound; every server's `StartError` carries it, so callers such as
/// `iicp up` can tell a busy port from any other failure.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: std::net::SocketAddr,
    pub source: std::io::Error,
}

/// Binds a TCP listener on `addr` and returns it with the address it actually got, which
/// differs from `addr` when the port is 0.
pub async fn bind(
    addr: std::net::SocketAddr,
) -> Result<(tokio::net::TcpListener, std::net::SocketAddr), BindError> {
    let bound = async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        Ok((listener, local))
    };
    bound.await.map_err(|source| BindError { addr, source })
}
