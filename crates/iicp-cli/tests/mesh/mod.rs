//! A real mesh on loopback for the fault suite: one directory, provider nodes and one gateway,
//! each a separate `iicp` process on an ephemeral port with its log captured to a file, in front
//! of in-process backend doubles (`iicp-testkit`, each on its own thread and runtime).
//!
//! Everything is killed on drop (`SIGKILL`, then reaped) and the temporary directory removed; a
//! failing test keeps its directory and says where, so the process logs can be read. Every wait
//! has a deadline. The process, directory and waiting plumbing is `iicp_testkit::support`.

#![allow(dead_code)]

use iicp_testkit::support::{
    get_json, get_text, http_client, wait_for_ok, wait_until, ChildGuard, SseEvent, TempDir,
};
use iicp_testkit::{BackendDouble, Behavior, Flavor, Models, Options};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub const CHAT: &str = "urn:iicp:intent:llm:chat:v1";
pub const EMBEDDING: &str = "urn:iicp:intent:llm:embedding:v1";
pub const CHAT_MODEL: &str = "tiny-chat";
pub const EMBED_MODEL: &str = "tiny-embed";

/// How long a process may take to start, register or become discoverable (debug builds on a
/// busy 2-core CI machine).
pub const START_BUDGET: Duration = Duration::from_secs(30);

/// Starts `iicp ARGS` with `IICP_LOG=level`, its stdout and stderr in `log`; dropping the guard
/// kills it with SIGKILL. Inherited `IICP_*`, Anthropic and proxy variables are removed so the
/// CI environment cannot change what runs.
pub fn spawn_iicp(name: &str, args: &[String], log: PathBuf, level: &str) -> ChildGuard {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iicp"));
    cmd.args(args);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy().to_ascii_uppercase();
        if k.starts_with("IICP_") || k.starts_with("ANTHROPIC_") || k.ends_with("_PROXY") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("IICP_LOG", level).env("NO_COLOR", "1");
    ChildGuard::spawn_logged(name, &mut cmd, log)
}

/// Resident set size of `p` in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(p: &ChildGuard) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid()))
        .unwrap_or_else(|e| panic!("{} has no /proc status: {e}", p.name()));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{} status without VmRSS", p.name()))
}

/// The word after `marker` in `line`, up to whitespace.
fn word_after(line: &str, marker: &str) -> String {
    let start = line
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} not in {line:?}"))
        + marker.len();
    line[start..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// How one node of the mesh is set up.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub chat: Vec<String>,
    pub embedding: Vec<String>,
    pub behavior: Behavior,
    pub max_concurrent: Option<u32>,
}

impl Default for NodeSpec {
    fn default() -> Self {
        NodeSpec {
            chat: vec![CHAT_MODEL.into()],
            embedding: vec![EMBED_MODEL.into()],
            behavior: Behavior::default(),
            max_concurrent: None,
        }
    }
}

impl NodeSpec {
    pub fn chat_only(model: &str) -> NodeSpec {
        NodeSpec {
            chat: vec![model.into()],
            embedding: Vec::new(),
            ..NodeSpec::default()
        }
    }

    pub fn behavior(mut self, b: Behavior) -> NodeSpec {
        self.behavior = b;
        self
    }

    pub fn max_concurrent(mut self, n: u32) -> NodeSpec {
        self.max_concurrent = Some(n);
        self
    }
}

/// How the whole mesh is set up.
#[derive(Clone, Debug)]
pub struct MeshSpec {
    pub tag: &'static str,
    pub nodes: Vec<NodeSpec>,
    /// `IICP_LOG` of every process (at least `info`: start-up lines are read from the logs).
    pub log: &'static str,
    /// `--heartbeat-interval-ms` of the directory.
    pub heartbeat_ms: Option<u64>,
    /// Extra `iicp gateway` flags.
    pub gateway_args: Vec<String>,
}

impl MeshSpec {
    /// Three default nodes (chat and embedding models, instant backends).
    pub fn three(tag: &'static str) -> MeshSpec {
        MeshSpec {
            tag,
            nodes: vec![NodeSpec::default(); 3],
            log: "info",
            heartbeat_ms: None,
            gateway_args: Vec::new(),
        }
    }
}

