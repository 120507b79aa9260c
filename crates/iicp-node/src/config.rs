//! Node settings as plain values; the CLI fills them from flags, environment and config files.

use crate::admission::auth::AuthMode;
use iicp_proto::node::AvailabilityWindow;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    /// The URL clients reach this node at; `None` uses `http://<bound address>`.
    pub public_url: Option<url::Url>,
    /// The directory to register with; `None` serves locally without registering.
    pub directory: Option<url::Url>,
    pub region: String,
    /// Serve only these models (all of the backend's when empty).
    pub models: Vec<String>,
    pub max_concurrent: u32,
    pub auth: AuthMode,
    /// A token accepted in `token` mode before (or without) a directory issues one.
    pub local_token: Option<String>,
    /// Where the node keeps its identity and CX key (files are 0600).
    pub state_dir: PathBuf,
    /// Declared UTC windows and the share of capacity offered in each.
    pub availability: Vec<AvailabilityWindow>,
    /// How long realtime and interactive tasks may wait for a slot.
    pub interactive_wait: Duration,
    /// How often the backend's model list is re-read.
    pub model_refresh: Duration,
    /// CIP gate: may a task make this node execute tools?
    pub allow_tool_execution: bool,
    /// Largest task body accepted.
    pub max_body_bytes: usize,
    /// Advertise and accept IICP-CX encrypted payloads.
    pub cx: bool,
    /// Threads that serve connections, each with its own single-threaded runtime; 1 serves on
    /// the caller's runtime. Defaults to the number of cores.
    pub workers: usize,
}

impl NodeConfig {
    pub fn new(listen: SocketAddr, state_dir: PathBuf) -> Self {
        NodeConfig {
            listen,
            public_url: None,
            directory: None,
            region: "local".into(),
            models: Vec::new(),
            max_concurrent: 4,
            auth: AuthMode::Open,
            local_token: None,
            state_dir,
            availability: Vec::new(),
            interactive_wait: Duration::from_millis(500),
            model_refresh: Duration::from_secs(60),
            allow_tool_execution: false,
            max_body_bytes: 32 * 1024 * 1024,
            cx: true,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}
