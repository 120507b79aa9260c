//! What reaches the log. Alone in its own test binary: tracing caches per-callsite interest
//! process-wide, so a capturing subscriber must not share the process with other tests.

mod common;

use common::TestDirectory;
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_credential_or_payload_reaches_the_log() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let d = TestDirectory::dev().await;
    let (id, token, ack) = d.register(&d.register_body()).await;
    let mut refresh = d.register_body();
    refresh["node_id"] = json!(id);
    refresh["current_node_token"] = json!(token);
    let (_, new_token, _) = d.register(&refresh).await;
    d.heartbeat(&id, &new_token, json!({})).await;
    d.post(
        "/api/v1/dispatch/ticket",
        &json!({"intent": common::CHAT, "prompt": "user-secret-words"}),
        None,
    )
    .await;

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains(&id), "the log is captured: {log}");
    let secrets: Vec<&str> = vec![
        &token,
        &new_token,
        ack["node_hmac_key"].as_str().unwrap(),
        ack["proxy_token"].as_str().unwrap(),
        "user-secret-words",
    ];
    for secret in secrets {
        assert!(!log.contains(secret), "secret in log");
    }
}
