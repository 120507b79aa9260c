//! `POST /register` (REGISTER → ACK), `DELETE /register`, `POST /deregister`.
//!
//! Admission order, cheapest first and nothing dialled before it is allowed:
//! 1. rate limit per source address (429 `rate_limited` + `iicp_code: IICP-E034`, `retry_after`);
//! 2. schema validation (422 `validation_error`, field-precise);
//! 3. routability of `endpoint` and `transport_endpoint` by name and literal (422 `IICP-E035`);
//! 4. intent risk policy (422);
//! 5. ownership of an existing `node_id` (403 `IICP-E049` / `IICP-E050`);
//! 6. liveness dial-back to `{endpoint}/iicp/health`, addresses checked as they are connected to
//!    (422 `liveness_failed`, or `IICP-E035` when the name resolves into private space);
//! 7. credentials issued, written durably, then the ACK.
//!
//! The rate limit comes first so that nobody can make the directory dial out faster than it
//! allows registrations.

use crate::credentials;
use crate::model::{LiveState, Node, NodeStatus};
use crate::state::Shared;
use crate::store::Write;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use iicp_proto::control::{RegisterAck, RegisterRequest};
use iicp_proto::endpoint::EndpointRefusal;
use iicp_proto::registry::{RiskPolicy, RiskTaxonomy};
use iicp_proto::validate::parse_json;
use iicp_proto::ErrorCode;
use iicp_server::error::{bearer, json, require_json, unauthorized, ApiError};
use serde_json::json;
use std::collections::VecDeque;
use std::net::SocketAddr;
use uuid::Uuid;

/// How a registration relates to what is stored.
enum Plan {
    New,
    /// Refresh of an existing node: its identity and history carry over.
    Refresh(Box<Node>),
}

pub async fn register(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let outcome = admit(&s, peer, &headers, &body).await;
    s.metrics.registration(match &outcome {
        Ok(_) => "accepted",
        Err(e) => match e.0.status() {
            429 => "rate_limited",
            403 => "ownership_refused",
            _ if e.0.error.code == "liveness_failed" => "liveness_failed",
            _ => "refused",
        },
    });
    outcome.map(|ack| json(StatusCode::CREATED, &ack))
}

async fn admit(
    s: &Shared,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<RegisterAck, ApiError> {
    let now = s.now_ms();
    let source = s.source_ip(headers, peer);
    if let Err(retry_after) = s.register_limiter.check(source, now) {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "too many registrations from this address; retry later",
        )
        .with("iicp_code", ErrorCode::E034RegisterRateLimited.as_str())
        .with("retry_after", retry_after));
    }
    require_json(headers)?;
    let mut req = RegisterRequest::from_slice(body)?;
    let token = req.current_node_token.take();

    let endpoint = url::Url::parse(&req.endpoint)
        .map_err(|_| ApiError::new(ErrorCode::ValidationError, "$.endpoint: not a URL"))?;
    let policy = s.liveness.policy();
    policy.check_url_host(&endpoint).map_err(refusal)?;
    if let Some(t) = req.transport_endpoint.as_deref() {
        if let Ok(t) = url::Url::parse(t) {
            policy.check_url_host(&http_view(&t)).map_err(refusal)?;
        }
    }
    for cap in &req.capabilities {
        let refused = RiskTaxonomy::global().refusal(
            cap.intent.as_str(),
            RiskPolicy::default(),
            ErrorCode::ValidationError,
        );
        if let Some(body) = refused {
            return Err(body.into());
        }
    }

    let id = req.node_id.unwrap_or_else(Uuid::new_v4);
    req.node_id = Some(id);
    let _guard = s.lock_node(id).await;
    let plan = ownership(s, &req, token.as_deref()).await?;

    s.liveness.probe(&endpoint).await.map_err(|e| match e {
        crate::admission::liveness::LivenessError::Refused(msg) => {
            ApiError::new(ErrorCode::E035NonRoutableEndpoint, msg)
        }
        other => ApiError::new(ErrorCode::LivenessFailed, other.to_string()),
    })?;

    let (generation, created_ms, live) = match &plan {
        Plan::New => (1, now, LiveState::fresh(now, source.to_string())),
        Plan::Refresh(old) => {
            let mut live = old.live.clone();
            live.last_seen_ms = now;
            live.status = NodeStatus::Active;
            live.dormant_since_ms = None;
            live.available = true;
            live.observed_source_ip = source.to_string();
            (old.creds.token_generation + 1, old.created_ms, live)
        }
    };
    let cost = s.config.bcrypt_cost;
    let issued = tokio::task::spawn_blocking(move || credentials::issue(cost, generation, None))
        .await
        .map_err(|_| ApiError::new(ErrorCode::InternalError, "credential issue failed"))?;
    let node = Node {
        id,
        reg: req,
        creds: issued.stored,
        created_ms,
        registered_ms: now,
        live,
        challenge: None,
        gains: match plan {
            Plan::Refresh(old) => old.gains,
            Plan::New => VecDeque::new(),
        },
    };
    s.writer
        .commit(vec![Write::Upsert(Box::new(node.clone()))])
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "registration could not be stored");
            ApiError::new(
                ErrorCode::TemporarilyUnavailable,
                "registration could not be stored; retry",
            )
        })?;
    s.tokens.forget_node(id);
    s.tokens.remember(
        credentials::digest(&issued.node_token),
        id,
        node.creds.token_generation,
    );
    let hmac_key = node.creds.hmac_key.clone();
    s.registry.write().upsert(node);
    tracing::info!(node_id = %id, generation, "node registered");

    Ok(RegisterAck {
        message_type: "ACK".into(),
        node_id: id,
        node_token: issued.node_token,
        expires_at: None,
        directory: Some(s.issuer().to_owned()),
        observed_source_ip: Some(source.to_string()),
        node_hmac_key: Some(hmac_key),
        proxy_token: Some(issued.proxy_token),
        extra: [
            ("next_heartbeat_ms".to_owned(), json!(heartbeat_ms(s))),
            ("status".to_owned(), json!("registered")),
        ]
        .into_iter()
        .collect(),
    })
}