pub struct MeshNode {
    pub proc: ChildGuard,
    /// `http://127.0.0.1:PORT` of the node.
    pub url: String,
    /// The id the directory gave.
    pub id: String,
    pub state_dir: PathBuf,
    pub backend: Option<BackendDouble>,
    pub backend_addr: SocketAddr,
    pub spec: NodeSpec,
}

impl MeshNode {
    /// The id prefix the gateway reports in `x-iicp-node` (the public discover view).
    pub fn prefix(&self) -> String {
        prefix(&self.id)
    }

    /// Kills the backend at once (every open connection drops mid-reply, as a crash would).
    pub fn kill_backend(&mut self) {
        if let Some(b) = self.backend.take() {
            b.kill();
        }
    }

    /// Starts a fresh backend double on the same address.
    pub async fn restart_backend(&mut self) {
        self.kill_backend();
        let (spec, addr) = (&self.spec, self.backend_addr);
        let backend = wait_until(Instant::now() + START_BUDGET, || start_backend(spec, addr))
            .await
            .unwrap_or_else(|e| panic!("backend did not restart: {e}"));
        self.backend = Some(backend);
    }
}

pub fn prefix(id: &str) -> String {
    id.replace('-', "")[..8].to_owned()
}

async fn start_backend(spec: &NodeSpec, listen: SocketAddr) -> std::io::Result<BackendDouble> {
    BackendDouble::start_with(
        Flavor::OpenAi,
        Models::new(spec.chat.clone(), spec.embedding.clone()),
        Options {
            behavior: spec.behavior,
            listen,
            ..Options::default()
        },
    )
    .await
}

/// Field order is drop order: the gateway goes first, the directory last.
pub struct Mesh {
    pub gateway: ChildGuard,
    pub nodes: Vec<MeshNode>,
    pub directory: ChildGuard,
    /// `http://127.0.0.1:PORT`.
    pub directory_url: String,
    pub gateway_url: String,
    pub http: reqwest::Client,
    directory_args: Vec<String>,
    restarts: u32,
    pub spec: MeshSpec,
    pub tmp: TempDir,
}

