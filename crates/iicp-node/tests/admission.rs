//! Admission as callers see it: envelope validation (422 with spec codes and field paths),
//! intents, credentials, replay guards, the CIP tool gate, and the concurrency gate under
//! overload (429 with hints, no queue growth, slots released on every path).

mod common;

use common::*;
use iicp_node::AuthMode;
use iicp_testkit::{Behavior, Flavor};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

fn problem_paths(body: &Value) -> Vec<(String, String)> {
    body["error"]["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems in {body}"))
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_owned(),
                p["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn has_problem(body: &Value, path: &str, code: &str) -> bool {
    problem_paths(body)
        .iter()
        .any(|(p, c)| p == path && c == code)
}

#[tokio::test]
async fn malformed_envelopes_are_422_with_spec_codes_and_field_paths() {
    let d = double(Flavor::OpenAi).await;
    let node = TestNode::local(&d).await;

    let r = node
        .task(&json!({
            "task_id": "nope",
            "intent": "urn:iicp:intent:llm:chat:v1",
            "payload": {"messages": [{"role": "user", "content": "hi"}]},
            "constraints": {"timeout_ms": 10, "qos": "urgent"},
        }))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.error_code(), "validation_error");
    assert!(
        has_problem(&r.body, "$.task_id", "validation_error"),
        "{}",
        r.text
    );
    assert!(
        has_problem(&r.body, "$.constraints.timeout_ms", "validation_error"),
        "{}",
        r.text
    );
    assert!(
        has_problem(&r.body, "$.constraints.qos", "validation_error"),
        "{}",
        r.text
    );

    // An intent modifier is the spec's own code.
    let mut task = chat_task(PROMPT);
    task["intent"] = json!("urn:iicp:intent:llm:chat:v1+fast");
    let r = node.task(&task).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.error_code(), "IICP-E028");
    assert!(has_problem(&r.body, "$.intent", "IICP-E028"), "{}", r.text);

    // The payload is checked against the intent's schema, with paths into it.
    let mut task = chat_task(PROMPT);
    task["payload"] = json!({"messages": [{"role": "wizard", "content": "hi"}], "temperature": 7});
    let r = node.task(&task).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        has_problem(&r.body, "$.payload.messages[0].role", "validation_error"),
        "{}",
        r.text
    );
    assert!(
        has_problem(&r.body, "$.payload.temperature", "validation_error"),
        "{}",
        r.text
    );

    // Missing pieces.
    let r = node
        .task(&json!({"task_id": Uuid::new_v4(), "intent": CHAT}))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        has_problem(&r.body, "$.payload", "validation_error"),
        "{}",
        r.text
    );
    assert!(
        has_problem(&r.body, "$.constraints", "validation_error"),
        "{}",
        r.text
    );

    // Not JSON at all: 400 with where parsing stopped.
    let req = node
        .http
        .post(node.url("/v1/task"))
        .header("content-type", "application/json")
        .body("{\"task_id\": ");
    let r = node.send(req).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), "bad_request");
    assert!(r.body["error"]["line"].is_u64(), "{}", r.text);
    assert!(r.body["error"]["column"].is_u64(), "{}", r.text);

    assert_eq!(
        d.requests(),
        1,
        "only the startup model list reached the backend"
    );
}

#[tokio::test]
async fn an_intent_the_node_does_not_serve_is_422_unknown_intent() {
    let d = double(Flavor::OpenAi).await;
    let node = TestNode::local(&d).await;
    let task = json!({
        "task_id": Uuid::new_v4(),
        "intent": "urn:iicp:intent:llm:summarize:v1",
        "payload": {"text": "a long text"},
        "constraints": {"timeout_ms": 5000},
    });
    let r = node.task(&task).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.error_code(), "unknown_intent");
    assert_eq!(r.body["task_id"], task["task_id"]);

    let mut task = renewed(&task);
    task["intent"] = json!("urn:iicp:intent:x.acme:echo:v1");
    task["payload"] = json!({"anything": true});
    let r = node.task(&task).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.error_code(), "unknown_intent");
}

