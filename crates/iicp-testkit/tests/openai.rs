//! The OpenAI-compatible double (llama.cpp `llama-server` shapes).

mod common;

use common::*;
use iicp_testkit::{embedding, BackendDouble, Flavor, Models, Options};
use serde_json::{json, Value};

const PROMPT: &str = "say hello to the whole world";

async fn double() -> BackendDouble {
    BackendDouble::start(
        Flavor::OpenAi,
        Models::new(["tiny-llama", "qwen2-vl"], ["all-minilm"]),
    )
    .await
}

fn chat(extra: Value) -> Value {
    let mut body = json!({
        "model": "tiny-llama",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": PROMPT}
        ]
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

#[tokio::test]
async fn models_health_and_unknown_routes() {
    let d = double().await;
    let resp = client()
        .get(format!("{}/v1/models", d.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let list: Value = resp.json().await.unwrap();
    assert_keys(&list, &["object", "data"]);
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tiny-llama", "qwen2-vl", "all-minilm"]);
    for m in list["data"].as_array().unwrap() {
        assert_keys(m, &["id", "object", "created", "owned_by"]);
        assert_eq!(m["object"], "model");
        assert!(m["created"].as_u64().unwrap() > 1_600_000_000);
    }

    let health = get_json(&d, "/health").await;
    assert_eq!(health, json!({"status": "ok"}));

    let resp = client()
        .get(format!("{}/v1/nope", d.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})
    );
}

#[tokio::test]
async fn chat_completion_whole() {
    let d = double().await;
    let resp = post(&d, "/v1/chat/completions", chat(json!({}))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(content_type(&resp), "application/json; charset=utf-8");
    let body: Value = resp.json().await.unwrap();
    assert_keys(
        &body,
        &["id", "object", "created", "model", "choices", "usage"],
    );
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "tiny-llama");
    assert_eq!(
        body["choices"],
        json!([{"index": 0, "message": {"role": "assistant", "content": "say hello to the whole"}, "finish_reason": "stop"}])
    );
    // Prompt tokens count every message's words: 2 + 6.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 8, "completion_tokens": 5, "total_tokens": 13})
    );

    let capped: Value = post(&d, "/v1/chat/completions", chat(json!({"max_tokens": 2})))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(capped["choices"][0]["message"]["content"], "say hello");
    assert_eq!(capped["choices"][0]["finish_reason"], "length");
    assert_eq!(capped["usage"]["completion_tokens"], 2);

    // Array content parts count as text; images are ignored.
    let parts = json!({"model": "qwen2-vl", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is"}, {"type": "image_url", "image_url": {"url": "data:,"}}, {"type": "text", "text": "this"}]}]});
    let body: Value = post(&d, "/v1/chat/completions", parts)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "what is this what is"
    );
}

#[tokio::test]
async fn chat_completion_stream_without_usage() {
    let d = double().await;
    let whole: Value = post(&d, "/v1/chat/completions", chat(json!({})))
        .await
        .json()
        .await
        .unwrap();
    let resp = post(&d, "/v1/chat/completions", chat(json!({"stream": true}))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(content_type(&resp), "text/event-stream");
    let (text, err) = read_body(resp).await;
    assert!(err.is_none());
    let events = parse_sse(&text);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert!(events.iter().all(|e| e.event.is_none()));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(Sse::json).collect();
    assert_eq!(chunks.len(), 1 + 5 + 1, "role, five tokens, finish");
    let id = chunks[0]["id"].as_str().unwrap();
    for c in &chunks {
        assert_keys(c, &["id", "object", "created", "model", "choices"]);
        assert_eq!(c["id"], id);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "tiny-llama");
    }
    assert_eq!(
        chunks[0]["choices"],
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}])
    );
    let mut content = String::new();
    for c in &chunks[1..6] {
        assert_keys(&c["choices"][0], &["index", "delta", "finish_reason"]);
        assert_keys(&c["choices"][0]["delta"], &["content"]);
        assert_eq!(c["choices"][0]["finish_reason"], Value::Null);
        content.push_str(c["choices"][0]["delta"]["content"].as_str().unwrap());
    }
    assert_eq!(
        content,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(
        chunks[6]["choices"],
        json!([{"index": 0, "delta": {}, "finish_reason": "stop"}])
    );
}

#[tokio::test]
async fn chat_completion_stream_with_usage() {
    let d = double().await;
    let body =
        chat(json!({"stream": true, "stream_options": {"include_usage": true}, "max_tokens": 3}));
    let (text, err) = read_body(post(&d, "/v1/chat/completions", body).await).await;
    assert!(err.is_none());
    let events = parse_sse(&text);
    assert_eq!(events.len(), 1 + 3 + 1 + 1 + 1);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let finish = events[4].json();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    let usage = events[5].json();
    assert_keys(
        &usage,
        &["id", "object", "created", "model", "choices", "usage"],
    );
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11})
    );
    // Only the usage chunk carries usage.
    assert!(events[..5].iter().all(|e| e.json().get("usage").is_none()));
}

