//! The attempt loop against the scripted network (`crate::testing`), on paused tokio time and
//! seeded randomness: which node, how many attempts, how long between them, which error.

use super::*;
use crate::testing::{config, node, Net, Reply, Seen};

const CHAT: &str = "urn:iicp:intent:llm:chat:v1";

fn chat() -> Call {
    Call::new(
        CHAT,
        serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
}

/// A network whose directory lists nodes `keys`, each answering every CALL with `reply`.
fn mesh(keys: &[&str], reply: Reply) -> Net {
    let net = Net::new();
    net.discover(keys.iter().map(|k| node(k)).collect(), None);
    for k in keys {
        net.node_always(k, reply.clone());
    }
    net
}

/// The node a logged CALL went to.
fn node_of(seen: &Seen) -> &str {
    seen.url
        .strip_prefix("http://")
        .and_then(|u| u.split('.').next())
        .expect("a node URL")
}

/// The time between consecutive CALLs.
fn gaps(calls: &[Seen]) -> Vec<Duration> {
    calls.windows(2).map(|w| w[1].at - w[0].at).collect()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---- selection through the client -------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_prohibited_intent_is_refused_locally_before_any_request() {
    let net = mesh(&["a"], Reply::ok());
    let client = net.client(1);
    for intent in [
        "urn:iicp:intent:social:scoring:v1",
        "urn:iicp:intent:credit:decision:v1",
    ] {
        let e = client
            .call(Call::new(intent, serde_json::json!({})))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ClientError::PolicyRefused(_)),
            "{intent}: {e:?}"
        );
        assert_eq!(e.code().as_str(), "IICP-POLICY-001");
        let e = client
            .call_stream(Call::new(intent, serde_json::json!({})))
            .await
            .err()
            .expect("refused");
        assert_eq!(e.code().as_str(), "IICP-POLICY-001");
        let e = client.discover(intent, None, None).await.unwrap_err();
        assert_eq!(e.code().as_str(), "IICP-POLICY-001");
    }
    assert!(net.seen().is_empty(), "not even the directory was asked");
}

#[tokio::test(start_paused = true)]
async fn the_same_snapshot_and_seed_send_the_same_calls_to_the_same_nodes() {
    let keys = ["a", "b", "c", "d", "e", "f"];
    let route = |seed: u64| async move {
        let net = mesh(&keys, Reply::ok());
        let client = net.client(seed);
        let mut nodes = Vec::new();
        for _ in 0..12 {
            nodes.push(client.call(chat()).await.unwrap().node_id);
        }
        nodes
    };
    let first = route(42).await;
    assert_eq!(first, route(42).await);
    assert_ne!(first, route(43).await, "another seed, another sequence");
}

#[tokio::test(start_paused = true)]
async fn calls_go_only_to_nodes_that_meet_the_hard_requirements() {
    let net = Net::new();
    let mut far = node("far");
    far["region"] = "us".into();
    let mut other = node("other");
    other["models"] = serde_json::json!(["x"]);
    net.discover(vec![far, other, node("fit")], None);
    for k in ["far", "other", "fit"] {
        net.node_always(k, Reply::ok());
    }
    let mut cfg = config(9);
    cfg.regions = Some(vec!["eu".into()]);
    let client = net.client_with(cfg);
    for _ in 0..20 {
        let mut call = chat();
        call.model = Some("m".into());
        assert_eq!(client.call(call).await.unwrap().node_id, "fit");
    }
    assert!(net.calls().iter().all(|c| node_of(c) == "fit"));
    let sent = net.calls()[0].body.clone().unwrap();
    assert_eq!(
        sent["payload"]["model"], "m",
        "the model travels in the payload"
    );

    // Nothing fits: no node is called, and the error says so.
    let mut call = chat();
    call.model = Some("absent".into());
    let e = client.call(call).await.unwrap_err();
    assert!(
        matches!(&e, ClientError::NoAvailableNode { attempts: 0, last } if last.contains("requirements")),
        "{e:?}"
    );
    assert_eq!(net.calls().len(), 20);
}

