//! Discovery, dispatch tickets and consumer tokens against a real directory on loopback.

mod common;

use common::{assert_error, TestDirectory, CHAT};
use iicp_proto::tokens::{self, TicketExpectation};
use serde_json::{json, Value};

async fn node_with(d: &TestDirectory, tweak: impl FnOnce(&mut Value)) -> (String, String) {
    let mut body = d.register_body();
    tweak(&mut body);
    let (id, token, _) = d.register(&body).await;
    (id, token)
}

#[tokio::test]
async fn discover_validates_its_query() {
    let d = TestDirectory::dev().await;
    for (query, code) in [
        ("", "validation_error"),
        ("intent=", "validation_error"),
        ("intent=llm:chat", "validation_error"),
        ("intent=urn:iicp:intent:llm:chat:v1%2Bfast", "IICP-E028"),
        (
            "intent=urn:iicp:intent:llm:chat:v1&min_reputation=2.0",
            "validation_error",
        ),
        (
            "intent=urn:iicp:intent:llm:chat:v1&min_reputation=x",
            "validation_error",
        ),
        (
            "intent=urn:iicp:intent:llm:chat:v1&limit=0",
            "validation_error",
        ),
        (
            "intent=urn:iicp:intent:llm:chat:v1&qos=urgent",
            "validation_error",
        ),
        (
            "intent=urn:iicp:intent:llm:chat:v1&modality=smell",
            "validation_error",
        ),
        (
            "intent=urn:iicp:intent:llm:chat:v1&view=secret",
            "validation_error",
        ),
        (
            "intent=urn:iicp:intent:social-scoring:rank:v1",
            "validation_error",
        ),
    ] {
        let (status, body) = d.discover(query).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_error(&body, code);
    }
    let (status, _) = d.get("/api/v1/discover").await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn discover_answers_with_the_exact_cache_header_and_shape() {
    let d = TestDirectory::dev().await;
    node_with(&d, |_| {}).await;
    let r = d
        .http
        .get(d.url(&format!("/v1/discover?intent={CHAT}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=5, s-maxage=10, stale-while-revalidate=5"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["count"], 1);
    assert_eq!(body["data_class"], "route_dispatch");
    assert_eq!(body["route_fields_present"], true);
    let node = &body["nodes"][0];
    let score = node["score"].as_f64().unwrap();
    assert!((0.1..=1.0).contains(&score));
    assert!(node["endpoint"].is_string() && node["node_id"].is_string());
    // Custom intents are stored without the registry and matched exactly.
    let (status, body) = d.discover("intent=urn:iicp:intent:x.acme:thing:v1").await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 0);
}

#[tokio::test]
async fn discover_filters_sorts_and_limits() {
    let d = TestDirectory::dev().await;
    let (busy, busy_token) = node_with(&d, |_| {}).await;
    let (idle, _) = node_with(&d, |b| b["region"] = json!("us-east")).await;
    let (vision, _) = node_with(&d, |b| {
        b["capabilities"][0]["input_modalities"] = json!(["text", "image"]);
        b["region"] = json!("ap-south");
    })
    .await;
    let (offline, offline_token) = node_with(&d, |_| {}).await;
    d.heartbeat(&busy, &busy_token, json!({"load": 0.9, "active_jobs": 3}))
        .await;
    d.heartbeat(&offline, &offline_token, json!({"available": false}))
        .await;

    let (_, all) = d.discover(&format!("intent={CHAT}")).await;
    let ids: Vec<&str> = all["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "unavailable node is filtered: {all}");
    assert!(!ids.contains(&offline.as_str()));
    assert_eq!(
        *ids.last().unwrap(),
        busy.as_str(),
        "loaded node ranks last"
    );
    let scores: Vec<f64> = all["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));

    let (_, images) = d.discover(&format!("intent={CHAT}&modality=image")).await;
    assert_eq!(images["count"], 1);
    assert_eq!(images["nodes"][0]["node_id"], vision.as_str());

    let (_, east) = d.discover(&format!("intent={CHAT}&region=us-east")).await;
    assert_eq!(
        east["nodes"][0]["node_id"],
        idle.as_str(),
        "region is preferred"
    );
    assert_eq!(east["count"], 3, "region is a preference, not a filter");

    let (_, one) = d.discover(&format!("intent={CHAT}&limit=1")).await;
    assert_eq!(one["count"], 1);
    let (_, picky) = d
        .discover(&format!("intent={CHAT}&min_reputation=0.9"))
        .await;
    assert_eq!(picky["count"], 0);
    // New nodes have no completed tasks: interactive probation excludes them.
    let (_, interactive) = d.discover(&format!("intent={CHAT}&qos=interactive")).await;
    assert_eq!(interactive["count"], 0);
    let (_, batch) = d.discover(&format!("intent={CHAT}&qos=batch")).await;
    assert_eq!(batch["count"], 3);
}

#[tokio::test]
async fn public_view_redacts_routes_ids_and_keys() {
    let d = TestDirectory::dev().await;
    let (id, _) = node_with(&d, |b| {
        b["cx_public_key"] = json!({"algorithm": "X25519", "encoding": "base64url",
            "key": "A".repeat(43), "key_id": "k1"});
    })
    .await;
    let (_, body) = d.discover(&format!("intent={CHAT}&view=public")).await;
    assert_eq!(body["data_class"], "public_presentation");
    assert_eq!(body["route_fields_present"], false);
    let node = &body["nodes"][0];
    let text = node.to_string();
    assert!(!text.contains(&id), "full id leaked: {text}");
    assert!(!text.contains("127.0.0.1"), "route leaked: {text}");
    assert!(!text.contains(&"A".repeat(43)), "raw key leaked: {text}");
    assert_eq!(node["node_id_prefix"], id.replace('-', "")[..8]);
    assert_eq!(node["key_ready"], true);
    assert!(body["redaction"].is_object());
}

async fn directory_key(d: &TestDirectory) -> ed25519_dalek::VerifyingKey {
    let (status, key) = d.get("/api/v1/directory-key").await;
    assert_eq!(status, 200);
    assert_eq!(key["algorithm"], "ed25519");
    tokens::verifying_key_from_hex(key["public_key"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn dispatch_tickets_name_the_top_node_and_verify_offline() {
    let d = TestDirectory::dev().await;
    let (id, _) = node_with(&d, |_| {}).await;
    let (status, body) = d
        .post("/api/v1/dispatch/ticket", &json!({"intent": CHAT}), None)
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data_class"], "ticketed_route_dispatch");
    assert_eq!(body["prompt_payload_accepted"], false);
    assert_eq!(body["route"]["node_id"], id.as_str());
    let key = directory_key(&d).await;
    let expect = TicketExpectation {
        issuer: &d.base,
        node_id: &id,
        intent: CHAT,
    };
    let now = common::now_ms() / 1000;
    let claims =
        tokens::verify_dispatch_ticket(&key, body["ticket"].as_str().unwrap(), &expect, now)
            .unwrap();
    assert_eq!(claims.jti.len(), 24);

    // Excluding the only node leaves nothing to ticket.
    let (status, body) = d
        .post(
            "/api/v1/dispatch/ticket",
            &json!({"intent": CHAT, "exclude_node_id_prefixes": [&id[..8]]}),
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found");
}

#[tokio::test]
async fn dispatch_refuses_payloads_without_echoing_them() {
    let d = TestDirectory::dev().await;
    for field in [
        "prompt", "messages", "payload", "input", "chat", "content", "response",
    ] {
        let mut body = json!({"intent": CHAT});
        body[field] = json!("secret-user-text-1234");
        let r = d
            .http
            .post(d.url("/api/v1/dispatch/ticket"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        let text = r.text().await.unwrap();
        assert!(!text.contains("secret-user-text-1234"), "{text}");
    }
    for (body, code) in [
        (
            json!({"intent": CHAT, "node_id": "a", "node_id_prefix": "b"}),
            "validation_error",
        ),
        (
            json!({"intent": CHAT, "qos": "invalid"}),
            "validation_error",
        ),
        (
            json!({"intent": "urn:iicp:intent:credit:decision:v1"}),
            "validation_error",
        ),
        (json!({}), "validation_error"),
    ] {
        let (status, err) = d.post("/api/v1/dispatch/ticket", &body, None).await;
        assert_eq!(status, 422, "{body}");
        assert_error(&err, code);
    }
}

#[tokio::test]
async fn consumer_tokens_are_signed_for_caller_and_target() {
    let d = TestDirectory::dev().await;
    let (caller, caller_token) = node_with(&d, |_| {}).await;
    let (target, _) = node_with(&d, |_| {}).await;
    let (status, body) = d
        .post(
            "/api/v1/consumer-token",
            &json!({"target_node_id": target, "intent": CHAT}),
            Some(&caller_token),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let key = directory_key(&d).await;
    let now = common::now_ms() / 1000;
    let claims =
        tokens::verify_consumer_token(&key, body["token"].as_str().unwrap(), &target, CHAT, now)
            .unwrap();
    assert_eq!(claims.sub, caller);
    assert!(tokens::verify_consumer_token(
        &key,
        body["token"].as_str().unwrap(),
        &caller,
        CHAT,
        now
    )
    .is_err());

    let (status, _) = d
        .post(
            "/api/v1/consumer-token",
            &json!({"target_node_id": target}),
            None,
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = d
        .post(
            "/api/v1/consumer-token",
            &json!({"target_node_id": uuid::Uuid::new_v4()}),
            Some(&caller_token),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bootstrap_stats_and_node_detail() {
    let d = TestDirectory::dev().await;
    let (a, _) = node_with(&d, |_| {}).await;
    d.clock.advance_ms(1000);
    let (b, _) = node_with(&d, |b| b["region"] = json!("us-east")).await;
    let (_, boot) = d.get("/v1/bootstrap?limit=1").await;
    assert_eq!(boot["count"], 1);
    assert_eq!(boot["peers"][0]["node_id"], b.as_str(), "newest first");
    let (_, stats) = d.get("/api/v1/stats").await;
    assert_eq!(stats["nodes_registered"], 2);
    assert_eq!(stats["nodes_active"], 2);
    assert_eq!(stats["intents"][0]["intent"], CHAT);
    assert_eq!(stats["intents"][0]["nodes"], 2);
    let (status, node) = d.get(&format!("/api/v1/node/{a}")).await;
    assert_eq!(status, 200);
    assert_eq!(node["health"]["label"], "healthy");
    assert!(node["health"]["score_100"].as_u64().unwrap() <= 100);
    assert_eq!(node["probation"]["interactive_eligible"], false);
    assert_eq!(d.get("/api/v1/node/not-a-uuid").await.0, 404);
}
