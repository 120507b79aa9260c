//! The fault suite: a real mesh on loopback — one directory, three nodes and one gateway, each
//! its own `iicp` process — is broken in the ways production breaks it, and each test asserts
//! what callers see and that the processes survive:
//!
//! - nodes killed with `kill -9`, between calls and with calls in flight on them: calls through
//!   the gateway and the client SDK fail over with no error a caller can see;
//! - a stream whose node dies after its first token ends with an error, never with a second copy;
//!   a node whose backend stalls before the first token is failed over;
//! - a caller that hangs up mid-stream frees the node's slot at once;
//! - a backend killed mid-stream: the node's SSE ends with an `error` event, the gateway's
//!   OpenAI stream with an error chunk and its Ollama stream with an error line;
//! - the directory killed with `kill -9` and restarted on its database: every node is listed
//!   again within one heartbeat interval, keeps its id and token, and never re-registers;
//! - sustained overload at ten times a node's capacity: 429 `capacity_exceeded` with
//!   `Retry-After`, no crash, the concurrency bound held, memory flat;
//! - a corpus of malformed requests to every endpoint of every process: structured 4xx errors in
//!   the caller's API shape, never a 5xx, every process alive;
//! - a canary prompt through every path never appears in any process's log, at TRACE.

mod mesh;

use futures_util::future::join_all;
use futures_util::StreamExt;
use iicp_client::{Call, ClientError, StreamItem};
use iicp_testkit::support::{get_json, get_text, parse_sse, wait_until, SseEvent};
use iicp_testkit::{Behavior, Failure};
use mesh::*;
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// The overload test runs alone: ten times a node's capacity busies both cores of a CI machine,
/// which would make the timing of the other scenarios meaningless. The others share.
static SERIAL: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// `still there` echoed by a default double (5 words, cycled).
const PROMPT: &str = "still there";
const REPLY: &str = "still there still there still";

/// Twelve distinct words: a double set to 12 tokens replies with exactly these, so any part of
/// a reply sent twice shows (the text is then no prefix of this).
const WORDS: &str = "w01 w02 w03 w04 w05 w06 w07 w08 w09 w10 w11 w12";

/// Whether `text` is a strict prefix of the one reply [`WORDS`], from its first word on: what a
/// stream cut after its first token may have carried, with nothing sent twice.
fn is_cut_reply(text: &str) -> bool {
    text.starts_with("w01") && WORDS.starts_with(text) && text.len() < WORDS.len()
}

/// Reads a stream until `first` arrived, breaks it with `cut` (a node or a backend killed),
/// then reads what follows: the whole body the caller saw.
async fn read_cut(r: &mut reqwest::Response, first: &str, cut: impl FnOnce()) -> String {
    let mut body = read_until(r, first).await;
    cut();
    body.push_str(&read_rest(r).await);
    body
}

/// The events of a cut OpenAI stream, which must not look complete (no `[DONE]`) and must end
/// with a `server_error` chunk, returned with them.
fn openai_cut(body: &str) -> (Vec<SseEvent>, Value) {
    let events = parse_sse(body);
    assert!(
        events.iter().all(|e| e.data != "[DONE]"),
        "a cut stream must not look complete: {body}"
    );
    let last = events.last().unwrap().json();
    assert_eq!(last["error"]["type"], "server_error", "{body}");
    (events, last)
}

/// The lines of a cut Ollama stream, which must not say `done: true` and must end with an
/// `error` line.
fn ollama_cut(body: &str) -> Vec<Value> {
    let lines = ndjson(body);
    assert!(lines.iter().all(|l| l["done"] != true), "{body}");
    assert!(lines.last().unwrap()["error"].is_string(), "{body}");
    lines
}

fn slow_tokens() -> Behavior {
    Behavior {
        token_delay: Duration::from_millis(150),
        tokens: 12,
        ..Behavior::default()
    }
}

fn sdk_chat(text: &str, model: &str) -> Call {
    let mut call = Call::new(
        CHAT,
        json!({"messages": [{"role": "user", "content": text}]}),
    );
    call.model = Some(model.into());
    call
}

/// Who served an answer and after how many attempts.
#[derive(Debug, Clone)]
struct Served {
    what: &'static str,
    node: String,
    attempts: u32,
}

fn served(what: &'static str, r: &reqwest::Response) -> Served {
    Served {
        what,
        node: header(r, "x-iicp-node"),
        attempts: header(r, "x-iicp-attempts").parse().unwrap_or(0),
    }
}

/// A plain (not streamed) OpenAI chat through the gateway.
async fn plain_chat(mesh: &Mesh) -> reqwest::Response {
    mesh.gw_post(
        "/v1/chat/completions",
        &openai_chat(CHAT_MODEL, PROMPT, false),
    )
    .await
}

/// Calls made at once, each saying who served it.
type Calls<'a> = Vec<Pin<Box<dyn Future<Output = Served> + Send + 'a>>>;

/// A streamed OpenAI chat through the gateway, which must complete with the exact answer.
async fn openai_stream(mesh: &Mesh) -> Served {
    let r = mesh
        .gw_post(
            "/v1/chat/completions",
            &openai_chat(CHAT_MODEL, PROMPT, true),
        )
        .await;
    assert_eq!(r.status(), 200);
    let s = served("openai-stream", &r);
    let events = parse_sse(&r.text().await.unwrap());
    assert_eq!(events.last().unwrap().data, "[DONE]", "{events:?}");
    assert_eq!(openai_stream_text(&events), REPLY);
    s
}

/// A streamed Ollama chat through the gateway, which must complete with the exact answer.
async fn ollama_stream(mesh: &Mesh) -> Served {
    let r = mesh
        .gw_post("/api/chat", &ollama_chat(CHAT_MODEL, PROMPT, true))
        .await;
    assert_eq!(r.status(), 200);
    let s = served("ollama-stream", &r);
    let lines = ndjson(&r.text().await.unwrap());
    assert_eq!(lines.last().unwrap()["done"], true, "{lines:?}");
    assert!(lines.iter().all(|l| l.get("error").is_none()));
    assert_eq!(ollama_stream_text(&lines), REPLY);
    s
}

