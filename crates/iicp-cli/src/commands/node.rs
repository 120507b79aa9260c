//! `iicp node`: turn a local LLM backend into an IICP provider.
//!
//! Settings come from flags, then `IICP_*` environment variables, then the `[node]` table of the
//! TOML file given by `--config`, then defaults.

use super::paths::data_dir;
use super::runtime::{init_logging, run_until_signal};
use super::settings::{list_or, read_table, usage_error, Table};
use clap::Args;
use iicp_node::backend::BackendKind;
use iicp_node::{detect, AuthMode, Backend, Node, NodeConfig};
use iicp_proto::node::{AvailabilityWindow, TimeOfDay};
use iicp_server::clock::SystemClock;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args, Debug, Default)]
pub struct NodeArgs {
    /// TOML config file; flags and IICP_* variables override its `[node]` table.
    #[arg(long, env = "IICP_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// Backend base URL (Ollama, llama.cpp, vLLM, LM Studio, Anthropic); detected when absent.
    #[arg(long, env = "IICP_BACKEND")]
    pub(super) backend: Option<String>,
    /// Directory to register with; without it the node serves locally.
    #[arg(long, env = "IICP_DIRECTORY")]
    pub(super) directory: Option<url::Url>,
    /// Address to listen on [default: 127.0.0.1:9484].
    #[arg(long, env = "IICP_NODE_LISTEN")]
    pub(super) listen: Option<SocketAddr>,
    /// URL clients reach this node at [default: http://<listen>].
    #[arg(long, env = "IICP_PUBLIC_URL")]
    pub(super) public_url: Option<url::Url>,
    /// Serve only this model (repeatable) [default: every model of the backend].
    #[arg(long = "model", env = "IICP_MODELS", value_delimiter = ',')]
    pub(super) models: Vec<String>,
    /// Tasks run at once [default: 4].
    #[arg(long, env = "IICP_MAX_CONCURRENT")]
    pub(super) max_concurrent: Option<u32>,
    /// Threads serving connections, each owning its connections [default: one per core].
    #[arg(long, env = "IICP_NODE_WORKERS")]
    pub(super) workers: Option<usize>,
    /// `open` accepts unauthenticated calls; `token` requires a credential [default: open].
    #[arg(long, env = "IICP_AUTH", value_parser = ["open", "token"])]
    pub(super) auth: Option<String>,
    /// Region advertised to the directory [default: local].
    #[arg(long, env = "IICP_REGION")]
    pub(super) region: Option<String>,
    /// Token accepted in token mode without a directory.
    #[arg(long, env = "IICP_NODE_TOKEN")]
    pub(super) token: Option<String>,
    /// Where identity and CX keys are kept [default: <data dir>/node].
    #[arg(long, env = "IICP_STATE_DIR")]
    pub(super) state_dir: Option<PathBuf>,
    /// Availability window HH:MM-HH:MM[=share] in UTC (repeatable).
    #[arg(
        long = "availability",
        env = "IICP_AVAILABILITY",
        value_delimiter = ','
    )]
    pub(super) availability: Vec<String>,
    /// Anthropic API key; makes --backend an Anthropic Messages endpoint.
    #[arg(long, env = "ANTHROPIC_API_KEY", hide_env_values = true)]
    pub(super) anthropic_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    backend: Option<String>,
    directory: Option<url::Url>,
    listen: Option<SocketAddr>,
    public_url: Option<url::Url>,
    models: Option<Vec<String>>,
    max_concurrent: Option<u32>,
    workers: Option<usize>,
    auth: Option<String>,
    region: Option<String>,
    state_dir: Option<PathBuf>,
    availability: Option<Vec<String>>,
}

impl Table for FileSettings {
    const NAME: &'static str = "node";
}

/// `08:00-18:00=0.5` → a window with half the capacity.
fn parse_window(s: &str) -> Result<AvailabilityWindow, String> {
    let (span, share) = match s.split_once('=') {
        Some((span, share)) => (
            span,
            share
                .parse::<f64>()
                .map_err(|_| format!("{s}: bad share"))?,
        ),
        None => (s, 1.0),
    };
    let (start, end) = span
        .split_once('-')
        .ok_or_else(|| format!("{s}: expected HH:MM-HH:MM"))?;
    let t = |v: &str| TimeOfDay::parse(v.trim()).ok_or_else(|| format!("{s}: {v} is not HH:MM"));
    if !(0.0..=1.0).contains(&share) {
        return Err(format!("{s}: share must be between 0 and 1"));
    }
    Ok(AvailabilityWindow {
        start: t(start)?,
        end: t(end)?,
        share,
    })
}