#[tokio::test]
async fn legacy_completions() {
    let d = double().await;
    let body = json!({"model": "tiny-llama", "prompt": "once upon a time", "max_tokens": 3});
    let whole: Value = post(&d, "/v1/completions", body.clone())
        .await
        .json()
        .await
        .unwrap();
    assert!(whole["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(whole["object"], "text_completion");
    assert_eq!(
        whole["choices"],
        json!([{"text": "once upon a", "index": 0, "logprobs": null, "finish_reason": "length"}])
    );
    let mut stream = body;
    stream["stream"] = json!(true);
    let (text, _) = read_body(post(&d, "/v1/completions", stream).await).await;
    let events = parse_sse(&text);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let texts: String = events[..events.len() - 1]
        .iter()
        .map(|e| e.json()["choices"][0]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, "once upon a");
}

#[tokio::test]
async fn embeddings_are_deterministic() {
    let d = double().await;
    let one: Value = post(
        &d,
        "/v1/embeddings",
        json!({"model": "all-minilm", "input": "b c"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_keys(&one, &["object", "data", "model", "usage"]);
    assert_eq!(one["object"], "list");
    assert_eq!(one["model"], "all-minilm");
    assert_eq!(one["usage"], json!({"prompt_tokens": 2, "total_tokens": 2}));
    let item = &one["data"][0];
    assert_keys(item, &["object", "index", "embedding"]);
    assert_eq!(item["object"], "embedding");
    let expected: Vec<f64> = embedding("b c").iter().map(|x| f64::from(*x)).collect();
    let got: Vec<f64> = item["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(got.len(), iicp_testkit::EMBEDDING_DIMS);
    for (g, e) in got.iter().zip(&expected) {
        assert!((g - e).abs() < 1e-6);
    }
    let norm: f64 = got.iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-4);

    let batch: Value = post(
        &d,
        "/v1/embeddings",
        json!({"model": "all-minilm", "input": ["a", "b c"]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(batch["data"].as_array().unwrap().len(), 2);
    assert_eq!(batch["data"][1]["index"], 1);
    assert_eq!(
        batch["data"][1]["embedding"], item["embedding"],
        "batching does not change a vector"
    );
    assert_ne!(batch["data"][0]["embedding"], item["embedding"]);

    let b64: Value = post(
        &d,
        "/v1/embeddings",
        json!({"model": "all-minilm", "input": "b c", "encoding_format": "base64"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(b64["data"][0]["embedding"].is_string());
}

#[tokio::test]
async fn errors_follow_llama_cpp() {
    let d = double().await;
    let cases = [
        (
            chat(json!({"model": "nope"})),
            "/v1/chat/completions",
            400,
            "model 'nope' not found",
            "invalid_request_error",
        ),
        (
            json!({"model": "tiny-llama"}),
            "/v1/chat/completions",
            400,
            "'messages' is required",
            "invalid_request_error",
        ),
        (
            json!({"messages": []}),
            "/v1/chat/completions",
            400,
            "model name is missing from the request",
            "invalid_request_error",
        ),
        (
            json!({"model": "tiny-llama", "input": "x"}),
            "/v1/embeddings",
            501,
            "This server does not support embeddings. Start it with `--embeddings`",
            "not_supported_error",
        ),
    ];
    for (body, path, status, message, kind) in cases {
        let resp = post(&d, path, body).await;
        assert_eq!(resp.status(), status);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": status, "message": message, "type": kind}})
        );
    }
    let resp = client()
        .post(format!("{}/v1/chat/completions", d.url()))
        .body("{\"model\":")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], 400);
}

#[tokio::test]
async fn single_model_server_needs_no_model_name() {
    let d = BackendDouble::start(Flavor::OpenAi, Models::new(["only"], Vec::<String>::new())).await;
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    let resp: Value = post(&d, "/v1/chat/completions", body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(resp["model"], "only");
    // llama-server also answers without the /v1 prefix.
    let resp = client()
        .get(format!("{}/models", d.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn api_key_is_enforced_except_on_health() {
    let options = Options {
        api_key: Some("sk-test".into()),
        ..Options::default()
    };
    let d = BackendDouble::start_with(Flavor::OpenAi, Models::default_for(Flavor::OpenAi), options)
        .await
        .unwrap();
    let url = format!("{}/v1/models", d.url());
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}})
    );
    let resp = client()
        .get(&url)
        .bearer_auth("sk-test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client()
        .get(format!("{}/health", d.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    d.stop().await;
}
