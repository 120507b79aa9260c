//! Life with a real directory: register once bound, heartbeat at the directory's pace, ride out
//! directory restarts (kept or lost state), deregister on shutdown, keep the node id on disk.

mod common;

use common::*;
use iicp_testkit::Flavor;
use std::time::Duration;

/// Heartbeats come every ~1 s (the directory's interval, with jitter and backoff on failure).
const A_FEW_BEATS: Duration = Duration::from_secs(6);

#[tokio::test]
async fn the_node_registers_once_bound_and_is_discoverable() {
    let d = double(Flavor::Ollama).await;
    let dir = TestDirectory::start().await;
    let (node, id) = registered_node(&dir, &d, |c| c.region = "eu-test".into()).await;
    assert!(dir.discover(CHAT).await.contains(&id));
    assert!(dir.discover(EMBEDDING).await.contains(&id));
    let record = dir.node(&id).await.unwrap();
    assert_eq!(
        record["endpoint"], node.base,
        "the bound address is advertised"
    );
    assert_eq!(record["region"], "eu-test");
    assert_eq!(record["max_concurrent"], 4);
    assert_eq!(record["implementation_name"], "iicp-rs");
    assert_eq!(node.health().await["node_id"], id.as_str());
    assert_eq!(
        dir.metric("iicp_registrations_total{outcome=\"accepted\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn heartbeats_report_task_outcomes_at_the_directory_pace() {
    let d = double(Flavor::OpenAi).await;
    let dir = TestDirectory::start().await;
    let (node, id) = registered_node(&dir, &d, |_| {}).await;
    for _ in 0..3 {
        assert_eq!(node.task(&chat_task(PROMPT)).await.status, 200);
    }
    let record = eventually(
        "the outcomes to reach the directory",
        A_FEW_BEATS,
        || async {
            dir.node(&id)
                .await
                .filter(|r| r["completed_tasks_count"] == 3)
        },
    )
    .await;
    assert_eq!(record["health"]["reachable"], true);
    eventually("a few heartbeats", A_FEW_BEATS, || async {
        (dir.metric("iicp_heartbeats_total").await >= 2).then_some(())
    })
    .await;
    // Heartbeats never re-register.
    assert_eq!(
        dir.metric("iicp_registrations_total{outcome=\"accepted\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn the_node_keeps_serving_across_a_directory_restart_on_the_same_database() {
    let d = double(Flavor::OpenAi).await;
    let mut dir = TestDirectory::start().await;
    let (node, id) = registered_node(&dir, &d, |_| {}).await;

    dir.stop().await;
    // The directory is down: the data plane does not care.
    assert_eq!(node.task(&chat_task(PROMPT)).await.status, 200);
    dir.restart(true).await;

    assert_eq!(node.task(&chat_task(PROMPT)).await.status, 200);
    eventually(
        "heartbeats to the restarted directory",
        A_FEW_BEATS,
        || async { (dir.metric("iicp_heartbeats_total").await >= 1).then_some(()) },
    )
    .await;
    // The stored registration still holds: heartbeats resume with the same id and token.
    eventually(
        "the outcomes to reach the directory",
        A_FEW_BEATS,
        || async {
            dir.node(&id)
                .await
                .filter(|r| r["completed_tasks_count"] == 2)
        },
    )
    .await;
    assert_eq!(node.node_id().as_deref(), Some(id.as_str()));
    assert!(dir.discover(CHAT).await.contains(&id));
    assert_eq!(
        dir.metric("iicp_registrations_total{outcome=\"accepted\"}")
            .await,
        0,
        "no re-registration was needed"
    );
}

#[tokio::test]
async fn the_node_registers_again_with_a_directory_that_lost_its_state() {
    let d = double(Flavor::OpenAi).await;
    let mut dir = TestDirectory::start().await;
    let (node, id) = registered_node(&dir, &d, |_| {}).await;

    dir.restart(false).await;
    assert!(
        dir.discover(CHAT).await.is_empty(),
        "the new directory starts empty"
    );
    let back = eventually("the node to be discoverable again", A_FEW_BEATS, || async {
        let found = dir.discover(CHAT).await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(back, vec![id.clone()], "it kept its node id");
    assert_eq!(
        dir.metric("iicp_registrations_total{outcome=\"accepted\"}")
            .await,
        1
    );
    let record = dir.node(&id).await.unwrap();
    assert_eq!(record["endpoint"], node.base);
    assert!(record["cx_public_key"].is_object());
    assert_eq!(node.task(&chat_task(PROMPT)).await.status, 200);
}

#[tokio::test]
async fn shutdown_deregisters_the_node() {
    let d = double(Flavor::OpenAi).await;
    let dir = TestDirectory::start().await;
    let (mut node, id) = registered_node(&dir, &d, |_| {}).await;
    assert!(dir.node(&id).await.is_some());
    let base = node.base.clone();
    node.shutdown().await;
    assert!(dir.node(&id).await.is_none(), "deregistered: 404");
    assert!(!dir.discover(CHAT).await.contains(&id));
    // And it stopped serving.
    assert!(client()
        .get(format!("{base}/iicp/health"))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn a_restarted_node_keeps_its_node_id() {
    let d = double(Flavor::OpenAi).await;
    let dir = TestDirectory::start().await;
    let (mut node, id) = registered_node(&dir, &d, |_| {}).await;
    let state_dir = node.state_dir.clone();
    node.shutdown().await;
    assert!(dir.node(&id).await.is_none());

    let url = dir.url();
    let again = TestNode::start_in(state_dir, backend_for(&d), |c| c.directory = Some(url)).await;
    assert_eq!(again.registered_id().await, id);
    let record = dir.node(&id).await.expect("registered again");
    assert_eq!(record["endpoint"], again.base, "at its new address");
    assert_eq!(dir.discover(CHAT).await, vec![id]);
}

#[tokio::test]
async fn a_restarted_node_keeps_its_cx_key() {
    let d = double(Flavor::OpenAi).await;
    let dir = TestDirectory::start().await;
    let (mut node, id) = registered_node(&dir, &d, |_| {}).await;
    let key = dir.node(&id).await.unwrap()["cx_public_key"].clone();
    assert!(key["key"].is_string(), "{key}");
    let state_dir = node.state_dir.clone();
    node.shutdown().await;

    let url = dir.url();
    let again = TestNode::start_in(state_dir, backend_for(&d), |c| c.directory = Some(url)).await;
    let id = again.registered_id().await;
    assert_eq!(dir.node(&id).await.unwrap()["cx_public_key"], key);
}

#[tokio::test]
async fn the_node_serves_while_its_directory_is_unreachable() {
    let d = double(Flavor::OpenAi).await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = url::Url::parse(&format!("http://{}", closed.local_addr().unwrap())).unwrap();
    drop(closed);
    let mut node = TestNode::start(backend_for(&d), |c| c.directory = Some(url)).await;
    assert_eq!(node.task(&chat_task(PROMPT)).await.status, 200);
    assert_eq!(node.node_id(), None);
    // Shutting down does not hang on the absent directory.
    tokio::time::timeout(Duration::from_secs(5), node.shutdown())
        .await
        .expect("shutdown finishes");
}
