//! The HTTP side shared by every flavor: one entry handler that counts, captures, delays and
//! fails requests before handing them to the flavor, and the body that streams (or cuts) replies.

use crate::behavior::{Behavior, Failure, Flavor, Models};
use crate::{anthropic, ollama, openai, text};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::serve::ListenerExt;
use axum::Router;
use futures_core::Stream;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use std::future::{Future, IntoFuture};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::time::Sleep;

/// State of one double, shared by its handlers and its `BackendDouble` handle.
pub(crate) struct Shared {
    pub flavor: Flavor,
    pub models: Models,
    pub api_key: Option<String>,
    /// Unix time the double started: the `created` of listed models.
    pub started: u64,
    capture: bool,
    behavior: RwLock<Behavior>,
    requests: AtomicU64,
    in_flight: AtomicU64,
    in_flight_max: AtomicU64,
    hanging: AtomicU64,
    last: Mutex<(Option<HeaderMap>, Option<Value>)>,
}

impl Shared {
    pub fn new(
        flavor: Flavor,
        models: Models,
        api_key: Option<String>,
        capture: bool,
        b: Behavior,
    ) -> Self {
        Shared {
            flavor,
            models,
            api_key,
            started: text::unix_now(),
            capture,
            behavior: RwLock::new(b),
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            in_flight_max: AtomicU64::new(0),
            hanging: AtomicU64::new(0),
            last: Mutex::new((None, None)),
        }
    }

    pub fn behavior(&self) -> Behavior {
        *self.behavior.read()
    }
    pub fn set_behavior(&self, b: Behavior) {
        *self.behavior.write() = b;
    }
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }
    pub fn in_flight_max(&self) -> u64 {
        self.in_flight_max.load(Relaxed)
    }
    pub fn last_headers(&self) -> Option<HeaderMap> {
        self.last.lock().0.clone()
    }
    pub fn last_body(&self) -> Option<Value> {
        self.last.lock().1.clone()
    }
    /// Only hung requests (which never finish by themselves) are still being served.
    fn only_hung_left(&self) -> bool {
        self.in_flight.load(Relaxed) <= self.hanging.load(Relaxed)
    }
    fn enter(self: &Arc<Self>) -> Guard {
        self.requests.fetch_add(1, Relaxed);
        let now = self.in_flight.fetch_add(1, Relaxed) + 1;
        self.in_flight_max.fetch_max(now, Relaxed);
        Guard {
            shared: Arc::clone(self),
            hanging: false,
        }
    }
}

/// One request in flight; moved into a streamed body so streams count until they end.
pub(crate) struct Guard {
    shared: Arc<Shared>,
    hanging: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Relaxed);
        if self.hanging {
            self.shared.hanging.fetch_sub(1, Relaxed);
        }
    }
}

/// A parsed request as the flavors see it.
pub(crate) struct Req<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// `Ok(None)` for an empty body.
    pub json: &'a Result<Option<Value>, serde_json::Error>,
    pub behavior: Behavior,
    pub received: Instant,
}

/// What a flavor answers: a whole body, or events to stream one by one.
pub(crate) struct Out {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// End offsets of the events of a streamed body.
    pub events: Option<Vec<usize>>,
    /// Anthropic's `request-id` response header.
    pub request_id: Option<String>,
}

