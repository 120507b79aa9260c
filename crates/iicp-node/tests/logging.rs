//! Nothing a caller sends reaches the logs: a canary string travels through every path (chat,
//! stream, embedding, sealed payload, backend failures, refusals) with logging at TRACE, and
//! never shows up. Credentials do not either.
//!
//! Alone in its binary: the subscriber is process-wide and tracing caches callsite interest.

mod common;

use common::*;
use iicp_proto::control::CxPublicKey;
use iicp_testkit::{Behavior, Failure, Flavor};
use parking_lot::Mutex;
use serde_json::json;
use std::io::Write;
use std::sync::Arc;
use uuid::Uuid;

const CANARY: &str = "canary-7f3a9c";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }
}

fn secret_task(intent: &str) -> serde_json::Value {
    if intent == EMBEDDING {
        return embedding_task(json!([format!("embed {CANARY}"), CANARY]));
    }
    let mut t = chat_task(&format!("please repeat {CANARY} twice"));
    t["payload"]["messages"].as_array_mut().unwrap().insert(
        0,
        json!({"role": "system", "content": format!("system {CANARY}")}),
    );
    t["payload"]["tools"] = json!([{"type": "function",
        "function": {"name": "lookup", "description": CANARY}}]);
    t["payload"]["user"] = json!(CANARY);
    t["nonce"] = json!(format!("nonce-{}", Uuid::new_v4()));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_in_a_task_never_reaches_the_logs() {
    let logs = Captured::default();
    let sink = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .try_init()
        .expect("the only subscriber in this binary");

    let dir = TestDirectory::start().await;
    let openai = double(Flavor::OpenAi).await;
    let anthropic = double(Flavor::Anthropic).await;
    let (node, id) = registered_node(&dir, &openai, |_| {}).await;
    let claude = TestNode::local(&anthropic).await;

    for n in [&node, &claude] {
        let r = n.task(&secret_task(CHAT)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let r = n.stream(&secret_task(CHAT)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.text.contains("event: done"), "{}", r.text);
    }
    let r = node.task(&secret_task(EMBEDDING)).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // A sealed payload.
    let key: CxPublicKey =
        serde_json::from_value(dir.node(&id).await.unwrap()["cx_public_key"].clone()).unwrap();
    let task_id = Uuid::new_v4();
    let mut eph = [0u8; 32];
    let mut nonce = [0u8; 12];
    getrandom::getrandom(&mut eph).unwrap();
    getrandom::getrandom(&mut nonce).unwrap();
    let payload = secret_task(CHAT)["payload"].clone();
    let sealed =
        iicp_proto::cx::seal(&key, &task_id.to_string(), CHAT, &payload, eph, nonce).unwrap();
    let sealed_task = json!({"task_id": task_id, "intent": CHAT, "iicp_conf": sealed.conf,
        "cx_response_encryption": "required", "constraints": {"timeout_ms": 5000}});
    assert_eq!(node.task(&sealed_task).await.status, 200);

    // Refusals: replay, tool gate, unserved model, bad payload.
    let task = secret_task(CHAT);
    assert_eq!(node.task(&task).await.status, 200);
    assert_eq!(node.task(&task).await.status, 409);
    let mut cip = secret_task(CHAT);
    cip["constraints"]["cip"] = json!({});
    assert_eq!(node.task(&cip).await.status, 403);
    let mut unserved = secret_task(CHAT);
    unserved["payload"]["model"] = json!(CANARY);
    assert_eq!(node.task(&unserved).await.status, 404);
    let mut bad = secret_task(CHAT);
    bad["payload"]["temperature"] = json!(CANARY);
    assert_eq!(node.task(&bad).await.status, 422);

    // Backend failures, plain and mid-stream.
    for failure in [Failure::Status(500), Failure::Garbage] {
        openai.set_behavior(Behavior::failing(failure));
        assert_eq!(node.task(&secret_task(CHAT)).await.status, 502);
    }
    openai.set_behavior(Behavior::failing(Failure::CutStreamAfter(3)));
    let r = node.stream(&secret_task(CHAT)).await;
    assert!(r.text.contains("event: error"), "{}", r.text);
    openai.set_behavior(Behavior::failing(Failure::Hang));
    let mut slow = secret_task(CHAT);
    slow["constraints"]["timeout_ms"] = json!(200);
    assert_eq!(node.task(&slow).await.status, 504);
    openai.set_behavior(Behavior::default());

    let mut node = node;
    node.shutdown().await;

    let text = logs.text();
    // The logs were really captured, failure paths included.
    assert!(text.contains("node listening"), "{text}");
    assert!(text.contains("registered"), "{text}");
    assert!(text.contains("backend call failed"), "{text}");
    assert!(text.contains("deregistered"), "{text}");
    assert!(
        text.contains("TRACE") || text.contains("DEBUG"),
        "verbose levels on"
    );
    assert!(!text.contains(CANARY), "the canary leaked into the logs");
    assert!(!text.contains("sk-test-key"), "the backend API key leaked");
    let identity = std::fs::read_to_string(node.state_dir.join("node-identity.json")).unwrap();
    let identity: serde_json::Value = serde_json::from_str(&identity).unwrap();
    for secret in ["node_token", "node_hmac_key"] {
        let s = identity[secret].as_str().unwrap();
        assert!(s.len() >= 16);
        assert!(!text.contains(s), "the {secret} leaked into the logs");
    }
}
