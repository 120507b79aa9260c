//! What tests that run real servers and processes share, so each test file stops writing its
//! own copy:
//!
//! - [`free_port`]: a loopback port nothing listens on, for a process told where to listen (or
//!   for a URL that must refuse connections).
//! - [`wait_until`]: the one polling loop with a deadline. Every wait in a test has one; on
//!   timeout it hands back the last thing it saw, so the test's own message can show it.
//! - [`TempDir`]: a fresh directory, removed on drop — kept (and named) when the test failed,
//!   so the logs in it can be read.
//! - [`ChildGuard`]: a spawned process that is killed (SIGKILL, then reaped) on drop, whose
//!   stdout and stderr can go to a log file; signals, and waits for its exit or a log line.
//! - [`http_client`], [`get_json`], [`get_text`], [`wait_for_ok`]: a proxy-free client for
//!   loopback, the GET-and-decode every test repeats, and "wait until this URL answers 2xx".
//! - [`parse_sse`]: the events of a Server-Sent Events body, read leniently (to assert on what
//!   a server streamed, not on how it framed it).
//!
//! ```no_run
//! # async fn demo() {
//! use iicp_testkit::support::{free_port, http_client, wait_for_ok, ChildGuard, TempDir};
//! use std::process::Command;
//! use std::time::Duration;
//!
//! let tmp = TempDir::new("demo");
//! let port = free_port();
//! let mut cmd = Command::new("my-server");
//! cmd.arg(format!("--listen=127.0.0.1:{port}"));
//! let server = ChildGuard::spawn_logged("server", &mut cmd, tmp.path().join("server.log"));
//! let http = http_client(Duration::from_secs(10));
//! wait_for_ok(&http, &format!("http://127.0.0.1:{port}/health"), Duration::from_secs(30))
//!     .await
//!     .unwrap_or_else(|last| panic!("never ready ({last}):\n{}", server.log_text()));
//! # }
//! ```

use serde_json::Value;
use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How often [`wait_until`] tries again.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// A loopback port that was free a moment ago: bound on `127.0.0.1:0`, then released. Another
/// process could take it in between; tests accept that small race for a port they can name
/// before the server starts.
///
/// # Panics
/// When no loopback port can be bound.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// Runs `attempt` every 20 ms (on the tokio timer) until it gives `Ok`, and returns that. Once
/// `deadline` has passed, the last `Err` is returned instead (there is always at least one
/// attempt), so the caller can fail with what it saw last:
///
/// ```no_run
/// # async fn demo(node: &str) {
/// # use iicp_testkit::support::wait_until;
/// # use std::time::{Duration, Instant};
/// let deadline = Instant::now() + Duration::from_secs(5);
/// let id = wait_until(deadline, || async {
///     let health = reqwest::get(format!("{node}/iicp/health")).await.map_err(|e| e.to_string())?;
///     let health: serde_json::Value = health.json().await.map_err(|e| e.to_string())?;
///     health["node_id"].as_str().map(str::to_owned).ok_or_else(|| health.to_string())
/// })
/// .await
/// .unwrap_or_else(|last| panic!("{node} never registered: {last}"));
/// # }
/// ```
pub async fn wait_until<T, E, F, Fut>(deadline: Instant, mut attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() >= deadline => return Err(last),
            Err(_) => tokio::time::sleep(POLL_EVERY).await,
        }
    }
}

/// A fresh directory under the system temp dir, `iicp-<tag>-<pid>-<n>`. Dropping it removes
/// it, unless the thread is panicking (the test failed): then it stays, and its path is
/// printed, so the logs in it can be read.
pub struct TempDir(PathBuf);