impl Out {
    pub fn json(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Out {
        Out {
            status,
            content_type,
            body,
            events: None,
            request_id: None,
        }
    }
    pub fn stream(content_type: &'static str, ev: text::Events) -> Out {
        Out {
            status: StatusCode::OK,
            content_type,
            body: ev.buf,
            events: Some(ev.ends),
            request_id: None,
        }
    }
    pub fn with_request_id(mut self, id: String) -> Out {
        self.request_id = Some(id);
        self
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    // Embedding batches can be large; real backends accept far more than axum's 2 MB default.
    Router::new()
        .fallback(entry)
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(shared)
}

async fn entry(
    State(sh): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = Instant::now();
    let mut guard = sh.enter();
    let behavior = sh.behavior();
    let json = if body.is_empty() {
        Ok(None)
    } else {
        serde_json::from_slice::<Value>(&body).map(Some)
    };
    if sh.capture {
        let body = json.as_ref().ok().and_then(Option::clone);
        *sh.last.lock() = (Some(headers.clone()), body);
    }
    if !behavior.delay.is_zero() {
        tokio::time::sleep(behavior.delay).await;
    }
    let req = Req {
        method: &method,
        path: uri.path(),
        headers: &headers,
        json: &json,
        behavior,
        received,
    };
    let out = match behavior.fail {
        Some(Failure::Hang) => {
            guard.hanging = true;
            sh.hanging.fetch_add(1, Relaxed);
            return std::future::pending().await;
        }
        Some(Failure::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            match sh.flavor {
                Flavor::OpenAi => openai::failure(status),
                Flavor::Ollama => ollama::failure(status, &req),
                Flavor::Anthropic => anthropic::failure(status),
            }
        }
        Some(Failure::Garbage) => Out::json(
            StatusCode::OK,
            "application/json",
            b"<html><body>\x00not json {\"choices\": [".to_vec(),
        ),
        Some(Failure::CutStreamAfter(_)) | None => match sh.flavor {
            Flavor::OpenAi => openai::handle(&sh, &req),
            Flavor::Ollama => ollama::handle(&sh, &req),
            Flavor::Anthropic => anthropic::handle(&sh, &req),
        },
    };
    let cut = match behavior.fail {
        Some(Failure::CutStreamAfter(n)) if out.status.is_success() => Some(n),
        _ => None,
    };
    respond(out, cut, behavior.token_delay, guard)
}

fn respond(out: Out, cut: Option<usize>, token_delay: Duration, guard: Guard) -> Response {
    let Out {
        status,
        content_type,
        body,
        events,
        request_id,
    } = out;
    let body = match (events, cut) {
        (None, None) => {
            drop(guard);
            Body::from(body)
        }
        (events, cut) => {
            // A whole body that must be cut is sent as two halves; the cut falls after the first.
            let (ends, cut) = match events {
                Some(ends) => (ends, cut),
                None => (vec![body.len() / 2, body.len()], Some(1)),
            };
            Body::from_stream(Chunks {
                data: Bytes::from(body),
                ends,
                next: 0,
                pos: 0,
                delay: token_delay,
                cut,
                flushing: false,
                sleep: None,
                _guard: guard,
            })
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(id) = request_id.and_then(|id| HeaderValue::try_from(id).ok()) {
        h.insert(HeaderName::from_static("request-id"), id);
    }
    response
}

/// A pre-rendered reply sent one event at a time, `delay` apart, optionally cut (an error
/// makes hyper drop the connection without the final chunk, as a crashed backend would).
struct Chunks {
    data: Bytes,
    ends: Vec<usize>,
    next: usize,
    pos: usize,
    delay: Duration,
    cut: Option<usize>,
    flushing: bool,
    sleep: Option<Pin<Box<Sleep>>>,
    _guard: Guard,
}

impl Stream for Chunks {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(sleep) = this.sleep.as_mut() {
            ready!(sleep.as_mut().poll(cx));
            this.sleep = None;
        }
        if this.cut.is_some_and(|n| this.next >= n) {
            if !this.flushing {
                // Pause once so hyper flushes the head and the events so far; an error polled
                // in the same write pass would drop them with the connection.
                this.flushing = true;
                let mut pause = Box::pin(tokio::time::sleep(Duration::from_millis(5)));
                if pause.as_mut().poll(cx).is_pending() {
                    this.sleep = Some(pause);
                    return Poll::Pending;
                }
            }
            this.cut = None;
            this.next = this.ends.len();
            let cut = io::Error::new(io::ErrorKind::ConnectionAborted, "stream cut by the double");
            return Poll::Ready(Some(Err(cut)));
        }
        let Some(&end) = this.ends.get(this.next) else {
            return Poll::Ready(None);
        };
        let chunk = this.data.slice(this.pos..end);
        this.pos = end;
        this.next += 1;
        let more = this.next < this.ends.len() || this.cut.is_some();
        if more && !this.delay.is_zero() {
            this.sleep = Some(Box::pin(tokio::time::sleep(this.delay)));
        }
        Poll::Ready(Some(Ok(chunk)))
    }
}

/// Serves until `stop` resolves: `true` stops gracefully (in-flight replies finish, hung ones
/// are abandoned), `false` returns at once. Connection tasks live on the current runtime, so a
/// caller that drops the runtime afterwards also drops every open connection.
pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: impl Future<Output = bool>,
) {
    let (graceful_tx, graceful_rx) = tokio::sync::oneshot::channel::<()>();
    // Streams are small writes that must leave at once: no Nagle delay.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, router(Arc::clone(&shared)))
        .with_graceful_shutdown(async {
            let _ = graceful_rx.await;
        })
        .into_future();
    let mut server = std::pin::pin!(server);
    let graceful = tokio::select! {
        _ = &mut server => return,
        graceful = stop => graceful,
    };
    if !graceful {
        return;
    }
    let _ = graceful_tx.send(());
    loop {
        tokio::select! {
            _ = &mut server => return,
            () = tokio::time::sleep(Duration::from_millis(5)) => {
                if shared.only_hung_left() {
                    return;
                }
            }
        }
    }
}
