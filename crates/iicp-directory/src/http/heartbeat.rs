//! `POST /heartbeat` (PING → PONG).
//!
//! The token check is a digest lookup (see `credentials`); the state change happens in memory
//! and reaches the store with the next flush.

use crate::credentials::random_hex;
use crate::model::NodeStatus;
use crate::score::{self, Outcomes};
use crate::state::Shared;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use iicp_proto::control::{Heartbeat, Pong};
use iicp_proto::ErrorCode;
use iicp_server::error::{bearer, json, require_json, unauthorized, ApiError};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

/// Opaque reputation epoch: outcome-v2 since this implementation's first release.
pub const REPUTATION_EPOCH: &str = "outcome-v2.1";

pub async fn heartbeat(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token = bearer(&headers).ok_or_else(unauthorized)?;
    require_json(&headers)?;
    let hb = Heartbeat::from_slice(&body)?;
    if s.registry.read().get(&hb.node_id).is_none() {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "unknown node_id; register first",
        ));
    }
    if s.authenticate(token, Some(hb.node_id)).await != Some(hb.node_id) {
        return Err(unauthorized());
    }
    let now = s.now_ms();
    let source = s.source_ip(&headers, peer).to_string();
    let challenge = random_hex(16);
    let pong = {
        let mut registry = s.registry.write();
        let node = registry
            .get_mut(&hb.node_id)
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "unknown node_id"))?;
        let live = &mut node.live;
        live.last_seen_ms = now;
        if live.status == NodeStatus::Dormant {
            live.status = NodeStatus::Active;
            live.dormant_since_ms = None;
        }
        live.available = hb.is_available();
        if let Some(load) = hb.load {
            live.load = load;
        }
        if let Some(jobs) = hb.active_jobs {
            live.active_jobs = jobs;
        }
        if hb.sla_p95_ms.is_some() {
            live.sla_p95_ms = hb.sla_p95_ms;
        }
        live.observed_source_ip = source;

        let mut accepted = None;
        if let (Some(m), Some(batch)) = (&hb.metrics, hb.batch_id()) {
            accepted = Some(batch.to_owned());
            // A batch id seen last time is acknowledged again but not re-applied (REP-09).
            if live.last_batch_id.as_deref() != Some(batch) {
                let o = Outcomes {
                    success: m.tasks_success,
                    failed: m.tasks_failed,
                    timeout: m.tasks_timeout,
                };
                live.reputation = score::apply_outcomes(live.reputation, &mut node.gains, o, now);
                live.tasks_success += o.success;
                live.tasks_failed += o.failed;
                live.tasks_timeout += o.timeout;
                if m.avg_latency_ms.is_some() {
                    live.avg_latency_ms = m.avg_latency_ms;
                }
                live.last_batch_id = Some(batch.to_owned());
            }
        }

        // The challenge of the last PONG is answered at most once; a replay finds it gone.
        let issued = node.challenge.replace(challenge.clone());
        let verified = match (&hb.challenge_response, issued) {
            (Some(response), Some(issued)) => {
                let ok =
                    iicp_proto::control::challenge_matches(&node.creds.hmac_key, &issued, response);
                s.metrics
                    .challenge(if ok { "verified" } else { "mismatch" });
                if ok {
                    node.live.verified_liveness_ms = Some(now);
                }
                Some(ok)
            }
            (Some(_), None) => {
                s.metrics.challenge("unsolicited");
                Some(false)
            }
            _ => None,
        };

        let mut pong = Pong {
            ok: true,
            next_heartbeat_ms: s.config.heartbeat_interval.as_millis() as u64,
            reputation_score: Some(node.live.reputation),
            reputation_model: Some("outcome-v2".into()),
            reputation_epoch: Some(REPUTATION_EPOCH.into()),
            metrics_batch_accepted: accepted,
            challenge: Some(challenge),
            extra: Default::default(),
        };
        if let Some(v) = verified {
            pong.extra.insert("liveness_verified".into(), v.into());
        }
        pong
    };
    s.mark_dirty(hb.node_id);
    s.metrics.heartbeats.fetch_add(1, Ordering::Relaxed);
    Ok(json(StatusCode::OK, &pong))
}
