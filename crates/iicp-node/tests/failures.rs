//! Backend failures as callers see them: 502 `backend_error` / 504 `task_timeout` with a failed
//! RESPONSE envelope (never a success carrying an error), and streams that end in
//! `event: error` once committed, or a plain JSON error before the first token.

mod common;

use common::*;
use iicp_testkit::support::get_text;
use iicp_testkit::{Behavior, Failure, Flavor};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A failed RESPONSE envelope for `task` with `code`.
fn assert_failed_response(body: &Value, task: &Value, status: &str, code: &str) {
    assert_eq!(body["task_id"], task["task_id"], "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert!(body["result"].is_null(), "no result in a failure: {body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["metrics"]["latency_ms"].is_u64(), "{body}");
}

/// Every way a backend can fail a plain chat becomes 502 `backend_error`.
async fn backend_failures_are_502_backend_error(flavor: Flavor) {
    let d = double(flavor).await;
    let node = TestNode::local(&d).await;
    let failures = [
        Failure::Status(500),
        Failure::Status(503),
        Failure::Status(529),
        Failure::Status(400),
        Failure::Status(401),
        Failure::Garbage,
        Failure::CutStreamAfter(1),
    ];
    for failure in failures {
        d.set_behavior(Behavior::failing(failure));
        let task = chat_task(PROMPT);
        let r = node.task(&task).await;
        assert_eq!(r.status, 502, "{failure:?}: {}", r.text);
        assert_failed_response(&r.body, &task, "error", "backend_error");
        // Whatever the backend said stays in the node's log.
        assert!(!r.text.contains("Loading model"), "{}", r.text);
    }
    d.set_behavior(Behavior::default());
    let r = node.task(&chat_task(PROMPT)).await;
    assert_eq!(r.status, 200, "the node recovers: {}", r.text);
    node.wait_idle().await;
}

async fn a_hung_backend_is_504_task_timeout_within_timeout_ms(flavor: Flavor) {
    let d = double(flavor).await;
    let node = TestNode::local(&d).await;
    d.set_behavior(Behavior::failing(Failure::Hang));
    let mut task = chat_task(PROMPT);
    task["constraints"]["timeout_ms"] = json!(300);
    let started = Instant::now();
    let r = node.task(&task).await;
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text);
    assert_failed_response(&r.body, &task, "timeout", "task_timeout");
    assert!(took >= Duration::from_millis(290), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // Streaming: the backend never answers, so nothing was committed: plain JSON 504.
    let mut task = chat_task(PROMPT);
    task["constraints"]["timeout_ms"] = json!(300);
    let r = node.stream(&task).await;
    assert_eq!(r.status, 504, "{}", r.text);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    assert_failed_response(&r.body, &task, "timeout", "task_timeout");
    node.wait_idle().await;
}

/// Events the double sends before the first token: OpenAI a role chunk; Anthropic
/// `message_start`, `content_block_start` and `ping`; Ollama none.
fn preamble(flavor: Flavor) -> usize {
    match flavor {
        Flavor::OpenAi => 1,
        Flavor::Ollama => 0,
        Flavor::Anthropic => 3,
    }
}

async fn a_stream_cut_after_the_first_token_ends_with_event_error(flavor: Flavor) {
    let d = double(flavor).await;
    let node = TestNode::local(&d).await;
    d.set_behavior(Behavior::failing(Failure::CutStreamAfter(
        preamble(flavor) + 2,
    )));
    let task = chat_task(PROMPT);
    let r = node.stream(&task).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let events = r.sse();
    let (last, before) = events.split_last().expect("events");
    assert!(!before.is_empty(), "tokens came first: {events:?}");
    assert!(before.iter().all(|e| e.event == "delta"), "{events:?}");
    assert!(events.iter().all(|e| e.event != "done"), "{events:?}");
    assert_eq!(last.event, "error", "{events:?}");
    assert_failed_response(&last.json(), &task, "error", "backend_error");
    node.wait_idle().await;
}

async fn a_stream_failing_before_the_first_token_is_plain_json_502(flavor: Flavor) {
    let d = double(flavor).await;
    let node = TestNode::local(&d).await;
    let failures = [
        Failure::Status(500),
        Failure::Status(429),
        Failure::Garbage,
        // Headers sent, then the connection dropped before any event.
        Failure::CutStreamAfter(preamble(flavor)),
    ];
    for failure in failures {
        d.set_behavior(Behavior::failing(failure));
        let task = chat_task(PROMPT);
        let r = node.stream(&task).await;
        assert_eq!(r.status, 502, "{failure:?}: {}", r.text);
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("application/json"),
            "{failure:?}: {:?}",
            r.headers
        );
        assert_failed_response(&r.body, &task, "error", "backend_error");
    }
    node.wait_idle().await;
}

