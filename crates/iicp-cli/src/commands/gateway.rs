//! `iicp gateway`: a local OpenAI- and Ollama-compatible endpoint in front of the mesh.
//!
//! Settings come from flags, then `IICP_*` environment variables, then the `[gateway]` table of
//! the TOML file given by `--config`, then defaults.

use super::runtime::{init_logging, run_until_signal};
use super::settings::{read_table, usage_error, Table};
use clap::Args;
use iicp_gateway::{Gateway, GatewayConfig};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug, Default)]
pub struct GatewayArgs {
    /// TOML config file; flags and IICP_* variables override its `[gateway]` table.
    #[arg(long, env = "IICP_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// Directory to discover nodes from [default: http://127.0.0.1:8010].
    #[arg(long, env = "IICP_DIRECTORY")]
    pub(super) directory: Option<url::Url>,
    /// Address to listen on [default: 127.0.0.1:9483].
    #[arg(long, env = "IICP_GATEWAY_LISTEN")]
    pub(super) listen: Option<SocketAddr>,
    /// Seconds a node may take for one task, 1 to 300 [default: 120].
    #[arg(long, env = "IICP_GATEWAY_TASK_TIMEOUT")]
    pub(super) task_timeout: Option<u64>,
    /// Largest request body in bytes [default: 33554432 (32 MiB)].
    #[arg(long, env = "IICP_GATEWAY_MAX_BODY_BYTES")]
    pub(super) max_body_bytes: Option<usize>,
}

/// The `[gateway]` table of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    directory: Option<url::Url>,
    listen: Option<SocketAddr>,
    task_timeout: Option<u64>,
    max_body_bytes: Option<usize>,
}

impl Table for FileSettings {
    const NAME: &'static str = "gateway";
}

pub(super) fn build_config(args: GatewayArgs) -> Result<GatewayConfig, String> {
    let file: FileSettings = read_table(args.config.as_deref())?;
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9483)));
    let directory = match args.directory.or(file.directory) {
        Some(d) => d,
        None => "http://127.0.0.1:8010"
            .parse()
            .map_err(|e| format!("default directory: {e}"))?,
    };
    let mut config = GatewayConfig::new(listen, directory);
    if let Some(secs) = args.task_timeout.or(file.task_timeout) {
        if !(1..=300).contains(&secs) {
            return Err("--task-timeout must be 1 to 300 seconds".into());
        }
        config.task_timeout = Duration::from_secs(secs);
    }
    if let Some(n) = args.max_body_bytes.or(file.max_body_bytes) {
        if n < 1024 {
            return Err("--max-body-bytes must be at least 1024".into());
        }
        config.max_body_bytes = n;
    }
    Ok(config)
}

pub fn run(args: GatewayArgs) -> ExitCode {
    init_logging();
    let config = match build_config(args) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    run_until_signal(
        async move {
            let running = Gateway::start(config).await.map_err(|e| e.to_string())?;
            let addr = running.local_addr();
            eprintln!("gateway serving on http://{addr} (OpenAI: http://{addr}/v1, Ollama: http://{addr})");
            Ok(running)
        },
        |running| running.shutdown(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> GatewayArgs {
        GatewayArgs {
            config: None,
            directory: None,
            listen: None,
            task_timeout: None,
            max_body_bytes: None,
        }
    }

    #[test]
    fn defaults_then_file_then_flags() {
        let c = build_config(args()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9483");
        assert_eq!(c.client.directory.as_str(), "http://127.0.0.1:8010/");
        assert_eq!(c.task_timeout, Duration::from_secs(120));

        let path = std::env::temp_dir().join(format!("iicp-gw-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[gateway]\ndirectory = \"http://10.0.0.1:9000\"\nlisten = \"127.0.0.1:7000\"\ntask_timeout = 30\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path.clone());
        a.listen = Some("127.0.0.1:7001".parse().unwrap());
        let c = build_config(a).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7001");
        assert_eq!(c.client.directory.as_str(), "http://10.0.0.1:9000/");
        assert_eq!(c.task_timeout, Duration::from_secs(30));

        let mut bad = args();
        bad.task_timeout = Some(0);
        assert!(build_config(bad).is_err());
    }
}
