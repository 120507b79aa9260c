//! A scripted, in-memory network for the crate's tests: a directory and nodes that answer at
//! once (or never), and a log of every request with the tokio time it was sent at.
//!
//! Tests run with `#[tokio::test(start_paused = true)]`. Nothing here waits on a socket, so the
//! paused clock moves only when the client sleeps (backoff), a timeout is due because a scripted
//! peer hangs, or the test advances it: the time between two logged requests is exactly the
//! delay the client chose. (See `transport.rs` for why real sockets do not mix with paused
//! time.)

use crate::client::{Client, ClientConfig};
use crate::transport::{Method, Request, Response, SendError, Transport};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::time::Instant;

/// Where the scripted directory answers.
pub const DIRECTORY: &str = "http://directory.test";

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Any JSON answer.
    Json {
        status: u16,
        headers: Vec<(String, String)>,
        body: Value,
    },
    /// A node's successful RESPONSE to the CALL (its `task_id` echoed), with this result.
    Success(Value),
    /// An error envelope `{"error":{"code":…}}` with this status.
    Error(u16, &'static str),
    /// A streamed RESPONSE: one `delta` event per string, then `done`.
    Sse(Vec<&'static str>),
    /// A stream whose first event is an error.
    SseError(&'static str),
    /// Stream headers, then silence: no event ever comes.
    SseSilent,
    /// Connection refused.
    Refused,
    /// No answer at all (until the request's own timeout, if it has one).
    Hang,
}

impl Reply {
    pub fn error(status: u16, code: &'static str) -> Reply {
        Reply::Error(status, code)
    }

    pub fn ok() -> Reply {
        Reply::Success(json!({"choices": [{"message": {"role": "assistant", "content": "hi"}}]}))
    }
}

/// A request as the network saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

struct Script {
    prefix: String,
    replies: VecDeque<Reply>,
    then: Reply,
}

#[derive(Default)]
struct Inner {
    scripts: Mutex<Vec<Script>>,
    seen: Mutex<Vec<Seen>>,
}

/// The scripted network. Cheap to clone; clones share scripts and log.
#[derive(Clone, Default)]
pub struct Net(Arc<Inner>);

/// The endpoint of scripted node `key`.
pub fn endpoint(key: &str) -> String {
    format!("http://{key}.test")
}

/// A dispatch-view node `key` (route included), serving model `m`, text, region `eu`.
pub fn node(key: &str) -> Value {
    json!({"node_id": key, "endpoint": endpoint(key), "score": 0.8, "available": true,
           "models": ["m"], "input_modalities": ["text"], "region": "eu",
           "reputation_score": 0.5})
}

/// A client of the scripted directory with a fixed seed, on the dispatch view (routes come
/// with the discover answer).
pub fn config(seed: u64) -> ClientConfig {
    let mut c = ClientConfig::new(DIRECTORY.parse().expect("valid URL"));
    c.seed = Some(seed);
    c.use_tickets = false;
    c
}

impl Net {
    pub fn new() -> Net {
        Net::default()
    }

    /// Requests whose URL starts with `prefix` get `replies` in order, then `then` forever.
    /// The longest matching prefix wins; a URL nothing matches is refused.
    pub fn script(&self, prefix: &str, replies: impl IntoIterator<Item = Reply>, then: Reply) {
        let mut scripts = self.0.scripts.lock();
        scripts.retain(|s| s.prefix != prefix);
        scripts.push(Script {
            prefix: prefix.to_owned(),
            replies: replies.into_iter().collect(),
            then,
        });
    }

    /// Node `key` answers every CALL with `reply`.
    pub fn node_always(&self, key: &str, reply: Reply) {
        self.script(&endpoint(key), [], reply);
    }

    /// Node `key` answers its CALLs with `replies` in order, then `then`.
    pub fn node_script(&self, key: &str, replies: impl IntoIterator<Item = Reply>, then: Reply) {
        self.script(&endpoint(key), replies, then);
    }

    /// The directory's discover answer, with this `Cache-Control` (none when `None`).
    pub fn discover(&self, nodes: Vec<Value>, cache_control: Option<&str>) {
        let headers = cache_control
            .map(|v| vec![("Cache-Control".to_owned(), v.to_owned())])
            .unwrap_or_default();
        let count = nodes.len();
        self.script(
            &format!("{DIRECTORY}/api/v1/discover"),
            [],
            Reply::Json {
                status: 200,
                headers,
                body: json!({"nodes": nodes, "count": count}),
            },
        );
    }

    pub fn client(&self, seed: u64) -> Client {
        self.client_with(config(seed))
    }

    pub fn client_with(&self, config: ClientConfig) -> Client {
        Client::with_transport(config, Arc::new(self.clone()))
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.0.seen.lock().clone()
    }

    /// Requests so far whose URL starts with `prefix`.
    pub fn seen_at(&self, prefix: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.url.starts_with(prefix))
            .collect()
    }

    /// CALLs sent to any node so far (everything not sent to the directory).
    pub fn calls(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| !s.url.starts_with(DIRECTORY))
            .collect()
    }

    /// Discover requests so far.
    pub fn discovers(&self) -> usize {
        self.seen_at(&format!("{DIRECTORY}/api/v1/discover")).len()
    }

    fn next_reply(&self, url: &str) -> Reply {
        let mut scripts = self.0.scripts.lock();
        let Some(script) = scripts
            .iter_mut()
            .filter(|s| url.starts_with(&s.prefix))
            .max_by_key(|s| s.prefix.len())
        else {
            return Reply::Refused;
        };
        script
            .replies
            .pop_front()
            .unwrap_or_else(|| script.then.clone())
    }
}