every_flavor! {
    backend_failures_are_502_backend_error,
    a_hung_backend_is_504_task_timeout_within_timeout_ms,
    a_stream_cut_after_the_first_token_ends_with_event_error,
    a_stream_failing_before_the_first_token_is_plain_json_502,
}

#[tokio::test]
async fn an_embedding_backend_failure_is_502_backend_error() {
    let d = double(Flavor::OpenAi).await;
    let node = TestNode::local(&d).await;
    d.set_behavior(Behavior::failing(Failure::Status(500)));
    let task = embedding_task(json!("alpha"));
    let r = node.task(&task).await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert_failed_response(&r.body, &task, "error", "backend_error");
}

#[tokio::test]
async fn a_backend_that_went_away_is_502_and_the_node_stays_up() {
    let d = double(Flavor::Ollama).await;
    let node = TestNode::local(&d).await;
    d.kill();
    let task = chat_task(PROMPT);
    let r = node.task(&task).await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert_failed_response(&r.body, &task, "error", "backend_error");
    assert_eq!(node.active_jobs().await, 0);
}

#[tokio::test]
async fn a_stream_that_outlives_timeout_ms_ends_with_a_timeout_event() {
    let d = double(Flavor::OpenAi).await;
    let node = TestNode::local(&d).await;
    d.set_behavior(Behavior {
        token_delay: Duration::from_millis(150),
        tokens: 50,
        ..Behavior::default()
    });
    let mut task = chat_task(PROMPT);
    task["constraints"]["timeout_ms"] = json!(600);
    let started = Instant::now();
    let r = node.stream(&task).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let events = r.sse();
    let (last, before) = events.split_last().unwrap();
    assert!(
        !before.is_empty() && before.iter().all(|e| e.event == "delta"),
        "{events:?}"
    );
    assert_eq!(last.event, "error", "{events:?}");
    assert_failed_response(&last.json(), &task, "timeout", "task_timeout");
    node.wait_idle().await;
}

#[tokio::test]
async fn outcomes_are_counted_in_the_node_metrics() {
    let d = double(Flavor::OpenAi).await;
    let node = TestNode::local(&d).await;
    assert_eq!(node.task(&chat_task(PROMPT)).await.status, 200);
    d.set_behavior(Behavior::failing(Failure::Status(500)));
    assert_eq!(node.task(&chat_task(PROMPT)).await.status, 502);
    d.set_behavior(Behavior::failing(Failure::Hang));
    let mut task = chat_task(PROMPT);
    task["constraints"]["timeout_ms"] = json!(150);
    assert_eq!(node.task(&task).await.status, 504);
    let text = get_text(&node.http, &node.url("/metrics")).await;
    for status in ["success", "error", "timeout"] {
        let series = format!(
            "iicp_tasks_total{{status=\"{status}\",intent=\"{CHAT}\",qos=\"interactive\"}} 1"
        );
        assert!(text.contains(&series), "{series} in\n{text}");
    }
    let tokens = format!("iicp_tokens_used_total{{intent=\"{CHAT}\"}} {TOKENS}");
    assert!(text.contains(&tokens), "{tokens} in\n{text}");
}