impl Mesh {
    pub async fn start(spec: MeshSpec) -> Mesh {
        let tmp = TempDir::new(&format!("faults-{}", spec.tag));
        let http = http_client(Duration::from_secs(30));

        let mut directory_args: Vec<String> = [
            "directory",
            "--dev",
            "--register-rate-limit",
            "100000",
            "--db",
        ]
        .map(String::from)
        .to_vec();
        directory_args.push(tmp.path().join("directory.db").display().to_string());
        if let Some(ms) = spec.heartbeat_ms {
            directory_args.extend(["--heartbeat-interval-ms".into(), ms.to_string()]);
        }
        let mut args = directory_args.clone();
        args.extend(["--listen".into(), "127.0.0.1:0".into()]);
        let mut directory = spawn_iicp(
            "directory",
            &args,
            tmp.path().join("directory.log"),
            spec.log,
        );
        let line = directory
            .wait_for_line("directory listening", START_BUDGET)
            .await;
        let directory_url = format!("http://{}", word_after(&line, "local_addr="));
        wait_ok(&http, &format!("{directory_url}/iicp/health")).await;

        // Backends first, then every node at once (each registers while the others start).
        let mut started = Vec::new();
        for (i, node) in spec.nodes.iter().enumerate() {
            let backend = start_backend(node, "127.0.0.1:0".parse().unwrap())
                .await
                .expect("backend double starts");
            let state_dir = tmp.path().join(format!("node-{i}"));
            let mut args: Vec<String> = vec![
                "node".into(),
                "--backend".into(),
                backend.url(),
                "--directory".into(),
                directory_url.clone(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--state-dir".into(),
                state_dir.display().to_string(),
            ];
            if let Some(n) = node.max_concurrent {
                args.extend(["--max-concurrent".into(), n.to_string()]);
            }
            let name = format!("node-{i}");
            let proc = spawn_iicp(
                &name,
                &args,
                tmp.path().join(format!("{name}.log")),
                spec.log,
            );
            started.push((proc, backend, state_dir, node.clone()));
        }
        let mut nodes = Vec::new();
        for (mut proc, backend, state_dir, node_spec) in started {
            let line = proc.wait_for_line("node serving on ", START_BUDGET).await;
            let url = word_after(&line, "node serving on ");
            let id = wait_registered(&http, &url).await;
            nodes.push(MeshNode {
                proc,
                url,
                id,
                state_dir,
                backend_addr: backend.addr(),
                backend: Some(backend),
                spec: node_spec,
            });
        }
        // The gateway caches discover answers: start it once every node is listed.
        for intent in [CHAT, EMBEDDING] {
            let ids: Vec<String> = nodes
                .iter()
                .filter(|n| {
                    if intent == CHAT {
                        !n.spec.chat.is_empty()
                    } else {
                        !n.spec.embedding.is_empty()
                    }
                })
                .map(|n| n.id.clone())
                .collect();
            wait_listed(&http, &directory_url, intent, &ids).await;
        }

        let mut args: Vec<String> = vec![
            "gateway".into(),
            "--directory".into(),
            directory_url.clone(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(spec.gateway_args.iter().cloned());
        let mut gateway = spawn_iicp("gateway", &args, tmp.path().join("gateway.log"), spec.log);
        let line = gateway
            .wait_for_line("gateway serving on ", START_BUDGET)
            .await;
        let gateway_url = word_after(&line, "gateway serving on ");
        wait_ok(&http, &format!("{gateway_url}/api/version")).await;

        Mesh {
            gateway,
            nodes,
            directory,
            directory_url,
            gateway_url,
            http,
            directory_args,
            restarts: 0,
            spec,
            tmp,
        }
    }

    /// Every process of the mesh, for liveness checks and log scans.
    pub fn procs_mut(&mut self) -> Vec<&mut ChildGuard> {
        let mut all: Vec<&mut ChildGuard> = vec![&mut self.directory, &mut self.gateway];
        all.extend(self.nodes.iter_mut().map(|n| &mut n.proc));
        all
    }

    /// Panics naming any process of the mesh that is no longer running.
    pub fn assert_all_alive(&mut self) {
        for p in self.procs_mut() {
            let name = p.name().to_owned();
            assert!(p.is_alive(), "{name} died:\n{}", p.log_text());
        }
    }

    /// Every log file written so far (restarted processes included).
    pub fn log_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.tmp.path())
            .expect("temp dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        files.sort();
        files
    }

    /// `kill -9` of the directory.
    pub fn kill_directory(&mut self) {
        self.directory.kill();
    }

    /// A new directory process on the same port and database (the old one is killed first if
    /// it still runs). Returns when the new one answers its health check.
    pub async fn restart_directory(&mut self) {
        self.directory.kill();
        self.restarts += 1;
        let mut args = self.directory_args.clone();
        let addr = self.directory_url.trim_start_matches("http://").to_owned();
        args.extend(["--listen".into(), addr]);
        let log = self
            .tmp
            .path()
            .join(format!("directory-restart-{}.log", self.restarts));
        self.directory = spawn_iicp("directory", &args, log, self.spec.log);
        self.directory
            .wait_for_line("directory listening", START_BUDGET)
            .await;
        wait_ok(&self.http, &format!("{}/iicp/health", self.directory_url)).await;
    }

    pub fn gw(&self, path: &str) -> String {
        format!("{}{path}", self.gateway_url)
    }

    /// POSTs JSON to the gateway.
    pub async fn gw_post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.gw(path))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("gateway {path}: {e}"))
    }

    /// POSTs a CALL to node `i`'s `/v1/task`, as SSE when `stream`.
    pub async fn node_task(&self, i: usize, task: &Value, stream: bool) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}/v1/task", self.nodes[i].url))
            .json(task);
        if stream {
            req = req.header("accept", "text/event-stream");
        }
        req.send()
            .await
            .unwrap_or_else(|e| panic!("node {i} /v1/task: {e}"))
    }

    /// Node `i`'s `/iicp/health`.
    pub async fn node_health(&self, i: usize) -> Value {
        get_json(&self.http, &format!("{}/iicp/health", self.nodes[i].url)).await
    }

    /// Node `i`'s `/metrics`.
    pub async fn node_metrics(&self, i: usize) -> String {
        get_text(&self.http, &format!("{}/metrics", self.nodes[i].url)).await
    }

    /// Node ids listed by discover for `intent`.
    pub async fn discover_ids(&self, intent: &str) -> Result<Vec<String>, String> {
        discover_ids(&self.http, &self.directory_url, intent).await
    }

    /// The index of the node whose id starts with the `x-iicp-node` value `served_by`.
    pub fn node_index(&self, served_by: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| !served_by.is_empty() && n.prefix().starts_with(served_by))
            .unwrap_or_else(|| panic!("no node of the mesh is {served_by:?}"))
    }

    /// The client SDK pointed at this mesh's directory.
    pub fn sdk(&self, tweak: impl FnOnce(&mut iicp_client::ClientConfig)) -> iicp_client::Client {
        let mut config = iicp_client::ClientConfig::new(self.directory_url.parse().unwrap());
        tweak(&mut config);
        iicp_client::Client::new(config)
    }
}

