//! The node in front of each backend flavor (OpenAI-compatible, Ollama, Anthropic), over real
//! HTTP: chat (plain and streamed), embeddings, usage accounting, model choice, trace
//! propagation and the capabilities advertised from the backend's model list.

mod common;

use common::*;
use iicp_testkit::{BackendDouble, Flavor};
use serde_json::{json, Value};

fn default_chat_model(flavor: Flavor) -> String {
    models(flavor).chat[0].clone()
}

fn content(result: &Value) -> &str {
    result["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no assistant content in {result}"))
}

async fn chat_answers_with_the_completion_usage_and_model(flavor: Flavor) {
    let d = double(flavor).await;
    let node = TestNode::local(&d).await;
    let task = chat_task(PROMPT);
    let r = node.task(&task).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["task_id"], task["task_id"]);
    assert_eq!(r.body["status"], "success");
    assert_eq!(content(&r.body["result"]), REPLY);
    assert_eq!(r.body["metrics"]["tokens_used"], TOKENS);
    assert!(r.body["metrics"]["latency_ms"].is_u64());
    assert_eq!(r.body["model_used"], default_chat_model(flavor));
    assert_eq!(r.body["generated_by_ai"], true);
    assert!(r.body["error"].is_null(), "{}", r.text);
    // The adapter spoke the backend's own API with the model it picked.
    let sent = d.last_body().expect("the double saw a JSON request");
    assert_eq!(sent["model"], default_chat_model(flavor));
}

async fn a_requested_model_is_used_when_served(flavor: Flavor) {
    let d = double(flavor).await;
    let node = TestNode::local(&d).await;
    let wanted = models(flavor).chat[1].clone();
    let mut task = chat_task(PROMPT);
    task["payload"]["model"] = json!(wanted);
    let r = node.task(&task).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["model_used"], wanted.as_str());
    assert_eq!(d.last_body().unwrap()["model"], wanted.as_str());
}

async fn a_model_the_node_does_not_serve_is_404_e029(flavor: Flavor) {
    let d = double(flavor).await;
    let node = TestNode::local(&d).await;
    let before = d.requests();
    let mut task = chat_task(PROMPT);
    task["payload"]["model"] = json!("gpt-9-ultra");
    let r = node.task(&task).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.error_code(), "IICP-E029");
    assert_eq!(r.body["task_id"], task["task_id"]);
    assert_eq!(d.requests(), before, "the backend was not called");
}

async fn chat_streams_deltas_then_done_with_the_full_response(flavor: Flavor) {
    let d = double(flavor).await;
    let node = TestNode::local(&d).await;
    let task = chat_task(PROMPT);
    let r = node.stream(&task).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/event-stream"),
        "{:?}",
        r.headers
    );
    let events = r.sse();
    let (last, deltas) = events.split_last().expect("at least one event");
    assert!(deltas.len() >= 2, "the reply came in pieces: {events:?}");
    assert!(deltas.iter().all(|e| e.event == "delta"), "{events:?}");
    let streamed: String = deltas
        .iter()
        .map(|e| e.json()["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(streamed, REPLY);
    assert_eq!(last.event, "done", "{events:?}");
    let done = last.json();
    assert_eq!(done["task_id"], task["task_id"]);
    assert_eq!(done["status"], "success");
    assert_eq!(content(&done["result"]), REPLY);
    assert_eq!(done["metrics"]["tokens_used"], TOKENS);
    assert_eq!(done["model_used"], default_chat_model(flavor));
    assert_eq!(done["generated_by_ai"], true);
    assert_eq!(d.last_body().unwrap()["stream"], true);
    node.wait_idle().await;
}

async fn traceparent_is_propagated_to_the_backend(flavor: Flavor) {
    let d = double(flavor).await;
    let node = TestNode::local(&d).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = node
        .post(&chat_task(PROMPT))
        .header("traceparent", traceparent)
        .header("tracestate", "vendor=abc");
    let r = node.send(req).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let seen = d.last_headers().unwrap();
    assert_eq!(seen["traceparent"], traceparent);
    assert_eq!(seen["tracestate"], "vendor=abc");

    // Without the header, the envelope's trace_id becomes the W3C trace id.
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let mut task = chat_task(PROMPT);
    task["trace"] = json!({"trace_id": trace_id});
    let r = node.task(&task).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-iicp-trace-id"), Some(trace_id));
    let seen = d.last_headers().unwrap();
    let derived = seen["traceparent"].to_str().unwrap();
    let parts: Vec<&str> = derived.split('-').collect();
    assert_eq!(parts.len(), 4, "{derived}");
    assert_eq!((parts[0], parts[1]), ("00", trace_id), "{derived}");
    assert_eq!(parts[2].len(), 16, "{derived}");
}

async fn embeddings_return_the_backend_vectors_and_usage(flavor: Flavor) {
    let d = double(flavor).await;
    let node = TestNode::local(&d).await;
    let inputs = ["alpha beta", "gamma"];
    let task = embedding_task(json!(inputs));
    let r = node.task(&task).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "success");
    assert_eq!(r.body["model_used"], models(flavor).embedding[0].as_str());
    assert_eq!(r.body["metrics"]["tokens_used"], 3, "{}", r.text);
    let data = r.body["result"]["data"].as_array().expect("data[]");
    assert_eq!(data.len(), inputs.len());
    for (i, text) in inputs.iter().enumerate() {
        assert_eq!(data[i]["index"], i);
        let got: Vec<f64> = data[i]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let want = iicp_testkit::embedding(text);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - f64::from(w)).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }
    // Asking for an embedding with SSE still gives one JSON answer.
    let r = node.stream(&embedding_task(json!("alpha"))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "success");
}

