//! Shared fixtures: a node on an ephemeral loopback port in front of a backend double, a real
//! dev-mode directory, task envelopes, and SSE parsing. Everything speaks real HTTP.

#![allow(dead_code)]

use iicp_directory::{Directory, DirectoryConfig, RunningDirectory};
use iicp_node::backend::{AnthropicBackend, OllamaBackend, OpenAiBackend};
use iicp_node::{Backend, Node, NodeConfig, RunningNode};
use iicp_testkit::support::{get_text, wait_until, TempDir};
use iicp_testkit::{BackendDouble, Flavor, Models};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub const CHAT: &str = "urn:iicp:intent:llm:chat:v1";
pub const EMBEDDING: &str = "urn:iicp:intent:llm:embedding:v1";
/// Four words: the doubles echo them, so a 5-token reply is this plus "hello".
pub const PROMPT: &str = "hello world from tests";
pub const REPLY: &str = "hello world from tests hello";
/// 4 prompt words + 5 reply words, as every double counts them.
pub const TOKENS: u64 = 9;

/// A fresh, empty directory under the system temp dir, removed when the guard is dropped
/// (kept, and its path printed, when the test failed).
pub fn temp_dir(tag: &str) -> TempDir {
    TempDir::new(&format!("node-test-{tag}"))
}

/// Chat, vision and embedding models per flavor (Anthropic serves no embeddings).
pub fn models(flavor: Flavor) -> Models {
    match flavor {
        Flavor::OpenAi => Models::new(["tiny-llama", "qwen2-vl-7b"], ["all-minilm"]),
        Flavor::Ollama => Models::new(["llama3.2:latest", "llava:7b"], ["nomic-embed-text:latest"]),
        Flavor::Anthropic => Models::new(
            ["claude-sonnet-4-20250514", "claude-vision-test"],
            std::iter::empty::<String>(),
        ),
    }
}

pub async fn double(flavor: Flavor) -> BackendDouble {
    BackendDouble::start(flavor, models(flavor)).await
}

/// The node adapter speaking `d`'s API.
pub fn backend_for(d: &BackendDouble) -> Backend {
    match d.flavor() {
        Flavor::OpenAi => Backend::OpenAi(OpenAiBackend::new(&d.url(), None)),
        Flavor::Ollama => Backend::Ollama(OllamaBackend::new(&d.url())),
        Flavor::Anthropic => {
            Backend::Anthropic(AnthropicBackend::new(&d.url(), "sk-test-key".into()))
        }
    }
}

/// An answer from the node, JSON-decoded when it is JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    async fn read(resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The spec error code, from an error envelope or a failed RESPONSE.
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<none>")
    }

    pub fn sse(&self) -> Vec<SseEvent> {
        parse_sse(&self.text)
    }
}

pub use iicp_testkit::support::{parse_sse, SseEvent};

/// A CALL for the chat intent.
pub fn chat_task(text: &str) -> Value {
    json!({
        "task_id": Uuid::new_v4(),
        "intent": CHAT,
        "payload": {"messages": [{"role": "user", "content": text}]},
        "constraints": {"timeout_ms": 10_000},
    })
}

/// A CALL for the embedding intent.
pub fn embedding_task(input: Value) -> Value {
    json!({
        "task_id": Uuid::new_v4(),
        "intent": EMBEDDING,
        "payload": {"input": input},
        "constraints": {"timeout_ms": 10_000},
    })
}

/// The same CALL under a fresh task_id.
pub fn renewed(task: &Value) -> Value {
    let mut t = task.clone();
    t["task_id"] = json!(Uuid::new_v4());
    t
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A running node, its base URL and its state directory.
pub struct TestNode {
    pub node: Option<RunningNode>,
    pub base: String,
    pub state_dir: PathBuf,
    pub http: reqwest::Client,
    /// The state directory when [`TestNode::start`] made it: removed with the node (declared
    /// last, so it is dropped after the node).
    tmp: Option<TempDir>,
}

/// The config every test starts from: loopback, ephemeral port, its own state dir.
pub fn node_config(state_dir: &Path) -> NodeConfig {
    NodeConfig::new("127.0.0.1:0".parse().unwrap(), state_dir.to_path_buf())
}

impl TestNode {
    /// A node on a fresh state directory, which lives as long as the returned `TestNode`.
    pub async fn start(backend: Backend, tweak: impl FnOnce(&mut NodeConfig)) -> TestNode {
        let tmp = temp_dir("node");
        let mut node = Self::start_in(tmp.path().to_path_buf(), backend, tweak).await;
        node.tmp = Some(tmp);
        node
    }

    /// A node on `state_dir`, which the caller keeps (e.g. another `TestNode`'s, to restart
    /// on the same state: keep that `TestNode` alive until this one is done).
    pub async fn start_in(
        state_dir: PathBuf,
        backend: Backend,
        tweak: impl FnOnce(&mut NodeConfig),
    ) -> TestNode {
        let mut config = node_config(&state_dir);
        tweak(&mut config);
        let clock = Arc::new(iicp_server::clock::SystemClock);
        let node = Node::start(config, backend, clock)
            .await
            .expect("node starts");
        TestNode {
            base: format!("http://{}", node.local_addr()),
            node: Some(node),
            state_dir,
            http: client(),
            tmp: None,
        }
    }

    /// A node in front of `d` with no directory.
    pub async fn local(d: &BackendDouble) -> TestNode {
        Self::start(backend_for(d), |_| {}).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn node_id(&self) -> Option<String> {
        self.node.as_ref().and_then(RunningNode::node_id)
    }

    pub fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        self.http.post(self.url("/v1/task")).json(body)
    }

    pub async fn task(&self, body: &Value) -> Reply {
        Reply::read(self.post(body).send().await.unwrap()).await
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        Reply::read(req.send().await.unwrap()).await
    }

    pub async fn stream(&self, body: &Value) -> Reply {
        self.send(self.post(body).header("accept", "text/event-stream"))
            .await
    }

    pub async fn health(&self) -> Value {
        let r = self
            .http
            .get(self.url("/iicp/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    pub async fn active_jobs(&self) -> u64 {
        self.health().await["active_jobs"].as_u64().unwrap()
    }

    /// Waits until no slot is held.
    pub async fn wait_idle(&self) {
        eventually(
            "the node to hold no slot",
            Duration::from_secs(5),
            || async { (self.active_jobs().await == 0).then_some(()) },
        )
        .await
    }

    /// Waits for the directory's ACK.
    pub async fn registered_id(&self) -> String {
        eventually("the node to register", Duration::from_secs(5), || async {
            self.node_id()
        })
        .await
    }

    pub async fn shutdown(&mut self) {
        if let Some(n) = self.node.take() {
            n.shutdown().await;
        }
    }
}

/// Polls `f` until it gives a value, failing the test after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_until(Instant::now() + within, || {
        let attempt = f();
        async { attempt.await.ok_or(()) }
    })
    .await
    .unwrap_or_else(|()| panic!("timed out waiting for {what}"))
}