fn build_config(args: &NodeArgs, file: FileSettings) -> Result<NodeConfig, String> {
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9484)));
    let state_dir = args
        .state_dir
        .clone()
        .or(file.state_dir)
        .unwrap_or_else(|| data_dir().join("node"));
    let mut c = NodeConfig::new(listen, state_dir);
    c.public_url = args.public_url.clone().or(file.public_url);
    c.directory = args.directory.clone().or(file.directory);
    c.models = list_or(args.models.clone(), file.models);
    if let Some(n) = args.max_concurrent.or(file.max_concurrent) {
        if n == 0 || n > 256 {
            return Err("--max-concurrent must be 1 to 256".into());
        }
        c.max_concurrent = n;
    }
    if let Some(n) = args.workers.or(file.workers) {
        if n == 0 || n > 256 {
            return Err("--workers must be 1 to 256".into());
        }
        c.workers = n;
    }
    c.auth = match args.auth.clone().or(file.auth).as_deref() {
        None | Some("open") => AuthMode::Open,
        Some("token") => AuthMode::Token,
        Some(other) => return Err(format!("--auth {other}: expected open or token")),
    };
    if let Some(r) = args.region.clone().or(file.region) {
        c.region = r;
    }
    c.local_token = args.token.clone();
    c.availability = list_or(args.availability.clone(), file.availability)
        .iter()
        .map(|w| parse_window(w))
        .collect::<Result<_, _>>()?;
    Ok(c)
}

/// A node's settings after flags, environment and the config file are merged.
pub(super) struct Resolved {
    pub config: NodeConfig,
    /// `--backend`; `None` means detect.
    pub backend_url: Option<String>,
    pub anthropic_key: Option<String>,
}

/// Merges flags (and the `IICP_*` variables clap read into them) with the `[node]` table.
pub(super) fn resolve(args: NodeArgs) -> Result<Resolved, String> {
    let file: FileSettings = read_table(args.config.as_deref())?;
    let backend_url = args.backend.clone().or(file.backend.clone());
    let config = build_config(&args, file)?;
    Ok(Resolved {
        config,
        backend_url,
        anthropic_key: args.anthropic_key,
    })
}

/// The backend a node fronts: the given URL (its API guessed from how it answers), else the
/// first of `candidates` that answers like itself. The name is for the operator.
pub(super) async fn choose_backend(
    url: Option<&str>,
    anthropic_key: Option<String>,
    candidates: &[detect::Candidate],
) -> Option<(&'static str, Backend)> {
    match url {
        Some(url) => {
            let backend = detect::for_url(url, anthropic_key).await;
            Some((kind_name(&backend), backend))
        }
        None => detect::detect_among(candidates).await,
    }
}

/// Where to look for a backend: the usual local ports, or (a testing aid, the hidden `--detect`
/// flag) the given base URLs, each asked as Ollama and as an OpenAI-compatible server; `none`
/// looks nowhere.
pub(super) fn candidates(overrides: Option<&[String]>) -> Vec<detect::Candidate> {
    let Some(urls) = overrides else {
        return detect::usual_candidates();
    };
    urls.iter()
        .filter(|u| !u.is_empty() && u.as_str() != "none")
        .flat_map(|u| {
            [
                detect::Candidate::new("Ollama", u, detect::Api::Ollama),
                detect::Candidate::new("an OpenAI-compatible server", u, detect::Api::OpenAi),
            ]
        })
        .collect()
}

/// What to call a backend given by URL.
pub(super) fn kind_name(backend: &Backend) -> &'static str {
    match backend.kind() {
        BackendKind::Ollama => "Ollama",
        BackendKind::OpenAi => "an OpenAI-compatible server",
        BackendKind::Anthropic => "Anthropic",
    }
}

pub fn run(args: NodeArgs) -> ExitCode {
    init_logging();
    let resolved = match resolve(args) {
        Ok(r) => r,
        Err(e) => return usage_error(&e),
    };
    let Resolved {
        config,
        backend_url,
        anthropic_key,
    } = resolved;
    run_until_signal(
        async move {
            let found = choose_backend(
                backend_url.as_deref(),
                anthropic_key,
                &detect::usual_candidates(),
            )
            .await;
            let backend =
                match (found, backend_url.is_some()) {
                    (Some((_, backend)), true) => backend,
                    (Some((name, backend)), false) => {
                        eprintln!("found {name} at {}", backend.base_url());
                        backend
                    }
                    (None, _) => return Err(
                        "no local backend found on the usual ports (Ollama 11434, LM Studio 1234, \
                         llama.cpp 8080, vLLM 8000); start one or pass --backend URL"
                            .into(),
                    ),
                };
            let node = Node::start(config, backend, Arc::new(SystemClock))
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("node serving on http://{}", node.local_addr());
            Ok(node)
        },
        |node| node.shutdown(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_with_and_without_share() {
        let w = parse_window("08:00-18:00=0.5").unwrap();
        assert_eq!(w.start.to_string(), "08:00");
        assert_eq!(w.share, 0.5);
        assert_eq!(parse_window("22:00-06:00").unwrap().share, 1.0);
        assert!(parse_window("8-18").is_err());
        assert!(parse_window("08:00-18:00=2").is_err());
    }

    #[test]
    fn workers_come_from_the_flag_then_the_file_and_are_bounded() {
        let cores = NodeConfig::new("127.0.0.1:0".parse().unwrap(), "x".into()).workers;
        let built = |flag: Option<usize>, file: Option<usize>| {
            let args = NodeArgs {
                workers: flag,
                ..NodeArgs::default()
            };
            let file = FileSettings {
                workers: file,
                ..FileSettings::default()
            };
            build_config(&args, file).map(|c| c.workers)
        };
        assert_eq!(built(None, None), Ok(cores));
        assert_eq!(built(None, Some(3)), Ok(3));
        assert_eq!(built(Some(1), Some(3)), Ok(1));
        assert!(built(Some(0), None).is_err());
        assert!(built(None, Some(1000)).is_err());
    }
}