impl TempDir {
    /// # Panics
    /// When the directory cannot be created.
    pub fn new(tag: &str) -> TempDir {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "iicp-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: its files are kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process that cannot outlive its test: dropping the guard kills it (SIGKILL) and
/// reaps it.
pub struct ChildGuard {
    name: String,
    child: Child,
    log: Option<PathBuf>,
}

impl ChildGuard {
    /// Spawns `command` with the stdio it was given (pipe stdout to read it through
    /// [`ChildGuard::child_mut`]). `name` is what failure messages call it.
    ///
    /// # Panics
    /// When the process cannot be started.
    pub fn spawn(name: &str, command: &mut Command) -> ChildGuard {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ChildGuard {
            name: name.to_owned(),
            child,
            log: None,
        }
    }

    /// Spawns `command` with stdin closed and its stdout and stderr written to a new file at
    /// `log` (see [`ChildGuard::log_text`]).
    ///
    /// # Panics
    /// When the log file cannot be created or the process cannot be started.
    pub fn spawn_logged(name: &str, command: &mut Command, log: impl Into<PathBuf>) -> ChildGuard {
        let log = log.into();
        let out = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = out.try_clone().expect("a second handle on the log file");
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let mut guard = Self::spawn(name, command);
        guard.log = Some(log);
        guard
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process itself, e.g. to take a piped stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The log file of [`ChildGuard::spawn_logged`].
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// Everything logged so far ("" without a log file).
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, then reaps the process. Does nothing to one that already exited.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (`TERM`, `INT`, `KILL`, …) with `kill(1)`; needs only `&self`, so it can
    /// be sent while others borrow the guard. The process is not reaped.
    ///
    /// # Panics
    /// When the signal could not be sent.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap_or_else(|e| panic!("kill -{signal} {}: {e}", self.name));
        assert!(
            sent.success(),
            "kill -{signal} {} failed: {sent}",
            self.name
        );
    }

    /// Sends `signal` (see [`ChildGuard::signal`]) and waits up to `within` for the process to
    /// exit; `None` if it still runs.
    pub async fn stop_with(&mut self, signal: &str, within: Duration) -> Option<ExitStatus> {
        self.signal(signal);
        let child = &mut self.child;
        wait_until(Instant::now() + within, || {
            let exited = child.try_wait().ok().flatten().ok_or(());
            std::future::ready(exited)
        })
        .await
        .ok()
    }

    /// Waits up to `within` for a log line containing `needle`, and returns that line.
    ///
    /// # Panics
    /// When the process exits first or the time runs out, with the log so far.
    pub async fn wait_for_line(&mut self, needle: &str, within: Duration) -> String {
        let found = wait_until(Instant::now() + within, || {
            // Only whole lines: a line read while it is being written would be cut short.
            let line = self
                .log_text()
                .split_inclusive('\n')
                .find(|l| l.ends_with('\n') && l.contains(needle))
                .map(|l| l.trim_end().to_owned());
            if line.is_none() {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "{} exited ({status}) before logging {needle:?}:\n{}",
                        self.name,
                        self.log_text()
                    );
                }
            }
            std::future::ready(line.ok_or(()))
        })
        .await;
        found.unwrap_or_else(|()| {
            panic!(
                "{} never logged {needle:?}:\n{}",
                self.name,
                self.log_text()
            )
        })
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A client for loopback servers: no proxy (so `HTTP_PROXY` in the environment cannot route
/// loopback traffic elsewhere), every request bounded by `timeout`.
///
/// # Panics
/// When the client cannot be built (no TLS backend).
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("an HTTP client")
}

/// `GET url`, its body decoded as JSON, whatever the status.
///
/// # Panics
/// When the request fails or the body is not JSON.
pub async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    get(http, url)
        .await
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: the body is not JSON: {e}"))
}

/// `GET url`, its body as text, whatever the status.
///
/// # Panics
/// When the request fails or the body is not UTF-8.
pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    get(http, url)
        .await
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"))
}

async fn get(http: &reqwest::Client, url: &str) -> reqwest::Response {
    http.get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Polls `GET url` until it answers 2xx (a server that is up, e.g. on its health route), for
/// up to `within`; returns that answer, or on timeout what the last try got (an error or a
/// status).
pub async fn wait_for_ok(
    http: &reqwest::Client,
    url: &str,
    within: Duration,
) -> Result<reqwest::Response, String> {
    wait_until(Instant::now() + within, || async {
        match http.get(url).send().await {
            Ok(r) if r.status().is_success() => Ok(r),
            Ok(r) => Err(format!("{url} answered {}", r.status())),
            Err(e) => Err(format!("{url}: {e}")),
        }
    })
    .await
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// The `event:` name, `message` when the event names none.
    pub event: String,
    /// The `data:` lines, joined with newlines.
    pub data: String,
}

impl SseEvent {
    /// The data as JSON.
    ///
    /// # Panics
    /// When it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {}", self.data))
    }
}

/// The events of an SSE body: blank-line separated blocks, each with an optional `event:` line
/// and its `data:` lines (one space after the colon dropped); other lines are ignored.
pub fn parse_sse(text: &str) -> Vec<SseEvent> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = "message".to_owned();
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event:") {
                    event = name.trim().to_owned();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.strip_prefix(' ').unwrap_or(d));
                }
            }
            SseEvent {
                event,
                data: data.join("\n"),
            }
        })
        .collect()
}
