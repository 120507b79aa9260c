//! # iicp-node: any local LLM backend becomes an IICP provider
//!
//! Components:
//! - `backend`: adapters for OpenAI-compatible servers (llama.cpp, vLLM, LM Studio), Ollama and
//!   Anthropic, each speaking its server's own API with one pooled client; [`detect`] finds a
//!   local one.
//! - `catalog`: the backend's models as capabilities (intent × input modalities).
//! - `admission`: the concurrency gate (priority then FIFO, bounded waits, RAII slots), replay
//!   guards and credential checks.
//! - `task`: the one admission pipeline and execution, for every transport.
//! - `http`: `/v1/task` (JSON and SSE), `/iicp/health`, `/metrics`.
//! - `lifecycle`: registration, heartbeats, re-registration and deregistration.
//! - `keys`: identity and IICP-CX keys on disk (0600, atomic).
//!
//! [`Node::start`] binds the listener first, then registers; [`RunningNode::shutdown`]
//! deregisters and stops.
#![forbid(unsafe_code)]

mod admission;
pub mod backend;
mod catalog;
pub mod config;
pub mod detect;
mod http;
mod keys;
mod lifecycle;
mod metrics;
mod serve;
mod state;
mod task;

pub use admission::auth::AuthMode;
pub use backend::Backend;
pub use config::NodeConfig;
pub use lifecycle::Registration;

use iicp_server::clock::Clock;
use state::NodeState;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] iicp_server::BindError),
    #[error("cannot use the state directory: {0}")]
    State(std::io::Error),
    #[error("cannot start the worker threads: {0}")]
    Serve(std::io::Error),
    #[error("--auth token needs a directory (which issues the token) or a local token")]
    TokenModeWithoutToken,
}

pub struct Node;

pub struct RunningNode {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    state: Arc<NodeState>,
}

impl Node {
    pub async fn start(
        config: NodeConfig,
        backend: Backend,
        clock: Arc<dyn Clock>,
    ) -> Result<RunningNode, StartError> {
        if config.auth == AuthMode::Token
            && config.directory.is_none()
            && config.local_token.is_none()
        {
            return Err(StartError::TokenModeWithoutToken);
        }
        let (listener, local_addr) = iicp_server::bind(config.listen).await?;
        let public_url = config
            .public_url
            .as_ref()
            .map(|u| u.as_str().trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("http://{local_addr}"));
        let cx = if config.cx {
            Some(
                keys::CxKeys::load_or_create(&config.state_dir, clock.now_s())
                    .map_err(StartError::State)?,
            )
        } else {
            None
        };
        let (catalog, up) = match backend.models().await {
            Ok(models) => (catalog::build(&models, &config.models), true),
            Err(e) => {
                tracing::warn!(error = %e, backend = backend.base_url(), "backend not reachable yet");
                (catalog::Catalog::default(), false)
            }
        };
        tracing::info!(
            %local_addr,
            backend = backend.base_url(),
            chat_models = catalog.chat.len(),
            embedding_models = catalog.embedding.len(),
            "node listening"
        );
        let directory = config.directory.clone();
        let state = Arc::new(NodeState::new(
            config, public_url, backend, catalog, clock, cx,
        ));
        state
            .backend_up
            .store(up, std::sync::atomic::Ordering::Relaxed);
        let (stop, stopped) = watch::channel(false);
        let app = http::router(state.clone());
        let workers = state.config.workers;
        let server =
            serve::serve(listener, app, workers, stopped.clone()).map_err(StartError::Serve)?;
        let mut background = vec![tokio::spawn(capacity_loop(state.clone(), stopped.clone()))];
        match directory {
            Some(dir) => {
                let lifecycle = lifecycle::Lifecycle::new(state.clone(), &dir);
                background.push(tokio::spawn(lifecycle.run(stopped.clone())));
            }
            None => {
                tracing::info!("no directory configured: serving locally without registering");
                background.push(tokio::spawn(lifecycle::refresh_only(
                    state.clone(),
                    stopped.clone(),
                )));
            }
        }
        Ok(RunningNode {
            local_addr,
            stop,
            server,
            background,
            state,
        })
    }
}

/// Keeps the gate's capacity in line with the availability windows.
async fn capacity_loop(state: Arc<NodeState>, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(15));
    loop {
        tokio::select! {
            _ = tick.tick() => state.gate.set_capacity(state.offered_capacity()),
            _ = stopped.changed() => break,
        }
    }
}

impl RunningNode {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The node id the directory gave, once registered.
    pub fn node_id(&self) -> Option<String> {
        self.state.node_id()
    }

    /// Where the node stands with its directory; changes as it registers, retries and
    /// deregisters, so a caller can wait for readiness without polling.
    pub fn registration(&self) -> watch::Receiver<Registration> {
        self.state.registration.subscribe()
    }

    /// Deregisters from the directory, finishes in-flight tasks, and stops.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.background {
            let _ = task.await;
        }
        let _ = self.server.await;
    }
}
