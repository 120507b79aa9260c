//! Two nodes; one goes away; requests through the gateway still succeed on the other.

mod common;

use common::{header, ndjson, sse_events, Mesh, CHAT_MODEL, EMBED_MODEL};
use iicp_testkit::{Behavior, Failure};
use serde_json::{json, Value};

fn prefix(id: &str) -> String {
    id.replace('-', "")[..8].to_owned()
}

async fn assert_served_by_survivor(mesh: &Mesh, survivor: &str, rounds: usize) -> u32 {
    let mut max_attempts = 0;
    for _ in 0..rounds {
        let r = mesh
            .post(
                "/v1/chat/completions",
                &json!({"model": CHAT_MODEL, "messages": [{"role": "user", "content": "still there"}]}),
            )
            .await;
        assert_eq!(r.status(), 200);
        assert!(survivor.starts_with(header(&r, "x-iicp-node")));
        max_attempts = max_attempts.max(header(&r, "x-iicp-attempts").parse().unwrap());
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "still there still there still"
        );

        let r = mesh
            .post(
                "/v1/chat/completions",
                &json!({"model": CHAT_MODEL, "stream": true,
                        "messages": [{"role": "user", "content": "x"}]}),
            )
            .await;
        assert_eq!(r.status(), 200);
        assert!(survivor.starts_with(header(&r, "x-iicp-node")));
        let (_, done) = sse_events(&r.text().await.unwrap());
        assert!(done);

        let r = mesh
            .post(
                "/api/chat",
                &json!({"model": CHAT_MODEL,
                "messages": [{"role": "user", "content": "x"}]}),
            )
            .await;
        assert_eq!(r.status(), 200);
        assert!(survivor.starts_with(header(&r, "x-iicp-node")));
        assert_eq!(
            ndjson(&r.text().await.unwrap()).last().unwrap()["done"],
            true
        );

        let r = mesh
            .post("/api/embed", &json!({"model": EMBED_MODEL, "input": "x"}))
            .await;
        assert_eq!(r.status(), 200);
        assert!(survivor.starts_with(header(&r, "x-iicp-node")));
    }
    max_attempts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_is_failed_over() {
    let mut mesh = Mesh::start(2).await;
    // Both nodes serve; the gateway's discover answer (cached) lists both.
    let r = mesh
        .post(
            "/v1/chat/completions",
            &json!({"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let first = header(&r, "x-iicp-node").to_owned();
    let gone = mesh
        .nodes
        .iter()
        .position(|n| prefix(&n.id) == first)
        .expect("served by one of the nodes");
    let survivor = prefix(&mesh.nodes[1 - gone].id);
    // Stop the node that just served.
    mesh.stop_node(gone).await;
    let attempts = assert_served_by_survivor(&mesh, &survivor, 4).await;
    eprintln!("most attempts after the stop: {attempts}");
    assert!(attempts <= 3);
    mesh.stop().await;
}

/// A node whose backend died stays registered and answers 502 `backend_error`; the SDK does not
/// retry that code elsewhere (it may be the request's fault), so the caller gets a 502 in its
/// own API's shape, with no internals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_is_a_502_in_the_callers_shape() {
    let mut mesh = Mesh::start(1).await;
    mesh.kill_backend(0);
    let r = mesh
        .post(
            "/v1/chat/completions",
            &json!({"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "backend_error");
    assert_eq!(v["error"]["type"], "server_error");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(!message.contains("127.0.0.1") && !message.contains("panick"));
    let r = mesh
        .post(
            "/api/chat",
            &json!({"model": CHAT_MODEL,
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].is_string());
    mesh.stop().await;
}

/// A stream that breaks after its first tokens ends with an error event in each API's shape
/// (the status line is gone by then), never with a `[DONE]` or `done: true` that would make a
/// cut answer look complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_midway_ends_with_an_error_event() {
    let mesh = Mesh::start(1).await;
    mesh.nodes[0]
        .backend
        .as_ref()
        .unwrap()
        .set_behavior(Behavior {
            fail: Some(Failure::CutStreamAfter(3)),
            ..Behavior::default()
        });
    let r = mesh
        .post(
            "/v1/chat/completions",
            &json!({"model": CHAT_MODEL, "stream": true,
                    "messages": [{"role": "user", "content": "one two three four five six"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let (events, done) = sse_events(&r.text().await.unwrap());
    assert!(!done);
    let last = events.last().unwrap();
    assert_eq!(last["error"]["type"], "server_error");
    assert!(last["error"]["message"].is_string());

    let r = mesh
        .post(
            "/api/chat",
            &json!({"model": CHAT_MODEL,
            "messages": [{"role": "user", "content": "one two three four five six"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let lines = ndjson(&r.text().await.unwrap());
    assert!(lines.iter().all(|l| l["done"] != true));
    assert!(lines.last().unwrap()["error"].is_string());
    mesh.stop().await;
}

/// A node that does not answer within the task timeout: 504 in each API's shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_backend_is_a_504() {
    let mesh = Mesh::start_with(1, |c| {
        c.task_timeout = std::time::Duration::from_millis(800)
    })
    .await;
    mesh.nodes[0]
        .backend
        .as_ref()
        .unwrap()
        .set_behavior(Behavior::failing(Failure::Hang));
    let r = mesh
        .post(
            "/v1/chat/completions",
            &json!({"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 504);
    assert_eq!(header(&r, "x-iicp-attempts"), "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "timeout");
    let r = mesh
        .post("/api/embed", &json!({"model": EMBED_MODEL, "input": "x"}))
        .await;
    assert_eq!(r.status(), 504);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].is_string());
    mesh.stop().await;
}
