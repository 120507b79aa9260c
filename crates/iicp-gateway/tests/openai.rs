//! The OpenAI API of the gateway against a real directory, node and backend double.

mod common;

use common::{header, sse_events, Mesh, CHAT_MODEL, EMBED_MODEL};
use serde_json::{json, Value};

fn chat_body(extra: Value) -> Value {
    let mut body = json!({
        "model": CHAT_MODEL,
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": "hello mesh world"}],
    });
    if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completion_has_the_openai_shape_and_the_iicp_headers() {
    let mesh = Mesh::start(1).await;
    let r = mesh
        .post("/v1/chat/completions", &chat_body(json!({})))
        .await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("application/json"));
    assert!(mesh.nodes[0]
        .id
        .replace('-', "")
        .starts_with(header(&r, "x-iicp-node")));
    assert!(!header(&r, "x-iicp-node").is_empty());
    assert_eq!(header(&r, "x-iicp-attempts"), "1");
    assert_eq!(header(&r, "x-iicp-generated-by-ai"), "true");
    let task_id = header(&r, "x-iicp-task-id").replace('-', "");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"], format!("chatcmpl-{task_id}"));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(body["model"], CHAT_MODEL);
    assert_eq!(body["choices"][0]["index"], 0);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "hello mesh world hello mesh"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() >= 5);
    // The request reached the backend as the IICP payload said.
    let seen = mesh.backend_body(0);
    assert_eq!(seen["model"], CHAT_MODEL);
    assert_eq!(seen["messages"][0]["content"], "be brief");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_chat_is_openai_sse_with_usage_when_asked() {
    let mesh = Mesh::start(1).await;
    let r = mesh
        .post(
            "/v1/chat/completions",
            &chat_body(json!({"stream": true, "stream_options": {"include_usage": true}})),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/event-stream"));
    assert!(!header(&r, "x-iicp-node").is_empty());
    assert_eq!(header(&r, "x-iicp-attempts"), "1");
    assert_eq!(header(&r, "x-iicp-generated-by-ai"), "true");
    let (events, done) = sse_events(&r.text().await.unwrap());
    assert!(done, "the stream ends with [DONE]");
    let id = events[0]["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("chatcmpl-"));
    for e in &events {
        assert_eq!(e["id"], id.as_str());
        assert_eq!(e["object"], "chat.completion.chunk");
        assert_eq!(e["model"], CHAT_MODEL);
    }
    assert_eq!(
        events[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let n = events.len();
    let text: String = events[1..n - 2]
        .iter()
        .map(|e| e["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "hello mesh world hello mesh");
    assert!(n - 3 >= 2, "more than one content chunk");
    assert_eq!(events[n - 2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(events[n - 2]["choices"][0]["delta"], json!({}));
    assert_eq!(events[n - 1]["choices"], json!([]));
    assert_eq!(events[n - 1]["usage"]["completion_tokens"], 5);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_chat_without_usage_sends_none_and_honours_max_tokens() {
    let mesh = Mesh::start(1).await;
    let r = mesh
        .post(
            "/v1/chat/completions",
            &chat_body(json!({"stream": true, "max_tokens": 2})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let (events, done) = sse_events(&r.text().await.unwrap());
    assert!(done);
    assert!(events.iter().all(|e| e.get("usage").is_none()));
    let last = events.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "hello mesh");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_and_response_format_pass_through_to_the_backend() {
    let mesh = Mesh::start(1).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let extra = json!({"tools": tools, "tool_choice": "auto",
        "response_format": {"type": "json_object"}, "seed": 42, "stop": "END",
        "temperature": 0.5, "user": "u-1"});
    let r = mesh
        .post("/v1/chat/completions", &chat_body(extra.clone()))
        .await;
    assert_eq!(r.status(), 200);
    let seen = mesh.backend_body(0);
    assert_eq!(seen["tools"], tools);
    assert_eq!(seen["tool_choice"], "auto");
    assert_eq!(seen["response_format"]["type"], "json_object");
    assert_eq!(seen["seed"], 42);
    assert_eq!(seen["stop"], json!(["END"]));
    assert_eq!(seen["user"], "u-1");
    // With tools, a stream is the whole answer replayed as chunks.
    let mut streamed = extra;
    streamed["stream"] = json!(true);
    let r = mesh
        .post("/v1/chat/completions", &chat_body(streamed))
        .await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/event-stream"));
    let (events, done) = sse_events(&r.text().await.unwrap());
    assert!(done);
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(events.last().unwrap()["choices"][0]["finish_reason"].is_string());
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_answer_floats_or_base64() {
    let mesh = Mesh::start(1).await;
    let r = mesh
        .post(
            "/v1/embeddings",
            &json!({"model": EMBED_MODEL, "input": ["one", "two words"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(!header(&r, "x-iicp-node").is_empty());
    assert_eq!(header(&r, "x-iicp-attempts"), "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], EMBED_MODEL);
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][1]["object"], "embedding");
    assert_eq!(body["data"][1]["index"], 1);
    let expected = iicp_testkit::embedding("two words");
    let got: Vec<f64> = body["data"][1]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(expected) {
        assert!((g - e as f64).abs() < 1e-6);
    }
    assert!(body["usage"]["prompt_tokens"].is_u64());

    let r = mesh
        .post(
            "/v1/embeddings",
            &json!({"model": EMBED_MODEL, "input": "one", "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(floats, iicp_testkit::embedding("one").to_vec());
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_what_live_nodes_serve() {
    let mesh = Mesh::start(1).await;
    let r = mesh.get("/v1/models").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![CHAT_MODEL, EMBED_MODEL]);
    assert_eq!(body["data"][0]["object"], "model");
    assert_eq!(body["data"][0]["owned_by"], "iicp");
    assert!(body["data"][0]["created"].is_u64());

    let r = mesh.get(&format!("/v1/models/{CHAT_MODEL}")).await;
    assert_eq!(r.status(), 200);
    let one: Value = r.json().await.unwrap();
    assert_eq!(one["id"], CHAT_MODEL);
    let r = mesh.get("/v1/models/org/missing-model").await;
    assert_eq!(r.status(), 404);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "model_not_found");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_are_404_in_openai_shape() {
    let mesh = Mesh::start(1).await;
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "nope", "stream": true,
                   "messages": [{"role": "user", "content": "hi"}]}),
        ),
        ("/v1/embeddings", json!({"model": "nope", "input": "hi"})),
        // Served, but for the other intent.
        (
            "/v1/chat/completions",
            json!({"model": EMBED_MODEL, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/embeddings",
            json!({"model": CHAT_MODEL, "input": "hi"}),
        ),
    ] {
        let r = mesh.post(path, &body).await;
        assert_eq!(r.status(), 404, "{path}");
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"]["type"], "invalid_request_error");
        assert_eq!(err["error"]["param"], "model");
        assert_eq!(err["error"]["code"], "model_not_found");
        let model = body["model"].as_str().unwrap();
        assert!(err["error"]["message"].as_str().unwrap().contains(model));
    }
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_400_and_unknown_routes_404_in_openai_shape() {
    let mesh = Mesh::start(1).await;
    let r = mesh
        .http
        .post(mesh.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["type"], "invalid_request_error");
    let r = mesh
        .post(
            "/v1/chat/completions",
            &json!({"model": CHAT_MODEL, "messages": []}),
        )
        .await;
    assert_eq!(r.status(), 400);
    // The node's own validation (temperature out of range) comes back as a 400 too.
    let r = mesh
        .post(
            "/v1/chat/completions",
            &chat_body(json!({"temperature": 7})),
        )
        .await;
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["type"], "invalid_request_error");
    assert!(!err["error"]["message"].as_str().unwrap().is_empty());
    let r = mesh.get("/v1/nothing-here").await;
    assert_eq!(r.status(), 404);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "not_found");
    let r = mesh.get("/v1/chat/completions").await;
    assert_eq!(r.status(), 405);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["type"], "invalid_request_error");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_bounded() {
    let mesh = Mesh::start_with(1, |c| c.max_body_bytes = 4096).await;
    let big = "x".repeat(8192);
    let r = mesh
        .post(
            "/v1/chat/completions",
            &chat_body(json!({"messages": [{"role": "user", "content": big}]})),
        )
        .await;
    assert_eq!(r.status(), 413);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "payload_too_large");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_mesh_is_503_with_the_iicp_code() {
    let mesh = Mesh::start(0).await;
    let r = mesh
        .post("/v1/chat/completions", &chat_body(json!({})))
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "x-iicp-attempts"), "0");
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "IICP-E033");
    assert_eq!(err["error"]["type"], "server_error");
    let r = mesh.get("/v1/models").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"], json!([]));
    mesh.stop().await;
}
