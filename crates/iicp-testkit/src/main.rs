//! # iicp-backend-double: one LLM backend double, for benchmarks and manual tests
//!
//! Serves one flavor until SIGINT/SIGTERM. Prints the base URL (`http://127.0.0.1:PORT`) on
//! stdout once listening. Lean on purpose: no logging and no request capture on the hot path,
//! and a `--threads`-worker runtime (default 1) so benchmark CPU accounting stays clean.
#![forbid(unsafe_code)]

use clap::Parser;
use iicp_testkit::{Behavior, Flavor, Models, Options};
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "iicp-backend-double",
    version,
    about = "An LLM backend double (OpenAI-compatible, Ollama or Anthropic wire format)"
)]
struct Cli {
    /// Wire format: openai (llama.cpp, vLLM, LM Studio), ollama or anthropic.
    #[arg(long)]
    flavor: Flavor,
    /// Address to listen on (port 0 picks a free port; the URL is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A chat model to serve (repeatable). Defaults depend on the flavor when no model is given.
    #[arg(long = "chat-model", value_name = "M")]
    chat_models: Vec<String>,
    /// An embedding model to serve (repeatable).
    #[arg(long = "embedding-model", value_name = "M")]
    embedding_models: Vec<String>,
    /// Delay before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Delay between two events of a streamed reply, in milliseconds.
    #[arg(long, default_value_t = 0)]
    token_delay_ms: u64,
    /// Words per reply (requests' max_tokens can lower it).
    #[arg(long, default_value_t = 5)]
    tokens: usize,
    /// API key clients must present (OpenAI `Authorization: Bearer`, Anthropic `x-api-key`).
    #[arg(long)]
    api_key: Option<String>,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iicp-backend-double: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Spawned, not run by `block_on`: the accept loop then shares the worker threads instead
    // of busying the main thread, so `--threads 1` means one busy thread.
    runtime.block_on(async { tokio::spawn(run(cli)).await.unwrap_or(ExitCode::FAILURE) })
}

async fn run(cli: Cli) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(cli.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("iicp-backend-double: cannot listen on {}: {e}", cli.listen);
            return ExitCode::FAILURE;
        }
    };
    let models = if cli.chat_models.is_empty() && cli.embedding_models.is_empty() {
        Models::default_for(cli.flavor)
    } else {
        Models::new(cli.chat_models, cli.embedding_models)
    };
    let options = Options {
        behavior: Behavior {
            delay: Duration::from_millis(cli.delay_ms),
            token_delay: Duration::from_millis(cli.token_delay_ms),
            fail: None,
            tokens: cli.tokens,
        },
        api_key: cli.api_key,
        capture: false,
        ..Options::default()
    };
    if let Ok(addr) = listener.local_addr() {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "http://{addr}");
        let _ = out.flush();
    }
    iicp_testkit::serve(listener, cli.flavor, models, options, shutdown_signal()).await;
    ExitCode::SUCCESS
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
