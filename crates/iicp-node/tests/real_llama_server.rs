//! The node in front of a real llama.cpp `llama-server` (the tiny model of
//! `../shared/backends`). CI provides the server through `IICP_LLAMA_SERVER` (binary path) and
//! `IICP_LLAMA_MODEL` (GGUF path) and sets `IICP_REQUIRE_REAL_BACKEND=1`, so there the test
//! cannot pass without the real backend; on a machine without one it says so and returns.

use iicp_node::backend::{Backend, OpenAiBackend};
use iicp_node::{Node, NodeConfig};
use iicp_server::clock::SystemClock;
use iicp_testkit::support::{free_port, get_json, wait_for_ok, ChildGuard, TempDir};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

async fn start_llama() -> Option<(ChildGuard, String)> {
    let (Ok(bin), Ok(model)) = (
        std::env::var("IICP_LLAMA_SERVER"),
        std::env::var("IICP_LLAMA_MODEL"),
    ) else {
        assert!(
            std::env::var("IICP_REQUIRE_REAL_BACKEND").is_err(),
            "IICP_REQUIRE_REAL_BACKEND is set but IICP_LLAMA_SERVER / IICP_LLAMA_MODEL are not"
        );
        eprintln!("no llama-server configured (IICP_LLAMA_SERVER); real-backend test not run here");
        return None;
    };
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.args([
        "-m",
        &model,
        "--host",
        "127.0.0.1",
        "-t",
        "1",
        "-np",
        "2",
        "-c",
        "2048",
        "--no-webui",
        "--alias",
        "tiny",
    ])
    .args(["--port", &port.to_string()])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let server = ChildGuard::spawn("llama-server", &mut cmd);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_for_ok(&http, &format!("{base}/health"), Duration::from_secs(60))
        .await
        .expect("llama-server did not become ready");
    Some((server, base))
}

fn task(stream_tokens: u32) -> Value {
    json!({
        "task_id": uuid::Uuid::new_v4().to_string(),
        "intent": "urn:iicp:intent:llm:chat:v1",
        "payload": {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": stream_tokens, "temperature": 0},
        "constraints": {"timeout_ms": 30000}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_llama_server_answers_through_the_node() {
    let Some((_server, base)) = start_llama().await else {
        return;
    };
    // Declared before the node, so it is removed after the node is dropped.
    let state = TempDir::new("real");
    let config = NodeConfig::new("127.0.0.1:0".parse().unwrap(), state.path().to_path_buf());
    let backend = Backend::OpenAi(OpenAiBackend::new(&base, None));
    let node = Node::start(config, backend, Arc::new(SystemClock))
        .await
        .unwrap();
    let url = format!("http://{}", node.local_addr());
    let http = reqwest::Client::new();

    let health = get_json(&http, &format!("{url}/iicp/health")).await;
    assert_eq!(health["models"], json!(["tiny"]));

    let r = http
        .post(format!("{url}/v1/task"))
        .json(&task(8))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "success");
    let text = body["result"]["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    assert!(!text.is_empty());
    assert_eq!(
        body["metrics"]["tokens_used"].as_u64().unwrap(),
        body["result"]["usage"]["total_tokens"].as_u64().unwrap()
    );
    assert_eq!(body["model_used"], "tiny");

    // Streaming: deltas, then a done event whose content is the deltas joined.
    let r = http
        .post(format!("{url}/v1/task"))
        .header("accept", "text/event-stream")
        .json(&task(6))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    let mut joined = String::new();
    let mut done: Option<Value> = None;
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let event = block
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .unwrap();
        let data: Value = serde_json::from_str(
            block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap(),
        )
        .unwrap();
        match event {
            "delta" => joined.push_str(data["content"].as_str().unwrap()),
            "done" => done = Some(data),
            other => panic!("unexpected event {other}: {data}"),
        }
    }
    let done = done.expect("a done event");
    assert!(!joined.is_empty());
    assert_eq!(
        done["result"]["choices"][0]["message"]["content"],
        joined.as_str()
    );
    assert_eq!(done["result"]["usage"]["completion_tokens"], 6);
    node.shutdown().await;
}
