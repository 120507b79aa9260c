//! The one seam between the client and the network: every HTTP exchange (discover, tickets,
//! consumer tokens, CALLs) goes through a [`Transport`]. Production uses [`Http`]: whole-JSON
//! `POST`s to a node on this machine go through the lean client of `iicp_h1` (no task hop, no
//! URL parse per call), everything else through one pooled reqwest client. The crate's tests
//! use a scripted in-memory transport (`crate::testing`).
//!
//! Why a seam and not only loopback servers: the retry, breaker and cache tests run on paused
//! tokio time, and a paused runtime jumps its clock to the next timer whenever it has nothing to
//! run, including while it waits for a real socket. A loopback answer can then arrive "after" a
//! request timeout or a backoff that never really elapsed. In memory, the clock moves only when
//! a backoff sleeps or a test advances it, so delays can be asserted exactly. The reqwest side is
//! covered by loopback tests on real time (`tests/loopback.rs`).

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use iicp_h1::H1;
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Origins remembered as local or not; past this many the memory is cleared and rebuilt.
const MAX_ORIGINS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
}

/// One HTTP request. Deliberately not `Debug`: headers may carry credentials.
pub(crate) struct Request {
    pub method: Method,
    pub url: String,
    /// Extra headers, lower-case names.
    pub headers: Vec<(&'static str, String)>,
    /// A JSON body (`content-type: application/json`).
    pub body: Option<Vec<u8>>,
    /// Limit for the whole exchange, the body included.
    pub timeout: Option<Duration>,
}

impl Request {
    pub fn get(url: impl Into<String>) -> Request {
        Request {
            method: Method::Get,
            url: url.into(),
            headers: Vec::new(),
            body: None,
            timeout: None,
        }
    }

    pub fn post_json<T: serde::Serialize + ?Sized>(url: impl Into<String>, body: &T) -> Request {
        Request {
            method: Method::Post,
            url: url.into(),
            headers: Vec::new(),
            body: Some(serde_json::to_vec(body).expect("request bodies serialize")),
            timeout: None,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Request {
        self.headers.push((name, value.into()));
        self
    }

    pub fn timeout(mut self, limit: Duration) -> Request {
        self.timeout = Some(limit);
        self
    }
}

/// Why an exchange produced no (or no complete) answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The request's timeout elapsed.
    TimedOut,
    /// Could not connect, the connection broke, or the body was not what was expected.
    Failed(String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::TimedOut => f.write_str("timed out"),
            SendError::Failed(why) => f.write_str(why),
        }
    }
}

/// An answer whose body is read as it arrives.
pub(crate) struct Response {
    pub status: u16,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    pub body: BoxStream<'static, Result<Bytes, SendError>>,
}

impl Response {
    pub fn new(
        status: u16,
        headers: Vec<(String, String)>,
        body: BoxStream<'static, Result<Bytes, SendError>>,
    ) -> Response {
        let headers = headers
            .into_iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v))
            .collect();
        Response {
            status,
            headers,
            body,
        }
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The whole body as JSON.
    pub async fn json(mut self) -> Result<Value, SendError> {
        let mut buf = Vec::new();
        while let Some(chunk) = self.body.next().await {
            buf.extend_from_slice(&chunk?);
        }
        serde_json::from_slice(&buf).map_err(|_| SendError::Failed("the body is not JSON".into()))
    }
}

/// Sends requests. Implementations must apply [`Request::timeout`] to the whole exchange.
pub(crate) trait Transport: Send + Sync + 'static {
    fn send(&self, req: Request) -> BoxFuture<'static, Result<Response, SendError>>;
}

/// The production transport: the lean client for whole-JSON `POST`s to loopback origins
/// (answers read whole), reqwest for the rest (streams, GETs, TLS, remote nodes).
pub(crate) struct Http {
    reqwest: Reqwest,
    /// By `host:port`: that origin's lean client, or `None` when it is not on this machine.
    origins: Mutex<HashMap<String, Option<Arc<H1>>>>,
}

impl Http {
    pub fn new() -> Http {
        Http {
            reqwest: Reqwest::new(),
            origins: Mutex::new(HashMap::new()),
        }
    }

