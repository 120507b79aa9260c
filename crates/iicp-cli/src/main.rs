//! `iicp`: one binary for every IICP role.
//!
//! This crate is the only place that reads flags, environment variables and config files; the
//! library crates receive plain values.
#![forbid(unsafe_code)]

mod commands;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "iicp",
    version,
    about = "IICP: a payload-blind network for AI inference",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the intent registry: URN, status and phase.
    Intents {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a directory: the control plane nodes register with and clients discover from.
    Directory(commands::directory::DirectoryArgs),
    /// Run a provider node in front of a local LLM backend.
    Node(Box<commands::node::NodeArgs>),
    /// Serve the OpenAI and Ollama APIs locally, answered by the mesh.
    Gateway(commands::gateway::GatewayArgs),
    /// Start a whole local mesh in one process: directory, node (in front of the local
    /// backend) and gateway.
    Up(Box<commands::up::UpArgs>),
    /// Check the local setup: backend, directory, clock, ports, node, gateway, endpoint.
    Doctor(commands::doctor::DoctorArgs),
    /// List the nodes serving an intent.
    Discover(commands::consume::DiscoverArgs),
    /// Ask the mesh a question.
    Chat(commands::consume::ChatArgs),
    /// Embed a text with the mesh.
    Embed(commands::consume::EmbedArgs),
    /// Validate an envelope and print each problem with its JSON path and spec code.
    Check {
        #[command(subcommand)]
        what: CheckKind,
    },
}

#[derive(Subcommand)]
enum CheckKind {
    /// A CALL envelope (the body of POST /v1/task).
    Task {
        /// File to read, or - for standard input.
        file: PathBuf,
    },
    /// A REGISTER body (the body of POST /v1/register).
    Register {
        /// File to read, or - for standard input.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Intents { json } => commands::intents::run(json),
        Command::Directory(args) => commands::directory::run(args),
        Command::Node(args) => commands::node::run(*args),
        Command::Gateway(args) => commands::gateway::run(args),
        Command::Up(args) => commands::up::run(*args),
        Command::Doctor(args) => commands::doctor::run(args),
        Command::Discover(args) => commands::consume::discover(args),
        Command::Chat(args) => commands::consume::chat(args),
        Command::Embed(args) => commands::consume::embed(args),
        Command::Check { what } => match what {
            CheckKind::Task { file } => commands::check::run(commands::check::Kind::Task, &file),
            CheckKind::Register { file } => {
                commands::check::run(commands::check::Kind::Register, &file)
            }
        },
    }
}
