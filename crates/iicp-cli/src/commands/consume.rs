//! Consumer commands: `iicp discover`, `iicp chat`, `iicp embed`.

use super::runtime::runtime;
use clap::Args;
use futures_util::StreamExt;
use iicp_client::{Call, Client, ClientConfig, StreamItem};
use iicp_proto::intent::{LLM_CHAT_V1, LLM_EMBEDDING_V1};
use serde_json::{json, Value};
use std::io::Write;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct DirectoryArg {
    /// Directory URL [default: http://127.0.0.1:8010].
    #[arg(long, env = "IICP_DIRECTORY", default_value = "http://127.0.0.1:8010")]
    directory: url::Url,
}

impl DirectoryArg {
    fn client(&self) -> Client {
        Client::new(ClientConfig::new(self.directory.clone()))
    }
}

#[derive(Args, Debug)]
pub struct DiscoverArgs {
    /// Intent URN, e.g. urn:iicp:intent:llm:chat:v1.
    intent: String,
    #[arg(long)]
    model: Option<String>,
    /// text, image, audio or video.
    #[arg(long)]
    modality: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dir: DirectoryArg,
}

#[derive(Args, Debug)]
pub struct ChatArgs {
    prompt: String,
    #[arg(long)]
    model: Option<String>,
    /// Print tokens as they arrive.
    #[arg(long)]
    stream: bool,
    /// Seconds the node may take [default: 120].
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    #[command(flatten)]
    dir: DirectoryArg,
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    text: String,
    #[arg(long)]
    model: Option<String>,
    #[command(flatten)]
    dir: DirectoryArg,
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

pub fn discover(args: DiscoverArgs) -> ExitCode {
    let client = args.dir.client();
    let result = runtime().block_on(client.discover(
        &args.intent,
        args.model.as_deref(),
        args.modality.as_deref(),
    ));
    let nodes = match result {
        Ok(n) => n,
        Err(e) => return fail(e),
    };
    if args.json {
        let list: Vec<Value> = nodes
            .iter()
            .map(|c| {
                json!({"node": c.key, "endpoint": c.endpoint, "score": c.score, "region": c.region,
                       "models": c.models, "input_modalities": c.modalities,
                       "reputation": c.reputation, "encrypted": c.key_ready})
            })
            .collect();
        println!("{}", Value::Array(list));
        return ExitCode::SUCCESS;
    }
    if nodes.is_empty() {
        println!("no node serves {} right now", args.intent);
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<38} {:>5} {:<12} {:>4} {:<3} MODELS",
        "NODE", "SCORE", "REGION", "REP", "CX"
    );
    for c in &nodes {
        println!(
            "{:<38} {:>5.2} {:<12} {:>4.2} {:<3} {}",
            c.key,
            c.score,
            c.region.as_deref().unwrap_or("-"),
            c.reputation,
            if c.key_ready { "yes" } else { "no" },
            c.models.join(", ")
        );
    }
    ExitCode::SUCCESS
}

pub fn chat(args: ChatArgs) -> ExitCode {
    let client = args.dir.client();
    let mut call = Call::new(
        LLM_CHAT_V1,
        json!({"messages": [{"role": "user", "content": args.prompt}]}),
    );
    call.model = args.model;
    call.timeout = std::time::Duration::from_secs(args.timeout.clamp(1, 300));
    runtime().block_on(async move {
        if !args.stream {
            return match client.call(call).await {
                Ok(a) => {
                    let text = a
                        .response
                        .result
                        .as_ref()
                        .and_then(|r| r.pointer("/choices/0/message/content"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            };
        }
        let mut answer = match client.call_stream(call).await {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        let mut out = std::io::stdout();
        while let Some(item) = answer.items.next().await {
            match item {
                Ok(StreamItem::Delta(t)) => {
                    let _ = out.write_all(t.as_bytes());
                    let _ = out.flush();
                }
                Ok(StreamItem::Done(_)) => break,
                Err(e) => {
                    println!();
                    return fail(e);
                }
            }
        }
        println!();
        ExitCode::SUCCESS
    })
}

pub fn embed(args: EmbedArgs) -> ExitCode {
    let client = args.dir.client();
    let mut call = Call::new(LLM_EMBEDDING_V1, json!({"input": args.text}));
    call.model = args.model;
    match runtime().block_on(client.call(call)) {
        Ok(a) => {
            let vector = a
                .response
                .result
                .as_ref()
                .and_then(|r| r.pointer("/data/0/embedding"))
                .cloned()
                .unwrap_or(Value::Null);
            println!("{vector}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
