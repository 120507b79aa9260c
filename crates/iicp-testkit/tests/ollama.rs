//! The Ollama double (native `/api/*`, NDJSON streaming by default).

mod common;

use common::*;
use iicp_testkit::{embedding, BackendDouble, Flavor, Models};
use serde_json::{json, Value};

async fn double() -> BackendDouble {
    BackendDouble::start(
        Flavor::Ollama,
        Models::new(["llama3.2", "llava:7b"], ["nomic-embed-text"]),
    )
    .await
}

const METRICS: [&str; 6] = [
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
];

fn with_metrics(base: &[&'static str]) -> Vec<&'static str> {
    base.iter().chain(&METRICS).copied().collect()
}

#[tokio::test]
async fn tags_version_and_root() {
    let d = double().await;
    let tags = get_json(&d, "/api/tags").await;
    assert_keys(&tags, &["models"]);
    let models = tags["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["llama3.2:latest", "llava:7b", "nomic-embed-text:latest"]
    );
    for m in models {
        assert_keys(
            m,
            &["name", "model", "modified_at", "size", "digest", "details"],
        );
        assert_eq!(m["name"], m["model"]);
        assert_eq!(m["digest"].as_str().unwrap().len(), 64);
        assert!(m["size"].as_u64().unwrap() > 0);
        assert_keys(
            &m["details"],
            &[
                "parent_model",
                "format",
                "family",
                "families",
                "parameter_size",
                "quantization_level",
            ],
        );
        assert_eq!(m["details"]["format"], "gguf");
    }
    assert_eq!(models[0]["details"]["family"], "llama");
    assert_eq!(models[1]["details"]["families"], json!(["llama", "clip"]));
    assert_eq!(models[1]["details"]["parameter_size"], "7B");
    assert_eq!(models[2]["details"]["family"], "nomic-bert");

    let version = get_json(&d, "/api/version").await;
    assert_eq!(version, json!({"version": "0.5.7"}));
    let root = iicp_testkit::support::get_text(&client(), &d.url()).await;
    assert_eq!(root, "Ollama is running");
    let resp = client()
        .get(format!("{}/api/nope", d.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.text().await.unwrap(), "404 page not found");
}

#[tokio::test]
async fn chat_streams_ndjson_by_default() {
    let d = double().await;
    let body = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "why is the sky blue"}]});
    let resp = post(&d, "/api/chat", body.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(content_type(&resp), "application/x-ndjson");
    let (text, err) = read_body(resp).await;
    assert!(err.is_none());
    let lines = parse_ndjson(&text);
    assert_eq!(lines.len(), 6);
    let mut content = String::new();
    for l in &lines[..5] {
        assert_keys(l, &["model", "created_at", "message", "done"]);
        assert_eq!(l["model"], "llama3.2", "the request's name is echoed");
        assert_eq!(l["done"], false);
        assert_eq!(l["message"]["role"], "assistant");
        content.push_str(l["message"]["content"].as_str().unwrap());
    }
    assert_eq!(content, "why is the sky blue");
    let last = &lines[5];
    assert_keys(
        last,
        &with_metrics(&["model", "created_at", "message", "done_reason", "done"]),
    );
    assert_eq!(last["message"], json!({"role": "assistant", "content": ""}));
    assert_eq!(
        (&last["done"], &last["done_reason"]),
        (&json!(true), &json!("stop"))
    );
    assert_eq!(last["prompt_eval_count"], 5);
    assert_eq!(last["eval_count"], 5);
    let created_at = last["created_at"].as_str().unwrap();
    assert!(
        created_at.contains('T') && created_at.ends_with('Z'),
        "{created_at}"
    );

    let mut whole = body;
    whole["stream"] = json!(false);
    whole["options"] = json!({"num_predict": 3});
    let resp = post(&d, "/api/chat", whole).await;
    assert_eq!(content_type(&resp), "application/json; charset=utf-8");
    let one: Value = resp.json().await.unwrap();
    assert_keys(
        &one,
        &with_metrics(&["model", "created_at", "message", "done_reason", "done"]),
    );
    assert_eq!(
        one["message"],
        json!({"role": "assistant", "content": "why is the"})
    );
    assert_eq!(one["done_reason"], "length");
    assert_eq!(one["eval_count"], 3);
}

