//! Read-only and bookkeeping routes: `/me`, `/node/{id}`, `/bootstrap`, `/stats`, `/probe`,
//! `/telemetry`, the credits extension's refusal, and the directory's own `/iicp/health` and
//! `/metrics`.

use super::view::{iso, NodeView, View};
use crate::credentials;
use crate::score;
use crate::state::{is_fresh, Shared};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use iicp_proto::endpoint::EndpointPolicy;
use iicp_proto::validate::parse_json;
use iicp_proto::ErrorCode;
use iicp_server::error::{
    bearer, json, query_get, query_pairs, require_json, unauthorized, ApiError,
};
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use uuid::Uuid;

pub async fn health(State(s): State<Shared>) -> Response {
    let g = s.gauges();
    json(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "role": "directory",
            "version": env!("CARGO_PKG_VERSION"),
            "nodes_registered": g.nodes_registered,
            "nodes_active": g.nodes_active,
            "uptime_s": s.now_ms().saturating_sub(s.started_ms) / 1000,
        }),
    )
}

pub async fn metrics(State(s): State<Shared>) -> Response {
    let text = s.metrics.render(&s.gauges());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response()
}

pub async fn me(
    State(s): State<Shared>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = bearer(&headers).ok_or_else(unauthorized)?;
    let pairs = query_pairs(raw.as_deref());
    let hint = query_get(&pairs, "node_id").and_then(|v| v.parse().ok());
    let id = s.authenticate(token, hint).await.ok_or_else(unauthorized)?;
    let registry = s.registry.read();
    let node = registry.get(&id).ok_or_else(unauthorized)?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "node_id": id,
            "observed_source_ip": node.live.observed_source_ip,
            "endpoint": node.reg.endpoint,
        }),
    ))
}

pub async fn node(State(s): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let not_found = || ApiError::new(ErrorCode::NotFound, "no node with this id");
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    let now = s.now_ms();
    let ttl = s.ttl_ms();
    let registry = s.registry.read();
    let node = registry.get(&id).ok_or_else(not_found)?;
    let (health, label) = score::health(node, now, ttl);
    let mut body = serde_json::to_value(NodeView::new(
        node,
        score::score(node, &Default::default(), now, None),
        View::Dispatch,
        None,
        now,
        ttl,
    ))
    .unwrap_or(Value::Null);
    body["health"] = json!({
        "score": (health * 1000.0).round() / 1000.0,
        // Node detail has also been specified on a 0–100 scale (C15); both are served.
        "score_100": (health * 100.0).round() as u64,
        "label": label,
        "reachable": is_fresh(node, now, ttl),
        "last_seen": iso(node.live.last_seen_ms),
        "last_seen_age_s": now.saturating_sub(node.live.last_seen_ms) / 1000,
        "verified_liveness_at": node.live.verified_liveness_ms.map(iso),
        "dormant_since": node.live.dormant_since_ms.map(iso),
    });
    body["probation"] = json!({
        "completed_tasks_count": node.live.tasks_success,
        "interactive_eligible": score::passes_probation(node, Some(iicp_proto::task::Qos::Interactive)),
        "realtime_eligible": score::passes_probation(node, Some(iicp_proto::task::Qos::Realtime)),
    });
    body["registered_at"] = json!(iso(node.registered_ms));
    Ok(json(StatusCode::OK, &body))
}

fn limit_param(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    let pairs = query_pairs(raw);
    match query_get(&pairs, "limit") {
        None | Some("") => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n.min(max)),
            _ => Err(ApiError::new(
                ErrorCode::ValidationError,
                "limit: must be a positive integer",
            )),
        },
    }
}

pub async fn bootstrap(
    State(s): State<Shared>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let limit = limit_param(raw.as_deref(), 5, 50)?;
    let now = s.now_ms();
    let ttl = s.ttl_ms();
    let registry = s.registry.read();
    let mut fresh: Vec<_> = registry.iter().filter(|n| is_fresh(n, now, ttl)).collect();
    fresh.sort_by_key(|n| std::cmp::Reverse(n.live.last_seen_ms));
    let peers: Vec<Value> = fresh
        .into_iter()
        .take(limit)
        .map(|n| {
            json!({
                "node_id": n.id,
                "endpoint": n.reg.endpoint,
                "region": n.reg.region,
                "last_seen": iso(n.live.last_seen_ms),
            })
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({"count": peers.len(), "peers": peers}),
    ))
}

