//! Failure modes, latency, counters, capture and stopping, across flavors.

mod common;

use common::*;
use iicp_testkit::{BackendDouble, Behavior, Failure, Flavor, Models};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn double(flavor: Flavor) -> BackendDouble {
    BackendDouble::start(flavor, Models::default_for(flavor)).await
}

/// A chat request for the flavor's default model.
fn chat(d: &BackendDouble, stream: bool) -> reqwest::RequestBuilder {
    let messages = json!([{"role": "user", "content": "one two three four five"}]);
    let (path, body) = match d.flavor() {
        Flavor::OpenAi => (
            "/v1/chat/completions",
            json!({"model": "tiny-llama", "messages": messages, "stream": stream}),
        ),
        Flavor::Ollama => (
            "/api/chat",
            json!({"model": "llama3.2", "messages": messages, "stream": stream}),
        ),
        Flavor::Anthropic => (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-20250514", "max_tokens": 64, "messages": messages, "stream": stream}),
        ),
    };
    client()
        .post(format!("{}{path}", d.url()))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
}

const FLAVORS: [Flavor; 3] = [Flavor::OpenAi, Flavor::Ollama, Flavor::Anthropic];

#[tokio::test]
async fn status_failures_use_each_flavors_error_body() {
    let cases: [(Flavor, u16, Value); 3] = [
        (
            Flavor::OpenAi,
            503,
            json!({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}),
        ),
        (
            Flavor::Ollama,
            500,
            json!({"error": "llama runner process has terminated: exit status 2"}),
        ),
        (
            Flavor::Anthropic,
            529,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
    ];
    for (flavor, status, expected) in cases {
        let d = double(flavor).await;
        d.set_behavior(Behavior::failing(Failure::Status(status)));
        for stream in [false, true] {
            let resp = chat(&d, stream).send().await.unwrap();
            assert_eq!(resp.status(), status, "{flavor}");
            let mut body: Value = resp.json().await.unwrap();
            if flavor == Flavor::Anthropic {
                assert!(body.as_object_mut().unwrap().remove("request_id").is_some());
            }
            assert_eq!(body, expected);
        }
        // The failure applies to every route, model listings included.
        d.set_behavior(Behavior::default());
        assert_eq!(chat(&d, false).send().await.unwrap().status(), 200);
    }
    let d = double(Flavor::Ollama).await;
    d.set_behavior(Behavior::failing(Failure::Status(404)));
    let resp = chat(&d, false).send().await.unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": "model \"llama3.2\" not found, try pulling it first"})
    );
    let resp = client()
        .get(format!("{}/api/tags", d.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn garbage_is_a_200_that_is_not_json() {
    for flavor in FLAVORS {
        let d = double(flavor).await;
        d.set_behavior(Behavior::failing(Failure::Garbage));
        let resp = chat(&d, false).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    }
}

#[tokio::test]
async fn hang_times_the_client_out_and_stop_still_returns() {
    let d = double(Flavor::OpenAi).await;
    d.set_behavior(Behavior::failing(Failure::Hang));
    let url = format!("{}/v1/models", d.url());
    let started = Instant::now();
    let err = iicp_testkit::support::http_client(Duration::from_millis(300))
        .get(&url)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    // A second request hangs while the first is still held.
    let pending = tokio::spawn(client().get(url).send());
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.requests() < 2 {
        assert!(
            Instant::now() < deadline,
            "the second request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = Instant::now();
    d.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "hung requests do not block stop"
    );
    assert!(
        pending.await.unwrap().is_err(),
        "the hung request is dropped"
    );
}

#[tokio::test]
async fn cut_streams_after_n_events() {
    for flavor in FLAVORS {
        let d = double(flavor).await;
        d.set_behavior(Behavior::failing(Failure::CutStreamAfter(2)));
        let resp = chat(&d, true).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{flavor}: the head is sent");
        let (text, err) = read_body(resp).await;
        assert!(err.is_some(), "{flavor}: the body must end in an error");
        let events = match flavor {
            Flavor::Ollama => text.lines().count(),
            _ => text.matches("\n\n").count(),
        };
        assert_eq!(events, 2, "{flavor}: {text}");

        // A whole (non-streamed) reply is cut in the middle of its JSON.
        let (text, err) = read_body(chat(&d, false).send().await.unwrap()).await;
        assert!(err.is_some(), "{flavor}");
        assert!(serde_json::from_str::<Value>(&text).is_err());
    }
}

#[tokio::test]
async fn delays_before_answering_and_between_events() {
    let d = double(Flavor::Ollama).await;
    d.set_behavior(Behavior {
        delay: Duration::from_millis(150),
        token_delay: Duration::from_millis(40),
        ..Behavior::default()
    });
    let started = Instant::now();
    let resp = chat(&d, true).send().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "headers come after the delay"
    );
    let (text, _) = read_body(resp).await;
    assert_eq!(parse_ndjson(&text).len(), 6);
    // Both delays are lower bounds the server keeps: one before the head, five gaps.
    assert!(started.elapsed() >= Duration::from_millis(150 + 5 * 40));
}

#[tokio::test]
async fn counts_requests_and_peak_concurrency() {
    let d = double(Flavor::OpenAi).await;
    assert_eq!((d.requests(), d.in_flight_max()), (0, 0));
    chat(&d, false).send().await.unwrap();
    client()
        .get(format!("{}/nope", d.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(d.requests(), 2);
    assert_eq!(d.in_flight_max(), 1);

    d.set_behavior(Behavior {
        delay: Duration::from_millis(300),
        ..Behavior::default()
    });
    let calls: Vec<_> = (0..4)
        .map(|_| tokio::spawn(chat(&d, false).send()))
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(d.requests(), 6);
    assert_eq!(d.in_flight_max(), 4);
}

#[tokio::test]
async fn streams_count_as_in_flight_until_their_last_event() {
    let d = double(Flavor::Anthropic).await;
    d.set_behavior(Behavior {
        token_delay: Duration::from_millis(30),
        ..Behavior::default()
    });
    let first = chat(&d, true).send().await.unwrap();
    // The first stream is still sending when the second starts.
    let second = chat(&d, true).send().await.unwrap();
    let (a, b) = tokio::join!(read_body(first), read_body(second));
    assert!(a.1.is_none() && b.1.is_none());
    assert_eq!(d.in_flight_max(), 2);
}

#[tokio::test]
async fn captures_last_headers_and_body() {
    let d = double(Flavor::OpenAi).await;
    assert!(d.last_headers().is_none() && d.last_body().is_none());
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    chat(&d, false)
        .header("traceparent", traceparent)
        .send()
        .await
        .unwrap();
    let headers = d.last_headers().unwrap();
    assert_eq!(headers.get("traceparent").unwrap(), traceparent);
    let body = d.last_body().unwrap();
    assert_eq!(body["model"], "tiny-llama");
    assert_eq!(body["messages"][0]["content"], "one two three four five");
    // Even a failing request is captured.
    d.set_behavior(Behavior::failing(Failure::Status(500)));
    client()
        .post(format!("{}/v1/embeddings", d.url()))
        .json(&json!({"input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(d.last_body().unwrap(), json!({"input": "x"}));
}

#[tokio::test]
async fn graceful_stop_finishes_streams_in_progress() {
    let d = double(Flavor::OpenAi).await;
    d.set_behavior(Behavior {
        token_delay: Duration::from_millis(50),
        ..Behavior::default()
    });
    let url = d.url();
    let resp = chat(&d, true).send().await.unwrap();
    let reading = tokio::spawn(read_body(resp));
    tokio::time::sleep(Duration::from_millis(60)).await;
    d.stop().await;
    let (text, err) = reading.await.unwrap();
    assert!(err.is_none());
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(
        client().get(format!("{url}/health")).send().await.is_err(),
        "the port is closed"
    );
}

#[tokio::test]
async fn kill_drops_connections_mid_stream() {
    let d = double(Flavor::Ollama).await;
    d.set_behavior(Behavior {
        token_delay: Duration::from_millis(100),
        ..Behavior::default()
    });
    let url = d.url();
    let resp = chat(&d, true).send().await.unwrap();
    let reading = tokio::spawn(read_body(resp));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let killed = Instant::now();
    d.kill();
    assert!(killed.elapsed() < Duration::from_secs(1));
    let (text, err) = reading.await.unwrap();
    assert!(err.is_some(), "the stream must break: {text}");
    assert!(text.lines().count() < 6);
    assert!(
        client()
            .get(format!("{url}/api/version"))
            .send()
            .await
            .is_err(),
        "the port is closed"
    );
}