fn heartbeat_ms(s: &Shared) -> u64 {
    s.config.heartbeat_interval.as_millis() as u64
}

fn refusal(e: EndpointRefusal) -> ApiError {
    ApiError(e.to_error_body())
}

/// `iicp://host:port` seen as an http URL, so the same host rules apply to it.
fn http_view(t: &url::Url) -> url::Url {
    let host = t.host_str().unwrap_or("");
    let bracketed = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    url::Url::parse(&format!("http://{bracketed}/"))
        .unwrap_or_else(|_| url::Url::parse("http://invalid./").expect("static URL parses"))
}

/// Ownership gates for a `node_id` that is already registered (digest §2.1.3).
async fn ownership(
    s: &Shared,
    req: &RegisterRequest,
    token: Option<&str>,
) -> Result<Plan, ApiError> {
    let id = req.node_id.unwrap_or_default();
    let Some(old) = s.registry.read().get(&id).cloned() else {
        return Ok(Plan::New);
    };
    let token_ok = match token {
        Some(t) => s.authenticate(t, Some(id)).await == Some(id),
        None => false,
    };
    if token_ok {
        return Ok(Plan::Refresh(Box::new(old)));
    }
    if req.cx_public_key != old.reg.cx_public_key {
        return Err(ApiError::new(
            ErrorCode::E049CxKeyOwnership,
            "changing cx_public_key requires a valid current_node_token",
        ));
    }
    let route_changed = req.endpoint != old.reg.endpoint
        || req.transport_endpoint != old.reg.transport_endpoint
        || req.extra.get("relay_endpoint") != old.reg.extra.get("relay_endpoint");
    if !old.is_secured() && route_changed {
        // The "old endpoint is dead" path: a node that lost its token may move only if
        // whatever answered at the old route is gone.
        let old_alive = match url::Url::parse(&old.reg.endpoint) {
            Ok(old_endpoint) => s.liveness.probe(&old_endpoint).await.is_ok(),
            Err(_) => false,
        };
        if !old_alive {
            return Ok(Plan::Refresh(Box::new(old)));
        }
    }
    Err(ApiError::new(
        ErrorCode::E050RouteOwnership,
        "this node_id is registered; send a valid current_node_token to refresh it",
    ))
}

/// `DELETE /register` and `POST /deregister`: body `{"node_id"}`, bearer node token.
pub async fn deregister(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token = bearer(&headers).ok_or_else(unauthorized)?;
    require_json(&headers)?;
    let value = parse_json(&body)?;
    let named = value
        .get("node_id")
        .and_then(|v| v.as_str())
        .and_then(|v| v.parse::<Uuid>().ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::ValidationError,
                "$.node_id: is required and must be a UUID",
            )
        })?;
    let id = s
        .authenticate(token, Some(named))
        .await
        .filter(|id| *id == named)
        .ok_or_else(unauthorized)?;
    let _guard = s.lock_node(id).await;
    s.writer
        .commit(vec![Write::Delete(id)])
        .await
        .map_err(|_| ApiError::new(ErrorCode::TemporarilyUnavailable, "retry"))?;
    s.registry.write().remove(&id);
    s.tokens.forget_node(id);
    tracing::info!(node_id = %id, reason = "explicit", "node deregistered");
    Ok(json(
        StatusCode::OK,
        &json!({"deregistered": true, "node_id": id, "reason": "explicit"}),
    ))
}
