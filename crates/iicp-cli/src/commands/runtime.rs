//! What every long-running command shares: logging setup, the tokio runtime, and graceful
//! shutdown on SIGINT or SIGTERM.

use std::future::Future;
use std::process::ExitCode;

/// Logs go to stderr; `IICP_LOG` sets the filter (default `info`).
pub fn init_logging() {
    init_logging_or("info");
}

/// Logs go to stderr; `IICP_LOG` sets the filter, `default` applies without it.
pub fn init_logging_or(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IICP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A multi-threaded runtime for a command.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

/// Starts a service, waits for SIGINT or SIGTERM, then stops it gracefully.
///
/// The signal handlers are installed before `start` runs, so a signal that arrives while the
/// service is starting is not lost (and does not kill the process half-started): the start
/// completes, then the service stops at once.
pub fn run_until_signal<S, Start, Stop, StopFut>(start: Start, stop: Stop) -> ExitCode
where
    Start: Future<Output = Result<S, String>>,
    Stop: FnOnce(S) -> StopFut,
    StopFut: Future<Output = ()>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let signals = Signals::install();
        let service = match start.await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        signals.wait().await;
        tracing::info!("shutting down");
        stop(service).await;
        ExitCode::SUCCESS
    })
}

/// SIGINT and SIGTERM, listened to from the moment of installation.
struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    async fn wait(self) {
        let Signals {
            interrupt,
            terminate,
        } = self;
        let interrupt = async {
            match interrupt {
                Some(mut s) => {
                    s.recv().await;
                }
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        let terminate = async {
            match terminate {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate => {}
        }
    }
}
