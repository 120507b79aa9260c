//! Life with the directory: register once the listener is bound, heartbeat at the pace the
//! directory sets (with load, active jobs and metric deltas under a batch id kept until it is
//! acknowledged), answer liveness challenges, re-register when the directory forgets us or our
//! model set changes, keep serving while it is down (retrying with backoff and jitter), and
//! deregister on shutdown.

use crate::keys::{self, Identity};
use crate::state::NodeState;
use iicp_proto::control::{
    challenge_response, Heartbeat, HeartbeatMetrics, Pong, RegisterAck, RegisterRequest,
};
use iicp_proto::node::Limits;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where a node stands with its directory ([`crate::RunningNode::registration`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Not registered yet, or no directory configured.
    Pending,
    /// The directory acknowledged this node id.
    Registered { node_id: String },
    /// The last attempt failed (the reason is for the operator; it carries no credential).
    /// The node keeps serving locally and retries with backoff.
    Retrying { reason: String },
    /// Deregistered on shutdown.
    Deregistered,
}

pub struct Lifecycle {
    state: Arc<NodeState>,
    directory: String,
    http: reqwest::Client,
    identity: Option<Identity>,
    /// Metrics batch sent but not yet acknowledged: (id, success, failed, timeout, latency sum).
    pending: Option<(String, u64, u64, u64, u64)>,
    challenge: Option<String>,
    interval: Duration,
}

/// Why a registration did not go through.
#[derive(Debug, thiserror::Error)]
enum RegisterError {
    #[error("directory unreachable: {0}")]
    Unreachable(String),
    #[error("registration refused (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
}

impl RegisterError {
    /// Our saved credentials were not accepted: register as a new node instead.
    fn identity_rejected(&self) -> bool {
        matches!(
            self,
            RegisterError::Refused {
                status: 401 | 403,
                ..
            }
        )
    }
}

enum Beat {
    Ok,
    /// The directory does not know this node (or its token): register again.
    Forgotten {
        keep_id: bool,
    },
    Failed,
}

fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    getrandom::getrandom(&mut b).expect("the OS random source is available");
    let f = 0.8 + 0.4 * (u16::from_le_bytes(b) as f64 / u16::MAX as f64);
    d.mul_f64(f)
}

impl Lifecycle {
    pub fn new(state: Arc<NodeState>, directory: &url::Url) -> Self {
        let directory = directory.as_str().trim_end_matches('/').to_owned();
        let identity = keys::load_identity(&state.config.state_dir, &directory);
        Lifecycle {
            state,
            identity,
            directory,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client builds"),
            pending: None,
            challenge: None,
            interval: Duration::from_secs(30),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.directory)
    }

    fn register_body(&self, with_identity: bool) -> RegisterRequest {
        let s = &self.state;
        let catalog = s.catalog();
        let mut req = RegisterRequest {
            node_id: None,
            current_node_token: None,
            endpoint: s.public_url.clone(),
            region: s.config.region.clone(),
            capabilities: catalog.capabilities.clone(),
            limits: Limits {
                max_concurrent: s.config.max_concurrent,
                tokens_per_min: Some(1_000_000),
            },
            availability: s.config.availability.clone(),
            transport_endpoint: None,
            cx_public_key: s.cx.as_ref().map(|k| k.read().advertisement()),
            backend: Some(s.backend.kind().as_str().into()),
            sdk_language: Some("rust".into()),
            sdk_version: None,
            sdk_compatibility_version: None,
            implementation_name: Some("iicp-rs".into()),
            implementation_version: Some(env!("CARGO_PKG_VERSION").into()),
            extra: Default::default(),
        };
        if let (true, Some(id)) = (with_identity, &self.identity) {
            req.node_id = id.node_id.parse().ok();
            req.current_node_token = Some(id.node_token.clone());
        }
        req
    }