async fn wait_ok(http: &reqwest::Client, url: &str) {
    if let Err(last) = wait_for_ok(http, url, START_BUDGET).await {
        panic!("{url} never answered 200 ({last})");
    }
}

/// Waits until the node reports the id the directory gave it.
async fn wait_registered(http: &reqwest::Client, node: &str) -> String {
    let url = format!("{node}/iicp/health");
    wait_until(Instant::now() + START_BUDGET, || async {
        let health: Value = match http.get(&url).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        health["node_id"].as_str().map(str::to_owned).ok_or(())
    })
    .await
    .unwrap_or_else(|()| panic!("{node} never registered"))
}

pub async fn discover_ids(
    http: &reqwest::Client,
    directory: &str,
    intent: &str,
) -> Result<Vec<String>, String> {
    let r = http
        .get(format!(
            "{directory}/api/v1/discover?intent={intent}&limit=50"
        ))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let v: Value = r.json().await.map_err(|e| e.to_string())?;
    let nodes = v["nodes"]
        .as_array()
        .ok_or_else(|| format!("discover without nodes: {v}"))?;
    Ok(nodes
        .iter()
        .filter_map(|n| n["node_id"].as_str().map(str::to_owned))
        .collect())
}

async fn wait_listed(http: &reqwest::Client, directory: &str, intent: &str, ids: &[String]) {
    wait_until(Instant::now() + START_BUDGET, || async {
        let listed = discover_ids(http, directory, intent)
            .await
            .unwrap_or_default();
        if ids.iter().all(|id| listed.contains(id)) {
            Ok(())
        } else {
            Err(listed)
        }
    })
    .await
    .unwrap_or_else(|listed| panic!("discover never listed {ids:?} for {intent}: {listed:?}"));
}

/// A CALL for the chat intent.
pub fn chat_task(text: &str, qos: &str) -> Value {
    json!({
        "task_id": uuid::Uuid::new_v4(),
        "intent": CHAT,
        "payload": {"messages": [{"role": "user", "content": text}]},
        "constraints": {"timeout_ms": 20_000, "qos": qos},
    })
}

/// A CALL for the embedding intent.
pub fn embedding_task(input: &str) -> Value {
    json!({
        "task_id": uuid::Uuid::new_v4(),
        "intent": EMBEDDING,
        "payload": {"input": input},
        "constraints": {"timeout_ms": 20_000},
    })
}

/// An OpenAI chat request.
pub fn openai_chat(model: &str, text: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]})
}

/// An Ollama chat request (streamed unless told otherwise, as Ollama does).
pub fn ollama_chat(model: &str, text: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]})
}