/// One call of each kind, all at once, through the gateway (OpenAI and Ollama, plain and
/// streamed, chat and embeddings) and the SDK. Every one must succeed with the exact answer.
async fn every_kind_of_call(mesh: &Mesh, sdk: &iicp_client::Client) -> Vec<Served> {
    let openai_plain = move || async move {
        let r = plain_chat(mesh).await;
        assert_eq!(r.status(), 200, "OpenAI chat failed: {:?}", r.headers());
        let s = served("openai", &r);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], REPLY, "{v}");
        s
    };
    let embed = move || async move {
        let r = mesh
            .gw_post(
                "/v1/embeddings",
                &json!({"model": EMBED_MODEL, "input": PROMPT}),
            )
            .await;
        assert_eq!(r.status(), 200);
        let s = served("embeddings", &r);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
        s
    };
    let ollama_plain = move || async move {
        let r = mesh
            .gw_post("/api/chat", &ollama_chat(CHAT_MODEL, PROMPT, false))
            .await;
        assert_eq!(r.status(), 200);
        let s = served("ollama", &r);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["message"]["content"], REPLY);
        assert_eq!(v["done"], true);
        s
    };
    let sdk_plain = move || async move {
        let a = sdk
            .call(sdk_chat(PROMPT, CHAT_MODEL))
            .await
            .unwrap_or_else(|e| panic!("SDK call failed: {e}"));
        let content = a
            .response
            .result
            .as_ref()
            .and_then(|r| r.pointer("/choices/0/message/content"))
            .cloned();
        assert_eq!(content, Some(json!(REPLY)));
        Served {
            what: "sdk",
            node: a.node_id,
            attempts: a.attempts,
        }
    };
    let sdk_stream = move || async move {
        let a = sdk
            .call_stream(sdk_chat(PROMPT, CHAT_MODEL))
            .await
            .unwrap_or_else(|e| panic!("SDK stream failed before its first token: {e}"));
        let items: Vec<_> = a.items.collect().await;
        let mut text = String::new();
        for item in &items[..items.len() - 1] {
            match item {
                Ok(StreamItem::Delta(t)) => text.push_str(t),
                other => panic!("unexpected stream item {other:?}"),
            }
        }
        assert!(
            matches!(items.last(), Some(Ok(StreamItem::Done(r))) if r.is_success()),
            "{items:?}"
        );
        assert_eq!(text, REPLY);
        Served {
            what: "sdk-stream",
            node: a.node_id,
            attempts: a.attempts,
        }
    };
    let mut calls: Calls = Vec::new();
    for _ in 0..3 {
        calls.push(Box::pin(openai_plain()));
        calls.push(Box::pin(openai_stream(mesh)));
    }
    for _ in 0..2 {
        calls.push(Box::pin(embed()));
        calls.push(Box::pin(ollama_plain()));
        calls.push(Box::pin(ollama_stream(mesh)));
        calls.push(Box::pin(sdk_plain()));
        calls.push(Box::pin(sdk_stream()));
    }
    join_all(calls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_nodes_are_failed_over_with_no_error_a_caller_can_see() {
    let _shared = SERIAL.read().await;
    let mut spec = MeshSpec::three("kill-node");
    // Plenty of slots: only the kills may make a call fail here, never the survivor's capacity.
    spec.nodes = vec![NodeSpec::default().max_concurrent(32); 3];
    let mut mesh = Mesh::start(spec).await;
    let sdk = mesh.sdk(|_| {});

    let healthy = every_kind_of_call(&mesh, &sdk).await;
    assert!(healthy.iter().all(|s| s.attempts == 1), "{healthy:?}");

    // Node 0 dies while calls are in flight on it: its backend holds every answer for 400 ms,
    // and the node is killed after 150 ms. Those calls never get an answer from it; they must
    // be retried elsewhere (streams are before their first token there).
    let slow = Behavior {
        delay: Duration::from_millis(400),
        ..Behavior::default()
    };
    for n in &mesh.nodes {
        n.backend.as_ref().unwrap().set_behavior(slow);
    }
    let reached_before = mesh.nodes[0].backend.as_ref().unwrap().requests();
    let in_flight = every_kind_of_call(&mesh, &sdk);
    let kill = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let reached = mesh.nodes[0].backend.as_ref().unwrap().requests() - reached_before;
        // `kill -9` by pid: the calls in flight hold a shared borrow of `mesh`.
        mesh.nodes[0].proc.signal("KILL");
        reached
    };
    let (one_dead, cut_short) = tokio::join!(in_flight, kill);
    assert!(
        cut_short > 0,
        "no call was in flight on the killed node, so mid-call failover was not exercised"
    );
    assert!(!mesh.nodes[0].proc.is_alive());
    let killed = mesh.nodes[0].prefix();
    for s in &one_dead {
        assert!(
            !killed.starts_with(&s.node),
            "answered by the killed node: {s:?}"
        );
    }
    for n in &mesh.nodes[1..] {
        n.backend
            .as_ref()
            .unwrap()
            .set_behavior(Behavior::default());
    }

    // The directory still lists a killed node (it never deregistered): callers must route
    // around it themselves.
    let after_one = every_kind_of_call(&mesh, &sdk).await;
    mesh.nodes[1].proc.kill();
    assert_eq!(mesh.discover_ids(CHAT).await.unwrap().len(), 3);
    let two_dead = every_kind_of_call(&mesh, &sdk).await;

    let survivor = mesh.nodes[2].prefix();
    for s in &two_dead {
        assert!(
            survivor.starts_with(&s.node),
            "{} served by a killed node: {s:?}",
            s.what
        );
    }
    let failed_over: Vec<_> = one_dead
        .iter()
        .chain(&after_one)
        .chain(&two_dead)
        .filter(|s| s.attempts > 1)
        .collect();
    assert!(
        !failed_over.is_empty(),
        "no call even tried a killed node, so failover was not exercised"
    );
    assert!(failed_over.iter().all(|s| s.attempts <= 3));
    eprintln!(
        "{} of {} calls failed over after the kills ({cut_short} cut short by a kill)",
        failed_over.len(),
        one_dead.len() + after_one.len() + two_dead.len()
    );
    assert!(mesh.gateway.is_alive() && mesh.directory.is_alive());
    assert!(mesh.nodes[2].proc.is_alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_node_dies_after_its_first_token_ends_with_an_error_and_is_never_replayed() {
    let _shared = SERIAL.read().await;
    let mut spec = MeshSpec::three("kill-mid-stream");
    spec.nodes = vec![NodeSpec::default().behavior(slow_tokens()); 3];
    let mut mesh = Mesh::start(spec).await;

    // OpenAI through the gateway: the node that is streaming dies after the first token.
    let mut r = mesh
        .gw_post(
            "/v1/chat/completions",
            &openai_chat(CHAT_MODEL, WORDS, true),
        )
        .await;
    assert_eq!(r.status(), 200);
    let victim = mesh.node_index(&header(&r, "x-iicp-node"));
    let body = read_cut(&mut r, r#""content":"w01""#, || {
        mesh.nodes[victim].proc.kill()
    })
    .await;
    let (events, last) = openai_cut(&body);
    assert!(last["error"]["message"].is_string());
    let text = openai_stream_text(&events);
    assert!(
        is_cut_reply(&text),
        "the caller saw {text:?}: not a strict prefix of one reply"
    );

    // Ollama through the gateway, on one of the two nodes left.
    let mut r = mesh
        .gw_post("/api/chat", &ollama_chat(CHAT_MODEL, WORDS, true))
        .await;
    assert_eq!(r.status(), 200);
    let victim = mesh.node_index(&header(&r, "x-iicp-node"));
    assert!(mesh.nodes[victim].proc.is_alive(), "served by a dead node");
    let body = read_cut(&mut r, "w01", || mesh.nodes[victim].proc.kill()).await;
    let text = ollama_stream_text(&ollama_cut(&body));
    assert!(is_cut_reply(&text), "the caller saw {text:?}");

    // The SDK: two of three listed nodes are dead, so it may fail over before the first
    // token; once a token arrived, the death of its node is an error, not a retry.
    let sdk = mesh.sdk(|_| {});
    let mut answer = sdk
        .call_stream(sdk_chat(WORDS, CHAT_MODEL))
        .await
        .expect("fails over to the live node before the first token");
    let victim = mesh.node_index(&answer.node_id);
    assert!(mesh.nodes[victim].proc.is_alive(), "served by a dead node");
    let first = match answer.items.next().await {
        Some(Ok(StreamItem::Delta(t))) => t,
        other => panic!("expected the first token, got {other:?}"),
    };
    assert!(first.starts_with("w01"), "{first:?}");
    mesh.nodes[victim].proc.kill();
    let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(20), answer.items.collect())
        .await
        .expect("the stream ends");
    let (last, deltas) = rest.split_last().expect("an error item after the kill");
    assert!(
        matches!(last, Err(ClientError::Stream(_))),
        "the stream must end with an error: {rest:?}"
    );
    let mut text = first;
    for d in deltas {
        match d {
            Ok(StreamItem::Delta(t)) => text.push_str(t),
            other => panic!("after the first token only deltas, then the error: {other:?}"),
        }
    }
    assert!(
        WORDS.starts_with(&text) && text.len() < WORDS.len(),
        "{text:?}"
    );
    assert!(mesh.gateway.is_alive() && mesh.directory.is_alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stalled_before_its_first_token_is_failed_over() {
    let _shared = SERIAL.read().await;
    let mut spec = MeshSpec::three("stall");
    spec.gateway_args = vec!["--task-timeout".into(), "2".into()];
    let mut mesh = Mesh::start(spec).await;
    // Two of the three backends stop answering (the nodes stay up and listed).
    for n in &mesh.nodes[..2] {
        n.backend
            .as_ref()
            .unwrap()
            .set_behavior(Behavior::failing(Failure::Hang));
    }
    let sdk = mesh.sdk(|c| c.first_token_timeout = Duration::from_secs(1));
    let started = Instant::now();
    let sdk = &sdk;
    let sdk_stream = move || async move {
        let mut call = sdk_chat(PROMPT, CHAT_MODEL);
        call.timeout = Duration::from_secs(5);
        let a = sdk.call_stream(call).await.expect("fails over");
        let items: Vec<_> = a.items.collect().await;
        assert!(matches!(items.last(), Some(Ok(StreamItem::Done(_)))));
        Served {
            what: "sdk-stream",
            node: a.node_id,
            attempts: a.attempts,
        }
    };
    let mut calls: Calls = Vec::new();
    for _ in 0..4 {
        calls.push(Box::pin(openai_stream(&mesh)));
    }
    for _ in 0..2 {
        calls.push(Box::pin(ollama_stream(&mesh)));
        calls.push(Box::pin(sdk_stream()));
    }
    let all = join_all(calls).await;
    let elapsed = started.elapsed();

    let healthy = mesh.nodes[2].prefix();
    for s in &all {
        assert!(
            healthy.starts_with(&s.node),
            "served by a stalled node: {s:?}"
        );
    }
    assert!(
        all.iter().any(|s| s.attempts > 1),
        "no call met a stalled node: {all:?}"
    );
    // Two stalls at most (2 s each with the gateway's --task-timeout 2) plus backoffs.
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    eprintln!("stalled-node failover: {all:?} in {elapsed:?}");
    mesh.assert_all_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_stream_ends_the_stream_with_a_clean_error_event() {
    let _shared = SERIAL.read().await;
    let mut spec = MeshSpec::three("kill-backend");
    spec.nodes[0] = NodeSpec::chat_only("fragile-chat").behavior(slow_tokens());
    let mut mesh = Mesh::start(spec).await;

    // Straight at the node: SSE deltas, then `event: error` with a failed RESPONSE.
    let mut task = chat_task(WORDS, "interactive");
    task["payload"]["model"] = json!("fragile-chat");
    let mut r = mesh.node_task(0, &task, true).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/event-stream"));
    let body = read_cut(&mut r, "event: delta", || mesh.nodes[0].kill_backend()).await;
    let events = parse_sse(&body);
    assert!(events.iter().all(|e| e.event != "done"), "{body}");
    let last = events.last().unwrap();
    assert_eq!(last.event, "error", "{body}");
    let failed = last.json();
    assert_eq!(failed["status"], "error");
    assert_eq!(failed["task_id"], task["task_id"]);
    assert_eq!(failed["error"]["code"], "backend_error");
    assert!(failed["error"]["message"].is_string());
    let text: String = events
        .iter()
        .filter(|e| e.event == "delta")
        .map(|e| e.json()["content"].as_str().unwrap().to_owned())
        .collect();
    assert!(is_cut_reply(&text), "{text:?}");
    mesh.nodes[0].restart_backend().await;

    // Through the gateway, OpenAI: an error chunk and no [DONE].
    let mut r = mesh
        .gw_post(
            "/v1/chat/completions",
            &openai_chat("fragile-chat", WORDS, true),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body = read_cut(&mut r, r#""content":"w01""#, || {
        mesh.nodes[0].kill_backend()
    })
    .await;
    let (events, last) = openai_cut(&body);
    assert_eq!(last["error"]["code"], "backend_error", "{body}");
    assert!(WORDS.starts_with(&openai_stream_text(&events)));
    mesh.nodes[0].restart_backend().await;

    // Through the gateway, Ollama: an error line and no `done: true`.
    let mut r = mesh
        .gw_post("/api/chat", &ollama_chat("fragile-chat", WORDS, true))
        .await;
    assert_eq!(r.status(), 200);
    let body = read_cut(&mut r, "w01", || mesh.nodes[0].kill_backend()).await;
    assert!(WORDS.starts_with(&ollama_stream_text(&ollama_cut(&body))));

    // The node outlives its backend and serves again once the backend is back.
    mesh.nodes[0].restart_backend().await;
    let r = mesh
        .gw_post(
            "/v1/chat/completions",
            &openai_chat("fragile-chat", WORDS, false),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], WORDS);
    mesh.assert_all_alive();
}

/// A caller that hangs up in the middle of a stream frees the node's slot at once: the gateway
/// drops its call, the node drops the backend stream, nothing keeps running for nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_hangs_up_mid_stream_frees_the_nodes_slot_at_once() {
    let _shared = SERIAL.read().await;
    let mut spec = MeshSpec::three("hang-up");
    // One slot, and a streamed answer that would take a minute.
    spec.nodes[0] = NodeSpec::chat_only("long-chat")
        .max_concurrent(1)
        .behavior(Behavior {
            token_delay: Duration::from_millis(100),
            tokens: 600,
            ..Behavior::default()
        });
    let mesh = Mesh::start(spec).await;
    let active_jobs = || async { mesh.node_health(0).await["active_jobs"].as_u64().unwrap() };
    let mut task = chat_task(WORDS, "interactive");
    task["payload"]["model"] = json!("long-chat");
    for way in ["node SSE", "gateway OpenAI", "gateway Ollama"] {
        let mut r = match way {
            "node SSE" => mesh.node_task(0, &task, true).await,
            "gateway OpenAI" => {
                mesh.gw_post(
                    "/v1/chat/completions",
                    &openai_chat("long-chat", WORDS, true),
                )
                .await
            }
            _ => {
                mesh.gw_post("/api/chat", &ollama_chat("long-chat", WORDS, true))
                    .await
            }
        };
        assert_eq!(r.status(), 200, "{way}");
        read_until(&mut r, "w01").await;
        assert_eq!(active_jobs().await, 1, "{way}: the stream holds the slot");
        drop(r);
        wait_until(Instant::now() + Duration::from_secs(3), || async {
            match active_jobs().await {
                0 => Ok(()),
                held => Err(held),
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{way}: the slot was still held 3 s after the caller hung up"));
        // The slot is really free: the next task is admitted at once.
        task["task_id"] = json!(uuid::Uuid::new_v4());
        let r = mesh.node_task(0, &task, false).await;
        assert_eq!(r.status(), 200, "{way}: the next task was refused");
        task["task_id"] = json!(uuid::Uuid::new_v4());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_killed_and_restarted_on_its_database_lists_every_node_again_within_one_heartbeat(
) {
    let _shared = SERIAL.read().await;
    let interval = Duration::from_millis(1000);
    let mut spec = MeshSpec::three("kill-directory");
    spec.heartbeat_ms = Some(interval.as_millis() as u64);
    let mut mesh = Mesh::start(spec).await;
    let ids: Vec<String> = mesh.nodes.iter().map(|n| n.id.clone()).collect();
    let identities: Vec<Vec<u8>> = mesh
        .nodes
        .iter()
        .map(|n| std::fs::read(n.state_dir.join("node-identity.json")).unwrap())
        .collect();
    // Let every node heartbeat at the directory's pace at least once.
    tokio::time::sleep(interval * 2).await;
    assert_eq!(plain_chat(&mesh).await.status(), 200);

    mesh.kill_directory();
    let killed_at = now_unix();
    let killed = Instant::now();
    // The data plane does not need the directory: every node still serves.
    for i in 0..3 {
        let r = mesh
            .node_task(i, &chat_task(PROMPT, "interactive"), false)
            .await;
        assert_eq!(
            r.status(),
            200,
            "node {i} stopped serving without its directory"
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["result"]["choices"][0]["message"]["content"], REPLY);
    }
    // Every node notices the outage (a heartbeat fails) before the directory comes back.
    let deadline = Instant::now() + interval * 5;
    for i in 0..3 {
        wait_until(deadline, || async {
            let m = mesh.node_metrics(i).await;
            let failed = metric(&m, "iicp_heartbeat_failures_total{reason=\"unreachable\"}");
            (failed >= 1.0).then_some(()).ok_or(())
        })
        .await
        .unwrap_or_else(|()| panic!("node {i} never missed a beat"));
    }

    // The gateway keeps answering from its last discover answer once that answer is past its
    // max-age (5 s): an outage of the control plane is not an outage of the mesh.
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(killed.elapsed())).await;
    let r = plain_chat(&mesh).await;
    assert_eq!(r.status(), 200, "the gateway stopped with its directory");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], REPLY);

    mesh.restart_directory().await;
    let ready = Instant::now();
    // Listed again, same ids, within one heartbeat interval.
    wait_until(ready + interval, || async {
        let chat = mesh.discover_ids(CHAT).await.unwrap_or_default();
        let embed = mesh.discover_ids(EMBEDDING).await.unwrap_or_default();
        if ids.iter().all(|id| chat.contains(id) && embed.contains(id)) {
            Ok(())
        } else {
            Err(chat)
        }
    })
    .await
    .unwrap_or_else(|chat| panic!("not every node listed within one heartbeat interval: {chat:?}"));
    let listed_after = ready.elapsed();

    // Every node's heartbeat, with the token it held before the crash, is accepted by the new
    // process: its last_seen moves past the moment of the kill.
    let deadline = ready + Duration::from_secs(8);
    for id in &ids {
        let url = format!("{}/api/v1/node/{id}", mesh.directory_url);
        wait_until(deadline, || async {
            let v = get_json(&mesh.http, &url).await;
            let seen = v["last_seen"].as_str().and_then(unix_seconds).unwrap();
            if seen > killed_at {
                Ok(())
            } else {
                Err(v)
            }
        })
        .await
        .unwrap_or_else(|v| panic!("{id} was never heard from again: {v}"));
    }
    let beating_after = ready.elapsed();

    // Nothing acknowledged was lost, so nobody had to register again.
    let metrics = get_text(&mesh.http, &format!("{}/metrics", mesh.directory_url)).await;
    assert!(
        !metrics.contains("iicp_registrations_total{"),
        "a node registered again after the restart:\n{metrics}"
    );
    assert!(metric(&metrics, "iicp_heartbeats_total") >= 3.0);
    for (i, n) in mesh.nodes.iter().enumerate() {
        let now = std::fs::read(n.state_dir.join("node-identity.json")).unwrap();
        assert_eq!(now, identities[i], "node {i} changed its identity");
        let m = mesh.node_metrics(i).await;
        for reason in ["unauthorized", "unknown_node"] {
            assert_eq!(
                metric(
                    &m,
                    &format!("iicp_heartbeat_failures_total{{reason=\"{reason}\"}}")
                ),
                0.0,
                "node {i}: the restarted directory refused its heartbeat ({reason})"
            );
        }
        let h = mesh.node_health(i).await;
        assert_eq!(h["node_id"], json!(n.id));
    }
    // And the mesh works end to end through the new directory.
    assert_eq!(plain_chat(&mesh).await.status(), 200);
    eprintln!(
        "directory restart: listed after {listed_after:?}, every node heard from after {beating_after:?}"
    );
    mesh.assert_all_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_overload_at_ten_times_capacity_is_refused_with_429_and_memory_stays_flat() {
    let _alone = SERIAL.write().await;
    const CAPACITY: u32 = 2;
    const OFFERED: usize = 10 * CAPACITY as usize;
    let mut spec = MeshSpec::three("overload");
    spec.nodes[0] = NodeSpec::default()
        .max_concurrent(CAPACITY)
        .behavior(Behavior {
            delay: Duration::from_millis(200),
            ..Behavior::default()
        });
    let mut mesh = Mesh::start(spec).await;

    #[derive(Default)]
    struct Tally {
        ok: u64,
        refused: u64,
        /// The slowest refusal of a batch task (never queued) and of an interactive one
        /// (queued for a bounded time).
        slowest_batch_refusal: Duration,
        slowest_interactive_refusal: Duration,
        other: Vec<String>,
    }
    let load = |for_how_long: Duration| {
        let until = Instant::now() + for_how_long;
        let (http, url) = (mesh.http.clone(), format!("{}/v1/task", mesh.nodes[0].url));
        let workers = (0..OFFERED).map(move |w| {
            let (http, url) = (http.clone(), url.clone());
            let qos = if w % 2 == 0 { "batch" } else { "interactive" };
            tokio::spawn(async move {
                let mut t = Tally::default();
                while Instant::now() < until {
                    let sent = Instant::now();
                    let r = match http.post(&url).json(&chat_task(PROMPT, qos)).send().await {
                        Ok(r) => r,
                        Err(e) => {
                            t.other.push(format!("transport error: {e}"));
                            continue;
                        }
                    };
                    let status = r.status().as_u16();
                    let retry_after = header(&r, "retry-after");
                    let body: Value = r.json().await.unwrap_or_default();
                    match status {
                        200 if body["status"] == "success" => t.ok += 1,
                        429 => {
                            let seconds = retry_after.parse::<u64>().unwrap_or(0);
                            let e = &body["error"];
                            if seconds < 1
                                || e["code"] != "capacity_exceeded"
                                || !e["retry_after_ms"].is_u64()
                                || e["qos_class"] != qos
                                || !e["message"].is_string()
                            {
                                t.other.push(format!("bad 429 ({retry_after:?}): {body}"));
                            }
                            t.refused += 1;
                            let slowest = if qos == "batch" {
                                &mut t.slowest_batch_refusal
                            } else {
                                &mut t.slowest_interactive_refusal
                            };
                            *slowest = (*slowest).max(sent.elapsed());
                            // An impatient caller: straight back, without honouring Retry-After.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        _ => t.other.push(format!("{status}: {body}")),
                    }
                }
                t
            })
        });
        async move {
            let mut total = Tally::default();
            for t in join_all(workers.collect::<Vec<_>>()).await {
                let t = t.expect("worker");
                total.ok += t.ok;
                total.refused += t.refused;
                total.slowest_batch_refusal =
                    total.slowest_batch_refusal.max(t.slowest_batch_refusal);
                total.slowest_interactive_refusal = total
                    .slowest_interactive_refusal
                    .max(t.slowest_interactive_refusal);
                total.other.extend(t.other);
            }
            total
        }
    };

    // Warm up (allocator arenas, connection pools), then measure.
    let warm = load(Duration::from_secs(1)).await;
    assert!(
        warm.other.is_empty(),
        "{:?}",
        &warm.other[..warm.other.len().min(10)]
    );
    let pid = mesh.nodes[0].proc.pid();
    let rss_before = rss_kib(&mesh.nodes[0].proc);
    let started = Instant::now();
    let tally = load(Duration::from_secs(4)).await;
    let rss_after = rss_kib(&mesh.nodes[0].proc);
    eprintln!(
        "overload of node pid {pid} for {:?}: {} served, {} refused (slowest refusal: batch {:?}, \
         interactive {:?}); RSS {rss_before} KiB → {rss_after} KiB",
        started.elapsed(),
        tally.ok,
        tally.refused,
        tally.slowest_batch_refusal,
        tally.slowest_interactive_refusal,
    );
    assert!(
        tally.other.is_empty(),
        "answers other than 200 and a well-formed 429: {:?}",
        &tally.other[..tally.other.len().min(10)]
    );
    assert!(tally.ok >= 10, "the node served too little: {}", tally.ok);
    assert!(
        tally.refused > tally.ok,
        "overload was not refused: {} served, {} refused",
        tally.ok,
        tally.refused
    );
    // Refusals come at once (batch) or after the bounded wait for a slot (interactive, 500 ms),
    // never after a queue that grows with the load. The bounds leave room for a busy CI.
    assert!(
        tally.slowest_batch_refusal < Duration::from_secs(1),
        "a batch task was queued before its refusal: {:?}",
        tally.slowest_batch_refusal
    );
    assert!(
        tally.slowest_interactive_refusal < Duration::from_secs(2),
        "an interactive task waited {:?} before its refusal",
        tally.slowest_interactive_refusal
    );
    let backend = mesh.nodes[0].backend.as_ref().unwrap();
    assert!(
        backend.in_flight_max() <= u64::from(CAPACITY),
        "the backend saw {} tasks at once with --max-concurrent {CAPACITY}",
        backend.in_flight_max()
    );
    assert!(
        rss_after < rss_before + 20 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );

    // Still alive, every slot released, and serving.
    assert!(
        mesh.nodes[0].proc.is_alive(),
        "the node died under overload"
    );
    let h = wait_until(Instant::now() + Duration::from_secs(5), || async {
        let h = mesh.node_health(0).await;
        if h["active_jobs"] == 0 {
            Ok(h)
        } else {
            Err(h)
        }
    })
    .await
    .unwrap_or_else(|h| panic!("slots never drained: {h}"));
    assert_eq!(h["status"], "ok");
    let r = mesh
        .node_task(0, &chat_task(PROMPT, "interactive"), false)
        .await;
    assert_eq!(r.status(), 200);
    assert!(!mesh.nodes[0].proc.log_text().contains("panicked"));
    mesh.assert_all_alive();
}

/// The error shape a route answers in.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    /// `{"error":{"code","message"}}`
    Iicp,
    /// `{"error":{"message","type","code"}}`
    OpenAi,
    /// `{"error":"…"}`
    Ollama,
}

struct Case {
    label: String,
    method: &'static str,
    path: String,
    content_type: Option<&'static str>,
    bearer: Option<String>,
    body: Vec<u8>,
    chunked: bool,
}

impl Case {
    fn new(label: impl Into<String>, method: &'static str, path: impl Into<String>) -> Case {
        Case {
            label: label.into(),
            method,
            path: path.into(),
            content_type: None,
            bearer: None,
            body: Vec::new(),
            chunked: false,
        }
    }

    fn json(mut self, body: impl Into<Vec<u8>>) -> Case {
        self.content_type = Some("application/json");
        self.body = body.into();
        self
    }

    fn typed(mut self, content_type: &'static str, body: impl Into<Vec<u8>>) -> Case {
        self.content_type = Some(content_type);
        self.body = body.into();
        self
    }

    fn bearer(mut self, token: &str) -> Case {
        self.bearer = Some(token.to_owned());
        self
    }

    fn chunked(mut self) -> Case {
        self.chunked = true;
        self
    }

    fn bytes(&self, host: &str) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n",
            self.method, self.path
        );
        if let Some(ct) = self.content_type {
            head.push_str(&format!("content-type: {ct}\r\n"));
        }
        if let Some(t) = &self.bearer {
            head.push_str(&format!("authorization: Bearer {t}\r\n"));
        }
        let mut out;
        if self.chunked {
            head.push_str("transfer-encoding: chunked\r\n\r\n");
            out = head.into_bytes();
            for piece in self.body.chunks(64 * 1024) {
                out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                out.extend_from_slice(piece);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        } else {
            head.push_str(&format!("content-length: {}\r\n\r\n", self.body.len()));
            out = head.into_bytes();
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// Deterministic noise (xorshift), so a failure can be replayed.
fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn deep(levels: usize) -> Vec<u8> {
    let mut v = vec![b'['; levels];
    v.extend(std::iter::repeat_n(b']', levels));
    v
}

fn huge(bytes: usize) -> Vec<u8> {
    let mut v = br#"{"messages":[{"role":"user","content":""#.to_vec();
    v.extend(std::iter::repeat_n(b'a', bytes));
    v.extend_from_slice(br#""}]}"#);
    v
}

/// Bodies that are wrong for any JSON route.
fn bad_bodies(path: &str, limit_exceeded: usize, seed: u64) -> Vec<Case> {
    let p = || path.to_owned();
    vec![
        Case::new("truncated JSON", "POST", p()).json(r#"{"model": "x", "messages": ["#),
        Case::new("empty body", "POST", p()).json(""),
        Case::new("a JSON array", "POST", p()).json("[1, 2, 3]"),
        Case::new("a JSON string", "POST", p()).json(r#""hello""#),
        Case::new("random bytes", "POST", p()).json(noise(700, seed)),
        Case::new("random bytes, octet-stream", "POST", p())
            .typed("application/octet-stream", noise(300, seed + 1)),
        Case::new("invalid UTF-8", "POST", p()).json(b"{\"messages\": \"\xff\xfe\xfd\"}".to_vec()),
        Case::new("NUL bytes", "POST", p()).json(b"{\"a\":\0\0\0}".to_vec()),
        Case::new("deeply nested", "POST", p()).json(deep(20_000)),
        Case::new("number out of range", "POST", p()).json(r#"{"load": 1e400, "input": 1e400}"#),
        Case::new("duplicate keys", "POST", p()).json(r#"{"a": 1, "a": {"b": [}"#),
        Case::new("too large", "POST", p()).json(huge(limit_exceeded)),
        Case::new("too large, chunked", "POST", p())
            .json(huge(limit_exceeded))
            .chunked(),
    ]
}

/// Wrong methods and unknown paths.
fn bad_routes(get_routes: &[&str], post_routes: &[&str], unknown: &[&str]) -> Vec<Case> {
    let mut cases = Vec::new();
    for r in get_routes {
        for m in ["POST", "PUT", "DELETE", "PATCH"] {
            cases.push(Case::new(format!("{m} on a GET route"), m, *r).json("{}"));
        }
    }
    for r in post_routes {
        for m in ["GET", "PUT", "PATCH"] {
            cases.push(Case::new(format!("{m} on a POST route"), m, *r));
        }
    }
    for u in unknown {
        cases.push(Case::new("unknown path", "GET", *u));
        cases.push(Case::new("unknown path", "POST", *u).json("{}"));
    }
    cases
}

fn directory_corpus(node_id: &str, token: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    for prefix in ["/api/v1", "/v1"] {
        let post = [
            "register",
            "deregister",
            "heartbeat",
            "dispatch/ticket",
            "consumer-token",
            "telemetry",
            "credits/award",
        ];
        for (i, route) in post.iter().enumerate() {
            let path = format!("{prefix}/{route}");
            // A deregistration naming the node with its valid token would succeed (unknown
            // fields are ignored): there the id itself is malformed.
            let id = if *route == "deregister" {
                format!("[\"{node_id}\"]")
            } else {
                format!("\"{node_id}\"")
            };
            cases.extend(bad_bodies(&path, 256 * 1024, i as u64 + 1));
            // With a real node's credentials the body is parsed, not refused at the door.
            if *route != "register" {
                cases.extend(
                    bad_bodies(&path, 256 * 1024, i as u64 + 50)
                        .into_iter()
                        .map(|c| {
                            let label = format!("{}, valid token", c.label);
                            Case {
                                label,
                                ..c.bearer(token)
                            }
                        }),
                );
            }
            cases.push(Case::new("text/plain", "POST", path.clone()).typed("text/plain", "{}"));
            cases.push(Case::new("wrong types", "POST", path.clone()).json(
                r#"{"node_id": 12, "endpoint": ["x"], "region": 3, "capabilities": "chat",
                    "limits": 5, "intent": 7, "target_node_id": false, "load": "high",
                    "node_id_prefix": {}, "current_node_token": 1}"#,
            ));
            cases.push(Case::new("empty object", "POST", path.clone()).json("{}"));
            // The same with a real node's credentials: parsing goes deeper.
            cases.push(
                Case::new("wrong types, valid token", "POST", path.clone())
                    .bearer(token)
                    .json(format!(
                        r#"{{"node_id": {id}, "load": "high", "active_jobs": -1,
                            "available": "yes", "metrics": [], "target_node_id": 5,
                            "intent": ["x"], "challenge_response": 7}}"#
                    )),
            );
            cases.push(
                Case::new("random bytes, valid token", "POST", path.clone())
                    .bearer(token)
                    .json(noise(200, 99 + i as u64)),
            );
            cases.push(
                Case::new("a 10 KB bearer token", "POST", path.clone())
                    .bearer(&"a".repeat(10_000))
                    .json(format!(r#"{{"node_id": {id}}}"#)),
            );
        }
        let path = format!("{prefix}/register");
        for body in [
            r#"{"node_id": 5}"#.to_owned(),
            r#"{"node_id": "not-a-uuid"}"#.to_owned(),
            format!(r#"{{"node_id": ["{node_id}"]}}"#),
        ] {
            cases.push(
                Case::new(
                    "DELETE with wrong types, valid token",
                    "DELETE",
                    path.clone(),
                )
                .bearer(token)
                .json(body),
            );
        }
        cases.push(Case::new("DELETE, no token", "DELETE", path.clone()).json("{}"));
        cases.push(
            Case::new("DELETE, truncated JSON", "DELETE", path)
                .bearer(token)
                .json("{"),
        );

        let chat = "urn:iicp:intent:llm:chat:v1";
        for q in [
            String::new(),
            "?intent=".into(),
            "?intent=%ZZ".into(),
            "?intent=not-an-urn".into(),
            format!("?intent={chat}%2Bfast"),
            format!("?intent={}", "x".repeat(10_000)),
            format!("?intent={chat}&limit=abc"),
            format!("?intent={chat}&limit=-5"),
            format!("?intent={chat}&min_reputation=2"),
            format!("?intent={chat}&qos=warp"),
            format!("?intent={chat}&view=everything"),
        ] {
            cases.push(Case::new(
                "bad discover query",
                "GET",
                format!("{prefix}/discover{q}"),
            ));
        }
        for (label, q) in [
            ("probe without host", "".to_owned()),
            ("probe with port 0", "?host=example.com&port=0".to_owned()),
            (
                "probe with port 99999",
                "?host=example.com&port=99999".to_owned(),
            ),
            (
                "probe of a private address",
                "?host=127.0.0.1&port=80".to_owned(),
            ),
            (
                "probe of a mapped address",
                "?host=[::ffff:10.0.0.1]&port=80".to_owned(),
            ),
        ] {
            cases.push(Case::new(label, "GET", format!("{prefix}/probe{q}")));
        }
        cases.push(Case::new(
            "bootstrap limit=abc",
            "GET",
            format!("{prefix}/bootstrap?limit=abc"),
        ));
        cases.push(Case::new(
            "bootstrap limit=0",
            "GET",
            format!("{prefix}/bootstrap?limit=0"),
        ));
        cases.push(Case::new(
            "node id not a UUID",
            "GET",
            format!("{prefix}/node/not-a-uuid"),
        ));
        cases.push(Case::new(
            "node id unknown",
            "GET",
            format!("{prefix}/node/{}", uuid::Uuid::new_v4()),
        ));
        cases.push(Case::new(
            "node id percent-junk",
            "GET",
            format!("{prefix}/node/%00%ff"),
        ));
        cases.push(Case::new("me without token", "GET", format!("{prefix}/me")));
        cases.push(Case::new("me with a bad token", "GET", format!("{prefix}/me")).bearer("nope"));
        cases.push(Case::new(
            "credits without token",
            "GET",
            format!("{prefix}/credits/balance"),
        ));
        let gets: Vec<String> = [
            "me",
            "discover",
            "node/x",
            "bootstrap",
            "stats",
            "probe",
            "directory-key",
            "credits/balance",
            "credits/transactions",
        ]
        .iter()
        .map(|r| format!("{prefix}/{r}"))
        .collect();
        let posts: Vec<String> = [
            "heartbeat",
            "deregister",
            "dispatch/ticket",
            "consumer-token",
            "telemetry",
            "credits/award",
        ]
        .iter()
        .map(|r| format!("{prefix}/{r}"))
        .collect();
        let gets: Vec<&str> = gets.iter().map(String::as_str).collect();
        let posts: Vec<&str> = posts.iter().map(String::as_str).collect();
        cases.extend(bad_routes(&gets, &posts, &[]));
    }
    cases.extend(bad_routes(
        &["/iicp/health", "/metrics"],
        &[],
        &[
            "/",
            "/nope",
            "/api/v1/nope",
            "/v1/register/extra",
            "/api/v2/discover",
            "/%ff%fe",
            "//api/v1//register",
            "/api/v1/node",
        ],
    ));
    cases.push(Case::new("a made-up method", "BREW", "/api/v1/register").json("{}"));
    cases
}

fn node_corpus() -> Vec<Case> {
    let task = |f: &dyn Fn(&mut Value)| {
        let mut t = chat_task(PROMPT, "interactive");
        f(&mut t);
        t.to_string()
    };
    let mut cases = bad_bodies("/v1/task", 33 * 1024 * 1024, 7);
    cases.push(Case::new("text/plain", "POST", "/v1/task").typed("text/plain", task(&|_| {})));
    cases.push(
        Case::new("form encoded", "POST", "/v1/task")
            .typed("application/x-www-form-urlencoded", "a=1&b=2"),
    );
    cases.push(Case::new("empty object", "POST", "/v1/task").json("{}"));
    cases.push(
        Case::new("wrong types", "POST", "/v1/task")
            .json(r#"{"task_id": 5, "intent": 7, "payload": "x", "constraints": "fast"}"#),
    );
    type Edit = Box<dyn Fn(&mut Value)>;
    let edits: Vec<(&str, Edit)> = vec![
        (
            "task_id not a UUID",
            Box::new(|t: &mut Value| t["task_id"] = json!("nope")),
        ),
        (
            "timeout_ms too small",
            Box::new(|t: &mut Value| t["constraints"]["timeout_ms"] = json!(1)),
        ),
        (
            "timeout_ms a string",
            Box::new(|t: &mut Value| t["constraints"]["timeout_ms"] = json!("10")),
        ),
        (
            "unknown qos",
            Box::new(|t: &mut Value| t["constraints"]["qos"] = json!("warp")),
        ),
        (
            "unknown priority",
            Box::new(|t: &mut Value| t["constraints"]["priority"] = json!(99)),
        ),
        (
            "intent modifier",
            Box::new(|t: &mut Value| t["intent"] = json!(format!("{CHAT}+fast"))),
        ),
        (
            "intent not served",
            Box::new(|t: &mut Value| t["intent"] = json!("urn:iicp:intent:x.acme:nope:v1")),
        ),
        (
            "intent malformed",
            Box::new(|t: &mut Value| t["intent"] = json!("chat please")),
        ),
        (
            "payload an array",
            Box::new(|t: &mut Value| t["payload"] = json!([1, 2])),
        ),
        (
            "messages a string",
            Box::new(|t: &mut Value| t["payload"]["messages"] = json!("hi")),
        ),
        (
            "messages empty",
            Box::new(|t: &mut Value| t["payload"]["messages"] = json!([])),
        ),
        (
            "role a number",
            Box::new(|t: &mut Value| t["payload"]["messages"][0]["role"] = json!(5)),
        ),
        (
            "model not served",
            Box::new(|t: &mut Value| t["payload"]["model"] = json!("no-such-model")),
        ),
        (
            "iicp_conf garbage",
            Box::new(|t: &mut Value| t["iicp_conf"] = json!({"v": 1, "ct": "!!"})),
        ),
        (
            "auth wrong type",
            Box::new(|t: &mut Value| t["auth"] = json!("token")),
        ),
        (
            "nonce wrong type",
            Box::new(|t: &mut Value| t["nonce"] = json!(5)),
        ),
    ];
    for (label, edit) in &edits {
        cases.push(Case::new(*label, "POST", "/v1/task").json(task(edit.as_ref())));
    }
    let replayed = task(&|_| {});
    cases.push(
        Case::new("first copy (accepted, not checked)", "POST", "/v1/task").json(replayed.clone()),
    );
    cases.push(Case::new("replayed task_id", "POST", "/v1/task").json(replayed));
    cases.extend(bad_routes(
        &["/iicp/health", "/metrics"],
        &["/v1/task"],
        &[
            "/",
            "/nope",
            "/v1/tasks",
            "/v2/task",
            "/v1/task/extra",
            "/%ff",
        ],
    ));
    cases.push(Case::new("DELETE on the task route", "DELETE", "/v1/task"));
    cases.push(Case::new("a made-up method", "BREW", "/v1/task").json("{}"));
    cases
}

fn gateway_corpus() -> Vec<(Case, Shape)> {
    let mut cases = Vec::new();
    let mut add = |cs: Vec<Case>| {
        for c in cs {
            let shape = if c.path.starts_with("/api/") {
                Shape::Ollama
            } else {
                Shape::OpenAi
            };
            cases.push((c, shape));
        }
    };
    let limit = 2 * 1024 * 1024; // --max-body-bytes is 1 MiB below
    for (i, route) in [
        "/v1/chat/completions",
        "/v1/embeddings",
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/embeddings",
    ]
    .iter()
    .enumerate()
    {
        add(bad_bodies(route, limit, 40 + i as u64));
        add(vec![
            Case::new("text/plain junk", "POST", *route).typed("text/plain", "not json at all"),
            Case::new("wrong types", "POST", *route).json(
                r#"{"model": 5, "messages": "hi", "prompt": 7, "input": 5, "stream": "yes"}"#,
            ),
        ]);
    }
    add(vec![
        Case::new("messages empty", "POST", "/v1/chat/completions")
            .json(json!({"model": CHAT_MODEL, "messages": []}).to_string()),
        Case::new("message not an object", "POST", "/v1/chat/completions")
            .json(json!({"model": CHAT_MODEL, "messages": [1]}).to_string()),
        Case::new("unknown model", "POST", "/v1/chat/completions")
            .json(openai_chat("no-such-model", PROMPT, false).to_string()),
        Case::new("unknown model, streamed", "POST", "/v1/chat/completions")
            .json(openai_chat("no-such-model", PROMPT, true).to_string()),
        Case::new("embedding input an object", "POST", "/v1/embeddings")
            .json(json!({"model": EMBED_MODEL, "input": {}}).to_string()),
        Case::new("embedding input a number", "POST", "/v1/embeddings")
            .json(json!({"model": EMBED_MODEL, "input": 5}).to_string()),
        Case::new("embedding with an unknown model", "POST", "/v1/embeddings")
            .json(json!({"model": "no-such-model", "input": "x"}).to_string()),
        Case::new("unknown model", "GET", "/v1/models/no-such-model"),
        Case::new("messages a string", "POST", "/api/chat")
            .json(json!({"model": CHAT_MODEL, "messages": "hi"}).to_string()),
        Case::new("unknown model", "POST", "/api/chat")
            .json(ollama_chat("no-such-model", PROMPT, true).to_string()),
        Case::new("prompt a number", "POST", "/api/generate")
            .json(json!({"model": CHAT_MODEL, "prompt": 5}).to_string()),
        Case::new("unknown model", "POST", "/api/generate")
            .json(json!({"model": "no-such-model", "prompt": PROMPT}).to_string()),
        Case::new("input a number", "POST", "/api/embed")
            .json(json!({"model": EMBED_MODEL, "input": 5}).to_string()),
        Case::new("prompt an object", "POST", "/api/embeddings")
            .json(json!({"model": EMBED_MODEL, "prompt": {}}).to_string()),
    ]);
    add(bad_routes(
        &["/v1/models", "/api/tags", "/api/version"],
        &[
            "/v1/chat/completions",
            "/v1/embeddings",
            "/api/chat",
            "/api/generate",
            "/api/embed",
            "/api/embeddings",
        ],
        &[
            "/nope",
            "/v1/nope",
            "/api/nope",
            "/v1/completions/x",
            "/%ff",
            "/api/pull",
        ],
    ));
    add(vec![
        Case::new("a made-up method", "BREW", "/v1/chat/completions").json("{}"),
        Case::new("a made-up method", "BREW", "/api/chat").json("{}"),
    ]);
    cases
}

/// What is wrong with an answer, if anything: it must be a 4xx with a structured error body in
/// the route's shape.
fn judge(r: &Option<RawResponse>, shape: Shape) -> Option<String> {
    let Some(r) = r else {
        return Some("connection closed without an answer".into());
    };
    if !(400..500).contains(&r.status) {
        return Some(format!(
            "status {} (body {:?})",
            r.status,
            String::from_utf8_lossy(&r.body[..r.body.len().min(300)])
        ));
    }
    let Some(v) = r.json() else {
        return Some(format!(
            "{} with a body that is not JSON: {:?}",
            r.status,
            String::from_utf8_lossy(&r.body[..r.body.len().min(300)])
        ));
    };
    let e = &v["error"];
    let ok = match shape {
        Shape::Iicp => e["code"].is_string() && e["message"].is_string(),
        Shape::OpenAi => e["code"].is_string() && e["message"].is_string() && e["type"].is_string(),
        Shape::Ollama => e.is_string(),
    };
    (!ok).then(|| format!("{} with a body not in the {shape:?} shape: {v}", r.status))
}

async fn run_corpus(addr: &str, cases: Vec<(Case, Shape)>) -> Vec<String> {
    let host = addr.trim_start_matches("http://").to_owned();
    let mut problems = Vec::new();
    for (case, shape) in cases {
        let bytes = case.bytes(&host);
        let a = addr.to_owned();
        let answer = tokio::task::spawn_blocking(move || raw_http(&a, bytes))
            .await
            .unwrap();
        if case.label.contains("not checked") {
            continue;
        }
        if let Some(p) = judge(&answer, shape) {
            problems.push(format!(
                "{addr} {} {} [{}]: {p}",
                case.method,
                &case.path[..case.path.len().min(80)],
                case.label
            ));
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_to_every_endpoint_get_structured_4xx_errors_and_nothing_crashes() {
    let _shared = SERIAL.read().await;
    let mut spec = MeshSpec::three("malformed");
    spec.gateway_args = vec!["--max-body-bytes".into(), "1048576".into()];
    let mut mesh = Mesh::start(spec).await;
    let identity: Value = serde_json::from_slice(
        &std::fs::read(mesh.nodes[0].state_dir.join("node-identity.json")).unwrap(),
    )
    .unwrap();
    let token = identity["node_token"].as_str().unwrap();
    let node_id = identity["node_id"].as_str().unwrap();

    let iicp = |cases: Vec<Case>| -> Vec<(Case, Shape)> {
        cases.into_iter().map(|c| (c, Shape::Iicp)).collect()
    };
    let directory = iicp(directory_corpus(node_id, token));
    let node = iicp(node_corpus());
    let gateway = gateway_corpus();
    let total = directory.len() + node.len() + gateway.len();
    let started = Instant::now();
    let (mut problems, node_problems, gateway_problems) = tokio::join!(
        run_corpus(&mesh.directory_url, directory),
        run_corpus(&mesh.nodes[0].url, node),
        run_corpus(&mesh.gateway_url, gateway),
    );
    problems.extend(node_problems);
    problems.extend(gateway_problems);

    // Below the applications: bytes that are not HTTP at all, and a header block too large.
    // The HTTP layer answers these (or hangs up) before any route runs, so there is no body
    // to shape; what matters is a 4xx at most and a process that lives on.
    let mut oversized = b"GET /iicp/health HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec();
    oversized.extend(std::iter::repeat_n(b'a', 512 * 1024));
    oversized.extend_from_slice(b"\r\n\r\n");
    let tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage-tls-hello".to_vec();
    // Broken framing on each server's main POST route: conflicting or unreadable lengths, a
    // smuggling-style double framing, a bad chunk, a body cut short by a caller that hangs up.
    let framing = |path: &str| -> Vec<(&'static str, Vec<u8>, bool)> {
        let head = format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n");
        vec![
            (
                "conflicting content-length",
                format!("{head}content-length: 2\r\ncontent-length: 7\r\n\r\n{{}}{{}}{{}}"),
                false,
            ),
            (
                "content-length not a number",
                format!("{head}content-length: abc\r\n\r\n{{}}"),
                false,
            ),
            (
                "content-length and chunked",
                format!("{head}content-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"),
                false,
            ),
            (
                "bad chunk size",
                format!("{head}transfer-encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"),
                false,
            ),
            (
                "body cut short, caller hangs up",
                format!("{head}content-length: 1000\r\n\r\n{{\"messages\": ["),
                true,
            ),
        ]
        .into_iter()
        .map(|(label, raw, hang_up)| (label, raw.into_bytes(), hang_up))
        .collect()
    };
    for (addr, path) in [
        (mesh.directory_url.clone(), "/api/v1/register"),
        (mesh.nodes[0].url.clone(), "/v1/task"),
        (mesh.gateway_url.clone(), "/v1/chat/completions"),
    ] {
        let mut raws: Vec<(&str, Vec<u8>, bool)> = vec![
            ("random bytes", noise(4096, 5), false),
            ("a TLS hello", tls_hello.clone(), false),
            ("a 512 KiB header", oversized.clone(), false),
        ];
        raws.extend(framing(path));
        for (label, raw, hang_up) in raws {
            let a = addr.clone();
            let answer = tokio::task::spawn_blocking(move || {
                if hang_up {
                    raw_http_hanging_up(&a, raw)
                } else {
                    raw_http(&a, raw)
                }
            })
            .await
            .unwrap();
            if let Some(r) = answer {
                if !(400..500).contains(&r.status) {
                    problems.push(format!("{addr} [{label}]: status {}", r.status));
                }
            }
        }
    }
    eprintln!(
        "{total} malformed requests in {:?}, {} problems",
        started.elapsed(),
        problems.len()
    );
    assert!(
        problems.is_empty(),
        "{} of {total} malformed requests were answered wrongly:\n{}",
        problems.len(),
        problems.join("\n")
    );

    // Everyone is alive, nothing was changed by the garbage, and the mesh still works.
    mesh.assert_all_alive();
    let listed = mesh.discover_ids(CHAT).await.unwrap();
    for n in &mesh.nodes {
        assert!(listed.contains(&n.id), "{} was dropped", n.id);
    }
    assert_eq!(plain_chat(&mesh).await.status(), 200);
    for p in mesh.procs_mut() {
        assert!(!p.log_text().contains("panicked"), "{} panicked", p.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_prompt_never_reaches_any_process_log() {
    let _shared = SERIAL.read().await;
    let mut spec = MeshSpec::three("canary");
    spec.log = "trace";
    let mut mesh = Mesh::start(spec).await;
    let canary = format!("canary{}", uuid::Uuid::new_v4().simple());
    let prompt = format!("{canary} {canary}");
    let echoed = |text: &str| text.contains(&canary);

    // Through the gateway: every API, plain and streamed; the doubles echo the prompt, so the
    // canary also travels back as output.
    let r = mesh
        .gw_post(
            "/v1/chat/completions",
            &openai_chat(CHAT_MODEL, &prompt, false),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(echoed(&r.text().await.unwrap()));
    let r = mesh
        .gw_post(
            "/v1/chat/completions",
            &openai_chat(CHAT_MODEL, &prompt, true),
        )
        .await;
    assert!(echoed(&r.text().await.unwrap()));
    let r = mesh
        .gw_post("/api/chat", &ollama_chat(CHAT_MODEL, &prompt, true))
        .await;
    assert!(echoed(&r.text().await.unwrap()));
    let r = mesh
        .gw_post(
            "/api/generate",
            &json!({"model": CHAT_MODEL, "prompt": prompt, "system": canary}),
        )
        .await;
    assert!(echoed(&r.text().await.unwrap()));
    for (path, body) in [
        (
            "/v1/embeddings",
            json!({"model": EMBED_MODEL, "input": [prompt, canary]}),
        ),
        ("/api/embed", json!({"model": EMBED_MODEL, "input": prompt})),
        (
            "/api/embeddings",
            json!({"model": EMBED_MODEL, "prompt": prompt}),
        ),
    ] {
        assert_eq!(mesh.gw_post(path, &body).await.status(), 200, "{path}");
    }
    // Refusals and errors carrying it: unknown model, invalid request, too large a body.
    let r = mesh
        .gw_post(
            "/v1/chat/completions",
            &openai_chat("no-such-model", &prompt, false),
        )
        .await;
    assert_eq!(r.status(), 404);
    let r = mesh
        .gw_post(
            "/v1/chat/completions",
            &json!({"model": CHAT_MODEL, "messages": [{"role": canary, "content": prompt}]}),
        )
        .await;
    assert!(r.status().is_client_error());
    let r = mesh
        .http
        .post(mesh.gw("/api/chat"))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"model\": \"{canary}\", \"messages\": [{{\"content\": \"{canary}"
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());

    // Straight at a node: plain, streamed, embedding, and refused.
    let r = mesh
        .node_task(1, &chat_task(&prompt, "interactive"), false)
        .await;
    assert!(echoed(&r.text().await.unwrap()));
    let r = mesh
        .node_task(1, &chat_task(&prompt, "interactive"), true)
        .await;
    assert!(echoed(&r.text().await.unwrap()));
    assert_eq!(
        mesh.node_task(1, &embedding_task(&prompt), false)
            .await
            .status(),
        200
    );
    let mut refused = chat_task(&prompt, "interactive");
    refused["constraints"]["timeout_ms"] = json!(1);
    refused["payload"]["model"] = json!(canary);
    assert!(mesh
        .node_task(1, &refused, false)
        .await
        .status()
        .is_client_error());
    let mut unknown_model = chat_task(&prompt, "interactive");
    unknown_model["payload"]["model"] = json!(canary);
    assert!(mesh
        .node_task(1, &unknown_model, false)
        .await
        .status()
        .is_client_error());

    // Through the SDK, sealed with IICP-CX for the node to open.
    let sdk = mesh.sdk(|_| {});
    let a = sdk.call(sdk_chat(&prompt, CHAT_MODEL)).await.unwrap();
    assert!(echoed(&a.response.result.unwrap().to_string()));

    // A prompt sent to the directory by mistake is refused without being echoed or logged.
    let r = mesh
        .http
        .post(format!("{}/api/v1/dispatch/ticket", mesh.directory_url))
        .json(&json!({"intent": CHAT, "prompt": prompt, "messages": [{"content": canary}]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    assert!(!echoed(&r.text().await.unwrap()));

    tokio::time::sleep(Duration::from_millis(300)).await;
    mesh.assert_all_alive();
    let files = mesh.log_files();
    assert_eq!(files.len(), 5, "{files:?}");
    for file in files {
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
        // The test could not fail if nothing were logged: TRACE must really be on (every
        // process logs its HTTP connections at that level).
        assert!(
            text.contains(" TRACE "),
            "{} has no TRACE lines",
            file.display()
        );
        if let Some(at) = text.find(&canary) {
            let line = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
            panic!("the canary is in {}:\n{}", file.display(), &text[line..end]);
        }
    }
}
