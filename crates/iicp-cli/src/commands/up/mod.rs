//! `iicp up`: a whole local mesh in one process — a directory, a node in front of the local
//! backend, and the gateway — wired together, with each step printed as it happens.
//!
//! `up`'s own settings (host, ports, data directory, backend) come from flags, then `IICP_*`
//! variables, then the `[up]` table of `--config`. Everything else about each part comes from
//! that part's own variables and its `[directory]`, `[node]` or `[gateway]` table, merged by the
//! same builders `iicp directory|node|gateway` use; `up` sets only what wires the parts
//! together: listen addresses, the database, the node's state directory, the directory URL and
//! the directory's dev mode.

mod text;

use super::directory::{self, DirectoryArgs};
use super::gateway::{self, GatewayArgs};
use super::node::{self, NodeArgs};
use super::occupant::{self, Role};
use super::paths::data_dir;
use super::runtime::{init_logging_or, run_until_signal};
use super::settings::{read_table, usage_error, Table};
use clap::Args;
use iicp_directory::{Directory, DirectoryConfig, RunningDirectory};
use iicp_gateway::{Gateway, GatewayConfig, RunningGateway};
use iicp_node::detect::Candidate;
use iicp_node::{Node, NodeConfig, Registration, RunningNode};
use iicp_server::clock::SystemClock;
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// How long `up` waits for the node's first registration before moving on.
const REGISTRATION_WAIT: Duration = Duration::from_secs(20);

#[derive(Args, Debug, Default)]
pub struct UpArgs {
    /// TOML config file: its `[up]` table, and the `[directory]`, `[node]` and `[gateway]`
    /// tables for each part.
    #[arg(long, env = "IICP_CONFIG")]
    config: Option<PathBuf>,
    /// Backend base URL (Ollama, llama.cpp, vLLM, LM Studio); detected on the usual local
    /// ports when absent.
    #[arg(long, env = "IICP_BACKEND")]
    backend: Option<String>,
    /// Address the directory, node and gateway listen on [default: 127.0.0.1].
    #[arg(long, env = "IICP_LISTEN_HOST")]
    listen_host: Option<IpAddr>,
    /// Directory port; 0 picks a free one [default: 8010].
    #[arg(long, env = "IICP_DIRECTORY_PORT")]
    directory_port: Option<u16>,
    /// Node port; 0 picks a free one [default: 9484].
    #[arg(long, env = "IICP_NODE_PORT")]
    node_port: Option<u16>,
    /// Gateway port; 0 picks a free one [default: 9483].
    #[arg(long, env = "IICP_GATEWAY_PORT")]
    gateway_port: Option<u16>,
    /// Where the directory database and the node's keys live [default: the per-user data
    /// directory, e.g. ~/.local/share/iicp].
    #[arg(long, env = "IICP_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Serve only this model (repeatable) [default: every model of the backend].
    #[arg(long = "model", env = "IICP_MODELS", value_delimiter = ',')]
    models: Vec<String>,
    /// Testing aid: base URLs to look for a backend at instead of the usual ports (`none`:
    /// look nowhere).
    #[arg(long, env = "IICP_DETECT", value_delimiter = ',', hide = true)]
    detect: Option<Vec<String>>,
}

/// The `[up]` table of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen_host: Option<IpAddr>,
    directory_port: Option<u16>,
    node_port: Option<u16>,
    gateway_port: Option<u16>,
    data_dir: Option<PathBuf>,
}

impl Table for FileSettings {
    const NAME: &'static str = "up";
}

/// Everything `up` starts, as plain values.
struct Plan {
    data_dir: PathBuf,
    directory: DirectoryConfig,
    node: NodeConfig,
    backend_url: Option<String>,
    anthropic_key: Option<String>,
    candidates: Vec<Candidate>,
    gateway: GatewayConfig,
    /// Whether the listen host is loopback (only this machine can reach the mesh).
    loopback: bool,
}