/// A header as a string ("" when absent).
pub fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// The lines of an NDJSON body.
pub fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Reads a streamed body until `enough` holds for the bytes so far or the body ends (a broken
/// connection ends it too); the text so far, or `Err` with it when `within` passed first.
async fn read_body(
    resp: &mut reqwest::Response,
    within: Duration,
    enough: impl Fn(&[u8]) -> bool,
) -> Result<String, String> {
    let mut buf = Vec::new();
    let deadline = Instant::now() + within;
    while !enough(&buf) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => buf.extend_from_slice(&chunk),
            Ok(Ok(None)) | Ok(Err(_)) => break,
            Err(_) => return Err(String::from_utf8_lossy(&buf).into_owned()),
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Reads a streamed body until its text contains `needle` (or it ends); returns the text so far.
pub async fn read_until(resp: &mut reqwest::Response, needle: &str) -> String {
    let has_needle = |b: &[u8]| String::from_utf8_lossy(b).contains(needle);
    read_body(resp, Duration::from_secs(20), has_needle)
        .await
        .unwrap_or_else(|got| panic!("no {needle:?} within 20 s; got {got:?}"))
}

/// Reads the rest of a streamed body; a connection that breaks just ends it.
pub async fn read_rest(resp: &mut reqwest::Response) -> String {
    read_body(resp, Duration::from_secs(30), |_| false)
        .await
        .unwrap_or_else(|got| panic!("stream did not end within 30 s: {got:?}"))
}

/// The text an OpenAI SSE stream carried (`choices[0].delta.content` of every chunk).
pub fn openai_stream_text(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .filter_map(|e| {
            e.json()
                .pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

/// The text an Ollama chat stream carried.
pub fn ollama_stream_text(lines: &[Value]) -> String {
    lines
        .iter()
        .filter_map(|l| l.pointer("/message/content").and_then(Value::as_str))
        .collect()
}

/// A raw HTTP/1.1 exchange over TCP, for requests a well-behaved client will not send. The
/// request is written on its own thread while the answer is read, so a server that answers
/// before reading the whole body (413) is seen answering. `None` when the server closed the
/// connection without an answer.
pub fn raw_http(addr: &str, request: Vec<u8>) -> Option<RawResponse> {
    exchange(addr, request, false)
}

/// As [`raw_http`], but the client closes its sending side once the request is written (a
/// caller that hangs up, e.g. in the middle of a body it announced as longer).
pub fn raw_http_hanging_up(addr: &str, request: Vec<u8>) -> Option<RawResponse> {
    exchange(addr, request, true)
}

fn exchange(addr: &str, request: Vec<u8>, hang_up: bool) -> Option<RawResponse> {
    let addr: SocketAddr = addr.trim_start_matches("http://").parse().expect("IP:PORT");
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        // A server that refuses early closes its side: writes then fail, which is expected.
        let _ = writer.write_all(&request);
        let _ = writer.flush();
        if hang_up {
            let _ = writer.shutdown(std::net::Shutdown::Write);
        }
    });
    let mut reader = stream;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if RawResponse::parse(&buf).is_some_and(|r| r.complete) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = reader.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    RawResponse::parse(&buf)
}

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    complete: bool,
}

impl RawResponse {
    fn parse(buf: &[u8]) -> Option<RawResponse> {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let raw = &buf[end + 4..];
        let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let (body, complete) = if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            dechunk(raw)
        } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            (raw[..raw.len().min(n)].to_vec(), raw.len() >= n)
        } else {
            (raw.to_vec(), false)
        };
        Some(RawResponse {
            status,
            headers,
            body,
            complete,
        })
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok());
        let Some(size) = size else {
            return (out, false);
        };
        if size == 0 {
            return (out, true);
        }
        let start = eol + 2;
        if raw.len() < start + size + 2 {
            out.extend_from_slice(&raw[start.min(raw.len())..raw.len().min(start + size)]);
            return (out, false);
        }
        out.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
}

/// Seconds since the Unix epoch of an RFC 3339 UTC time (`2025-01-02T03:04:05Z`).
pub fn unix_seconds(rfc3339: &str) -> Option<i64> {
    let (date, time) = rfc3339.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':').map(|p| p.parse::<f64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + (hh as i64) * 3600 + (mm as i64) * 60 + ss as i64)
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// One value of a Prometheus text exposition (`name{labels}` exactly as written), 0 if absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .filter(|rest| rest.starts_with(' '))
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}
