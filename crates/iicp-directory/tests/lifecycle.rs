//! Node lifecycle against a real directory on loopback: registration, heartbeats, rotation,
//! ownership gates, liveness challenges, metric batches, dormancy, deregistration, restart.

mod common;

use common::{assert_error, TestDirectory, CHAT};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn registration_issues_credentials_once_and_heartbeats_work() {
    let d = TestDirectory::dev().await;
    let (id, token, ack) = d.register(&d.register_body()).await;
    assert_eq!(ack["message_type"], "ACK");
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(ack["proxy_token"].as_str().unwrap().len(), 80);
    assert_eq!(ack["node_hmac_key"].as_str().unwrap().len(), 64);
    assert_eq!(ack["observed_source_ip"], "127.0.0.1");
    assert!(uuid::Uuid::parse_str(&id).unwrap().get_version_num() == 4);

    let (status, pong) = d.heartbeat(&id, &token, json!({"load": 0.25})).await;
    assert_eq!(status, 200, "{pong}");
    assert_eq!(pong["ok"], true);
    assert_eq!(pong["next_heartbeat_ms"], 30000);
    assert_eq!(pong["reputation_model"], "outcome-v2");
    assert_eq!(pong["challenge"].as_str().unwrap().len(), 32);

    let (status, body) = d.heartbeat(&id, "0".repeat(64).as_str(), json!({})).await;
    assert_eq!(status, 401);
    assert_error(&body, "unauthorized");
    let (status, body) = d
        .heartbeat(&uuid::Uuid::new_v4().to_string(), &token, json!({}))
        .await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found");
    let (status, _) = d.post("/v1/heartbeat", &json!({"node_id": id}), None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn refresh_rotates_the_token_and_voids_the_old_one() {
    let d = TestDirectory::dev().await;
    let (id, old, _) = d.register(&d.register_body()).await;
    assert_eq!(d.heartbeat(&id, &old, json!({})).await.0, 200);

    let mut refresh = d.register_body();
    refresh["node_id"] = json!(id);
    refresh["current_node_token"] = json!(old);
    let (id2, new, _) = d.register(&refresh).await;
    assert_eq!(id2, id);
    assert_ne!(new, old);
    assert_eq!(d.heartbeat(&id, &old, json!({})).await.0, 401);
    assert_eq!(d.heartbeat(&id, &new, json!({})).await.0, 200);

    // The old token can no longer refresh either.
    refresh["current_node_token"] = json!(old);
    let (status, body) = d.post("/api/v1/register", &refresh, None).await;
    assert_eq!(status, 403);
    assert_error(&body, "IICP-E050");
}

#[tokio::test]
async fn ownership_gates_protect_existing_node_ids() {
    let d = TestDirectory::dev().await;
    let mut body = d.register_body();
    body["cx_public_key"] = json!({"algorithm": "X25519", "encoding": "base64url",
        "key": "A".repeat(43), "key_id": "k1"});
    let (id, token, _) = d.register(&body).await;

    // Same node id, no token: refused, and no credential is rotated.
    let mut takeover = body.clone();
    takeover["node_id"] = json!(id);
    let (status, err) = d.post("/api/v1/register", &takeover, None).await;
    assert_eq!(status, 403);
    assert_error(&err, "IICP-E050");
    // Changing the CX key without the token is E049.
    takeover["cx_public_key"]["key"] = json!("B".repeat(43));
    let (status, err) = d.post("/api/v1/register", &takeover, None).await;
    assert_eq!(status, 403);
    assert_error(&err, "IICP-E049");
    assert_eq!(d.heartbeat(&id, &token, json!({})).await.0, 200);
}

#[tokio::test]
async fn a_node_whose_old_route_is_dead_may_move_without_its_token() {
    let d = TestDirectory::dev().await;
    let (old_route, stop_old) = common::stoppable_health_responder().await;
    let mut body = d.register_body();
    body["endpoint"] = json!(format!("http://{old_route}"));
    let (id, old_token, _) = d.register(&body).await;

    // Moving while the old route still answers: refused.
    body["node_id"] = json!(id);
    body["endpoint"] = json!(d.node_endpoint());
    let (status, err) = d.post("/api/v1/register", &body, None).await;
    assert_eq!(status, 403);
    assert_error(&err, "IICP-E050");

    // Once nothing answers at the old route, the move is accepted and credentials rotate.
    stop_old.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (id2, new_token, _) = d.register(&body).await;
    assert_eq!(id2, id);
    assert_eq!(d.heartbeat(&id, &old_token, json!({})).await.0, 401);
    assert_eq!(d.heartbeat(&id, &new_token, json!({})).await.0, 200);
}

#[tokio::test]
async fn liveness_failure_issues_no_token() {
    let d = TestDirectory::dev().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut body = d.register_body();
    body["endpoint"] = json!(format!("http://{dead}"));
    let (status, err) = d.post("/api/v1/register", &body, None).await;
    assert_eq!(status, 422);
    assert_error(&err, "liveness_failed");
    assert!(err.get("node_token").is_none());
    let (_, stats) = d.get("/api/v1/stats").await;
    assert_eq!(stats["nodes_registered"], 0);
}

#[tokio::test]
async fn challenge_responses_verify_once_and_replays_fail() {
    let d = TestDirectory::dev().await;
    let (id, token, ack) = d.register(&d.register_body()).await;
    let key = ack["node_hmac_key"].as_str().unwrap();
    let (_, pong) = d.heartbeat(&id, &token, json!({})).await;
    let challenge = pong["challenge"].as_str().unwrap();
    let answer = iicp_proto::control::challenge_response(key, challenge);

    let (_, pong2) = d
        .heartbeat(&id, &token, json!({"challenge_response": answer}))
        .await;
    assert_eq!(pong2["liveness_verified"], true);
    // Replaying the same answer against the next challenge fails.
    let (_, pong3) = d
        .heartbeat(&id, &token, json!({"challenge_response": answer}))
        .await;
    assert_eq!(pong3["liveness_verified"], false);
    // A wrong key never verifies.
    let wrong = iicp_proto::control::challenge_response(
        "not-the-key",
        pong3["challenge"].as_str().unwrap(),
    );
    let (_, pong4) = d
        .heartbeat(&id, &token, json!({"challenge_response": wrong}))
        .await;
    assert_eq!(pong4["liveness_verified"], false);
    let (_, node) = d.get(&format!("/api/v1/node/{id}")).await;
    assert!(node["health"]["verified_liveness_at"].is_string(), "{node}");
}

#[tokio::test]
async fn a_metrics_batch_is_applied_at_most_once() {
    let d = TestDirectory::dev().await;
    let (id, token, _) = d.register(&d.register_body()).await;
    let batch =
        json!({"metrics": {"tasks_success": 5, "tasks_failed": 1}, "metrics_batch_id": "b-1"});
    let (_, first) = d.heartbeat(&id, &token, batch.clone()).await;
    assert_eq!(first["metrics_batch_accepted"], "b-1");
    let after_first = first["reputation_score"].as_f64().unwrap();
    assert!(
        (after_first - 0.50).abs() < 1e-9,
        "0.5 + 0.05 - 0.05 = {after_first}"
    );
    let (_, again) = d.heartbeat(&id, &token, batch).await;
    assert_eq!(again["metrics_batch_accepted"], "b-1");
    assert_eq!(again["reputation_score"].as_f64().unwrap(), after_first);
    let (_, next) = d
        .heartbeat(
            &id,
            &token,
            json!({"metrics": {"tasks_success": 3}, "metrics_batch_id": "b-2"}),
        )
        .await;
    assert!((next["reputation_score"].as_f64().unwrap() - 0.53).abs() < 1e-9);
    let (_, node) = d.get(&format!("/api/v1/node/{id}")).await;
    assert_eq!(node["completed_tasks_count"], 8);
    // Metrics without a batch id are refused: they could not be applied at most once.
    let (status, err) = d
        .heartbeat(&id, &token, json!({"metrics": {"tasks_success": 1}}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(err["error"]["problems"][0]["path"], "$.metrics_batch_id");
}

#[tokio::test]
async fn silent_nodes_go_dormant_and_a_heartbeat_restores_them() {
    let d = TestDirectory::start(true, |c| c.sweep_interval = Duration::from_millis(20)).await;
    let (id, token, _) = d.register(&d.register_body()).await;
    assert_eq!(d.discover(&format!("intent={CHAT}")).await.1["count"], 1);
    d.clock.advance_ms(91_000);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, node) = d.get(&format!("/api/v1/node/{id}")).await;
    assert_eq!(node["status"], "dormant");
    assert_eq!(d.discover(&format!("intent={CHAT}")).await.1["count"], 0);
    let (_, metrics) = read_text(&d, "/metrics").await;
    assert!(
        metrics.contains("iicp_heartbeat_misses_total 1"),
        "{metrics}"
    );

    assert_eq!(d.heartbeat(&id, &token, json!({})).await.0, 200);
    let (_, node) = d.get(&format!("/api/v1/node/{id}")).await;
    assert_eq!(node["status"], "active");
    assert_eq!(d.discover(&format!("intent={CHAT}")).await.1["count"], 1);
}

async fn read_text(d: &TestDirectory, path: &str) -> (u16, String) {
    let r = d.http.get(d.url(path)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn deregistration_answers_both_routes_and_voids_the_token() {
    let d = TestDirectory::dev().await;
    for (method, path) in [("DELETE", "/api/v1/register"), ("POST", "/v1/deregister")] {
        let (id, token, _) = d.register(&d.register_body()).await;
        let req = match method {
            "DELETE" => d.http.delete(d.url(path)),
            _ => d.http.post(d.url(path)),
        };
        let (status, body) = common::read(
            req.bearer_auth(&token)
                .json(&json!({"node_id": id}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["deregistered"], true);
        assert_eq!(d.heartbeat(&id, &token, json!({})).await.0, 404);
        assert_eq!(d.get(&format!("/api/v1/node/{id}")).await.0, 404);
    }
}

#[tokio::test]
async fn me_reports_the_callers_own_record() {
    let d = TestDirectory::dev().await;
    let (id, token, _) = d.register(&d.register_body()).await;
    let r = d
        .http
        .get(d.url("/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (status, me) = common::read(r).await;
    assert_eq!(status, 200);
    assert_eq!(me["node_id"], id.as_str());
    assert_eq!(me["observed_source_ip"], "127.0.0.1");
    assert_eq!(me.as_object().unwrap().len(), 3);
    let r = d.http.get(d.url("/v1/me")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn registrations_and_rotations_survive_a_restart() {
    let mut d = TestDirectory::dev().await;
    let (id, old, _) = d.register(&d.register_body()).await;
    let mut refresh = d.register_body();
    refresh["node_id"] = json!(id);
    refresh["current_node_token"] = json!(old);
    let (_, new, _) = d.register(&refresh).await;
    let dir = d.dir.clone();
    d.stop().await;

    let d2 = TestDirectory::start_in(dir, true, |_| {}).await;
    assert_eq!(d2.heartbeat(&id, &new, json!({})).await.0, 200);
    assert_eq!(d2.heartbeat(&id, &old, json!({})).await.0, 401);
    assert_eq!(d2.get(&format!("/api/v1/node/{id}")).await.0, 200);
}
