//! Serving on one runtime per core: every connection is served whichever worker it went to,
//! and shutdown ends every worker even while callers keep idle connections open.

mod common;

use common::*;
use iicp_testkit::Flavor;
use std::time::Duration;

#[tokio::test]
async fn connections_on_every_worker_are_served_and_shutdown_ends_them_all() {
    let d = double(Flavor::OpenAi).await;
    let mut node = TestNode::start(backend_for(&d), |c| {
        c.workers = 3;
        c.max_concurrent = 16;
    })
    .await;
    // One client each: eight connections, handed to the three workers in turn.
    let callers: Vec<reqwest::Client> = (0..8).map(|_| client()).collect();
    for round in 0..2 {
        let sent = callers
            .iter()
            .map(|c| c.post(node.url("/v1/task")).json(&chat_task("hi")).send());
        for reply in futures_util::future::join_all(sent).await {
            assert_eq!(reply.unwrap().status(), 200, "round {round}");
        }
    }
    // The callers still hold their idle keep-alive connections.
    let running = node.node.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), running.shutdown())
        .await
        .expect("shutdown finishes with idle connections open");
    let after = callers[0]
        .post(node.url("/v1/task"))
        .json(&chat_task("hi"))
        .send()
        .await;
    assert!(after.is_err(), "nothing answers after shutdown");
}
