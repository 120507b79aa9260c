//! Directory settings as plain values. The CLI fills them from flags, environment and config
//! files; nothing here reads the environment.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    pub listen: SocketAddr,
    /// SQLite database file.
    pub db_path: PathBuf,
    /// Ed25519 signing key file; `None` puts it next to the database (`<db>.ed25519`).
    pub signing_key_path: Option<PathBuf>,
    /// Explicit local mode: loopback and private node endpoints are accepted and node TLS
    /// certificates are not verified. Never the default.
    pub dev: bool,
    /// Dev only: resolve these host names to these addresses (for fixtures such as
    /// `node.example.com`), so dial-backs reach a local responder.
    pub dev_resolve: Vec<(String, SocketAddr)>,
    /// The `iss` of tickets and consumer tokens, and the `directory` field of ACKs;
    /// `None` uses `http://<bound address>`.
    pub issuer: Option<String>,
    /// Peers whose `X-Forwarded-For` / `CF-Connecting-IP` are believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// REGISTER requests allowed per source IP per rolling window.
    pub register_rate_limit: u32,
    pub register_rate_window: Duration,
    /// Told to nodes in every PONG.
    pub heartbeat_interval: Duration,
    /// A node not heard from for this long is not discoverable and is swept to dormant.
    pub node_ttl: Duration,
    /// How often the sweep runs.
    pub sweep_interval: Duration,
    /// Budget of one liveness dial-back.
    pub liveness_timeout: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// bcrypt cost for node tokens (see `credentials`).
    pub bcrypt_cost: u32,
    /// How often buffered heartbeat state is written to the store.
    pub flush_interval: Duration,
}

impl DirectoryConfig {
    /// Spec defaults (digest §2.17–2.18) for a directory on `listen` with `db_path`.
    pub fn new(listen: SocketAddr, db_path: PathBuf) -> Self {
        DirectoryConfig {
            listen,
            issuer: None,
            db_path,
            signing_key_path: None,
            dev: false,
            dev_resolve: Vec::new(),
            trusted_proxies: Vec::new(),
            register_rate_limit: 60,
            register_rate_window: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(30),
            node_ttl: Duration::from_secs(90),
            sweep_interval: Duration::from_secs(5),
            liveness_timeout: Duration::from_secs(3),
            max_body_bytes: 64 * 1024,
            bcrypt_cost: crate::credentials::DEFAULT_BCRYPT_COST,
            flush_interval: Duration::from_millis(500),
        }
    }

    pub fn signing_key_path(&self) -> PathBuf {
        self.signing_key_path.clone().unwrap_or_else(|| {
            let mut p = self.db_path.clone().into_os_string();
            p.push(".ed25519");
            PathBuf::from(p)
        })
    }
}