fn body(
    chunks: Vec<String>,
    then_hang: bool,
) -> futures_util::stream::BoxStream<'static, Result<Bytes, SendError>> {
    let chunks = futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))));
    if then_hang {
        chunks.chain(futures_util::stream::pending()).boxed()
    } else {
        chunks.boxed()
    }
}

fn sse(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

fn answer(reply: Reply, task_id: Value) -> Result<Response, SendError> {
    let json_headers = || vec![("content-type".to_owned(), "application/json".to_owned())];
    let sse_headers = || vec![("content-type".to_owned(), "text/event-stream".to_owned())];
    let response = json!({"task_id": task_id, "status": "success",
                          "metrics": {"latency_ms": 1}});
    Ok(match reply {
        Reply::Json {
            status,
            headers,
            body: b,
        } => Response::new(status, headers, body(vec![b.to_string()], false)),
        Reply::Success(result) => {
            let mut r = response;
            r["result"] = result;
            Response::new(200, json_headers(), body(vec![r.to_string()], false))
        }
        Reply::Error(status, code) => Response::new(
            status,
            json_headers(),
            body(
                vec![json!({"error": {"code": code, "message": "scripted"}}).to_string()],
                false,
            ),
        ),
        Reply::Sse(deltas) => {
            let mut chunks: Vec<String> = deltas
                .iter()
                .map(|d| sse("delta", &json!({"content": d})))
                .collect();
            let mut done = response;
            done["result"] = json!({"choices": [{"message": {"content": deltas.concat()}}]});
            chunks.push(sse("done", &done));
            Response::new(200, sse_headers(), body(chunks, false))
        }
        Reply::SseError(code) => Response::new(
            200,
            sse_headers(),
            body(
                vec![sse(
                    "error",
                    &json!({"error": {"code": code, "message": "scripted"}}),
                )],
                false,
            ),
        ),
        Reply::SseSilent => Response::new(200, sse_headers(), body(vec![], true)),
        Reply::Refused => return Err(SendError::Failed("connection refused".into())),
        Reply::Hang => unreachable!("handled by the caller"),
    })
}

impl Transport for Net {
    fn send(&self, req: Request) -> BoxFuture<'static, Result<Response, SendError>> {
        let body: Option<Value> = req
            .body
            .as_deref()
            .map(|b| serde_json::from_slice(b).expect("the client sends JSON"));
        let task_id = body
            .as_ref()
            .and_then(|b| b.get("task_id").cloned())
            .unwrap_or(Value::Null);
        let reply = self.next_reply(&req.url);
        self.0.seen.lock().push(Seen {
            at: Instant::now(),
            method: req.method,
            url: req.url,
            headers: req.headers,
            body,
        });
        let limit = req.timeout;
        Box::pin(async move {
            let exchange = async move {
                match reply {
                    Reply::Hang => std::future::pending().await,
                    other => answer(other, task_id),
                }
            };
            match limit {
                Some(limit) => tokio::time::timeout(limit, exchange)
                    .await
                    .unwrap_or(Err(SendError::TimedOut)),
                None => exchange.await,
            }
        })
    }
}