/// Vision models get image input, the rest text only; embedding models get their own intent.
fn assert_capabilities(caps: &Value, flavor: Flavor) {
    let caps = caps
        .as_array()
        .unwrap_or_else(|| panic!("no capabilities: {caps}"));
    let m = models(flavor);
    let find = |model: &str| {
        caps.iter()
            .find(|c| c["models"].as_array().unwrap().iter().any(|n| n == model))
            .unwrap_or_else(|| panic!("{model} not advertised in {caps:?}"))
    };
    let text = find(&m.chat[0]);
    assert_eq!(text["intent"], CHAT);
    assert_eq!(text["input_modalities"], json!(["text"]));
    let vision = find(&m.chat[1]);
    assert_eq!(vision["intent"], CHAT);
    assert_eq!(vision["input_modalities"], json!(["text", "image"]));
    match m.embedding.first() {
        Some(e) => assert_eq!(find(e)["intent"], EMBEDDING),
        None => assert!(caps.iter().all(|c| c["intent"] != EMBEDDING), "{caps:?}"),
    }
}

async fn capabilities_come_from_the_model_list(flavor: Flavor) {
    let d = double(flavor).await;
    let node = TestNode::local(&d).await;
    let health = node.health().await;
    assert_eq!(health["status"], "ok");
    let served: Vec<String> = models(flavor).all().map(str::to_owned).collect();
    assert_eq!(health["models"], json!(served));
    let intents = health["intents"].as_array().unwrap();
    assert!(intents.iter().any(|i| i == CHAT), "{health}");
    assert_eq!(
        intents.iter().any(|i| i == EMBEDDING),
        flavor != Flavor::Anthropic,
        "{health}"
    );
    assert_capabilities(&health["capabilities"], flavor);
}

async fn the_directory_stores_the_advertised_capabilities(flavor: Flavor) {
    let d = double(flavor).await;
    let dir = TestDirectory::start().await;
    let (node, id) = registered_node(&dir, &d, |_| {}).await;
    let record = dir.node(&id).await.expect("the node is registered");
    assert_eq!(record["endpoint"], node.base);
    assert_capabilities(&record["capabilities"], flavor);
    let backend = match flavor {
        Flavor::OpenAi => "custom",
        Flavor::Ollama => "ollama",
        Flavor::Anthropic => "anthropic",
    };
    assert_eq!(record["backend"], backend);
}

every_flavor! {
    chat_answers_with_the_completion_usage_and_model,
    a_requested_model_is_used_when_served,
    a_model_the_node_does_not_serve_is_404_e029,
    chat_streams_deltas_then_done_with_the_full_response,
    traceparent_is_propagated_to_the_backend,
    capabilities_come_from_the_model_list,
    the_directory_stores_the_advertised_capabilities,
}

#[tokio::test]
async fn openai_embeddings_return_the_backend_vectors_and_usage() {
    embeddings_return_the_backend_vectors_and_usage(Flavor::OpenAi).await
}

#[tokio::test]
async fn ollama_embeddings_return_the_backend_vectors_and_usage() {
    embeddings_return_the_backend_vectors_and_usage(Flavor::Ollama).await
}

#[tokio::test]
async fn anthropic_serves_no_embedding_intent() {
    let d: BackendDouble = double(Flavor::Anthropic).await;
    let node = TestNode::local(&d).await;
    let r = node.task(&embedding_task(json!("alpha"))).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.error_code(), "unknown_intent");
}