/// A command's arguments as its `IICP_*` variables alone set them (no flags): the other
/// commands' settings without repeating their definitions. `what` names the part in errors.
fn env_only<T: clap::Args + clap::FromArgMatches>(what: &str) -> Result<T, String> {
    let command = T::augment_args(clap::Command::new("iicp").no_binary_name(true));
    let explain = |e: clap::Error| {
        let text = e.to_string();
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
            .collect();
        format!(
            "{what} settings from the environment: {}",
            lines.join(" ").trim_start_matches("error: ")
        )
    };
    let matches = command
        .try_get_matches_from(std::iter::empty::<String>())
        .map_err(explain)?;
    T::from_arg_matches(&matches).map_err(explain)
}

/// `http://addr` as a client reaches it: an unspecified address means this machine.
fn local_url(addr: SocketAddr) -> Result<url::Url, String> {
    let addr = if addr.ip().is_unspecified() {
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    url::Url::parse(&format!("http://{addr}")).map_err(|e| format!("{addr}: {e}"))
}

fn plan(args: UpArgs) -> Result<Plan, String> {
    let file: FileSettings = read_table(args.config.as_deref())?;
    let host = args
        .listen_host
        .or(file.listen_host)
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let at = |flag: Option<u16>, file: Option<u16>, default: u16| {
        SocketAddr::new(host, flag.or(file).unwrap_or(default))
    };
    let directory_addr = at(args.directory_port, file.directory_port, 8010);
    let node_addr = at(args.node_port, file.node_port, 9484);
    let gateway_addr = at(args.gateway_port, file.gateway_port, 9483);
    let data = args.data_dir.or(file.data_dir).unwrap_or_else(data_dir);
    let directory_url = local_url(directory_addr)?;

    let mut d: DirectoryArgs = env_only("directory")?;
    d.config = args.config.clone();
    d.listen = Some(directory_addr);
    d.db = Some(data.join("directory.db"));
    d.dev = true;
    let directory = directory::build_config(d)?;

    let mut n: NodeArgs = env_only("node")?;
    n.config = args.config.clone();
    n.listen = Some(node_addr);
    n.state_dir = Some(data.join("node"));
    n.directory = Some(directory_url.clone());
    if args.backend.is_some() {
        n.backend = args.backend;
    }
    if !args.models.is_empty() {
        n.models = args.models;
    }
    let resolved = node::resolve(n)?;
    let mut node = resolved.config;
    if host.is_unspecified() && node.public_url.is_none() {
        if node_addr.port() == 0 {
            return Err(format!(
                "--node-port 0 with --listen-host {host} leaves the node without an address \
                 to advertise; pick a port or set IICP_PUBLIC_URL"
            ));
        }
        node.public_url = Some(local_url(node_addr)?);
    }

    let mut g: GatewayArgs = env_only("gateway")?;
    g.config = args.config;
    g.listen = Some(gateway_addr);
    g.directory = Some(directory_url);
    let gateway = gateway::build_config(g)?;

    Ok(Plan {
        data_dir: data,
        directory,
        node,
        backend_url: resolved.backend_url,
        anthropic_key: resolved.anthropic_key,
        candidates: node::candidates(args.detect.as_deref()),
        gateway,
        loopback: host.is_loopback(),
    })
}

/// The running parts, stopped in order: node, gateway, directory.
struct Mesh {
    directory: RunningDirectory,
    node: Option<RunningNode>,
    gateway: RunningGateway,
    db: PathBuf,
}

pub fn run(args: UpArgs) -> ExitCode {
    // Progress goes to stdout; logs (stderr) only when something needs attention.
    init_logging_or("warn");
    let plan = match plan(args) {
        Ok(p) => p,
        Err(e) => return usage_error(&e),
    };
    run_until_signal(start(plan), stop)
}

/// Why a part could not listen, with what holds the port and how to get past it.
async fn cannot_listen(role: Role, addr: SocketAddr, source: std::io::Error) -> String {
    if source.kind() != std::io::ErrorKind::AddrInUse {
        return format!("cannot start the {role}: cannot listen on {addr}: {source}");
    }
    let http = reqwest::Client::new();
    let holder = occupant::identify(&http, addr).await;
    let fix = occupant::busy_port_fix(role, addr.port(), &holder);
    let holder = match holder {
        // It closed between our bind and our look.
        occupant::Occupant::Free => "another program".to_owned(),
        other => other.to_string(),
    };
    format!(
        "cannot start the {role}: port {} on {} is already in use by {holder}\nfix: {fix}",
        addr.port(),
        addr.ip()
    )
}

async fn start(plan: Plan) -> Result<Mesh, String> {
    say!("starting a local IICP mesh: directory, node and gateway in this process");
    say!("  data in {}", plan.data_dir.display());
    std::fs::create_dir_all(&plan.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", plan.data_dir.display()))?;
    let db = plan.directory.db_path.clone();
    let directory = match Directory::start(plan.directory, Arc::new(SystemClock)).await {
        Ok(d) => d,
        Err(iicp_directory::StartError::Bind(e)) => {
            return Err(cannot_listen(Role::Directory, e.addr, e.source).await)
        }
        Err(e) => return Err(format!("cannot start the directory: {e}")),
    };
    let directory_url = local_url(directory.local_addr())?;
    say!(
        "directory listening on {} (dev mode, as a local mesh needs: it accepts node endpoints \
         on this machine)",
        text::bare(&directory_url)
    );

    let started = start_node(
        &plan.candidates,
        plan.backend_url,
        plan.anthropic_key,
        plan.node,
        &directory_url,
    )
    .await;
    let (node, example_model) = match started {
        Ok(s) => s,
        Err(e) => {
            directory.shutdown().await;
            return Err(e);
        }
    };

    let mut gateway_config = plan.gateway;
    gateway_config.client.directory = directory_url.clone();
    let gateway = match Gateway::start(gateway_config).await {
        Ok(g) => g,
        Err(e) => {
            let message = match e {
                iicp_gateway::StartError::Bind(e) => {
                    cannot_listen(Role::Gateway, e.addr, e.source).await
                }
            };
            if let Some(n) = node {
                n.shutdown().await;
            }
            directory.shutdown().await;
            return Err(message);
        }
    };
    let gateway_url = local_url(gateway.local_addr())?;
    say!(
        "gateway ready at {} (OpenAI API at /v1, Ollama API at /api)",
        text::bare(&gateway_url)
    );
    let node_url = match &node {
        Some(n) => Some(local_url(n.local_addr())?),
        None => None,
    };
    text::ready(&text::Ready {
        directory: &directory_url,
        node: node_url.as_ref(),
        gateway: &gateway_url,
        model: example_model.as_deref(),
        loopback: plan.loopback,
    });
    Ok(Mesh {
        directory,
        node,
        gateway,
        db,
    })
}

/// Finds the backend and starts the node in front of it, registered with the directory. No
/// backend is not an error: the directory and gateway still run, and the output says how to
/// add one. Returns the node and a chat model for the examples.
async fn start_node(
    candidates: &[Candidate],
    backend_url: Option<String>,
    anthropic_key: Option<String>,
    mut config: NodeConfig,
    directory_url: &url::Url,
) -> Result<(Option<RunningNode>, Option<String>), String> {
    let explicit = backend_url.is_some();
    let found = node::choose_backend(backend_url.as_deref(), anthropic_key, candidates).await;
    let Some((name, backend)) = found else {
        text::no_backend(candidates, directory_url);
        return Ok((None, None));
    };
    let verb = if explicit { "using" } else { "found" };
    let model = match backend.models().await {
        Ok(models) => {
            let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
            if names.is_empty() {
                say!(
                    "{verb} {name} at {}, which has no models yet",
                    backend.base_url()
                );
                text::no_models(backend.kind());
            } else {
                say!(
                    "{verb} {name} at {} with models: {}",
                    backend.base_url(),
                    names.join(", ")
                );
            }
            models
                .iter()
                .find(|m| !m.embedding)
                .or(models.first())
                .map(|m| m.name.clone())
        }
        Err(e) => {
            say!(
                "warning: {} at {} does not answer ({e}); the node starts anyway and serves \
                 its models once it is up",
                if explicit { "the backend" } else { name },
                backend.base_url()
            );
            text::how_to_start_backend();
            None
        }
    };
    config.directory = Some(directory_url.clone());
    let node = match Node::start(config, backend, Arc::new(SystemClock)).await {
        Ok(n) => n,
        Err(iicp_node::StartError::Bind(e)) => {
            return Err(cannot_listen(Role::Node, e.addr, e.source).await)
        }
        Err(e) => return Err(format!("cannot start the node: {e}")),
    };
    say!(
        "node listening on {}",
        text::bare(&local_url(node.local_addr())?)
    );
    let mut registration = node.registration();
    let settled = tokio::time::timeout(
        REGISTRATION_WAIT,
        registration.wait_for(|r| !matches!(r, Registration::Pending)),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .map(|r| r.clone());
    match settled {
        Some(Registration::Registered { node_id }) => {
            say!("node registered as {node_id} with the directory")
        }
        Some(Registration::Retrying { reason }) => say!(
            "warning: the node could not register yet ({reason}); it keeps serving and retries \
             in the background"
        ),
        _ => say!(
            "warning: the node has not registered within {} s; it keeps trying in the background",
            REGISTRATION_WAIT.as_secs()
        ),
    }
    Ok((Some(node), model))
}

/// Stops in order: the node first (it deregisters while the directory still runs), then the
/// gateway (answers in progress finish), then the directory (buffered state is written).
async fn stop(mesh: Mesh) {
    say!("stopping: node, then gateway, then directory");
    if let Some(node) = mesh.node {
        let registration = node.registration();
        node.shutdown().await;
        let last = registration.borrow().clone();
        match last {
            Registration::Deregistered => say!("node stopped (deregistered from the directory)"),
            Registration::Registered { .. } => say!(
                "node stopped (could not deregister; the directory forgets it after 90 s of \
                 silence)"
            ),
            _ => say!("node stopped (it was not registered)"),
        }
    }
    mesh.gateway.shutdown().await;
    say!("gateway stopped");
    mesh.directory.shutdown().await;
    say!("directory stopped (state written to {})", mesh.db.display());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn up_wires_the_parts_and_the_role_tables_configure_the_rest() {
        let dir = std::env::temp_dir().join(format!("iicp-up-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("iicp.toml");
        std::fs::write(
            &path,
            r#"
[up]
directory_port = 7010
gateway_port = 7083
data_dir = "/srv/iicp"

[directory]
listen = "127.0.0.1:1"
heartbeat_interval_ms = 5000

[node]
listen = "127.0.0.1:2"
region = "eu-west"

[gateway]
task_timeout = 30
"#,
        )
        .unwrap();
        let args = UpArgs {
            config: Some(path),
            gateway_port: Some(7084),
            ..UpArgs::default()
        };
        let p = plan(args).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        // `up` wires the parts: its own settings beat the role tables' addresses.
        assert_eq!(p.directory.listen.to_string(), "127.0.0.1:7010");
        assert!(p.directory.dev);
        assert_eq!(p.directory.db_path, Path::new("/srv/iicp/directory.db"));
        assert_eq!(p.node.listen.to_string(), "127.0.0.1:9484");
        assert_eq!(p.node.state_dir, Path::new("/srv/iicp/node"));
        assert_eq!(
            p.node.directory.as_ref().map(url::Url::as_str),
            Some("http://127.0.0.1:7010/")
        );
        // A flag beats the [up] table.
        assert_eq!(p.gateway.listen.to_string(), "127.0.0.1:7084");
        assert_eq!(
            p.gateway.client.directory.as_str(),
            "http://127.0.0.1:7010/"
        );
        // Everything else comes from each part's own table.
        assert_eq!(p.directory.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(p.node.region, "eu-west");
        assert_eq!(p.gateway.task_timeout, Duration::from_secs(30));
        assert!(p.loopback);
    }

    #[test]
    fn an_unspecified_host_advertises_loopback_and_needs_a_node_port() {
        let p = plan(UpArgs {
            listen_host: Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            data_dir: Some(PathBuf::from("/srv/iicp")),
            ..UpArgs::default()
        })
        .unwrap();
        assert_eq!(
            p.node.public_url.as_ref().map(url::Url::as_str),
            Some("http://127.0.0.1:9484/")
        );
        assert_eq!(
            p.gateway.client.directory.as_str(),
            "http://127.0.0.1:8010/"
        );
        assert!(!p.loopback);
        let zero = plan(UpArgs {
            listen_host: Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            node_port: Some(0),
            data_dir: Some(PathBuf::from("/srv/iicp")),
            ..UpArgs::default()
        });
        assert!(zero.is_err());
    }
}