// ---- attempts and backoff ----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn at_most_three_attempts_each_on_another_node() {
    let net = mesh(
        &["a", "b", "c", "d", "e"],
        Reply::error(503, "temporarily_unavailable"),
    );
    let e = net.client(5).call(chat()).await.unwrap_err();
    assert!(
        matches!(e, ClientError::NoAvailableNode { attempts: 3, .. }),
        "{e:?}"
    );
    assert_eq!(e.code().as_str(), "no_available_node");
    let calls = net.calls();
    assert_eq!(calls.len(), 3);
    let mut nodes: Vec<_> = calls.iter().map(node_of).collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes.len(), 3, "each attempt on another node");
    // A retry is the same task: same task_id, same trace, a fresh span.
    let ids: Vec<_> = calls
        .iter()
        .map(|c| c.body.as_ref().unwrap()["task_id"].clone())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]));
    let traceparents: Vec<&str> = calls
        .iter()
        .map(|c| {
            c.headers
                .iter()
                .find(|(n, _)| *n == "traceparent")
                .unwrap()
                .1
                .as_str()
        })
        .collect();
    assert!(traceparents
        .iter()
        .all(|t| t[..35] == traceparents[0][..35]));
    assert_ne!(traceparents[0], traceparents[1]);
}

#[tokio::test(start_paused = true)]
async fn retries_wait_200_ms_then_400_ms_give_or_take_20_percent() {
    let mut first_waits = Vec::new();
    for seed in 0..24 {
        let net = mesh(
            &["a", "b", "c"],
            Reply::error(503, "temporarily_unavailable"),
        );
        let started = Instant::now();
        net.client(seed).call(chat()).await.unwrap_err();
        let calls = net.calls();
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[0].at, started, "the first attempt goes at once");
        let g = gaps(&calls);
        assert!((ms(160)..=ms(240)).contains(&g[0]), "seed {seed}: {g:?}");
        assert!((ms(320)..=ms(480)).contains(&g[1]), "seed {seed}: {g:?}");
        assert_eq!(
            started.elapsed(),
            g[0] + g[1],
            "no wait after the last attempt"
        );
        first_waits.push(g[0]);
    }
    first_waits.sort();
    first_waits.dedup();
    assert!(
        first_waits.len() > 10,
        "the waits are jittered: {first_waits:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_success_after_a_retry_reports_both_attempts() {
    for seed in 0..8 {
        let net = Net::new();
        net.discover(vec![node("a"), node("b")], None);
        // The first CALL, to whichever node, fails; every later one is answered.
        net.script(
            "http://",
            [Reply::error(500, "internal_error")],
            Reply::ok(),
        );
        let answer = net.client(seed).call(chat()).await.unwrap();
        let calls = net.calls();
        assert_eq!(answer.attempts, 2);
        assert_eq!(answer.node_id, node_of(&calls[1]));
        assert_ne!(node_of(&calls[0]), node_of(&calls[1]));
        assert!((ms(160)..=ms(240)).contains(&gaps(&calls)[0]));
        assert_eq!(
            answer.response.task_id.to_string(),
            calls[0].body.as_ref().unwrap()["task_id"]
        );
    }
}