    /// The lean client and request target for `req`, when it qualifies.
    fn lean_route(&self, req: &Request) -> Option<(Arc<H1>, String)> {
        let streamed = req
            .headers
            .iter()
            .any(|(name, value)| *name == "accept" && value.contains("event-stream"));
        if req.method != Method::Post || req.body.is_none() || streamed {
            return None;
        }
        let rest = req.url.strip_prefix("http://")?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(end);
        // reqwest would percent-encode anything else; such URLs take that road.
        if target.starts_with('#') || !target.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let target = match target.strip_prefix('/') {
            Some(_) => target.to_owned(),
            None => format!("/{target}"),
        };
        let mut origins = self.origins.lock();
        let h1 = match origins.get(authority) {
            Some(known) => known.clone(),
            None => {
                let h1 = url::Url::parse(&format!("http://{authority}/"))
                    .ok()
                    .and_then(|url| H1::for_url(&url))
                    .map(Arc::new);
                if origins.len() >= MAX_ORIGINS {
                    origins.clear();
                }
                origins.insert(authority.to_owned(), h1.clone());
                h1
            }
        };
        Some((h1?, target))
    }
}

impl Transport for Http {
    fn send(&self, req: Request) -> BoxFuture<'static, Result<Response, SendError>> {
        let Some((h1, target)) = self.lean_route(&req) else {
            return self.reqwest.send(req);
        };
        Box::pin(async move {
            let headers: Vec<(&str, &str)> =
                req.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let body = req.body.as_deref().unwrap_or_default();
            let call = h1.post_json(&target, &headers, body);
            let reply = match req.timeout {
                Some(limit) => tokio::time::timeout(limit, call)
                    .await
                    .map_err(|_| SendError::TimedOut)?,
                None => call.await,
            }
            .map_err(|e| SendError::Failed(e.to_string()))?;
            let headers = reply
                .headers()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect();
            let body = Bytes::from(reply.body);
            let body = futures_util::stream::once(async move { Ok(body) }).boxed();
            Ok(Response::new(reply.status, headers, body))
        })
    }
}

/// One pooled reqwest client.
pub(crate) struct Reqwest(reqwest::Client);

impl Reqwest {
    pub fn new() -> Reqwest {
        Reqwest(
            reqwest::Client::builder()
                .pool_max_idle_per_host(32)
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(3))
                .build()
                .expect("HTTP client builds"),
        )
    }
}

fn send_error(e: reqwest::Error) -> SendError {
    if e.is_timeout() {
        SendError::TimedOut
    } else {
        SendError::Failed(e.without_url().to_string())
    }
}

impl Transport for Reqwest {
    fn send(&self, req: Request) -> BoxFuture<'static, Result<Response, SendError>> {
        let mut b = match req.method {
            Method::Get => self.0.get(&req.url),
            Method::Post => self.0.post(&req.url),
        };
        for (name, value) in req.headers {
            b = b.header(name, value);
        }
        if let Some(body) = req.body {
            b = b
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        if let Some(limit) = req.timeout {
            b = b.timeout(limit);
        }
        Box::pin(async move {
            let resp = b.send().await.map_err(send_error)?;
            let headers = resp
                .headers()
                .iter()
                .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            Ok(Response::new(
                resp.status().as_u16(),
                headers,
                resp.bytes_stream().map_err(send_error).boxed(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(http: &Http, req: Request) -> Option<String> {
        http.lean_route(&req).map(|(_, target)| target)
    }

    #[test]
    fn only_whole_json_posts_to_this_machine_take_the_lean_client() {
        let http = Http::new();
        let call = |url: &str| Request::post_json(url, &serde_json::json!({"a": 1}));
        assert_eq!(
            target(&http, call("http://127.0.0.1:9484/v1/task")).as_deref(),
            Some("/v1/task")
        );
        assert_eq!(
            target(&http, call("http://localhost:9484?x=1")).as_deref(),
            Some("/?x=1")
        );
        assert_eq!(
            target(&http, call("http://[::1]:9484")).as_deref(),
            Some("/")
        );
        let streamed = call("http://127.0.0.1:9484/v1/task").header("accept", "text/event-stream");
        assert_eq!(target(&http, streamed), None);
        assert_eq!(
            target(&http, Request::get("http://127.0.0.1:9484/v1/task")),
            None
        );
        for url in [
            "https://127.0.0.1:9484/v1/task",
            "http://10.1.2.3:9484/v1/task",
            "http://gpu.example/v1/task",
            "http://user:pw@127.0.0.1:9484/v1/task",
            "http://127.0.0.1:9484/a b/v1/task",
            "http://127.0.0.1:9484/caf\u{e9}/v1/task",
        ] {
            assert_eq!(target(&http, call(url)), None, "{url}");
        }
    }

    #[test]
    fn the_memory_of_origins_is_bounded() {
        let http = Http::new();
        for port in 0..(MAX_ORIGINS as u16 * 2) {
            let req = Request::post_json(format!("http://127.0.0.1:{port}/"), &1);
            assert!(http.lean_route(&req).is_some());
            assert!(http.origins.lock().len() <= MAX_ORIGINS);
        }
    }
}