    /// Registers; with `with_identity` the saved node id and token are presented (a refresh).
    async fn register(&mut self, with_identity: bool) -> Result<(), RegisterError> {
        let body = self.register_body(with_identity);
        let resp = self
            .http
            .post(self.url("/register"))
            .json(&body)
            .send()
            .await
            .map_err(|e| RegisterError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status();
        if status.as_u16() != 201 {
            let err: Value = resp.json().await.unwrap_or_default();
            return Err(RegisterError::Refused {
                status: status.as_u16(),
                message: err
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given")
                    .to_owned(),
            });
        }
        let ack: RegisterAck = resp
            .json()
            .await
            .map_err(|e| RegisterError::Unreachable(format!("unreadable ACK: {e}")))?;
        let identity = Identity {
            directory: self.directory.clone(),
            node_id: ack.node_id.to_string(),
            node_token: ack.node_token.clone(),
            node_hmac_key: ack.node_hmac_key.clone().unwrap_or_default(),
        };
        if let Err(e) = keys::save_identity(&self.state.config.state_dir, &identity) {
            tracing::warn!(error = %e, "could not save the node identity; a restart will register anew");
        }
        *self.state.creds.node_id.write() = Some(identity.node_id.clone());
        *self.state.creds.node_token.write() = Some(identity.node_token.clone());
        if let Some(ms) = ack.extra.get("next_heartbeat_ms").and_then(Value::as_u64) {
            self.interval = Duration::from_millis(ms.max(1000));
        }
        tracing::info!(node_id = %identity.node_id, directory = %self.directory, "registered");
        self.state
            .registration
            .send_replace(Registration::Registered {
                node_id: identity.node_id.clone(),
            });
        self.identity = Some(identity);
        self.challenge = None;
        self.fetch_directory_key().await;
        Ok(())
    }

    /// Caches the directory's Ed25519 key so consumer tokens verify offline.
    async fn fetch_directory_key(&self) {
        let key = async {
            let v: Value = self
                .http
                .get(self.url("/directory-key"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            iicp_proto::tokens::verifying_key_from_hex(v.get("public_key")?.as_str()?).ok()
        }
        .await;
        if let Some(k) = key {
            *self.state.creds.directory_key.write() = Some(k);
        }
    }

    async fn heartbeat(&mut self) -> Beat {
        let Some(identity) = self.identity.clone() else {
            return Beat::Forgotten { keep_id: false };
        };
        let Ok(node_id) = identity.node_id.parse() else {
            return Beat::Forgotten { keep_id: false };
        };
        if self.pending.is_none() {
            let (s, f, t, lat) = self.state.outcomes.take();
            if s + f + t > 0 {
                self.pending = Some((crate::keys::random_id(), s, f, t, lat));
            }
        }
        let s = &self.state;
        let mut hb = Heartbeat::new(node_id);
        hb.load = Some(s.load());
        hb.active_jobs = Some(s.gate.in_use() as u64);
        hb.available = Some(s.available());
        if let Some((id, ok, failed, timeout, lat)) = &self.pending {
            let n = ok + failed + timeout;
            hb.metrics = Some(HeartbeatMetrics {
                tasks_success: *ok,
                tasks_failed: *failed,
                tasks_timeout: *timeout,
                avg_latency_ms: Some(*lat as f64 / n.max(1) as f64),
                metrics_batch_id: None,
            });
            hb.metrics_batch_id = Some(id.clone());
        }
        hb.challenge_response = self
            .challenge
            .take()
            .map(|c| challenge_response(&identity.node_hmac_key, &c));
        let resp = match self
            .http
            .post(self.url("/heartbeat"))
            .bearer_auth(&identity.node_token)
            .json(&hb)
            .send()
            .await
        {
            Ok(r) => r,
            Err(_) => {
                s.metrics.heartbeat_failure("unreachable");
                return Beat::Failed;
            }
        };
        match resp.status().as_u16() {
            200 => {}
            401 => {
                s.metrics.heartbeat_failure("unauthorized");
                return Beat::Forgotten { keep_id: false };
            }
            404 | 410 => {
                s.metrics.heartbeat_failure("unknown_node");
                return Beat::Forgotten { keep_id: true };
            }
            _ => {
                s.metrics.heartbeat_failure("status");
                return Beat::Failed;
            }
        }
        let Ok(pong) = resp.json::<Pong>().await else {
            s.metrics.heartbeat_failure("bad_pong");
            return Beat::Failed;
        };
        if let (Some(sent), Some(acked)) = (&self.pending, &pong.metrics_batch_accepted) {
            if &sent.0 == acked {
                self.pending = None;
            }
        }
        self.challenge = pong.challenge;
        self.interval = Duration::from_millis(pong.next_heartbeat_ms.max(1000));
        Beat::Ok
    }

    /// Runs until `stop` turns true, then deregisters.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_secs(1);
        let mut refresh = tokio::time::interval(self.state.config.model_refresh);
        refresh.tick().await;
        let mut registered = false;
        let mut keep_id = true;
        // One deadline for the next directory call, so a model refresh in between does not
        // push it back, and a failed heartbeat is retried after its backoff alone (capped at
        // the interval) rather than backoff plus a whole interval: a node must be heard again
        // soon after an outage, well within the directory's 90 s liveness window.
        let mut next_at = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = refresh.tick() => {
                    let changed = self.state.refresh_models().await | self.state.rotate_cx();
                    if changed && registered {
                        registered = false; // re-register with the new capabilities
                        next_at = tokio::time::Instant::now();
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(next_at) => {}
            }
            if !registered {
                match self.register(keep_id).await {
                    Ok(()) => {
                        registered = true;
                        backoff = Duration::from_secs(1);
                        next_at = tokio::time::Instant::now() + jitter(self.interval);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_s = backoff.as_secs(), "registration failed; serving locally meanwhile");
                        self.state
                            .registration
                            .send_replace(Registration::Retrying {
                                reason: e.to_string(),
                            });
                        // A refused refresh (token no longer valid) falls back to a new identity.
                        if e.identity_rejected() {
                            keep_id = false;
                            self.identity = None;
                        }
                        next_at = tokio::time::Instant::now() + jitter(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                continue;
            }
            match self.heartbeat().await {
                Beat::Ok => {
                    backoff = Duration::from_secs(1);
                    next_at = tokio::time::Instant::now() + jitter(self.interval);
                }
                Beat::Forgotten { keep_id: keep } => {
                    tracing::warn!("the directory no longer knows this node; registering again");
                    if !keep {
                        self.identity = None;
                    }
                    keep_id = keep;
                    registered = false;
                    next_at = tokio::time::Instant::now();
                }
                Beat::Failed => {
                    next_at = tokio::time::Instant::now() + jitter(backoff).min(self.interval);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if registered {
            self.deregister().await;
        }
    }

    async fn deregister(&self) {
        let Some(id) = &self.identity else { return };
        let result = self
            .http
            .delete(self.url("/register"))
            .bearer_auth(&id.node_token)
            .json(&json!({ "node_id": id.node_id }))
            .timeout(Duration::from_secs(3))
            .send()
            .await;
        match result {
            Ok(r) if r.status().is_success() => {
                tracing::info!(node_id = %id.node_id, "deregistered");
                self.state
                    .registration
                    .send_replace(Registration::Deregistered);
            }
            _ => {
                tracing::warn!(node_id = %id.node_id, "could not deregister; the directory will expire this node")
            }
        }
    }
}

/// Without a directory: keep the model list (and CX key) fresh, nothing else.
pub async fn refresh_only(state: Arc<NodeState>, mut stop: watch::Receiver<bool>) {
    let mut refresh = tokio::time::interval(state.config.model_refresh);
    refresh.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = refresh.tick() => {
                state.refresh_models().await;
                state.rotate_cx();
            }
        }
    }
}
