//! A real mesh on loopback: a dev-mode directory, nodes in front of OpenAI-compatible backend
//! doubles (registered with the directory), and the gateway on an ephemeral port.

#![allow(dead_code)]

use iicp_directory::clock::SystemClock;
use iicp_directory::{Directory, DirectoryConfig, RunningDirectory};
use iicp_gateway::{Gateway, GatewayConfig, RunningGateway};
use iicp_node::backend::OpenAiBackend;
use iicp_node::{Backend, Node, NodeConfig, RunningNode};
use iicp_testkit::support::{get_json, wait_until, TempDir};
use iicp_testkit::{BackendDouble, Flavor, Models};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const CHAT: &str = "urn:iicp:intent:llm:chat:v1";
pub const EMBEDDING: &str = "urn:iicp:intent:llm:embedding:v1";
pub const CHAT_MODEL: &str = "tiny-chat";
pub const EMBED_MODEL: &str = "tiny-embed";

pub struct TestNode {
    pub node: Option<RunningNode>,
    pub backend: Option<BackendDouble>,
    /// The id the directory gave.
    pub id: String,
}

pub struct Mesh {
    directory: Option<RunningDirectory>,
    pub directory_url: String,
    pub nodes: Vec<TestNode>,
    gateway: Option<RunningGateway>,
    /// `http://127.0.0.1:PORT` of the gateway.
    pub base: String,
    pub http: reqwest::Client,
    /// Removed when the mesh is dropped (kept when the test failed); declared last, so after
    /// the directory and nodes.
    tmp: TempDir,
}

async fn start_node(directory_url: &str, tmp: &Path, i: usize) -> TestNode {
    let backend =
        BackendDouble::start(Flavor::OpenAi, Models::new([CHAT_MODEL], [EMBED_MODEL])).await;
    let mut config = NodeConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        tmp.join(format!("node-{i}")),
    );
    config.directory = Some(directory_url.parse().unwrap());
    let node = Node::start(
        config,
        Backend::OpenAi(OpenAiBackend::new(&backend.url(), None)),
        Arc::new(SystemClock),
    )
    .await
    .expect("node starts");
    let deadline = Instant::now() + Duration::from_secs(15);
    let id = wait_until(deadline, || std::future::ready(node.node_id().ok_or(())))
        .await
        .unwrap_or_else(|()| panic!("node {i} never registered"));
    TestNode {
        node: Some(node),
        backend: Some(backend),
        id,
    }
}

impl Mesh {
    /// A directory, `nodes` nodes, and a gateway.
    pub async fn start(nodes: usize) -> Mesh {
        Self::start_with(nodes, |_| {}).await
    }

    pub async fn start_with(nodes: usize, tweak: impl FnOnce(&mut GatewayConfig)) -> Mesh {
        let tmp = TempDir::new("gateway-test");
        let mut dc = DirectoryConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            tmp.path().join("directory.db"),
        );
        dc.dev = true;
        let directory = Directory::start(dc, Arc::new(SystemClock))
            .await
            .expect("directory starts");
        let directory_url = format!("http://{}", directory.local_addr());
        let mut started = Vec::new();
        for i in 0..nodes {
            started.push(start_node(&directory_url, tmp.path(), i).await);
        }
        let http = reqwest::Client::new();
        // The gateway's client caches discover answers: start it once every node is listed.
        for intent in [CHAT, EMBEDDING] {
            wait_listed(&http, &directory_url, intent, nodes).await;
        }
        let mut gc = GatewayConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            directory_url.parse().unwrap(),
        );
        gc.client.seed = Some(7);
        tweak(&mut gc);
        let gateway = Gateway::start(gc).await.expect("gateway starts");
        Mesh {
            directory: Some(directory),
            directory_url,
            nodes: started,
            base: format!("http://{}", gateway.local_addr()),
            gateway: Some(gateway),
            http,
            tmp,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// The last request body the backend of node `i` received.
    pub fn backend_body(&self, i: usize) -> Value {
        self.nodes[i]
            .backend
            .as_ref()
            .unwrap()
            .last_body()
            .unwrap_or_default()
    }

    /// Stops node `i` (it deregisters), keeping its backend.
    pub async fn stop_node(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].node.take() {
            n.shutdown().await;
        }
    }

    /// Kills the backend of node `i` (the node stays registered).
    pub fn kill_backend(&mut self, i: usize) {
        if let Some(b) = self.nodes[i].backend.take() {
            b.kill();
        }
    }

    pub async fn stop(mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown().await;
        }
        for i in 0..self.nodes.len() {
            self.stop_node(i).await;
        }
        if let Some(d) = self.directory.take() {
            d.shutdown().await;
        }
        // `self.tmp` goes with `self`, here.
    }
}

async fn wait_listed(http: &reqwest::Client, directory: &str, intent: &str, n: usize) {
    let url = format!("{directory}/api/v1/discover?intent={intent}");
    wait_until(Instant::now() + Duration::from_secs(15), || async {
        let body = get_json(http, &url).await;
        if body["count"].as_u64() == Some(n as u64) {
            Ok(())
        } else {
            Err(body)
        }
    })
    .await
    .unwrap_or_else(|body| panic!("discover never listed {n} nodes for {intent}: {body}"));
}

/// A header as a string ("" when absent).
pub fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The JSON `data:` payloads of an SSE body, and whether it ended with `[DONE]`.
pub fn sse_events(text: &str) -> (Vec<Value>, bool) {
    let mut events = Vec::new();
    let mut done = false;
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let data = block
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("\n");
        if data == "[DONE]" {
            done = true;
        } else {
            events.push(serde_json::from_str(&data).expect("each event is JSON"));
        }
    }
    (events, done)
}

/// The lines of an NDJSON body.
pub fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}
