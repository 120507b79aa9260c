//! Ed25519-signed grants: `POST /dispatch/ticket` (route disclosure), `POST /consumer-token`
//! (a caller's right to use a provider), and `GET /directory-key` to verify both offline.

use super::discover::{parse_qos, refuse_risky, select, Query};
use crate::state::Shared;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use iicp_proto::tokens::{self, ConsumerTokenClaims, DispatchTicketClaims};
use iicp_proto::validate::parse_json;
use iicp_proto::{ErrorCode, Intent};
use iicp_server::error::{bearer, json, require_json, unauthorized, ApiError};
use serde_json::{json, Map, Value};

/// Fields that would carry a prompt or a result; the directory never accepts them (DIR-DISPATCH-03).
const PAYLOAD_FIELDS: &[&str] = &[
    "prompt", "messages", "payload", "input", "chat", "content", "response",
];
/// A ticket discloses a route for this long.
const TICKET_TTL_S: u64 = 120;

fn invalid(message: &str) -> ApiError {
    ApiError::new(ErrorCode::ValidationError, message.to_owned())
}

fn body_object(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    require_json(headers)?;
    match parse_json(body)? {
        Value::Object(map) => Ok(map),
        _ => Err(invalid("body must be a JSON object")),
    }
}

fn intent_field(obj: &Map<String, Value>) -> Result<Intent, ApiError> {
    let raw = obj
        .get("intent")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("$.intent: is required"))?;
    Intent::parse(raw).map_err(|e| ApiError::new(e.code(), format!("$.intent: {e}")))
}

pub async fn ticket(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let obj = body_object(&headers, &body)?;
    // Named, never echoed: the error must not carry what the caller sent.
    if PAYLOAD_FIELDS.iter().any(|f| obj.contains_key(*f)) {
        return Err(ApiError::new(
            ErrorCode::ValidationError,
            "dispatch ticket requests must not carry prompt or payload fields; \
             the directory never accepts task content",
        ));
    }
    let intent = intent_field(&obj)?;
    let node_id = obj.get("node_id");
    let prefix = obj.get("node_id_prefix");
    if node_id.is_some() && prefix.is_some() {
        return Err(invalid("send node_id or node_id_prefix, not both"));
    }
    let mut q = Query::for_intent(intent.clone());
    if let Some(v) = obj.get("qos") {
        q.qos = Some(v.as_str().and_then(parse_qos).ok_or_else(|| {
            invalid("$.qos: must be realtime, interactive, batch or best-effort")
        })?);
    }
    let excluded: Vec<String> = match obj.get("exclude_node_id_prefixes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= 10 => items
            .iter()
            .map(|v| v.as_str().map(|p| p.to_ascii_lowercase()))
            .collect::<Option<_>>()
            .ok_or_else(|| invalid("$.exclude_node_id_prefixes: must be strings"))?,
        Some(_) => return Err(invalid("$.exclude_node_id_prefixes: at most 10 strings")),
    };
    let wanted = match (node_id, prefix) {
        (Some(v), _) | (_, Some(v)) => Some(
            v.as_str()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| invalid("node_id / node_id_prefix must be a non-empty string"))?
                .to_ascii_lowercase(),
        ),
        _ => None,
    };
    refuse_risky(&intent)?;

    let now = s.now_ms();
    let registry = s.registry.read();
    let chosen = select(registry.serving(intent.as_str()), &q, now, s.ttl_ms())
        .into_iter()
        .map(|(_, n)| n)
        .find(|n| {
            let id = n.id.to_string();
            !excluded.iter().any(|p| id.starts_with(p.as_str()))
                && wanted.as_deref().is_none_or(|w| id.starts_with(w))
        })
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                "no eligible node for this intent and selection",
            )
        })?;

    let mut jti = [0u8; 12];
    getrandom::getrandom(&mut jti).expect("the OS random source is available");
    let iat = now / 1000;
    let claims = DispatchTicketClaims::new(
        s.issuer(),
        &chosen.id.to_string(),
        intent.as_str(),
        jti,
        iat,
        TICKET_TTL_S,
    );
    let ticket = tokens::sign_dispatch_ticket(&s.signing_key, &claims);
    let id = chosen.id.to_string();
    let body = json!({
        "ticket": ticket,
        "ticket_id_prefix": &claims.jti[..12],
        "expires_at": claims.exp,
        "intent": intent,
        "node_id": id,
        "node_id_prefix": &id[..8],
        "route": {
            "node_id": id,
            "endpoint": chosen.reg.endpoint,
            "transport_endpoint": chosen.reg.transport_endpoint,
            "cx_public_key": chosen.reg.cx_public_key,
        },
        "algorithm": "ed25519",
        "data_class": "ticketed_route_dispatch",
        "route_fields_present": true,
        "prompt_payload_accepted": false,
    });
    drop(registry);
    let mut response = json(StatusCode::CREATED, &body);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

pub async fn directory_key(State(s): State<Shared>) -> Response {
    json(
        StatusCode::OK,
        &json!({
            "public_key": tokens::verifying_key_hex(&s.signing_key.verifying_key()),
            "algorithm": "ed25519",
            "issuer": s.issuer(),
        }),
    )
}

/// Body `{"target_node_id", "intent"}` (`aud` is read as an alias); the bearer token names the
/// caller.
pub async fn consumer_token(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token = bearer(&headers).ok_or_else(unauthorized)?;
    let obj = body_object(&headers, &body)?;
    let caller_hint = obj
        .get("node_id")
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok());
    let caller = s
        .authenticate(token, caller_hint)
        .await
        .ok_or_else(unauthorized)?;
    let target = obj
        .get("target_node_id")
        .or_else(|| obj.get("aud"))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("$.target_node_id: is required"))?;
    let target: uuid::Uuid = target
        .parse()
        .map_err(|_| invalid("$.target_node_id: must be a UUID"))?;
    let intent = match obj.get("intent").and_then(Value::as_str) {
        Some(tokens::ANY_INTENT) | None => tokens::ANY_INTENT.to_owned(),
        Some(_) => {
            let intent = intent_field(&obj)?;
            refuse_risky(&intent)?;
            intent.as_str().to_owned()
        }
    };
    if s.registry.read().get(&target).is_none() {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "target node is not registered",
        ));
    }
    let claims = ConsumerTokenClaims::new(
        s.issuer(),
        &caller.to_string(),
        &target.to_string(),
        &intent,
        s.now_ms() / 1000,
    );
    let signed = tokens::sign_consumer_token(&s.signing_key, &claims);
    Ok(json(
        StatusCode::CREATED,
        &json!({
            "token": signed,
            "expires_at": claims.exp,
            "caller_node_id": caller,
            "target_node_id": target,
            "intent": intent,
        }),
    ))
}
