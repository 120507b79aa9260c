//! The client: a call is discovered, routed, sealed and sent, with failover.
//!
//! Per attempt: choose a node (see `select`), get its route (ticket or dispatch view), seal the
//! payload with IICP-CX whenever the node has a key (never a silent downgrade), add a consumer
//! token when configured and a fresh `traceparent`, and send. At most three attempts, each on a
//! different node; `capacity_exceeded` moves on at once, other retriable failures wait 200 ms ×2
//! (±20 %) first (and only when another node is left to try). Requests the node refuses as
//! invalid are not retried: the request is at fault. Neither is `502 backend_error` (digest
//! §5.4 lists 502 as not retriable).

use crate::discovery::{Directory, Route};
use crate::error::ClientError;
use crate::health::{Health, InFlight};
use crate::rng::Rng;
use crate::select::{self, Requirements};
use crate::transport::{Http, Request, SendError, Transport};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use iicp_proto::registry::{RiskPolicy, RiskTaxonomy};
use iicp_proto::task::{Constraints, Priority, Qos, TaskRequest, TaskResponse};
use iicp_proto::{ErrorCode, Intent};
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// The first retry waits this long (±20 %); each later one twice as long as the one before.
const BACKOFF_BASE: Duration = Duration::from_millis(200);

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub directory: url::Url,
    /// Learn routes through dispatch tickets when the directory offers them.
    pub use_tickets: bool,
    /// At most this many attempts, each on another node (the spec's 3).
    pub max_attempts: u32,
    /// A streamed call fails over if no token arrives within this time.
    pub first_token_timeout: Duration,
    /// Only nodes in these regions (strict region policy).
    pub regions: Option<Vec<String>>,
    pub min_reputation: Option<f64>,
    /// Refuse nodes that cannot receive an encrypted payload.
    pub require_encryption: bool,
    /// The caller's own node token: consumer tokens are requested with it for every call.
    pub consumer_credential: Option<String>,
    /// Seeds the generator behind node selection and every jitter (backoff, breaker open
    /// time): the same discover answer, node health and seed give the same choices. `None`
    /// seeds it from the OS.
    pub seed: Option<u64>,
}

impl ClientConfig {
    pub fn new(directory: url::Url) -> Self {
        ClientConfig {
            directory,
            use_tickets: true,
            max_attempts: 3,
            first_token_timeout: Duration::from_secs(15),
            regions: None,
            min_reputation: None,
            require_encryption: false,
            consumer_credential: None,
            seed: None,
        }
    }
}

/// One task to run on the mesh.
#[derive(Debug, Clone)]
pub struct Call {
    pub intent: String,
    pub payload: Value,
    /// Only nodes serving this model (also sent to the node as `payload.model`).
    pub model: Option<String>,
    /// Only nodes accepting this input modality.
    pub modality: Option<String>,
    pub qos: Qos,
    pub priority: Priority,
    pub timeout: Duration,
}

impl Call {
    pub fn new(intent: &str, payload: Value) -> Self {
        Call {
            intent: intent.to_owned(),
            payload,
            model: None,
            modality: None,
            qos: Qos::Interactive,
            priority: Priority::Normal,
            timeout: Duration::from_secs(60),
        }
    }
}

/// A finished call.
#[derive(Debug, Clone)]
pub struct Answer {
    pub response: TaskResponse,
    pub node_id: String,
    pub attempts: u32,
}

/// One item of a streamed call.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    Delta(String),
    /// The last item: the whole RESPONSE.
    Done(Box<TaskResponse>),
}

/// A streamed call that produced its first token on `node_id`.
pub struct StreamAnswer {
    /// The CALL's `task_id` (kept across failover attempts), to correlate the stream with the
    /// node's logs and its final RESPONSE.
    pub task_id: Uuid,
    pub node_id: String,
    pub attempts: u32,
    pub items: BoxStream<'static, Result<StreamItem, ClientError>>,
}

enum Outcome<T> {
    Done(T),
    /// 429 `capacity_exceeded`: try the next node at once.
    Busy,
    /// Worth another node after a backoff; `breaker` when it counts against the node.
    Retry {
        why: String,
        breaker: bool,
    },
    TimedOut,
    Fatal(ClientError),
}