#[tokio::test(start_paused = true)]
async fn capacity_exceeded_moves_to_the_next_node_at_once() {
    for code in ["capacity_exceeded", "overloaded"] {
        for seed in 0..8 {
            let net = Net::new();
            net.discover(vec![node("a"), node("b"), node("c")], None);
            net.node_always("a", Reply::error(429, code));
            net.node_always("b", Reply::error(429, code));
            net.node_always("c", Reply::ok());
            let started = Instant::now();
            let answer = net.client(seed).call(chat()).await.unwrap();
            assert_eq!(answer.node_id, "c");
            let calls = net.calls();
            assert_eq!(answer.attempts as usize, calls.len());
            assert!(calls.iter().all(|c| c.at == started), "{code}: no backoff");
        }
    }
    // All busy: three attempts in no time, and the error is no_available_node, not timeout.
    let net = mesh(
        &["a", "b", "c", "d"],
        Reply::error(429, "capacity_exceeded"),
    );
    let started = Instant::now();
    let e = net.client(1).call(chat()).await.unwrap_err();
    assert!(
        matches!(e, ClientError::NoAvailableNode { attempts: 3, .. }),
        "{e:?}"
    );
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn other_429s_are_retried_after_the_backoff() {
    let net = mesh(&["a", "b"], Reply::error(429, "rate_limited"));
    let e = net.client(2).call(chat()).await.unwrap_err();
    assert!(
        matches!(e, ClientError::NoAvailableNode { attempts: 2, .. }),
        "{e:?}"
    );
    assert!((ms(160)..=ms(240)).contains(&gaps(&net.calls())[0]));
}

#[tokio::test(start_paused = true)]
async fn requests_the_node_refuses_and_backend_errors_are_not_retried() {
    // Digest §5.4: 400, 401, 403, 409, 422 and 502 are not retriable.
    for (status, code) in [
        (400, "validation_error"),
        (401, "unauthorized"),
        (403, "forbidden"),
        (409, "conflict"),
        (422, "validation_error"),
        (502, "backend_error"),
    ] {
        let net = mesh(&["a", "b", "c"], Reply::error(status, code));
        let e = net.client(3).call(chat()).await.unwrap_err();
        assert_eq!(net.calls().len(), 1, "{status} {code} is not retried");
        match &e {
            ClientError::Node {
                status: s, code: c, ..
            } => {
                assert_eq!((*s, c.as_str()), (status, code));
            }
            other => panic!("{status}: {other:?}"),
        }
        assert_eq!(e.http_status(), status, "passed on as it came");
    }
}

#[tokio::test(start_paused = true)]
async fn unreachable_busy_and_failing_nodes_are_retried_elsewhere() {
    for (reply, what) in [
        (Reply::Refused, "connection refused"),
        (Reply::error(503, "temporarily_unavailable"), "503"),
        (Reply::error(500, "internal_error"), "500"),
        (Reply::error(404, "IICP-E029"), "404 model not served here"),
        (
            Reply::Json {
                status: 200,
                headers: vec![],
                body: serde_json::json!({"not": "a response"}),
            },
            "a malformed RESPONSE",
        ),
    ] {
        let net = mesh(&["a", "b", "c", "d"], reply);
        let e = net.client(4).call(chat()).await.unwrap_err();
        assert_eq!(net.calls().len(), 3, "{what} is retried");
        assert!(
            matches!(e, ClientError::NoAvailableNode { attempts: 3, .. }),
            "{what}: {e:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn all_attempts_timing_out_is_a_timeout_error() {
    for reply in [Reply::Hang, Reply::error(504, "task_timeout")] {
        let net = mesh(&["a", "b", "c"], reply.clone());
        let mut call = chat();
        call.timeout = Duration::from_secs(2);
        let e = net.client(6).call(call).await.unwrap_err();
        assert!(
            matches!(e, ClientError::Timeout { attempts: 3 }),
            "{reply:?}: {e:?}"
        );
        assert_eq!(e.code().as_str(), "timeout");
        assert_eq!(net.calls().len(), 3);
    }
    // A hung node costs the call's budget (timeout_ms + 1 s of grace), then the next is tried.
    let net = mesh(&["a", "b", "c"], Reply::Hang);
    let mut call = chat();
    call.timeout = Duration::from_secs(2);
    net.client(6).call(call).await.unwrap_err();
    let g = gaps(&net.calls());
    assert!((ms(3_160)..=ms(3_240)).contains(&g[0]), "{g:?}");
    assert_eq!(
        net.calls()[0].body.as_ref().unwrap()["constraints"]["timeout_ms"],
        2000
    );
}

#[tokio::test(start_paused = true)]
async fn some_timeouts_and_other_failures_are_no_available_node() {
    let net = Net::new();
    net.discover(vec![node("a"), node("b"), node("c")], None);
    net.node_always("a", Reply::Hang);
    net.node_always("b", Reply::Refused);
    net.node_always("c", Reply::Hang);
    let mut call = chat();
    call.timeout = Duration::from_secs(1);
    let e = net.client(7).call(call).await.unwrap_err();
    assert!(
        matches!(e, ClientError::NoAvailableNode { attempts: 3, .. }),
        "{e:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn no_candidate_from_the_directory_is_e033_and_distinct_from_no_available_node() {
    let net = mesh(&[], Reply::ok());
    let client = net.client(1);
    let e = client.call(chat()).await.unwrap_err();
    assert!(matches!(e, ClientError::NoCandidates), "{e:?}");
    assert_eq!((e.code().as_str(), e.http_status()), ("IICP-E033", 503));
    let e = client
        .call_stream(chat())
        .await
        .err()
        .expect("no candidates");
    assert_eq!(e.code().as_str(), "IICP-E033");
    assert!(net.calls().is_empty());

    let net = mesh(&["a", "b"], Reply::Refused);
    let e = net.client(1).call(chat()).await.unwrap_err();
    assert_eq!(
        (e.code().as_str(), e.http_status()),
        ("no_available_node", 503)
    );
    assert_ne!(e.code(), ClientError::NoCandidates.code());
}

// ---- breaker through the client ----------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_lone_failing_node_is_not_hammered_once_its_breaker_opens() {
    let net = Net::new();
    net.discover(vec![node("only")], Some("max-age=3600"));
    let failing = std::iter::repeat_n(Reply::error(503, "temporarily_unavailable"), 5);
    net.node_script("only", failing, Reply::ok());
    let client = net.client(11);
    for n in 1..=5 {
        let started = Instant::now();
        let e = client.call(chat()).await.unwrap_err();
        assert!(
            matches!(e, ClientError::NoAvailableNode { attempts: 1, .. }),
            "{e:?}"
        );
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "no backoff with no node left to try"
        );
        assert_eq!(net.calls().len(), n);
    }
    // Open: refused locally, without a request.
    for _ in 0..3 {
        let e = client.call(chat()).await.unwrap_err();
        assert!(
            matches!(&e, ClientError::NoAvailableNode { attempts: 0, last } if last.contains("circuit breaker")),
            "{e:?}"
        );
        assert_eq!(e.code().as_str(), "no_available_node");
    }
    tokio::time::advance(ms(26_900)).await;
    assert!(client.call(chat()).await.is_err(), "still open at 26.9 s");
    assert_eq!(net.calls().len(), 5);
    tokio::time::advance(ms(6_200)).await;
    let answer = client
        .call(chat())
        .await
        .expect("the half-open probe goes through");
    assert_eq!(answer.node_id, "only");
    assert_eq!(net.calls().len(), 6);
    client.call(chat()).await.expect("closed again");
    assert_eq!(net.calls().len(), 7);
}

#[tokio::test(start_paused = true)]
async fn failures_count_across_calls_until_every_breaker_is_open() {
    let net = mesh(&["a", "b"], Reply::Refused);
    let client = net.client(12);
    for n in 1..=5 {
        let e = client.call(chat()).await.unwrap_err();
        assert!(
            matches!(e, ClientError::NoAvailableNode { attempts: 2, .. }),
            "{e:?}"
        );
        assert_eq!(net.calls().len(), 2 * n);
    }
    let e = client.call(chat()).await.unwrap_err();
    assert!(
        matches!(e, ClientError::NoAvailableNode { attempts: 0, .. }),
        "{e:?}"
    );
    assert_eq!(net.calls().len(), 10, "both breakers open: nothing is sent");
    assert!(Instant::now() - net.calls()[0].at < Duration::from_secs(27));
    tokio::time::advance(ms(33_100)).await;
    client.call(chat()).await.unwrap_err();
    assert_eq!(
        net.calls().len(),
        12,
        "one probe each after the open period"
    );
    client.call(chat()).await.unwrap_err();
    assert_eq!(net.calls().len(), 12, "the failed probes reopened both");
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_does_not_leave_the_breaker_stuck_half_open() {
    let net = Net::new();
    net.discover(vec![node("only")], Some("max-age=3600"));
    let mut script: Vec<Reply> = vec![Reply::Refused; 5];
    script.push(Reply::Hang);
    net.node_script("only", script, Reply::ok());
    let client = net.client(13);
    for _ in 0..5 {
        client.call(chat()).await.unwrap_err();
    }
    tokio::time::advance(ms(33_100)).await;
    // The probe hangs and its caller gives up.
    let gave_up = tokio::time::timeout(ms(500), client.call(chat())).await;
    assert!(gave_up.is_err());
    assert_eq!(net.calls().len(), 6);
    let answer = client.call(chat()).await.expect("a new probe may go");
    assert_eq!(answer.node_id, "only");
}

#[tokio::test(start_paused = true)]
async fn a_busy_node_does_not_count_towards_its_breaker() {
    let net = mesh(&["only"], Reply::error(429, "capacity_exceeded"));
    let client = net.client(14);
    for n in 1..=10 {
        client.call(chat()).await.unwrap_err();
        assert_eq!(net.calls().len(), n, "still called after {n} busy answers");
    }
}

// ---- streaming ---------------------------------------------------------------------------

async fn collect(answer: StreamAnswer) -> Vec<StreamItem> {
    answer
        .items
        .map(|i| i.expect("no stream error"))
        .collect()
        .await
}

#[tokio::test(start_paused = true)]
async fn a_stream_carries_the_task_id_of_its_call() {
    let net = mesh(&["a"], Reply::Sse(vec!["Hel", "lo"]));
    let answer = net.client(1).call_stream(chat()).await.unwrap();
    let sent = net.calls()[0].body.clone().unwrap();
    assert_eq!(sent["task_id"], answer.task_id.to_string());
    assert!(net.calls()[0]
        .headers
        .iter()
        .any(|(n, v)| *n == "accept" && v == "text/event-stream"));
    let (task_id, node_id) = (answer.task_id, answer.node_id.clone());
    assert_eq!(node_id, "a");
    let items = collect(answer).await;
    assert_eq!(items[0], StreamItem::Delta("Hel".into()));
    assert_eq!(items[1], StreamItem::Delta("lo".into()));
    match &items[2] {
        StreamItem::Done(r) => assert_eq!(r.task_id, task_id),
        other => panic!("{other:?}"),
    }
    assert_eq!(items.len(), 3);

    // A node that answers a stream with a whole RESPONSE: one item, same task_id.
    let net = mesh(&["a"], Reply::ok());
    let answer = net.client(1).call_stream(chat()).await.unwrap();
    let task_id = answer.task_id;
    let items = collect(answer).await;
    assert!(matches!(&items[..], [StreamItem::Done(r)] if r.task_id == task_id));
}

#[tokio::test(start_paused = true)]
async fn a_stream_with_no_first_token_in_time_fails_over() {
    let mut failovers = 0;
    for seed in 0..8 {
        let net = Net::new();
        net.discover(vec![node("mute"), node("talks")], None);
        net.node_always("mute", Reply::SseSilent);
        net.node_always("talks", Reply::Sse(vec!["ok"]));
        let mut cfg = config(seed);
        cfg.first_token_timeout = Duration::from_secs(2);
        let answer = net.client_with(cfg).call_stream(chat()).await.unwrap();
        assert_eq!(answer.node_id, "talks");
        let calls = net.calls();
        assert_eq!(answer.attempts as usize, calls.len());
        if calls.len() == 2 {
            failovers += 1;
            let g = gaps(&calls)[0];
            assert!(
                (ms(2_160)..=ms(2_240)).contains(&g),
                "deadline then backoff: {g:?}"
            );
            // Same task on the next node.
            assert_eq!(
                calls[1].body.as_ref().unwrap()["task_id"],
                answer.task_id.to_string()
            );
        }
    }
    assert!(failovers > 0, "some seed tried the mute node first");
}

#[tokio::test(start_paused = true)]
async fn an_error_before_the_first_token_fails_over() {
    let net = Net::new();
    net.discover(vec![node("a"), node("b")], None);
    net.script(
        "http://",
        [Reply::SseError("backend_error")],
        Reply::Sse(vec!["x"]),
    );
    let answer = net.client(3).call_stream(chat()).await.unwrap();
    assert_eq!(answer.attempts, 2);
    assert_eq!(collect(answer).await.len(), 2);
}
