//! # iicp-bench: load generator for IICP directories, nodes and gateways
//!
//! Subcommands:
//! - `health-responder`: answers `GET /iicp/health` so a directory's liveness dial-back
//!   succeeds for benchmark nodes;
//! - `register`, `heartbeat`, `discover`: closed-loop load against one directory;
//! - `task`: `POST /v1/task` (a chat CALL with a fresh task id per request, plaintext or sealed
//!   with IICP-CX) against a node;
//! - `chat`: the equivalent OpenAI `POST /v1/chat/completions`, against a backend or a gateway;
//! - `free-port`, `wait`: helpers for the scripts in `bench/`.
//!
//! Every load command prints one JSON summary line (with the CPU time of the processes named
//! by `--cpu LABEL=PID` over the measured window) and exits non-zero when any request failed.
//!
//! The generator is meant to share a small machine with the server, so it runs on one thread
//! by default (`--threads`) and speaks HTTP/1.1 through a minimal keep-alive client.
#![forbid(unsafe_code)]

mod client;
mod cpu;
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
    about = "Load generator for IICP directories, nodes and gateways"
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
    /// `POST /v1/task` to a node: a plaintext chat CALL, a fresh UUID v4 task id per request.
    Task(TaskArgs),
    /// `POST /v1/chat/completions` (OpenAI shape) to a backend or a gateway: the same chat.
    Chat(ChatArgs),
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
    /// Stop after this many requests (warm-up included) instead of after --duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Seconds of load before measuring (not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Report the CPU time process PID used over the measured window as LABEL (repeatable).
    #[arg(long = "cpu", value_name = "LABEL=PID", value_parser = cpu::Watched::parse)]
    cpu: Vec<cpu::Watched>,
    /// Clock ticks per second in /proc/<pid>/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u32,
    /// The `name` of the JSON summary [default: the command].
    #[arg(long)]
    name: Option<String>,
}

/// The chat both `task` and `chat` send.
#[derive(Args, Debug)]
struct ChatShape {
    #[arg(long, default_value = "bench-model")]
    model: String,
    #[arg(long, default_value = "Say hello to the benchmark in a few words.")]
    prompt: String,
    #[arg(long, default_value_t = 16)]
    max_tokens: u32,
}

#[derive(Args, Debug)]
struct TaskArgs {
    /// Base URL of the node, e.g. http://127.0.0.1:9484.
    #[arg(long)]
    node: String,
    #[arg(long, default_value = CHAT)]
    intent: String,
    /// `constraints.timeout_ms` of every task.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u32,
    /// Seal every payload with IICP-CX for the node's key, taken from this directory's
    /// discover answer (the first node listed), as the client SDK and the gateway do.
    #[arg(long, value_name = "DIRECTORY_URL")]
    seal_via: Option<String>,
    #[command(flatten)]
    shape: ChatShape,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args, Debug)]
struct ChatArgs {
    /// Base URL of the OpenAI-compatible server (backend or gateway), without `/v1`.
    #[arg(long)]
    url: String,
    #[command(flatten)]
    shape: ChatShape,
    #[command(flatten)]
    load: LoadArgs,
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
    fn name<'a>(&'a self, command: &'a str) -> &'a str {
        self.name.as_deref().unwrap_or(command)
    }

    fn plan(&self) -> Result<Plan, String> {
        let secs = |what: &str, s: f64| {
            Duration::try_from_secs_f64(s).map_err(|_| format!("--{what} {s}: not a duration"))
        };
        Ok(Plan {
            concurrency: self.concurrency,
            warmup: secs("warmup", self.warmup)?,
            duration: match self.requests {
                Some(_) => None,
                None => Some(secs("duration", self.duration)?),
            },
            requests: self.requests,
            watch: self.cpu.clone(),
            clk_tck: self.clk_tck,
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
            Command::Task(args) => task(args).await.map(Some),
            Command::Chat(args) => chat(args).await.map(Some),
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
        requests: None,
        watch: Vec::new(),
        clk_tck: 100,
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
    Ok(load::run(args.load.name("heartbeat"), target, job, plan).await)
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
    Ok(load::run(args.load.name("discover"), target, job, plan).await)
}

async fn task(args: TaskArgs) -> Result<Summary, String> {
    let target = Target::parse(&args.node)?;
    let s = &args.shape;
    let payload = jobs::chat_payload(&s.model, &s.prompt, s.max_tokens);
    let cx = match &args.seal_via {
        Some(directory) => Some(jobs::node_cx_key(&Target::parse(directory)?, &args.intent).await?),
        None => None,
    };
    let job = Arc::new(jobs::Task::new(
        &target,
        &args.intent,
        &payload,
        args.timeout_ms,
        cx,
    ));
    let plan = args.load.plan()?;
    Ok(load::run(args.load.name("task"), target, job, plan).await)
}

async fn chat(args: ChatArgs) -> Result<Summary, String> {
    let target = Target::parse(&args.url)?;
    let s = &args.shape;
    let payload = jobs::chat_payload(&s.model, &s.prompt, s.max_tokens);
    let job = Arc::new(jobs::Chat::new(&target, &payload));
    let plan = args.load.plan()?;
    Ok(load::run(args.load.name("chat"), target, job, plan).await)
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
