//! Hostile input against a real directory: SSRF spellings, rate limits, malformed bodies,
//! transport-level errors.

mod common;

use common::{assert_error, TestDirectory};
use serde_json::json;

const PRIVATE_ENDPOINTS: &[&str] = &[
    "http://127.0.0.1:9484",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://0x7f.0.0.1/",
    "http://127.1/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[64:ff9b::a00:1]/",
    "http://[2002:7f00:1::]/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://169.254.169.254/",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://[fe80::1]/",
    "http://[fd00::1]/",
    "http://localhost/",
    "http://LOCALHOST./",
    "http://foo.localhost/",
    "http://node.local/",
    "http://x.internal/",
    "http://a.test/",
    "http://b.example/",
    "http://c.invalid/",
    "http://d.lan/",
    "http://ollama/",
];

#[tokio::test]
async fn every_private_spelling_is_refused_with_e035_before_any_dial() {
    let d = TestDirectory::start(false, |c| c.register_rate_limit = 1000).await;
    for endpoint in PRIVATE_ENDPOINTS {
        let mut body = d.register_body();
        body["endpoint"] = json!(endpoint);
        let (status, err) = d.post("/api/v1/register", &body, None).await;
        assert_eq!(status, 422, "{endpoint}: {err}");
        assert_error(&err, "IICP-E035");
    }
    // A public name passes the name rules and is dialed (and fails: this box has no DNS).
    let mut body = d.register_body();
    body["endpoint"] = json!("https://node.example.com");
    let (status, err) = d.post("/api/v1/register", &body, None).await;
    assert_eq!(status, 422);
    assert_error(&err, "liveness_failed");
    // The loopback health responder itself is refused outside dev mode.
    let (status, err) = d.post("/api/v1/register", &d.register_body(), None).await;
    assert_eq!(status, 422);
    assert_error(&err, "IICP-E035");
}

#[tokio::test]
async fn probe_refuses_private_targets_even_in_dev_mode() {
    let d = TestDirectory::dev().await;
    for q in [
        "host=127.0.0.1&port=9484",
        "host=10.0.0.1&port=9484",
        "host=::1&port=1",
        "host=localhost&port=80",
    ] {
        let (status, err) = d.get(&format!("/api/v1/probe?{q}")).await;
        assert_eq!(status, 422, "{q}");
        assert_error(&err, "private_address");
    }
    let (status, _) = d.get("/api/v1/probe?host=93.184.216.34").await;
    assert_eq!(status, 422, "port is required");
}

#[tokio::test]
async fn the_sixty_first_registration_in_a_minute_is_rate_limited() {
    let d = TestDirectory::dev().await;
    // Refused registrations count too: the limit is on attempts.
    for _ in 0..60 {
        let (status, _) = d.post("/api/v1/register", &json!({}), None).await;
        assert_eq!(status, 422);
    }
    let (status, err) = d.post("/api/v1/register", &d.register_body(), None).await;
    assert_eq!(status, 429);
    assert_error(&err, "rate_limited");
    assert_eq!(err["error"]["iicp_code"], "IICP-E034");
    assert!(err["error"]["retry_after"].as_u64().unwrap() >= 1);
    // The window rolls.
    d.clock.advance_ms(60_001);
    assert_eq!(
        d.post("/api/v1/register", &d.register_body(), None).await.0,
        201
    );
}

fn malformed_bodies() -> Vec<Vec<u8>> {
    let mut corpus: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"x\"".to_vec(),
        b"42".to_vec(),
        b"{\"node_id\": }".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x7b],
        b"{\"endpoint\": 1, \"region\": [], \"capabilities\": {}, \"limits\": null}".to_vec(),
        b"{\"node_id\": \"not-a-uuid\", \"load\": \"high\"}".to_vec(),
        b"{\"intent\": {\"$gt\": 1}}".to_vec(),
        b"{\"capabilities\": [{\"intent\": \"urn:iicp:intent:llm:chat:v1+x\"}]}".to_vec(),
        format!("{{\"endpoint\": \"{}\"}}", "a".repeat(10_000)).into_bytes(),
        format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
    ];
    corpus.push(b"{\"node_id\": \"\\ud800\"}".to_vec());
    corpus
}

#[tokio::test]
async fn malformed_bodies_get_structured_errors_and_nothing_panics() {
    let d = TestDirectory::start(true, |c| c.register_rate_limit = 10_000).await;
    let (_, token, _) = d.register(&d.register_body()).await;
    let routes = [
        "/api/v1/register",
        "/api/v1/heartbeat",
        "/api/v1/deregister",
        "/api/v1/dispatch/ticket",
        "/api/v1/consumer-token",
        "/v1/telemetry",
    ];
    for route in routes {
        for body in malformed_bodies() {
            let r = d
                .http
                .post(d.url(route))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let (_, value) = common::read(r).await;
            assert!((400..500).contains(&status), "{route} {status} {value}");
            assert!(value["error"]["code"].is_string(), "{route}: {value}");
            let text = value.to_string();
            assert!(!text.contains("aaaaaaaaaa"), "{route} echoed input");
        }
    }
    let (status, health) = d.get("/iicp/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn transport_errors_use_the_envelope() {
    let d = TestDirectory::dev().await;
    let (status, body) = d.get("/nope").await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found");

    let r = d.http.put(d.url("/api/v1/register")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_error(&common::read(r).await.1, "method_not_allowed");

    let huge = format!("{{\"endpoint\": \"{}\"}}", "a".repeat(70 * 1024));
    let r = d
        .http
        .post(d.url("/api/v1/register"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_error(&common::read(r).await.1, "payload_too_large");

    for ct in ["text/plain", "application/iicp+cbor"] {
        let r = d
            .http
            .post(d.url("/api/v1/register"))
            .header("content-type", ct)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 415, "{ct}");
        assert_error(&common::read(r).await.1, "unsupported_media_type");
    }
}

#[tokio::test]
async fn unauthenticated_extension_routes_answer_401() {
    let d = TestDirectory::dev().await;
    for (method, path) in [
        ("GET", "/api/v1/credits/balance"),
        ("GET", "/api/v1/credits/transactions"),
        ("POST", "/api/v1/credits/award"),
        ("POST", "/api/v1/telemetry"),
    ] {
        let req = match method {
            "GET" => d.http.get(d.url(path)),
            _ => d.http.post(d.url(path)).json(&json!({})),
        };
        let (status, body) = common::read(req.send().await.unwrap()).await;
        assert_eq!(status, 401, "{path}");
        assert!(body["error"]["code"].is_string());
    }
}

#[tokio::test]
async fn telemetry_takes_the_proxy_token_and_metadata_only() {
    let d = TestDirectory::dev().await;
    let (_, node_token, ack) = d.register(&d.register_body()).await;
    let proxy = ack["proxy_token"].as_str().unwrap();
    let report = json!({"task_id": uuid::Uuid::new_v4(), "intent": common::CHAT, "latency_ms": 12, "status": "success"});
    assert_eq!(d.post("/v1/telemetry", &report, Some(proxy)).await.0, 202);
    let (status, err) = d.post("/v1/telemetry", &report, Some(&node_token)).await;
    assert_eq!(status, 401);
    assert_error(&err, "IICP-E032");
    let mut with_prompt = report.clone();
    with_prompt["prompt"] = json!("hello");
    assert_eq!(
        d.post("/v1/telemetry", &with_prompt, Some(proxy)).await.0,
        422
    );
}
