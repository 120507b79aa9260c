//! # iicp-bench: load generator for the IICP directory
//!
//! Subcommands:
//! - `health-responder`: answers `GET /iicp/health` so a directory's liveness dial-back
//!   succeeds for benchmark nodes;
//! - `register`, `heartbeat`, `discover`: closed-loop load against one directory, each printing
//!   one JSON summary line and exiting non-zero when any request failed;
//! - `free-port`, `wait`: helpers for `bench/directory.sh`.
//!
//! The generator is meant to share a small machine with the server, so it runs on one thread
//! by default (`--threads`) and speaks HTTP/1.1 through a minimal keep-alive client.
#![forbid(unsafe_code)]

mod client;
mod jobs;
mod load;
mod responder;

use clap::{Args, Parser, Subcommand};
use client::{Conn, Target};
use load::{Plan, Summary};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHAT: &str = "urn:iicp:intent:llm:chat:v1";

#[derive(Parser, Debug)]
#[command(
    name = "iicp-bench",
    version,
    about = "Load generator for the IICP directory"
)]
struct Cli {
    /// Runtime worker threads (1 = a single-threaded runtime, cheapest next to the server).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve `GET /iicp/health` (the dial-back target of benchmark nodes). Prints the bound
    /// address on stdout.
    HealthResponder {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Register N nodes and write `{"node_id","node_token"}` lines to --out.
    Register(RegisterArgs),
    /// Authenticated heartbeats, round-robin over the nodes of a tokens file.
    Heartbeat(HeartbeatArgs),
    /// `GET /api/v1/discover?intent=…`.
    Discover(DiscoverArgs),
    /// Print a free loopback TCP port.
    FreePort,
    /// Wait until GET URL answers 200.
    Wait {
        #[arg(long)]
        url: String,
        /// Seconds to wait at most.
        #[arg(long, default_value_t = 15.0)]
        timeout: f64,
    },
}

#[derive(Args, Debug)]
struct RegisterArgs {
    /// Base URL of the directory, e.g. http://127.0.0.1:8010.
    #[arg(long)]
    directory: String,
    #[arg(long, default_value_t = 1000)]
    count: usize,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Endpoint every node registers (the directory dials {endpoint}/iicp/health).
    #[arg(long)]
    endpoint_base: String,
    /// Where to write node ids and tokens (JSON lines).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = CHAT)]
    intent: String,
    #[arg(long, default_value = "bench-model")]
    model: String,
    #[arg(long, default_value = "eu-central")]
    region: String,
}

#[derive(Args, Debug)]
struct LoadArgs {
    /// Seconds to measure.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring (not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

#[derive(Args, Debug)]
struct HeartbeatArgs {
    #[arg(long)]
    directory: String,
    /// Tokens file written by `register`.
    #[arg(long)]
    tokens: PathBuf,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args, Debug)]
struct DiscoverArgs {
    #[arg(long)]
    directory: String,
    #[arg(long, default_value = CHAT)]
    intent: String,
    /// `limit` query parameter (the directory's default is 10).
    #[arg(long)]
    limit: Option<usize>,
    /// Before measuring, check that one response lists exactly this many nodes.
    #[arg(long)]
    expect_nodes: Option<usize>,
    #[command(flatten)]
    load: LoadArgs,
}

impl LoadArgs {
    fn plan(&self) -> Result<Plan, String> {
        let secs = |what: &str, s: f64| {
            Duration::try_from_secs_f64(s).map_err(|_| format!("--{what} {s}: not a duration"))
        };
        Ok(Plan {
            concurrency: self.concurrency,
            warmup: secs("warmup", self.warmup)?,
            duration: Some(secs("duration", self.duration)?),
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::HealthResponder { listen } => responder::serve(listen).await.map(|()| None),
            Command::Register(args) => register(args).await.map(Some),
            Command::Heartbeat(args) => heartbeat(args).await.map(Some),
            Command::Discover(args) => discover(args).await.map(Some),
            Command::FreePort => free_port().map(|()| None),
            Command::Wait { url, timeout } => wait(&url, timeout).await.map(|()| None),
        }
    });
    match outcome {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(summary)) => {
            println!("{}", summary.to_json());
            if summary.errors > 0 || summary.requests == 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn register(args: RegisterArgs) -> Result<Summary, String> {
    let target = Target::parse(&args.directory)?;
    let job = Arc::new(jobs::Register::new(
        &target,
        args.count,
        &args.endpoint_base,
        &args.intent,
        &args.model,
        &args.region,
    ));
    let plan = Plan {
        concurrency: args.concurrency.min(args.count.max(1)),
        warmup: Duration::ZERO,
        duration: None,
    };
    let summary = load::run("register", target, job.clone(), plan).await;
    let written = job.write_tokens(&args.out)?;
    eprintln!("{written} node tokens written to {}", args.out.display());
    Ok(summary)
}

async fn heartbeat(args: HeartbeatArgs) -> Result<Summary, String> {
    let target = Target::parse(&args.directory)?;
    let job = Arc::new(jobs::Heartbeat::from_file(&target, &args.tokens)?);
    let plan = args.load.plan()?;
    Ok(load::run("heartbeat", target, job, plan).await)
}

async fn discover(args: DiscoverArgs) -> Result<Summary, String> {
    let target = Target::parse(&args.directory)?;
    let job = Arc::new(jobs::Discover::new(&target, &args.intent, args.limit));
    if let Some(expected) = args.expect_nodes {
        let listed = job.preflight(&target).await?;
        if listed != expected {
            return Err(format!(
                "discover lists {listed} nodes, expected {expected}: is the directory populated?"
            ));
        }
        eprintln!("discover preflight: {listed} nodes listed, as expected");
    }
    let plan = args.load.plan()?;
    Ok(load::run("discover", target, job, plan).await)
}

fn free_port() -> Result<(), String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    println!("{port}");
    Ok(())
}

async fn wait(url: &str, timeout: f64) -> Result<(), String> {
    let target = Target::parse(url)?;
    let request = target.get("");
    let deadline = Instant::now() + Duration::try_from_secs_f64(timeout).unwrap_or_default();
    loop {
        if let Ok(mut conn) = Conn::connect(target.addr).await {
            if let Ok(r) = conn.send(&request).await {
                if r.status == 200 {
                    return Ok(());
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("{url} did not answer 200 within {timeout} s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
