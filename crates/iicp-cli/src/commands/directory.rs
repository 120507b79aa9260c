//! `iicp directory`: run the control plane.
//!
//! Settings come from flags, then `IICP_*` environment variables (clap reads both), then the
//! `[directory]` table of the TOML file given by `--config`, then the spec defaults.

use super::runtime::{init_logging, run_until_signal};
use super::settings::{list_or, read_table, usage_error, Table};
use clap::Args;
use iicp_directory::clock::SystemClock;
use iicp_directory::{Directory, DirectoryConfig};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug, Default)]
pub struct DirectoryArgs {
    /// TOML config file; flags and IICP_* variables override its `[directory]` table.
    #[arg(long, env = "IICP_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8010].
    #[arg(long, env = "IICP_LISTEN")]
    pub(super) listen: Option<SocketAddr>,
    /// SQLite database file [default: ./iicp-directory.db].
    #[arg(long, env = "IICP_DB")]
    pub(super) db: Option<PathBuf>,
    /// Ed25519 signing key file [default: <db>.ed25519, created on first start].
    #[arg(long, env = "IICP_SIGNING_KEY")]
    pub(super) signing_key: Option<PathBuf>,
    /// Local mode: accept loopback/private node endpoints and self-signed node TLS.
    #[arg(long, env = "IICP_DEV")]
    pub(super) dev: bool,
    /// Dev only: resolve HOST to ADDR for dial-backs (HOST=IP:PORT, repeatable).
    #[arg(long = "dev-resolve", env = "IICP_DEV_RESOLVE", value_delimiter = ',')]
    pub(super) dev_resolve: Vec<String>,
    /// Issuer named in tickets and ACKs (the directory's public URL).
    #[arg(long, env = "IICP_ISSUER")]
    pub(super) issuer: Option<String>,
    /// Proxies whose X-Forwarded-For / CF-Connecting-IP are trusted (repeatable).
    #[arg(
        long = "trusted-proxy",
        env = "IICP_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub(super) trusted_proxies: Vec<IpAddr>,
    /// REGISTER requests allowed per source IP per rolling minute [default: 60].
    #[arg(long, env = "IICP_REGISTER_RATE_LIMIT")]
    pub(super) register_rate_limit: Option<u32>,
    /// Heartbeat interval told to nodes, in milliseconds [default: 30000].
    #[arg(long, env = "IICP_HEARTBEAT_INTERVAL_MS")]
    pub(super) heartbeat_interval_ms: Option<u64>,
}

/// The `[directory]` table of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<SocketAddr>,
    db: Option<PathBuf>,
    signing_key: Option<PathBuf>,
    dev: Option<bool>,
    dev_resolve: Option<Vec<String>>,
    issuer: Option<String>,
    trusted_proxies: Option<Vec<IpAddr>>,
    register_rate_limit: Option<u32>,
    heartbeat_interval_ms: Option<u64>,
}

impl Table for FileSettings {
    const NAME: &'static str = "directory";
}

fn parse_override(s: &str) -> Result<(String, SocketAddr), String> {
    let (host, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("--dev-resolve {s}: expected HOST=IP:PORT"))?;
    let addr = addr
        .parse()
        .map_err(|_| format!("--dev-resolve {s}: {addr} is not IP:PORT"))?;
    Ok((host.to_ascii_lowercase(), addr))
}

pub(super) fn build_config(args: DirectoryArgs) -> Result<DirectoryConfig, String> {
    let file: FileSettings = read_table(args.config.as_deref())?;
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8010)));
    let db = args
        .db
        .or(file.db)
        .unwrap_or_else(|| PathBuf::from("iicp-directory.db"));
    let mut config = DirectoryConfig::new(listen, db);
    config.signing_key_path = args.signing_key.or(file.signing_key);
    config.dev = args.dev || file.dev.unwrap_or(false);
    config.dev_resolve = list_or(args.dev_resolve, file.dev_resolve)
        .iter()
        .map(|s| parse_override(s))
        .collect::<Result<_, _>>()?;
    config.issuer = args.issuer.or(file.issuer);
    config.trusted_proxies = list_or(args.trusted_proxies, file.trusted_proxies);
    if let Some(n) = args.register_rate_limit.or(file.register_rate_limit) {
        config.register_rate_limit = n;
    }
    if let Some(ms) = args.heartbeat_interval_ms.or(file.heartbeat_interval_ms) {
        config.heartbeat_interval = Duration::from_millis(ms.max(1000));
    }
    Ok(config)
}

pub fn run(args: DirectoryArgs) -> ExitCode {
    init_logging();
    let config = match build_config(args) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    run_until_signal(
        async move {
            let running = Directory::start(config, Arc::new(SystemClock))
                .await
                .map_err(|e| e.to_string())?;
            Ok(running)
        },
        |running| running.shutdown(),
    )
}
