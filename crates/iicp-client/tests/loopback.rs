//! The SDK over real HTTP: a scripted directory and scripted nodes served by axum on ephemeral
//! loopback ports, so the reqwest transport itself (headers, bodies, statuses, streams) is
//! exercised end to end.
//!
//! These run on real time and assert no durations. Retry delays, breaker periods and cache
//! expiry are tested in the crate's unit tests on paused time with an in-memory transport:
//! a paused runtime jumps its clock to the next timer whenever it waits on a socket, which
//! would make timings over real sockets meaningless.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use iicp_client::{Call, Client, ClientConfig, ClientError, StreamItem};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

const CHAT: &str = "urn:iicp:intent:llm:chat:v1";

async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// What a scripted node answers to every CALL.
#[derive(Clone, Copy)]
enum Node {
    Busy,
    Answers,
}

#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    /// The last CALL body.
    last: Mutex<Value>,
}

async fn node(kind: Node) -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let router = Router::new()
        .route(
            "/v1/task",
            post(
                move |State(seen): State<Arc<Seen>>, headers: HeaderMap, Json(call): Json<Value>| async move {
                    seen.calls.fetch_add(1, Ordering::SeqCst);
                    *seen.last.lock().unwrap() = call.clone();
                    let task_id = call["task_id"].clone();
                    let response = json!({"task_id": task_id, "status": "success",
                        "result": {"echo": call["payload"]}, "metrics": {"latency_ms": 1}});
                    match kind {
                        Node::Busy => (
                            StatusCode::TOO_MANY_REQUESTS,
                            Json(json!({"error": {"code": "capacity_exceeded", "message": "full"}})),
                        )
                            .into_response(),
                        Node::Answers
                            if headers
                                .get(header::ACCEPT)
                                .is_some_and(|v| v == "text/event-stream") =>
                        {
                            let body = format!(
                                "event: delta\ndata: {}\n\nevent: delta\ndata: {}\n\nevent: done\ndata: {}\n\n",
                                json!({"content": "he"}),
                                json!({"content": "llo"}),
                                response
                            );
                            ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
                        }
                        Node::Answers => Json(response).into_response(),
                    }
                },
            ),
        )
        .with_state(seen.clone());
    (serve(router).await, seen)
}

struct Directory {
    url: String,
    discovers: Arc<AtomicUsize>,
    tickets: Arc<AtomicUsize>,
}

