//! # iicp-directory: the IICP control plane
//!
//! Nodes register here (REGISTER → ACK), keep themselves alive (HEARTBEAT → PONG) and are
//! found by intent (`GET /discover` → NODELIST). The directory never sees a prompt, a payload
//! or a result.
//!
//! Components:
//! - [`config`]: settings as plain values (the CLI fills them).
//! - `http`: the routes, under both `/v1` and `/api/v1`, and the error envelope for everything.
//! - `admission`: the registration rate limit and the guarded liveness dial-back.
//! - `credentials`: token issue, bcrypt storage and the verified-token cache.
//! - `registry`: the in-memory index every read is served from.
//! - `score`: score, reputation (outcome-v2) and health, as pure functions.
//! - [`store`]: durable storage behind a trait (SQLite by default), fed by the single `writer`
//!   thread in group commits.
//! - `signing`: the directory's Ed25519 key for tickets and consumer tokens.
//!
//! [`Directory::start`] loads the store, binds the listener and runs until
//! [`RunningDirectory::shutdown`] (the CLI wires SIGINT and SIGTERM to it).
#![forbid(unsafe_code)]

mod admission;
pub mod config;
mod credentials;
mod http;
mod metrics;
mod model;
mod registry;
mod score;
mod signing;
mod state;
pub mod store;
mod writer;

pub use config::DirectoryConfig;

use clock::Clock;
pub use iicp_server::clock;
use state::AppState;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Key(#[from] signing::KeyError),
    #[error(transparent)]
    Bind(#[from] iicp_server::BindError),
    #[error("--dev-resolve needs --dev: host overrides are a local testing aid")]
    OverrideWithoutDev,
}

pub struct Directory;

/// A directory serving on its listener.
pub struct RunningDirectory {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    writer_thread: std::thread::JoinHandle<()>,
    state: Arc<AppState>,
}

impl Directory {
    /// Opens the store, loads every node, binds `config.listen` and starts serving.
    pub async fn start(
        config: DirectoryConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<RunningDirectory, StartError> {
        if !config.dev && !config.dev_resolve.is_empty() {
            return Err(StartError::OverrideWithoutDev);
        }
        let mut store = store::SqliteStore::open(&config.db_path)?;
        let nodes = store::Store::load(&mut store)?;
        let key = signing::load_or_create(&config.signing_key_path())?;
        let (listener, local_addr) = iicp_server::bind(config.listen).await?;
        if config.dev {
            tracing::warn!(
                "DEV MODE: loopback and private node endpoints are accepted and node TLS \
                 certificates are not verified. Never run a public directory like this."
            );
        }
        tracing::info!(nodes = nodes.len(), %local_addr, "directory listening");
        let mut config = config;
        config
            .issuer
            .get_or_insert_with(|| format!("http://{local_addr}"));
        let (writer, writer_thread) = writer::Writer::start(Box::new(store));
        let state = Arc::new(AppState::new(
            config,
            clock,
            registry::Registry::from_nodes(nodes),
            writer,
            key,
        ));
        let (stop, stopped) = watch::channel(false);
        spawn_background(state.clone(), stopped.clone());
        let app = http::router(state.clone());
        let mut until = stopped;
        let server = tokio::spawn(async move {
            let serve = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = until.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "server stopped with an error");
            }
        });
        Ok(RunningDirectory {
            local_addr,
            stop,
            server,
            writer_thread,
            state,
        })
    }
}

/// The sweep (silent nodes → dormant) and the flush of buffered heartbeat state.
fn spawn_background(state: Arc<AppState>, mut stopped: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut sweep = tokio::time::interval(state.config.sweep_interval);
        let mut flush = tokio::time::interval(state.config.flush_interval);
        loop {
            tokio::select! {
                _ = sweep.tick() => {
                    let n = state.sweep();
                    if n > 0 {
                        tracing::info!(nodes = n, "nodes went dormant");
                    }
                }
                _ = flush.tick() => state.flush().await,
                _ = stopped.changed() => break,
            }
        }
    });
}

impl RunningDirectory {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, finishes in-flight requests, writes buffered state and closes the store.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        self.state.flush().await;
        let RunningDirectory {
            state,
            writer_thread,
            ..
        } = self;
        // The writer thread ends when the last handle to it (inside the state) is gone.
        drop(state);
        let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
    }
}
