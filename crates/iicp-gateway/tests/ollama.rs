//! The Ollama API of the gateway against a real directory, node and backend double.

mod common;

use common::{header, ndjson, Mesh, CHAT_MODEL, EMBED_MODEL};
use serde_json::{json, Value};

fn chat(extra: Value) -> Value {
    let mut body = json!({
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": "hello mesh world"}],
    });
    if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_and_version_answer_like_ollama() {
    let mesh = Mesh::start(1).await;
    let r = mesh.get("/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "Ollama is running");
    let r = mesh.http.head(mesh.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = mesh.get("/api/version").await.json().await.unwrap();
    assert!(v["version"].as_str().unwrap().contains('.'));
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streams_ndjson_by_default() {
    let mesh = Mesh::start(1).await;
    let r = mesh.post("/api/chat", &chat(json!({}))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "application/x-ndjson");
    assert!(!header(&r, "x-iicp-node").is_empty());
    assert_eq!(header(&r, "x-iicp-attempts"), "1");
    assert_eq!(header(&r, "x-iicp-generated-by-ai"), "true");
    let lines = ndjson(&r.text().await.unwrap());
    assert!(lines.len() >= 3, "pieces and a final line: {lines:?}");
    let (last, pieces) = lines.split_last().unwrap();
    for l in pieces {
        assert_eq!(l["model"], CHAT_MODEL);
        assert_eq!(l["done"], false);
        assert_eq!(l["message"]["role"], "assistant");
        assert!(l["created_at"].as_str().unwrap().ends_with('Z'));
    }
    let text: String = pieces
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "hello mesh world hello mesh");
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["message"]["content"], "");
    assert_eq!(last["eval_count"], 5);
    assert!(last["prompt_eval_count"].is_u64());
    assert!(last["total_duration"].as_u64().unwrap() > 0);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_without_stream_is_one_object_and_maps_options() {
    let mesh = Mesh::start(1).await;
    let body = chat(json!({"stream": false, "format": "json",
        "options": {"num_predict": 2, "temperature": 0.3, "top_p": 0.8, "seed": 9,
                    "stop": ["END"], "num_ctx": 2048}}));
    let r = mesh.post("/api/chat", &body).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("application/json"));
    assert!(!header(&r, "x-iicp-node").is_empty());
    assert_eq!(header(&r, "x-iicp-generated-by-ai"), "true");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["model"], CHAT_MODEL);
    assert_eq!(v["done"], true);
    assert_eq!(v["message"]["role"], "assistant");
    assert_eq!(v["message"]["content"], "hello mesh");
    assert_eq!(v["done_reason"], "length");
    assert_eq!(v["eval_count"], 2);
    let seen = mesh.backend_body(0);
    assert_eq!(seen["max_tokens"], 2);
    assert_eq!(seen["temperature"], 0.3);
    assert_eq!(seen["top_p"], 0.8);
    assert_eq!(seen["seed"], 9);
    assert_eq!(seen["stop"], json!(["END"]));
    assert_eq!(seen["response_format"]["type"], "json_object");
    assert!(seen.get("num_ctx").is_none());
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_answers_with_response_streamed_or_not() {
    let mesh = Mesh::start(1).await;
    let r = mesh
        .post(
            "/api/generate",
            &json!({"model": CHAT_MODEL, "prompt": "why is the sky blue", "system": "be kind",
                    "stream": false}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["response"], "why is the sky blue");
    assert_eq!(v["done"], true);
    assert!(v.get("message").is_none());
    let seen = mesh.backend_body(0);
    assert_eq!(
        seen["messages"][0],
        json!({"role": "system", "content": "be kind"})
    );
    assert_eq!(seen["messages"][1]["role"], "user");

    let r = mesh
        .post(
            "/api/generate",
            &json!({"model": CHAT_MODEL, "prompt": "a b c"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "application/x-ndjson");
    let lines = ndjson(&r.text().await.unwrap());
    let (last, pieces) = lines.split_last().unwrap();
    let text: String = pieces
        .iter()
        .map(|l| l["response"].as_str().unwrap())
        .collect();
    assert_eq!(text, "a b c a b");
    assert_eq!(last["done"], true);
    assert_eq!(last["response"], "");

    // No prompt: Ollama's "load the model" answer.
    let r = mesh
        .post("/api/generate", &json!({"model": CHAT_MODEL}))
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["done_reason"], "load");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_and_legacy_embeddings() {
    let mesh = Mesh::start(1).await;
    let r = mesh
        .post(
            "/api/embed",
            &json!({"model": EMBED_MODEL, "input": ["one", "two"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(!header(&r, "x-iicp-node").is_empty());
    assert_eq!(header(&r, "x-iicp-attempts"), "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["model"], EMBED_MODEL);
    let embeddings = v["embeddings"].as_array().unwrap();
    assert_eq!(embeddings.len(), 2);
    let second: Vec<f32> = embeddings[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(second, iicp_testkit::embedding("two").to_vec());
    assert!(v["prompt_eval_count"].is_u64());

    let r = mesh
        .post(
            "/api/embeddings",
            &json!({"model": EMBED_MODEL, "prompt": "one"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["embedding"].as_array().unwrap().len(),
        iicp_testkit::EMBEDDING_DIMS
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_live_models_in_ollamas_shape() {
    let mesh = Mesh::start(1).await;
    let r = mesh.get("/api/tags").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let models = v["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec![CHAT_MODEL, EMBED_MODEL]);
    for m in models {
        assert_eq!(m["model"], m["name"]);
        assert!(m["modified_at"].as_str().unwrap().ends_with('Z'));
        assert!(m["size"].is_u64());
        assert_eq!(m["digest"].as_str().unwrap().len(), 64);
        assert!(m["details"].is_object());
    }
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_are_404_in_ollamas_shape_and_tags_resolve() {
    let mesh = Mesh::start(1).await;
    for (path, body) in [
        ("/api/chat", chat(json!({"model": "nope"}))),
        ("/api/chat", chat(json!({"model": "nope", "stream": false}))),
        ("/api/generate", json!({"model": "nope", "prompt": "hi"})),
        ("/api/embed", json!({"model": "nope", "input": "hi"})),
    ] {
        let r = mesh.post(path, &body).await;
        assert_eq!(r.status(), 404, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v, json!({"error": "model \"nope\" not found"}), "{path}");
    }
    // `tiny-chat:latest` names the model served as `tiny-chat`.
    let r = mesh
        .post(
            "/api/chat",
            &chat(json!({"model": "tiny-chat:latest", "stream": false})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["model"], CHAT_MODEL);
    // A missing model and a bad body are 400s in the same shape.
    let r = mesh
        .post(
            "/api/chat",
            &json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "model is required");
    let r = mesh.post("/api/nothing", &json!({})).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].is_string());
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_ask_for_a_vision_node() {
    let mesh = Mesh::start(1).await;
    // tiny-chat takes text only, so no node can take the image: 503, not a silent drop.
    let r = mesh
        .post(
            "/api/chat",
            &chat(json!({"stream": false, "messages": [
                {"role": "user", "content": "what is this", "images": ["iVBORw0KGgo="]}]})),
        )
        .await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].is_string());
    mesh.stop().await;
}
