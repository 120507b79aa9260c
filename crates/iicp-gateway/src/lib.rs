//! # iicp-gateway: the mesh behind the APIs people already use
//!
//! A local HTTP endpoint that speaks the OpenAI API (`/v1/chat/completions`, `/v1/embeddings`,
//! `/v1/models`) and Ollama's native API (`/api/chat`, `/api/generate`, `/api/embed`,
//! `/api/tags`, …), so the official `openai` and `ollama` clients work unchanged. Every request
//! becomes one IICP call made through one shared [`iicp_client::Client`]: discovery, selection,
//! failover and IICP-CX come from the SDK.
//!
//! ```no_run
//! # async fn demo() -> Result<(), iicp_gateway::StartError> {
//! use iicp_gateway::{Gateway, GatewayConfig};
//! let config = GatewayConfig::new(
//!     "127.0.0.1:9483".parse().unwrap(),
//!     "http://127.0.0.1:8010".parse().unwrap(),
//! );
//! let running = Gateway::start(config).await?;
//! println!("serving on http://{}", running.local_addr());
//! running.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Components:
//! - `openai`, `ollama`: one module per API; each maps its request to an IICP payload and the
//!   node's OpenAI-shaped result back to its own shape (plain and streamed).
//! - `failure`: every error in the caller's API shape with a sensible status.
//! - `models`: which models a live node serves right now.
//! - `serve`: what both APIs share: the response headers, stream bodies, timestamps.
//!
//! `GET /iicp/health` answers `{"status":"ok","role":"gateway","version"}`.
//!
//! The request `model` selects nodes (`Call.model`); a model no live node serves is a 404 in the
//! caller's shape. Every answer carries `x-iicp-node` and `x-iicp-attempts`; generated answers
//! carry `X-IICP-Generated-By-AI: true`. Prompts and outputs are never logged.
#![forbid(unsafe_code)]

mod failure;
mod models;
mod ollama;
mod openai;
mod serve;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use iicp_client::{Client, ClientConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Settings of a gateway, as plain values (the CLI fills them).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// The client every request goes through (its `directory` is the mesh's directory).
    pub client: ClientConfig,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// The time a node may take for one task (sent as `timeout_ms`, at most 300 s).
    pub task_timeout: Duration,
}

impl GatewayConfig {
    pub fn new(listen: SocketAddr, directory: url::Url) -> Self {
        GatewayConfig {
            listen,
            client: ClientConfig::new(directory),
            max_body_bytes: 32 * 1024 * 1024,
            task_timeout: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] iicp_server::BindError),
}

/// What every handler shares: the one client and the call settings.
pub(crate) struct Shared {
    pub client: Client,
    pub task_timeout: Duration,
}

pub(crate) type AppState = Arc<Shared>;

/// The gateway's routes over an existing client, for embedding in another server.
pub fn router(client: Client, config: &GatewayConfig) -> Router {
    let state: AppState = Arc::new(Shared {
        client,
        task_timeout: config.task_timeout,
    });
    Router::new()
        .merge(openai::routes())
        .merge(ollama::routes())
        .route("/iicp/health", axum::routing::get(health))
        .fallback(failure::unknown_route)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn(failure::shape_bare_errors))
        .with_state(state)
}

/// `GET /iicp/health`: says this is an IICP gateway (for `iicp doctor` and supervisors).
async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "status": "ok",
        "role": "gateway",
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

pub struct Gateway;

/// A gateway serving until [`RunningGateway::shutdown`].
pub struct RunningGateway {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl Gateway {
    /// Binds `config.listen` and serves. The client is built once here and shared by every
    /// request.
    pub async fn start(config: GatewayConfig) -> Result<RunningGateway, StartError> {
        let (listener, local_addr) = iicp_server::bind(config.listen).await?;
        let client = Client::new(config.client.clone());
        let app = router(client, &config);
        let (stop, mut stopped) = watch::channel(false);
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "gateway server stopped with an error");
            }
        });
        tracing::info!(
            %local_addr,
            directory = %config.client.directory,
            "gateway listening (OpenAI /v1, Ollama /api)"
        );
        Ok(RunningGateway {
            local_addr,
            stop,
            server,
        })
    }
}

impl RunningGateway {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets answers in progress (streams included) finish, and stops.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
    }
}