/// A real dev-mode directory on loopback, restartable on the same address.
pub struct TestDirectory {
    pub base: String,
    pub addr: SocketAddr,
    pub db: PathBuf,
    running: Option<RunningDirectory>,
    http: reqwest::Client,
    /// The directory holding `db` when this made it: removed with it (declared last, so it is
    /// dropped after the running directory), carried over by a restart that keeps the db.
    tmp: Option<TempDir>,
}

impl TestDirectory {
    pub async fn start() -> TestDirectory {
        let tmp = temp_dir("dir");
        let db = tmp.path().join("directory.db");
        let mut dir = Self::start_at("127.0.0.1:0".parse().unwrap(), db).await;
        dir.tmp = Some(tmp);
        dir
    }

    /// A directory on `db`, whose folder the caller keeps.
    pub async fn start_at(listen: SocketAddr, db: PathBuf) -> TestDirectory {
        let mut config = DirectoryConfig::new(listen, db.clone());
        config.dev = true;
        config.heartbeat_interval = Duration::from_secs(1);
        let clock = Arc::new(iicp_directory::clock::SystemClock);
        let running = Directory::start(config, clock)
            .await
            .expect("directory starts");
        let addr = running.local_addr();
        TestDirectory {
            base: format!("http://{addr}"),
            addr,
            db,
            running: Some(running),
            http: client(),
            tmp: None,
        }
    }

    pub fn url(&self) -> url::Url {
        url::Url::parse(&self.base).unwrap()
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Stops and starts again on the same address, on the same database or an empty one.
    pub async fn restart(&mut self, keep_db: bool) {
        self.stop().await;
        // The folder of the db in use moves to the restarted directory; a replaced one goes
        // when the old value is dropped.
        let (db, tmp) = if keep_db {
            (self.db.clone(), self.tmp.take())
        } else {
            let tmp = temp_dir("dir-empty");
            (tmp.path().join("directory.db"), Some(tmp))
        };
        let mut restarted = Self::start_at(self.addr, db).await;
        restarted.tmp = tmp;
        *self = restarted;
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: &Value, bearer: Option<&str>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The node record (dispatch view), or `None` when the directory answers 404.
    pub async fn node(&self, id: &str) -> Option<Value> {
        match self.get(&format!("/api/v1/node/{id}")).await {
            (200, v) => Some(v),
            (404, _) => None,
            (s, v) => panic!("GET /api/v1/node/{id}: {s} {v}"),
        }
    }

    /// Node ids discoverable for `intent`.
    pub async fn discover(&self, intent: &str) -> Vec<String> {
        let (status, v) = self.get(&format!("/api/v1/discover?intent={intent}")).await;
        assert_eq!(status, 200, "{v}");
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["node_id"].as_str().map(str::to_owned))
            .collect()
    }

    /// A counter from the directory's Prometheus text (0 when absent).
    pub async fn metric(&self, series: &str) -> u64 {
        let text = get_text(&self.http, &format!("{}/metrics", self.base)).await;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0, |v| v as u64)
    }
}

/// A node registered with `dir`, in front of `d`.
pub async fn registered_node(
    dir: &TestDirectory,
    d: &BackendDouble,
    tweak: impl FnOnce(&mut NodeConfig),
) -> (TestNode, String) {
    let url = dir.url();
    let node = TestNode::start(backend_for(d), |c| {
        c.directory = Some(url);
        tweak(c);
    })
    .await;
    let id = node.registered_id().await;
    (node, id)
}

/// Runs each named `async fn(Flavor)` of the test file against every backend flavor, as the
/// tests `openai::NAME`, `ollama::NAME` and `anthropic::NAME`.
#[allow(unused_macros)]
macro_rules! every_flavor {
    ($($test:ident),* $(,)?) => {
        mod openai {
            $(#[tokio::test]
            async fn $test() {
                super::$test(iicp_testkit::Flavor::OpenAi).await
            })*
        }
        mod ollama {
            $(#[tokio::test]
            async fn $test() {
                super::$test(iicp_testkit::Flavor::Ollama).await
            })*
        }
        mod anthropic {
            $(#[tokio::test]
            async fn $test() {
                super::$test(iicp_testkit::Flavor::Anthropic).await
            })*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use every_flavor;