#[tokio::test]
async fn token_mode_needs_the_node_token() {
    let d = double(Flavor::OpenAi).await;
    let node = TestNode::start(backend_for(&d), |c| {
        c.auth = AuthMode::Token;
        c.local_token = Some("local-operator-token".into());
    })
    .await;

    let r = node.task(&chat_task(PROMPT)).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.error_code(), "unauthorized");

    let r = node
        .send(
            node.post(&chat_task(PROMPT))
                .bearer_auth("local-operator-token"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let mut task = chat_task(PROMPT);
    task["auth"] = json!({"node_token": "local-operator-token"});
    let r = node.task(&task).await;
    assert_eq!(r.status, 200, "{}", r.text);

    for wrong in ["local-operator-tokeN", "x", "local-operator-token-and-more"] {
        let r = node
            .send(node.post(&chat_task(PROMPT)).bearer_auth(wrong))
            .await;
        assert_eq!(r.status, 401, "{wrong}: {}", r.text);
        assert_eq!(r.error_code(), "unauthorized");
    }
    let r = node
        .send(
            node.post(&chat_task(PROMPT))
                .header("x-iicp-consumer-token", "not-a-token"),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
}

#[tokio::test]
async fn token_mode_without_any_token_refuses_to_start() {
    let d = double(Flavor::OpenAi).await;
    let dir = temp_dir("no-token");
    let mut config = node_config(dir.path());
    config.auth = AuthMode::Token;
    let started = iicp_node::Node::start(
        config,
        backend_for(&d),
        std::sync::Arc::new(iicp_server::clock::SystemClock),
    )
    .await;
    assert!(matches!(
        started,
        Err(iicp_node::StartError::TokenModeWithoutToken)
    ));
}

#[tokio::test]
async fn open_mode_refuses_a_wrong_credential() {
    let d = double(Flavor::OpenAi).await;
    let node = TestNode::local(&d).await;
    let r = node.task(&chat_task(PROMPT)).await;
    assert_eq!(
        r.status, 200,
        "no credential is fine in open mode: {}",
        r.text
    );

    let r = node
        .send(node.post(&chat_task(PROMPT)).bearer_auth("guessed-token"))
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    let mut task = chat_task(PROMPT);
    task["auth"] = json!({"node_token": "guessed-token"});
    let r = node.task(&task).await;
    assert_eq!(r.status, 401, "{}", r.text);
    let r = node
        .send(
            node.post(&chat_task(PROMPT))
                .header("x-iicp-consumer-token", "eyJhbGciOi.bogus.sig"),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
}

#[tokio::test]
async fn token_mode_accepts_a_directory_signed_consumer_token() {
    let d = double(Flavor::OpenAi).await;
    let dir = TestDirectory::start().await;
    let (node, node_id) = registered_node(&dir, &d, |c| c.auth = AuthMode::Token).await;

    // A caller is itself a registered node; it asks the directory for a token to this node.
    let (status, ack) = dir
        .post(
            "/api/v1/register",
            &json!({
                "endpoint": node.base,
                "region": "local",
                "capabilities": [{"intent": CHAT, "models": ["m"], "max_tokens": 4096}],
                "limits": {"max_concurrent": 1, "tokens_per_min": 1000},
            }),
            None,
        )
        .await;
    assert_eq!(status, 201, "{ack}");
    let caller_token = ack["node_token"].as_str().unwrap();
    let consumer_token = |intent: &'static str| {
        let dir = &dir;
        let node_id = node_id.clone();
        async move {
            let (status, v) = dir
                .post(
                    "/api/v1/consumer-token",
                    &json!({"target_node_id": node_id, "intent": intent}),
                    Some(caller_token),
                )
                .await;
            assert_eq!(status, 201, "{v}");
            v["token"].as_str().unwrap().to_owned()
        }
    };
    let chat_token = consumer_token(CHAT).await;

    let r = node.task(&chat_task(PROMPT)).await;
    assert_eq!(r.status, 401, "no credential in token mode: {}", r.text);

    // The node fetches the directory key right after its ACK.
    let node = &node;
    let r = eventually(
        "the consumer token to be accepted",
        Duration::from_secs(5),
        || {
            let req = node
                .post(&chat_task(PROMPT))
                .header("x-iicp-consumer-token", chat_token.clone());
            async move { Some(node.send(req).await).filter(|r| r.status != 401) }
        },
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "success");

    // A token for another intent does not open this one.
    let embed_token = consumer_token(EMBEDDING).await;
    let r = node
        .send(
            node.post(&chat_task(PROMPT))
                .header("x-iicp-consumer-token", embed_token),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    // A tampered token is refused.
    // A digit well inside the signature, swapped for another digit: the last character may
    // carry only padding bits, and hex letters decode the same in either case.
    let mut chars: Vec<char> = chat_token.chars().collect();
    let at = chars.len() - 10;
    chars[at] = if chars[at] == '0' { '1' } else { '0' };
    let tampered: String = chars.into_iter().collect();
    let r = node
        .send(
            node.post(&chat_task(PROMPT))
                .header("x-iicp-consumer-token", tampered),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
}

#[tokio::test]
async fn a_repeated_task_id_is_409_conflict() {
    let d = double(Flavor::OpenAi).await;
    let node = TestNode::local(&d).await;
    let task = chat_task(PROMPT);
    let r = node.task(&task).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let before = d.requests();
    let r = node.task(&task).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.error_code(), "conflict");
    assert_eq!(r.body["task_id"], task["task_id"]);
    // Also when streamed, and with another payload under the same id.
    let r = node.stream(&task).await;
    assert_eq!(r.status, 409, "{}", r.text);
    let mut other = chat_task("something else");
    other["task_id"] = task["task_id"].clone();
    let r = node.task(&other).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(d.requests(), before, "a replay never reaches the backend");
}

#[tokio::test]
async fn concurrent_copies_of_a_task_run_once() {
    let d = double(Flavor::OpenAi).await;
    let node = TestNode::start(backend_for(&d), |c| c.max_concurrent = 4).await;
    d.set_behavior(Behavior {
        delay: Duration::from_millis(300),
        ..Behavior::default()
    });
    let before = d.requests();
    let task = chat_task(PROMPT);
    let copies: Vec<_> = (0..3)
        .map(|_| {
            let req = node.post(&task);
            tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for c in copies {
        statuses.push(c.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 409, 409]);
    assert_eq!(d.requests(), before + 1, "the backend ran it once");
}

#[tokio::test]
async fn a_replayed_nonce_is_409_conflict() {
    let d = double(Flavor::OpenAi).await;
    let node = TestNode::local(&d).await;
    let mut task = chat_task(PROMPT);
    task["nonce"] = json!("nonce-5b1e");
    let r = node.task(&task).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = node.task(&renewed(&task)).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.error_code(), "conflict");
    let mut fresh = renewed(&task);
    fresh["nonce"] = json!("nonce-other");
    let r = node.task(&fresh).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

fn with_qos(qos: &str) -> Value {
    let mut t = chat_task(PROMPT);
    t["constraints"]["qos"] = json!(qos);
    t
}

fn assert_capacity_refusal(r: &Reply, qos: &str) {
    assert_eq!(r.status, 429, "{qos}: {}", r.text);
    assert_eq!(r.error_code(), "capacity_exceeded");
    assert_eq!(r.body["error"]["qos_class"], qos, "{}", r.text);
    let retry_ms = r.body["error"]["retry_after_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("retry_after_ms: {}", r.text));
    assert!((100..=30_000).contains(&retry_ms), "{retry_ms}");
    let header: u64 = r
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .unwrap();
    assert_eq!(header, retry_ms.div_ceil(1000).max(1));
}

#[tokio::test]
async fn overload_is_refused_with_429_and_never_queues_past_max_concurrent() {
    let d = double(Flavor::OpenAi).await;
    let node = TestNode::start(backend_for(&d), |c| {
        c.max_concurrent = 2;
        c.interactive_wait = Duration::from_millis(300);
    })
    .await;
    d.set_behavior(Behavior {
        delay: Duration::from_millis(2500),
        ..Behavior::default()
    });
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let req = node.post(&chat_task(PROMPT));
            tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
        })
        .collect();
    eventually("both slots to be taken", Duration::from_secs(2), || async {
        (node.active_jobs().await == 2).then_some(())
    })
    .await;

    // Batch and best-effort may not wait: refused at once.
    let batch = with_qos("batch");
    let started = Instant::now();
    let r = node.task(&batch).await;
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_capacity_refusal(&r, "batch");
    assert_eq!(r.body["task_id"], batch["task_id"]);
    let r = node.task(&with_qos("best-effort")).await;
    assert_capacity_refusal(&r, "best-effort");

    // Interactive waits its bound, then is refused.
    let started = Instant::now();
    let r = node.task(&with_qos("interactive")).await;
    let waited = started.elapsed();
    assert_capacity_refusal(&r, "interactive");
    assert!(waited >= Duration::from_millis(280), "{waited:?}");
    assert!(waited < Duration::from_millis(1500), "{waited:?}");

    // A burst of interactive callers: every one refused within the bound, none queued for long.
    let started = Instant::now();
    let burst: Vec<_> = (0..8)
        .map(|_| {
            let req = node.post(&with_qos("realtime"));
            tokio::spawn(async move {
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap();
                (status, body)
            })
        })
        .collect();
    for h in burst {
        let (status, body) = h.await.unwrap();
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["error"]["qos_class"], "realtime");
    }
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(node.active_jobs().await, 2);

    for h in slow {
        assert_eq!(h.await.unwrap(), 200);
    }
    assert_eq!(
        d.in_flight_max(),
        2,
        "the backend never saw more than max_concurrent"
    );
    node.wait_idle().await;

    // A refused task never ran: retrying it with the same task_id, as Retry-After invites, works.
    d.set_behavior(Behavior::default());
    let r = node.task(&batch).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["task_id"], batch["task_id"]);
}

#[tokio::test]
async fn waiting_callers_get_freed_slots_by_priority() {
    let d = double(Flavor::OpenAi).await;
    let node = TestNode::start(backend_for(&d), |c| {
        c.max_concurrent = 1;
        c.interactive_wait = Duration::from_secs(5);
    })
    .await;
    d.set_behavior(Behavior {
        delay: Duration::from_millis(400),
        ..Behavior::default()
    });
    let send = |text: &str, priority: &str| {
        let mut t = chat_task(text);
        t["constraints"]["priority"] = json!(priority);
        let req = node.post(&t);
        tokio::spawn(async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    let holder = send("holder", "normal");
    eventually("the slot to be taken", Duration::from_secs(2), || async {
        (node.active_jobs().await == 1).then_some(())
    })
    .await;
    let low = send("low", "low");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let critical = send("critical", "critical");
    let (s, _) = holder.await.unwrap();
    assert_eq!(s, 200);
    let (s, c) = critical.await.unwrap();
    assert_eq!(s, 200, "{c}");
    let (s, l) = low.await.unwrap();
    assert_eq!(s, 200, "{l}");
    assert_eq!(
        content_of(&c),
        "critical critical critical critical critical"
    );
    assert_eq!(content_of(&l), "low low low low low");
    // The critical task, queued second, ran first: the low one was the last the backend saw.
    assert_eq!(
        d.last_body().unwrap()["messages"][0]["content"],
        "low",
        "the low-priority waiter ran last"
    );
    assert_eq!(d.in_flight_max(), 1);
    node.wait_idle().await;
}

fn content_of(r: &Value) -> &str {
    r["result"]["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
}

#[tokio::test]
async fn a_client_that_disconnects_mid_task_releases_its_slot() {
    let d = double(Flavor::OpenAi).await;
    let node = TestNode::start(backend_for(&d), |c| c.max_concurrent = 1).await;
    d.set_behavior(Behavior {
        delay: Duration::from_secs(30),
        ..Behavior::default()
    });
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let sent = impatient
        .post(node.url("/v1/task"))
        .json(&chat_task(PROMPT))
        .send()
        .await;
    assert!(sent.unwrap_err().is_timeout());
    node.wait_idle().await;

    d.set_behavior(Behavior::default());
    let r = node.task(&with_qos("batch")).await;
    assert_eq!(r.status, 200, "the slot was released: {}", r.text);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_releases_its_slot() {
    use futures_util::StreamExt;
    let d = double(Flavor::Ollama).await;
    let node = TestNode::start(backend_for(&d), |c| c.max_concurrent = 1).await;
    d.set_behavior(Behavior {
        token_delay: Duration::from_millis(200),
        tokens: 200,
        ..Behavior::default()
    });
    let resp = node
        .post(&chat_task(PROMPT))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: delta"));
    assert_eq!(node.active_jobs().await, 1);
    drop(body);
    node.wait_idle().await;

    d.set_behavior(Behavior::default());
    let r = node.task(&with_qos("batch")).await;
    assert_eq!(r.status, 200, "the slot was released: {}", r.text);
}

#[tokio::test]
async fn a_cip_call_asking_for_tools_is_403_tool_execution_denied() {
    let d = double(Flavor::OpenAi).await;
    let node = TestNode::local(&d).await;
    let tools = json!([{"type": "function", "function": {"name": "rm_rf", "parameters": {"type": "object"}}}]);
    let mut task = chat_task(PROMPT);
    task["payload"]["tools"] = tools.clone();
    task["constraints"]["cip"] = json!({"role": "delegate"});
    let before = d.requests();
    let r = node.task(&task).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.error_code(), "tool_execution_denied");
    assert_eq!(r.body["task_id"], task["task_id"]);

    // CIP named in the trace instead.
    let mut task = chat_task(PROMPT);
    task["payload"]["tools"] = tools.clone();
    task["trace"] = json!({"cip_role": "delegate"});
    let r = node.task(&task).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.error_code(), "tool_execution_denied");
    assert_eq!(d.requests(), before, "refused before the backend");

    // A CIP call without tools, and a plain call with tools, are served.
    let mut task = chat_task(PROMPT);
    task["constraints"]["cip"] = json!({"role": "delegate"});
    assert_eq!(node.task(&task).await.status, 200);
    let mut task = chat_task(PROMPT);
    task["payload"]["tools"] = tools.clone();
    assert_eq!(node.task(&task).await.status, 200);
    assert_eq!(d.last_body().unwrap()["tools"], tools, "tools pass through");
}

#[tokio::test]
async fn a_node_that_allows_tools_serves_cip_tool_calls() {
    let d = double(Flavor::OpenAi).await;
    let node = TestNode::start(backend_for(&d), |c| c.allow_tool_execution = true).await;
    let mut task = chat_task(PROMPT);
    task["payload"]["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
    task["constraints"]["cip"] = json!({});
    let r = node.task(&task).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// ARCHITECTURE.md: error messages "never echo a payload", schema problems included.
#[tokio::test]
async fn validation_errors_never_echo_the_payload() {
    let d = double(Flavor::OpenAi).await;
    let node = TestNode::local(&d).await;
    let mut task = chat_task(PROMPT);
    task["payload"]["messages"][0]["role"] = json!("canary-7f3a9c");
    let r = node.task(&task).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(!r.text.contains("canary-7f3a9c"), "{}", r.text);
}
