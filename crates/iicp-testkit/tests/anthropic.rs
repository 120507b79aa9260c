//! The Anthropic Messages double.

mod common;

use common::*;
use iicp_testkit::{BackendDouble, Flavor, Models, Options};
use serde_json::{json, Value};

const MODEL: &str = "claude-3-5-haiku-20241022";

async fn double() -> BackendDouble {
    BackendDouble::start(
        Flavor::Anthropic,
        Models::new([MODEL, "claude-sonnet-4-20250514"], Vec::<String>::new()),
    )
    .await
}

fn request(d: &BackendDouble, path: &str) -> reqwest::RequestBuilder {
    client()
        .post(format!("{}{path}", d.url()))
        .header("x-api-key", "sk-ant-test")
        .header("anthropic-version", "2023-06-01")
}

fn message(extra: Value) -> Value {
    let mut body = json!({
        "model": MODEL,
        "max_tokens": 1024,
        "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there claude"}]}]
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

#[track_caller]
fn assert_error(body: &Value, kind: &str, message: &str) {
    assert_keys(body, &["type", "error", "request_id"]);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"], json!({"type": kind, "message": message}));
    assert!(body["request_id"].as_str().unwrap().starts_with("req_"));
}

#[tokio::test]
async fn models_list() {
    let d = double().await;
    let list: Value = client()
        .get(format!("{}/v1/models", d.url()))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_keys(&list, &["data", "has_more", "first_id", "last_id"]);
    assert_eq!(list["has_more"], false);
    assert_eq!(list["first_id"], MODEL);
    assert_eq!(list["last_id"], "claude-sonnet-4-20250514");
    assert_eq!(
        list["data"][0],
        json!({"type": "model", "id": MODEL, "display_name": "Claude 3.5 Haiku", "created_at": "2024-10-22T00:00:00Z"})
    );
    assert_eq!(list["data"][1]["display_name"], "Claude Sonnet 4");
}

#[tokio::test]
async fn message_whole() {
    let d = double().await;
    let resp = request(&d, "/v1/messages")
        .json(&message(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(content_type(&resp), "application/json");
    assert!(resp.headers().get("request-id").is_some());
    let body: Value = resp.json().await.unwrap();
    assert_keys(
        &body,
        &[
            "id",
            "type",
            "role",
            "model",
            "content",
            "stop_reason",
            "stop_sequence",
            "usage",
        ],
    );
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], MODEL);
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "hello there claude hello there"}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["stop_sequence"], Value::Null);
    assert_eq!(body["usage"]["input_tokens"], 2 + 3, "system and messages");
    assert_eq!(body["usage"]["output_tokens"], 5);

    let capped: Value = request(&d, "/v1/messages")
        .json(&message(json!({"max_tokens": 2})))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(capped["stop_reason"], "max_tokens");
    assert_eq!(capped["content"][0]["text"], "hello there");
}

#[tokio::test]
async fn message_stream_events_in_order() {
    let d = double().await;
    let resp = request(&d, "/v1/messages")
        .json(&message(json!({"stream": true})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(content_type(&resp), "text/event-stream; charset=utf-8");
    let (text, err) = read_body(resp).await;
    assert!(err.is_none());
    let events = parse_sse(&text);
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(["content_block_delta"; 5]);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    for e in &events {
        assert_eq!(
            e.json()["type"],
            e.event.as_deref().unwrap(),
            "data.type matches the event name"
        );
    }
    let start = events[0].json();
    assert_eq!(start["message"]["content"], json!([]));
    assert_eq!(start["message"]["stop_reason"], Value::Null);
    assert_eq!(start["message"]["usage"]["input_tokens"], 5);
    assert_eq!(
        events[1].json(),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    let text: String = events[3..8]
        .iter()
        .map(|e| {
            let v = e.json();
            assert_eq!(v["index"], 0);
            assert_eq!(v["delta"]["type"], "text_delta");
            v["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "hello there claude hello there");
    assert_eq!(
        events[8].json(),
        json!({"type": "content_block_stop", "index": 0})
    );
    assert_eq!(
        events[9].json(),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 5}})
    );
    assert_eq!(events[10].json(), json!({"type": "message_stop"}));
}

#[tokio::test]
async fn errors_follow_anthropic() {
    let d = double().await;
    let resp = client()
        .post(format!("{}/v1/messages", d.url()))
        .header("anthropic-version", "2023-06-01")
        .json(&message(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_error(
        &resp.json().await.unwrap(),
        "authentication_error",
        "x-api-key header is required",
    );

    let resp = client()
        .post(format!("{}/v1/messages", d.url()))
        .header("x-api-key", "k")
        .json(&message(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_error(
        &resp.json().await.unwrap(),
        "invalid_request_error",
        "anthropic-version: header is required",
    );

    let mut no_max = message(json!({}));
    no_max.as_object_mut().unwrap().remove("max_tokens");
    let resp = request(&d, "/v1/messages")
        .json(&no_max)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_error(
        &resp.json().await.unwrap(),
        "invalid_request_error",
        "max_tokens: Field required",
    );

    let resp = request(&d, "/v1/messages")
        .json(&message(json!({"model": "claude-x"})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_error(
        &resp.json().await.unwrap(),
        "not_found_error",
        "model: claude-x",
    );

    let resp = request(&d, "/v1/messages")
        .json(&message(json!({"messages": []})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn configured_key_must_match() {
    let options = Options {
        api_key: Some("sk-ant-good".into()),
        ..Options::default()
    };
    let d = BackendDouble::start_with(
        Flavor::Anthropic,
        Models::new([MODEL], Vec::<String>::new()),
        options,
    )
    .await
    .unwrap();
    let resp = request(&d, "/v1/messages")
        .json(&message(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_error(
        &resp.json().await.unwrap(),
        "authentication_error",
        "invalid x-api-key",
    );
    let resp = client()
        .post(format!("{}/v1/messages/count_tokens", d.url()))
        .header("x-api-key", "sk-ant-good")
        .header("anthropic-version", "2023-06-01")
        .json(&message(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"input_tokens": 5})
    );
}