/// A directory listing `nodes` (key → endpoint, in this order) with this `Cache-Control`. The
/// public view hides endpoints; tickets disclose them. Node `busy` is advertised as the
/// fastest, so a client tries it first.
async fn directory(nodes: Vec<(&str, String)>, cache_control: &'static str) -> Directory {
    let discovers = Arc::new(AtomicUsize::new(0));
    let tickets = Arc::new(AtomicUsize::new(0));
    let routes: HashMap<String, String> = nodes
        .iter()
        .map(|(k, e)| (k.to_string(), e.clone()))
        .collect();
    let (d, t) = (discovers.clone(), tickets.clone());
    let listed: Vec<(String, String)> = nodes
        .iter()
        .map(|(k, e)| (k.to_string(), e.clone()))
        .collect();
    let router = Router::new()
        .route(
            "/api/v1/discover",
            get(move |Query(q): Query<HashMap<String, String>>| async move {
                d.fetch_add(1, Ordering::SeqCst);
                let public = q.get("view").is_some_and(|v| v == "public");
                let nodes: Vec<Value> = listed
                    .iter()
                    .map(|(k, e)| {
                        let latency = if k == "busy" { 1 } else { 100 };
                        let mut n = json!({"score": 0.8, "available": true,
                                           "latency_estimate_ms": latency});
                        if public {
                            n["node_id_prefix"] = json!(k);
                        } else {
                            n["node_id"] = json!(k);
                            n["endpoint"] = json!(e);
                        }
                        n
                    })
                    .collect();
                let count = nodes.len();
                (
                    [(header::CACHE_CONTROL, cache_control)],
                    Json(json!({"nodes": nodes, "count": count})),
                )
            }),
        )
        .route(
            "/api/v1/dispatch/ticket",
            post(move |Json(req): Json<Value>| async move {
                t.fetch_add(1, Ordering::SeqCst);
                let key = req["node_id_prefix"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                match routes.get(&key) {
                    Some(endpoint) => (
                        StatusCode::CREATED,
                        Json(json!({"ticket": "t.s", "node_id": key,
                            "route": {"node_id": key, "endpoint": endpoint}})),
                    ),
                    None => (
                        StatusCode::NOT_FOUND,
                        Json(json!({"error": {"code": "not_found", "message": "no such node"}})),
                    ),
                }
            }),
        );
    Directory {
        url: serve(router).await,
        discovers,
        tickets,
    }
}

fn client(directory: &str, use_tickets: bool) -> Client {
    let mut config = ClientConfig::new(directory.parse().unwrap());
    config.use_tickets = use_tickets;
    config.seed = Some(7);
    Client::new(config)
}

fn chat() -> Call {
    Call::new(
        CHAT,
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
}

#[tokio::test]
async fn a_call_moves_past_a_busy_node_and_is_answered_over_real_http() {
    let (busy, busy_seen) = node(Node::Busy).await;
    let (ok, ok_seen) = node(Node::Answers).await;
    for use_tickets in [false, true] {
        let dir = directory(
            vec![("busy", busy.clone()), ("ok", ok.clone())],
            "max-age=60",
        )
        .await;
        let client = client(&dir.url, use_tickets);
        for n in 0..4 {
            let answer = client.call(chat()).await.unwrap();
            assert_eq!(answer.node_id, "ok");
            if n == 0 {
                assert_eq!(answer.attempts, 2, "the busy node first, then the next one");
            }
            let sent = ok_seen.last.lock().unwrap().clone();
            assert_eq!(answer.response.task_id.to_string(), sent["task_id"]);
            assert_eq!(
                answer.response.result.unwrap()["echo"]["messages"][0]["content"],
                "hi"
            );
        }
        assert_eq!(
            dir.discovers.load(Ordering::SeqCst),
            1,
            "cached for max-age"
        );
        if use_tickets {
            assert_eq!(
                dir.tickets.load(Ordering::SeqCst),
                2,
                "one ticket per node, reused"
            );
        } else {
            assert_eq!(dir.tickets.load(Ordering::SeqCst), 0);
        }
    }
    assert!(busy_seen.calls.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn a_stream_over_real_http_yields_deltas_then_done_with_its_task_id() {
    let (ok, seen) = node(Node::Answers).await;
    let dir = directory(vec![("ok", ok)], "max-age=5").await;
    let answer = client(&dir.url, false).call_stream(chat()).await.unwrap();
    assert_eq!(answer.node_id, "ok");
    assert_eq!(
        seen.last.lock().unwrap()["task_id"],
        answer.task_id.to_string()
    );
    let task_id = answer.task_id;
    let items: Vec<StreamItem> = futures_util::StreamExt::collect::<Vec<_>>(answer.items)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(items[0], StreamItem::Delta("he".into()));
    assert_eq!(items[1], StreamItem::Delta("llo".into()));
    assert!(matches!(&items[2], StreamItem::Done(r) if r.task_id == task_id));
}

#[tokio::test]
async fn no_store_from_a_real_directory_means_every_call_discovers_again() {
    let (ok, _) = node(Node::Answers).await;
    let dir = directory(vec![("ok", ok)], "no-store").await;
    let client = client(&dir.url, false);
    for n in 1..=3 {
        client.call(chat()).await.unwrap();
        assert_eq!(dir.discovers.load(Ordering::SeqCst), n);
    }
}

#[tokio::test]
async fn an_empty_directory_is_e033_and_a_dead_node_is_no_available_node() {
    let dir = directory(vec![], "max-age=5").await;
    let e = client(&dir.url, false).call(chat()).await.unwrap_err();
    assert!(matches!(e, ClientError::NoCandidates), "{e:?}");

    // A port nothing listens on any more.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let dir = directory(vec![("dead", dead)], "max-age=5").await;
    let e = client(&dir.url, false).call(chat()).await.unwrap_err();
    assert!(
        matches!(e, ClientError::NoAvailableNode { attempts: 1, .. }),
        "{e:?}"
    );
}