pub async fn stats(State(s): State<Shared>) -> Response {
    let now = s.now_ms();
    let ttl = s.ttl_ms();
    let body = {
        let registry = s.registry.read();
        let mut regions = std::collections::BTreeMap::<&str, usize>::new();
        let mut active = 0;
        let mut dormant = 0;
        for n in registry.iter() {
            if is_fresh(n, now, ttl) {
                active += 1;
                *regions.entry(n.reg.region.as_str()).or_default() += 1;
            }
            if n.live.status == crate::model::NodeStatus::Dormant {
                dormant += 1;
            }
        }
        let mut intents: Vec<(&str, usize)> = registry.intent_counts().collect();
        intents.sort();
        json!({
            "nodes_registered": registry.len(),
            "nodes_active": active,
            "nodes_dormant": dormant,
            "regions": regions,
            "intents": intents.into_iter().map(|(i, n)| json!({"intent": i, "nodes": n})).collect::<Vec<_>>(),
            "generated_at": iso(now),
        })
    };
    let mut response = json(StatusCode::OK, &body);
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=30, s-maxage=60"),
    );
    response
}

/// `GET /probe?host=&port=`: can the public internet reach this host and port? Always judged
/// with the public policy, even in dev mode: probing private space helps nobody but an attacker.
pub async fn probe(RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let pairs = query_pairs(raw.as_deref());
    let host = query_get(&pairs, "host")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ApiError::new(ErrorCode::ValidationError, "host: is required"))?;
    let port: u16 = query_get(&pairs, "port")
        .and_then(|p| p.parse().ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::new(ErrorCode::ValidationError, "port: must be 1 to 65535"))?;
    let private = |e: iicp_proto::endpoint::EndpointRefusal| {
        ApiError::new(ErrorCode::PrivateAddress, e.to_string())
    };
    let policy = EndpointPolicy::PUBLIC;
    let bracketed = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let url = url::Url::parse(&format!("http://{bracketed}/")).map_err(|_| {
        ApiError::new(
            ErrorCode::ValidationError,
            "host: not a host name or address",
        )
    })?;
    let addr: SocketAddr = match policy.check_url_host(&url).map_err(private)? {
        Some(ip) => SocketAddr::new(ip, port),
        None => {
            let name = url.host_str().unwrap_or_default().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
                .await
                .map(|a| a.collect())
                .unwrap_or_default();
            let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
            policy.check_resolved(&ips).map_err(private)?;
            addrs[0]
        }
    };
    let started = Instant::now();
    let reachable = matches!(
        tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    );
    Ok(json(
        StatusCode::OK,
        &json!({
            "host": host,
            "port": port,
            "reachable": reachable,
            "latency_ms": reachable.then(|| started.elapsed().as_millis() as u64),
        }),
    ))
}

/// `POST /telemetry` (bearer `proxy_token`): metadata-only task reports. Counted, never stored
/// with content; anything that looks like content is refused.
pub async fn telemetry(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token = bearer(&headers)
        .ok_or_else(|| ApiError::new(ErrorCode::E032ProxyTokenInvalid, "proxy_token required"))?;
    let hash = credentials::sha256_hex(token);
    if s.registry.read().by_proxy_token_hash(&hash).is_none() {
        return Err(ApiError::new(
            ErrorCode::E032ProxyTokenInvalid,
            "proxy_token invalid",
        ));
    }
    require_json(&headers)?;
    let value = parse_json(&body)?;
    let Value::Object(obj) = &value else {
        return Err(ApiError::new(
            ErrorCode::ValidationError,
            "body must be a JSON object",
        ));
    };
    const CONTENT: &[&str] = &[
        "prompt", "messages", "payload", "input", "result", "output", "content",
    ];
    if CONTENT.iter().any(|k| obj.contains_key(*k)) {
        return Err(ApiError::new(
            ErrorCode::ValidationError,
            "telemetry carries metadata only (task_id, intent, region, model, latency_ms, status)",
        ));
    }
    Ok(json(StatusCode::ACCEPTED, &json!({"accepted": true})))
}

/// The credits extension is not offered. Unauthenticated calls get the 401 every directory
/// gives; authenticated ones learn that the extension is absent.
pub async fn credits(State(s): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    let token = bearer(&headers).ok_or_else(unauthorized)?;
    s.authenticate(token, None).await.ok_or_else(unauthorized)?;
    Err(ApiError::new(
        ErrorCode::NotFound,
        "the credits extension is not offered by this directory",
    ))
}