#[tokio::test]
async fn generate_streams_responses() {
    let d = double().await;
    let body = json!({"model": "llava:7b", "prompt": "describe the picture", "images": ["AAAA"]});
    let (text, _) = read_body(post(&d, "/api/generate", body.clone()).await).await;
    let lines = parse_ndjson(&text);
    assert_eq!(lines.len(), 6);
    for l in &lines[..5] {
        assert_keys(l, &["model", "created_at", "response", "done"]);
    }
    let joined: String = lines
        .iter()
        .map(|l| l["response"].as_str().unwrap())
        .collect();
    assert_eq!(joined, "describe the picture describe the");
    let last = &lines[5];
    assert_keys(
        last,
        &with_metrics(&[
            "model",
            "created_at",
            "response",
            "done",
            "done_reason",
            "context",
        ]),
    );
    assert_eq!(last["context"].as_array().unwrap().len(), 3 + 5);

    let mut whole = body;
    whole["stream"] = json!(false);
    let one: Value = post(&d, "/api/generate", whole).await.json().await.unwrap();
    assert_eq!(one["response"], "describe the picture describe the");
    assert_eq!(one["done"], true);
}

#[tokio::test]
async fn empty_requests_only_load_the_model() {
    let d = double().await;
    let chat: Value = post(
        &d,
        "/api/chat",
        json!({"model": "llama3.2", "messages": []}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_keys(
        &chat,
        &["model", "created_at", "message", "done_reason", "done"],
    );
    assert_eq!(chat["done_reason"], "load");
    let gen: Value = post(&d, "/api/generate", json!({"model": "llama3.2"}))
        .await
        .json()
        .await
        .unwrap();
    assert_keys(
        &gen,
        &["model", "created_at", "response", "done", "done_reason"],
    );
    assert_eq!(gen["done_reason"], "load");
}

#[tokio::test]
async fn embed_and_legacy_embeddings() {
    let d = double().await;
    let body = json!({"model": "nomic-embed-text", "input": ["hello world", "bye"]});
    let resp: Value = post(&d, "/api/embed", body).await.json().await.unwrap();
    assert_keys(
        &resp,
        &[
            "model",
            "embeddings",
            "total_duration",
            "load_duration",
            "prompt_eval_count",
        ],
    );
    assert_eq!(resp["model"], "nomic-embed-text");
    assert_eq!(resp["prompt_eval_count"], 3);
    let vectors = resp["embeddings"].as_array().unwrap();
    assert_eq!(vectors.len(), 2);
    let expected = embedding("hello world");
    for (g, e) in vectors[0].as_array().unwrap().iter().zip(expected) {
        assert!((g.as_f64().unwrap() - f64::from(e)).abs() < 1e-6);
    }
    let single: Value = post(
        &d,
        "/api/embed",
        json!({"model": "nomic-embed-text:latest", "input": "bye"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(single["embeddings"][0], vectors[1]);

    let legacy: Value = post(
        &d,
        "/api/embeddings",
        json!({"model": "nomic-embed-text", "prompt": "bye"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_keys(&legacy, &["embedding"]);
    assert_eq!(legacy["embedding"].as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn show_reports_capabilities() {
    let d = double().await;
    let show: Value = post(&d, "/api/show", json!({"model": "llava:7b"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(show["capabilities"], json!(["completion", "vision"]));
    assert_eq!(show["details"]["family"], "llama");
    assert_eq!(show["model_info"]["general.architecture"], "llama");
    let show: Value = post(&d, "/api/show", json!({"model": "nomic-embed-text"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(show["capabilities"], json!(["embedding"]));
    let resp = post(&d, "/api/show", json!({"model": "nope"})).await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn errors_follow_ollama() {
    let d = double().await;
    let cases = [
        (
            "/api/chat",
            json!({"model": "mistral", "messages": []}),
            404,
            "model \"mistral\" not found, try pulling it first",
        ),
        (
            "/api/chat",
            json!({"messages": []}),
            400,
            "model is required",
        ),
        (
            "/api/chat",
            json!({"model": "nomic-embed-text", "messages": []}),
            400,
            "\"nomic-embed-text\" does not support chat",
        ),
        (
            "/api/generate",
            json!({"model": "nomic-embed-text", "prompt": "x"}),
            400,
            "\"nomic-embed-text\" does not support generate",
        ),
        (
            "/api/embed",
            json!({"model": "llama3.2", "input": "x"}),
            400,
            "\"llama3.2\" does not support embeddings",
        ),
    ];
    for (path, body, status, message) in cases {
        let resp = post(&d, path, body).await;
        assert_eq!(resp.status(), status, "{path} {message}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, json!({"error": message}));
    }
    let resp = client()
        .post(format!("{}/api/chat", d.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": "missing request body"})
    );
    let resp = client()
        .post(format!("{}/api/chat", d.url()))
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_string());
}