/// A client of the mesh. Cheap to clone; share one per program.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    transport: Arc<dyn Transport>,
    directory: Directory,
    health: Health,
    rng: Mutex<Rng>,
    consumer_tokens: Mutex<HashMap<(String, String), (Instant, String)>>,
    /// [`checked_intent`] by intent string: the answer never changes within a process.
    intents: Mutex<HashMap<String, Result<Intent, ClientError>>>,
}

/// Intents whose check is remembered; past this many the memory is cleared and rebuilt.
const MAX_INTENTS: usize = 256;

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).expect("the OS random source is available");
    b
}

fn traceparent(trace_id: &str) -> String {
    format!("00-{trace_id}-{}-01", hex::encode(random_bytes::<8>()))
}

impl Client {
    pub fn new(config: ClientConfig) -> Client {
        Client::with_transport(config, Arc::new(Http::new()))
    }

    /// A client whose every HTTP exchange goes through `transport`.
    pub(crate) fn with_transport(config: ClientConfig, transport: Arc<dyn Transport>) -> Client {
        let rng = config.seed.map(Rng::seeded).unwrap_or_else(Rng::from_os);
        Client {
            inner: Arc::new(Inner {
                directory: Directory::new(&config.directory, transport.clone(), config.use_tickets),
                config,
                transport,
                health: Health::default(),
                rng: Mutex::new(rng),
                consumer_tokens: Mutex::new(HashMap::new()),
                intents: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The directory's candidates for an intent (cached as the directory allows).
    pub async fn discover(
        &self,
        intent: &str,
        model: Option<&str>,
        modality: Option<&str>,
    ) -> Result<Vec<select::Candidate>, ClientError> {
        let intent = self.checked_intent(intent)?;
        let snap = self
            .inner
            .directory
            .discover(intent.as_str(), model, modality)
            .await?;
        Ok(snap.candidates.clone())
    }

    /// Runs a task and returns its RESPONSE.
    pub async fn call(&self, call: Call) -> Result<Answer, ClientError> {
        let ran = self.run(&call, false).await?;
        match ran.done {
            Attempted::Response(response) => Ok(Answer {
                response: *response,
                node_id: ran.node_id,
                attempts: ran.attempts,
            }),
            Attempted::Stream(_) => unreachable!("plain calls never stream"),
        }
    }

    /// Runs a chat task as a stream. Failover happens only before the first token.
    pub async fn call_stream(&self, call: Call) -> Result<StreamAnswer, ClientError> {
        let ran = self.run(&call, true).await?;
        let items = match ran.done {
            Attempted::Stream(items) => items,
            // An answer that came back whole is a one-item stream.
            Attempted::Response(r) => futures_util::stream::iter([Ok(StreamItem::Done(r))]).boxed(),
        };
        Ok(StreamAnswer {
            task_id: ran.task_id,
            node_id: ran.node_id,
            attempts: ran.attempts,
            items,
        })
    }

    async fn run(&self, call: &Call, stream: bool) -> Result<Ran, ClientError> {
        // Checked before anything is sent: a prohibited intent never leaves the process.
        let intent = self.checked_intent(&call.intent)?;
        let snap = self
            .inner
            .directory
            .discover(
                intent.as_str(),
                call.model.as_deref(),
                call.modality.as_deref(),
            )
            .await?;
        if snap.candidates.is_empty() {
            return Err(ClientError::NoCandidates);
        }
        let req = Requirements {
            model: call.model.clone(),
            modality: call.modality.clone(),
            regions: self.inner.config.regions.clone(),
            min_reputation: self.inner.config.min_reputation,
            require_encryption: self.inner.config.require_encryption,
        };
        let mut payload = call.payload.clone();
        if let (Some(m), Some(obj)) = (&call.model, payload.as_object_mut()) {
            obj.insert("model".into(), Value::String(m.clone()));
        }
        let mut constraints = Constraints::new(call.timeout.as_millis().clamp(100, 300_000) as u32);
        constraints.qos = call.qos;
        constraints.priority = call.priority;
        let mut task = TaskRequest::new(intent.clone(), payload, constraints);
        task.trace = Some(iicp_proto::task::Trace {
            trace_id: Some(hex::encode(random_bytes::<16>())),
            ..Default::default()
        });

        let mut tried: Vec<usize> = Vec::new();
        let mut attempts = 0u32;
        let mut last = None;
        let mut all_timed_out = true;
        // The wait owed before the next attempt: paid only once there is a node to try.
        let mut backoff = None;
        while attempts < self.inner.config.max_attempts {
            let standings: Vec<_> = snap
                .candidates
                .iter()
                .map(|c| self.inner.health.standing(&c.key, c.latency_estimate_ms))
                .collect();
            let choice = {
                let mut rng = self.inner.rng.lock();
                select::choose(&snap.candidates, &standings, &req, &tried, &mut rng)
            };
            let Some(i) = choice else { break };
            tried.push(i);
            if let Some(wait) = backoff.take() {
                tokio::time::sleep(wait).await;
            }
            let candidate = &snap.candidates[i];
            let key = &candidate.key;
            // The breaker may have opened while we waited (another call failed there).
            let Some(in_flight) = self.inner.health.begin(key) else {
                continue;
            };
            attempts += 1;
            let started = Instant::now();
            let outcome = match self.inner.directory.route(intent.as_str(), candidate).await {
                Ok(route) => self.attempt(&route, &task, stream).await,
                Err(e) => Outcome::Retry {
                    why: e.to_string(),
                    breaker: false,
                },
            };
            match outcome {
                Outcome::Done(done) => {
                    in_flight.success(started.elapsed());
                    return Ok(Ran {
                        done,
                        task_id: task.task_id,
                        node_id: key.clone(),
                        attempts,
                    });
                }
                Outcome::Busy => {
                    in_flight.neutral();
                    all_timed_out = false;
                    last = Some(format!("node {key} was at capacity"));
                    continue;
                }
                Outcome::Fatal(e) => {
                    in_flight.neutral();
                    return Err(e);
                }
                Outcome::TimedOut => {
                    self.failed(in_flight);
                    last = Some(format!("node {key} timed out"));
                }
                Outcome::Retry { why, breaker } => {
                    if breaker {
                        self.failed(in_flight);
                    } else {
                        in_flight.neutral();
                    }
                    all_timed_out = false;
                    last = Some(why);
                }
            }
            let base = BACKOFF_BASE * 2u32.pow(attempts - 1);
            backoff = Some(self.inner.rng.lock().jitter(base, 0.2));
        }
        match last {
            None => Err(ClientError::NoAvailableNode {
                attempts,
                last: if snap.candidates.iter().any(|c| req.admits(c)) {
                    "the circuit breaker of every eligible node is open".into()
                } else {
                    "no candidate meets the call's requirements \
                     (model, modality, region, reputation, encryption)"
                        .into()
                },
            }),
            Some(_) if all_timed_out => Err(ClientError::Timeout { attempts }),
            Some(last) => Err(ClientError::NoAvailableNode { attempts, last }),
        }
    }

    /// [`checked_intent`], remembered per intent string.
    fn checked_intent(&self, intent: &str) -> Result<Intent, ClientError> {
        let mut known = self.inner.intents.lock();
        if let Some(answer) = known.get(intent) {
            return answer.clone();
        }
        let answer = checked_intent(intent);
        if known.len() >= MAX_INTENTS {
            known.clear();
        }
        known.insert(intent.to_owned(), answer.clone());
        answer
    }

    fn failed(&self, in_flight: InFlight<'_>) {
        in_flight.failure(&mut self.inner.rng.lock());
    }

    async fn consumer_token(
        &self,
        target: &str,
        intent: &str,
    ) -> Result<Option<String>, ClientError> {
        let Some(cred) = &self.inner.config.consumer_credential else {
            return Ok(None);
        };
        let key = (target.to_owned(), intent.to_owned());
        if let Some((expires, token)) = self.inner.consumer_tokens.lock().get(&key) {
            if Instant::now() < *expires {
                return Ok(Some(token.clone()));
            }
        }
        let token = self
            .inner
            .directory
            .consumer_token(cred, target, intent)
            .await?;
        // Tokens live 300 s; renew well before.
        let now = Instant::now();
        let mut tokens = self.inner.consumer_tokens.lock();
        tokens.retain(|_, (expires, _)| *expires > now);
        tokens.insert(key, (now + Duration::from_secs(240), token.clone()));
        Ok(Some(token))
    }

    async fn attempt(&self, route: &Route, task: &TaskRequest, stream: bool) -> Outcome<Attempted> {
        let mut task = task.clone();
        let mut response_key = None;
        if let Some(key) = &route.cx_public_key {
            let payload = task.payload.take().unwrap_or_default();
            match iicp_proto::cx::seal(
                key,
                &task.task_id.to_string(),
                task.intent.as_str(),
                &payload,
                random_bytes::<32>(),
                random_bytes::<12>(),
            ) {
                Ok(sealed) => {
                    task.iicp_conf = Some(sealed.conf);
                    let wants = key
                        .features
                        .iter()
                        .any(|f| f == iicp_proto::cx::RESPONSE_ENCRYPTION_FEATURE);
                    if wants && !stream {
                        task.cx_response_encryption = Some("required".into());
                        response_key = Some(sealed.response_key);
                    }
                }
                // A node whose key cannot be used is skipped, never sent plaintext.
                Err(e) => {
                    return Outcome::Retry {
                        why: format!("node {} advertises an unusable CX key: {e}", route.node_id),
                        breaker: false,
                    }
                }
            }
        }
        let trace_id = task
            .trace
            .as_ref()
            .and_then(|t| t.trace_id.clone())
            .unwrap_or_default();
        let mut req = Request::post_json(
            format!("{}/v1/task", route.endpoint.trim_end_matches('/')),
            &task,
        )
        .header("traceparent", traceparent(&trace_id));
        match self
            .consumer_token(&route.node_id, task.intent.as_str())
            .await
        {
            Ok(Some(t)) => req = req.header("x-iicp-consumer-token", t),
            Ok(None) => {}
            Err(e) => return Outcome::Fatal(e),
        }
        let budget =
            Duration::from_millis(task.constraints.timeout_ms.into()) + Duration::from_secs(1);
        if stream {
            req = req.header("accept", "text/event-stream");
            return self.first_token(req, &route.node_id, budget).await;
        }
        let resp = match self.inner.transport.send(req.timeout(budget)).await {
            Ok(r) => r,
            Err(SendError::TimedOut) => return Outcome::TimedOut,
            Err(SendError::Failed(e)) => {
                return Outcome::Retry {
                    why: format!("node {} unreachable: {e}", route.node_id),
                    breaker: true,
                }
            }
        };
        let status = resp.status;
        let body: Value = match resp.json().await {
            Ok(v) => v,
            Err(SendError::TimedOut) => return Outcome::TimedOut,
            Err(SendError::Failed(e)) => {
                return Outcome::Retry {
                    why: format!(
                        "node {} answered {status} but the body failed: {e}",
                        route.node_id
                    ),
                    breaker: true,
                }
            }
        };
        if status != 200 {
            return classify(status, &body);
        }
        let mut response: TaskResponse = match serde_json::from_value(body) {
            Ok(r) => r,
            Err(_) => {
                return Outcome::Retry {
                    why: format!("node {} sent a malformed RESPONSE", route.node_id),
                    breaker: true,
                }
            }
        };
        if let Some(rk) = response_key {
            let Some(sealed) = response.extra.remove("iicp_conf_resp") else {
                return Outcome::Fatal(ClientError::Invalid(
                    "the node ignored the required response encryption".into(),
                ));
            };
            match iicp_proto::cx::open_response(&rk, &task.task_id.to_string(), &sealed) {
                Ok(result) => response.result = Some(result),
                Err(e) => {
                    return Outcome::Fatal(ClientError::Invalid(format!(
                        "the encrypted response did not open: {e}"
                    )))
                }
            }
        }
        Outcome::Done(Attempted::Response(Box::new(response)))
    }

    /// Sends a streamed call and waits for its first token: it must arrive within the
    /// first-token deadline of sending, or the attempt counts as timed out.
    async fn first_token(&self, req: Request, node: &str, budget: Duration) -> Outcome<Attempted> {
        let deadline = Instant::now() + self.inner.config.first_token_timeout.min(budget);
        let resp = match tokio::time::timeout_at(deadline, self.inner.transport.send(req)).await {
            Err(_) | Ok(Err(SendError::TimedOut)) => return Outcome::TimedOut,
            Ok(Err(SendError::Failed(e))) => {
                return Outcome::Retry {
                    why: format!("node {node} unreachable: {e}"),
                    breaker: true,
                }
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status;
        let is_sse = resp
            .header("content-type")
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            let body = match tokio::time::timeout_at(deadline, resp.json()).await {
                Err(_) | Ok(Err(SendError::TimedOut)) => return Outcome::TimedOut,
                Ok(Err(SendError::Failed(_))) => Value::Null,
                Ok(Ok(body)) => body,
            };
            if status == 200 {
                return match serde_json::from_value::<TaskResponse>(body) {
                    Ok(r) => Outcome::Done(Attempted::Response(Box::new(r))),
                    Err(_) => Outcome::Retry {
                        why: format!("node {node} sent a malformed RESPONSE"),
                        breaker: true,
                    },
                };
            }
            return classify(status, &body);
        }
        let mut events = Box::pin(iicp_stream::events(resp.body));
        let first = match tokio::time::timeout_at(deadline, events.next()).await {
            Err(_) => return Outcome::TimedOut,
            Ok(None) | Ok(Some(Err(_))) => {
                return Outcome::Retry {
                    why: format!("node {node}'s stream ended before its first token"),
                    breaker: true,
                }
            }
            Ok(Some(Ok(ev))) => ev,
        };
        let first = match to_item(&first) {
            Ok(item) => item,
            // An error before any token: nothing was shown, another node may try.
            Err(e) => {
                return Outcome::Retry {
                    why: e.to_string(),
                    breaker: true,
                }
            }
        };
        let rest = events.map(|ev| match ev {
            Ok(ev) => to_item(&ev),
            Err(e) => Err(ClientError::Stream(e)),
        });
        let items = futures_util::stream::once(async move { Ok(first) })
            .chain(rest)
            .scan(false, |finished, item| {
                // Stop after `done` or the first error: nothing follows either.
                if *finished {
                    return std::future::ready(None);
                }
                *finished = !matches!(item, Ok(StreamItem::Delta(_)));
                std::future::ready(Some(item))
            })
            .boxed();
        Outcome::Done(Attempted::Stream(items))
    }
}

enum Attempted {
    Response(Box<TaskResponse>),
    Stream(BoxStream<'static, Result<StreamItem, ClientError>>),
}

/// A call that succeeded.
struct Ran {
    done: Attempted,
    task_id: Uuid,
    node_id: String,
    attempts: u32,
}

fn checked_intent(intent: &str) -> Result<Intent, ClientError> {
    let parsed = Intent::parse(intent).map_err(|e| ClientError::Invalid(e.to_string()))?;
    if let Some(body) = RiskTaxonomy::global().refusal(
        parsed.as_str(),
        RiskPolicy::default(),
        ErrorCode::PolicyRefused,
    ) {
        return Err(ClientError::PolicyRefused(body.error.message));
    }
    Ok(parsed)
}

fn to_item(ev: &iicp_stream::SseEvent) -> Result<StreamItem, ClientError> {
    match ev.event.as_str() {
        "delta" => serde_json::from_str::<Value>(&ev.data)
            .ok()
            .and_then(|v| v.get("content")?.as_str().map(str::to_owned))
            .map(StreamItem::Delta)
            .ok_or_else(|| ClientError::Stream("malformed delta event".into())),
        "done" => serde_json::from_str::<TaskResponse>(&ev.data)
            .map(|r| StreamItem::Done(Box::new(r)))
            .map_err(|_| ClientError::Stream("malformed done event".into())),
        _ => {
            let v: Value = serde_json::from_str(&ev.data).unwrap_or_default();
            Err(ClientError::Stream(
                v.pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("the node reported an error")
                    .to_owned(),
            ))
        }
    }
}

/// What a non-200 answer means for the attempt loop (digest §5.4).
fn classify<T>(status: u16, body: &Value) -> Outcome<T> {
    let code = body
        .pointer("/error/code")
        .and_then(Value::as_str)
        .unwrap_or("");
    match status {
        429 if code == "capacity_exceeded" || code == "overloaded" => Outcome::Busy,
        429 | 503 => Outcome::Retry {
            why: format!("node answered {status} {code}"),
            breaker: status == 503,
        },
        504 => Outcome::TimedOut,
        // This node lacks the model: another may have it.
        404 => Outcome::Retry {
            why: format!("node answered 404 {code}"),
            breaker: false,
        },
        s if s >= 500 && s != 502 => Outcome::Retry {
            why: format!("node answered {status}"),
            breaker: true,
        },
        _ => Outcome::Fatal(ClientError::from_error_body(status, body)),
    }
}

#[cfg(test)]
mod tests;
