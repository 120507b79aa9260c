//! # iicp-testkit: LLM backend doubles
//!
//! A [`BackendDouble`] is a tiny HTTP server that speaks one backend's exact wire format —
//! the OpenAI-compatible API of llama.cpp/vLLM/LM Studio, Ollama's native API, or Anthropic's
//! Messages API — streaming included, with deterministic replies:
//!
//! - a reply echoes the words of the last user message (cycled), [`Behavior::tokens`] of them,
//!   fewer when the request's `max_tokens`/`num_predict` is smaller (the reply then ends for
//!   `length`/`max_tokens`); a streamed reply concatenates to the non-streamed one;
//! - an embedding is a unit vector of [`EMBEDDING_DIMS`] floats derived from the input text
//!   alone ([`embedding`]), so tests can compare;
//! - prompt token counts are whitespace-separated words.
//!
//! Latency and failures ([`Behavior`], [`Failure`]) can be changed while it runs, and the
//! handle reports what it saw: request count, peak concurrency, last headers and body.
//!
//! ```no_run
//! # async fn demo() {
//! use iicp_testkit::{BackendDouble, Behavior, Failure, Flavor, Models};
//! let double = BackendDouble::start(Flavor::Ollama, Models::new(["llama3.2"], ["all-minilm"])).await;
//! let base = double.url(); // http://127.0.0.1:PORT
//! double.set_behavior(Behavior::failing(Failure::Status(503)));
//! double.stop().await;
//! # }
//! ```
//!
//! Each double runs on its own thread and runtime, so it keeps answering whatever the test's
//! runtime does, and [`BackendDouble::kill`] drops every open connection at once, like a
//! crashed process. The `iicp-backend-double` binary serves one double for benchmarks.
//!
//! [`support`] holds what integration tests around real servers and processes share: free
//! ports, waits with a deadline, temporary directories, child processes killed on drop with
//! their logs in a file, and a few HTTP helpers.
#![forbid(unsafe_code)]

mod anthropic;
mod behavior;
mod ollama;
mod openai;
mod server;
pub mod support;
mod text;

pub use behavior::{Behavior, Failure, Flavor, Models};
pub use text::{embedding, EMBEDDING_DIMS};

use axum::http::HeaderMap;
use serde_json::Value;
use server::Shared;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How a double is started. [`Options::default`] suits tests.
#[derive(Clone, Debug)]
pub struct Options {
    /// Initial behaviour.
    pub behavior: Behavior,
    /// When set, the key clients must present: `Authorization: Bearer`/`x-api-key` (OpenAI,
    /// llama.cpp's `--api-key`) or `x-api-key` (Anthropic, which requires some key anyway).
    /// Ollama has no authentication and ignores it.
    pub api_key: Option<String>,
    /// Keep the last request's headers and body for [`BackendDouble::last_headers`] and
    /// [`BackendDouble::last_body`]. Benchmarks turn it off: it copies every request.
    pub capture: bool,
    /// Where to listen (default `127.0.0.1:0`, any free port).
    pub listen: SocketAddr,
    /// Runtime worker threads for [`BackendDouble::start_with`]; 0 (default) runs the double on
    /// a single-threaded runtime.
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            behavior: Behavior::default(),
            api_key: None,
            capture: true,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            threads: 0,
        }
    }
}

/// A running backend double. Dropping it kills it (see [`BackendDouble::kill`]).
pub struct BackendDouble {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// `true` asks for a graceful stop, `false` (or dropping the sender) for a kill.
    stop_tx: Option<oneshot::Sender<bool>>,
    done_rx: Option<oneshot::Receiver<()>>,
    thread: Option<JoinHandle<()>>,
}

impl BackendDouble {
    /// Starts a double on `127.0.0.1:0` with default options.
    ///
    /// # Panics
    /// When no loopback port can be bound or no thread spawned.
    pub async fn start(flavor: Flavor, models: Models) -> BackendDouble {
        Self::start_with(flavor, models, Options::default())
            .await
            .expect("starting a backend double on 127.0.0.1")
    }

    /// Starts a double with `options`. It is listening when this returns.
    pub async fn start_with(
        flavor: Flavor,
        models: Models,
        options: Options,
    ) -> io::Result<BackendDouble> {
        let listener = std::net::TcpListener::bind(options.listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(
            flavor,
            models,
            options.api_key,
            options.capture,
            options.behavior,
        ));
        let runtime = match options.threads {
            0 => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            n => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n)
                .enable_all()
                .build()?,
        };
        let (stop_tx, stop_rx) = oneshot::channel::<bool>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let sh = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("{flavor}-double"))
            .spawn(move || {
                // Spawned so that a multi-thread runtime keeps the accept loop on its workers.
                let serve = async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            server::run(listener, sh, async { stop_rx.await.unwrap_or(false) })
                                .await
                        }
                        Err(e) => eprintln!("backend double: {e}"),
                    }
                };
                let _ = runtime.block_on(async { tokio::spawn(serve).await });
                // Dropping the runtime drops every connection task: a kill closes them all.
                drop(runtime);
                let _ = done_tx.send(());
            })?;
        Ok(BackendDouble {
            addr,
            shared,
            stop_tx: Some(stop_tx),
            done_rx: Some(done_rx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The flavor this double speaks.
    pub fn flavor(&self) -> Flavor {
        self.shared.flavor
    }

    /// The current behaviour.
    pub fn behavior(&self) -> Behavior {
        self.shared.behavior()
    }

    /// Changes the behaviour of the requests that arrive from now on.
    pub fn set_behavior(&self, behavior: Behavior) {
        self.shared.set_behavior(behavior);
    }

    /// Requests received so far (every route, failures included).
    pub fn requests(&self) -> u64 {
        self.shared.requests()
    }

    /// The most requests ever in flight at once; a streamed reply counts until its last event.
    pub fn in_flight_max(&self) -> u64 {
        self.shared.in_flight_max()
    }

    /// The headers of the last request (for asserting `traceparent` propagation and auth).
    pub fn last_headers(&self) -> Option<HeaderMap> {
        self.shared.last_headers()
    }

    /// The JSON body of the last request; `None` if it had none or it was not JSON.
    pub fn last_body(&self) -> Option<Value> {
        self.shared.last_body()
    }

    /// Stops gracefully: stops accepting, closes idle connections, lets replies in progress
    /// (streams included) finish, and drops hung requests.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(true);
        }
        if let Some(done) = self.done_rx.take() {
            let _ = done.await;
        }
        // The thread has nothing left to do after `done`; let it end on its own.
        self.thread.take();
    }

    /// Kills at once, like a crashed process: the port and every open connection are closed
    /// mid-reply. Dropping the handle does the same.
    pub fn kill(self) {
        drop(self);
    }
}

impl Drop for BackendDouble {
    fn drop(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(false);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves one double on `listener` until `shutdown` resolves, then stops gracefully as
/// [`BackendDouble::stop`] does. Runs on the caller's runtime (the binary's). `options.listen`
/// and `options.threads` are not used.
pub async fn serve(
    listener: TcpListener,
    flavor: Flavor,
    models: Models,
    options: Options,
    shutdown: impl Future<Output = ()>,
) {
    let shared = Arc::new(Shared::new(
        flavor,
        models,
        options.api_key,
        options.capture,
        options.behavior,
    ));
    server::run(listener, shared, async {
        shutdown.await;
        true
    })
    .await;
}
