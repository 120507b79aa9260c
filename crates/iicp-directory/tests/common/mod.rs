//! A directory on an ephemeral loopback port, with a health responder for dial-backs.

#![allow(dead_code)]

use iicp_directory::clock::ManualClock;
use iicp_directory::{Directory, DirectoryConfig};
use iicp_testkit::support::TempDir;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub const CHAT: &str = "urn:iicp:intent:llm:chat:v1";

pub struct TestDirectory {
    pub base: String,
    pub clock: ManualClock,
    pub health: SocketAddr,
    pub http: reqwest::Client,
    pub dir: PathBuf,
    running: Option<iicp_directory::RunningDirectory>,
    /// `dir` when [`TestDirectory::start`] made it: removed with the directory (declared last,
    /// so it is dropped after the running directory).
    tmp: Option<TempDir>,
}

/// Serves `GET /iicp/health` like a node does.
pub async fn health_responder() -> SocketAddr {
    let (addr, stop) = stoppable_health_responder().await;
    std::mem::forget(stop);
    addr
}

/// A health responder that goes away when the sender is used or dropped.
pub async fn stoppable_health_responder() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/iicp/health",
        axum::routing::get(|| async {
            axum::Json(json!({"status": "ok", "load": 0, "active_jobs": 0, "models": ["m"]}))
        }),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    (addr, stop)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl TestDirectory {
    /// A dev-mode directory (loopback node endpoints allowed).
    pub async fn dev() -> TestDirectory {
        Self::start(true, |_| {}).await
    }

    pub async fn start(dev: bool, tweak: impl FnOnce(&mut DirectoryConfig)) -> TestDirectory {
        let tmp = TempDir::new("dir-test");
        let mut d = Self::start_in(tmp.path().to_path_buf(), dev, tweak).await;
        d.tmp = Some(tmp);
        d
    }

    /// A directory on `dir`, which the caller keeps (e.g. another `TestDirectory`'s, to
    /// restart on the same state: keep that one alive until this one is done).
    pub async fn start_in(
        dir: PathBuf,
        dev: bool,
        tweak: impl FnOnce(&mut DirectoryConfig),
    ) -> TestDirectory {
        let mut config =
            DirectoryConfig::new("127.0.0.1:0".parse().unwrap(), dir.join("directory.db"));
        config.dev = dev;
        tweak(&mut config);
        let clock = ManualClock::at(now_ms());
        let running = Directory::start(config, Arc::new(clock.clone()))
            .await
            .unwrap();
        TestDirectory {
            base: format!("http://{}", running.local_addr()),
            clock,
            health: health_responder().await,
            http: reqwest::Client::new(),
            dir,
            running: Some(running),
            tmp: None,
        }
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn node_endpoint(&self) -> String {
        format!("http://{}", self.health)
    }

    pub fn register_body(&self) -> Value {
        json!({
            "endpoint": self.node_endpoint(),
            "region": "eu-central",
            "capabilities": [{"intent": CHAT, "models": ["m"], "max_tokens": 4096}],
            "limits": {"max_concurrent": 4, "tokens_per_min": 1000}
        })
    }

    pub async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        read(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    /// Registers `body`, expecting 201; returns (node_id, node_token, ack).
    pub async fn register(&self, body: &Value) -> (String, String, Value) {
        let (status, ack) = self.post("/api/v1/register", body, None).await;
        assert_eq!(status, 201, "{ack}");
        (
            ack["node_id"].as_str().unwrap().to_owned(),
            ack["node_token"].as_str().unwrap().to_owned(),
            ack,
        )
    }

    pub async fn heartbeat(&self, node_id: &str, token: &str, extra: Value) -> (u16, Value) {
        let mut body = json!({ "node_id": node_id });
        if let Value::Object(map) = extra {
            for (k, v) in map {
                body[k] = v;
            }
        }
        self.post("/api/v1/heartbeat", &body, Some(token)).await
    }

    pub async fn discover(&self, query: &str) -> (u16, Value) {
        self.get(&format!("/api/v1/discover?{query}")).await
    }
}

pub async fn read(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Asserts the spec error envelope with `code`.
pub fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}
