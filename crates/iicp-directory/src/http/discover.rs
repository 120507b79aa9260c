//! `GET /discover` (QUERY → NODELIST), and the candidate selection that dispatch tickets share.

use super::view::{NodeView, View};
use crate::model::Node;
use crate::score::{self, ScoreQuery};
use crate::state::{is_fresh, Shared};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use iicp_proto::node::MODALITIES;
use iicp_proto::registry::{RiskPolicy, RiskTaxonomy};
use iicp_proto::task::Qos;
use iicp_proto::{ErrorCode, Intent};
use iicp_server::error::{json, query_get, query_pairs, ApiError};
use serde::Serialize;
use std::time::Instant;

/// DIR-DISC-08, exactly.
pub const CACHE_CONTROL: &str = "public, max-age=5, s-maxage=10, stale-while-revalidate=5";
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 50;

/// A validated discover query.
#[derive(Debug)]
pub struct Query {
    pub intent: Intent,
    pub qos: Option<Qos>,
    pub region: Option<String>,
    pub limit: usize,
    pub min_reputation: Option<f64>,
    pub max_multiplier: Option<f64>,
    pub min_quality_score: Option<f64>,
    pub cip_capable: bool,
    pub modality: Option<String>,
    pub model: Option<String>,
    pub view: View,
}

fn invalid(param: &str, message: &str) -> ApiError {
    ApiError::new(ErrorCode::ValidationError, format!("{param}: {message}"))
}

fn unit_interval(pairs: &[(String, String)], key: &str) -> Result<Option<f64>, ApiError> {
    match query_get(pairs, key) {
        None | Some("") => Ok(None),
        Some(v) => match v.parse::<f64>() {
            Ok(x) if (0.0..=1.0).contains(&x) => Ok(Some(x)),
            _ => Err(invalid(key, "must be a number between 0 and 1")),
        },
    }
}

/// Parses `qos`, accepting both spellings of best-effort.
pub fn parse_qos(v: &str) -> Option<Qos> {
    serde_json::from_value(serde_json::Value::String(v.to_owned())).ok()
}

impl Query {
    /// A query with no filters beyond the intent (dispatch tickets start here).
    pub fn for_intent(intent: Intent) -> Query {
        Query {
            intent,
            qos: None,
            region: None,
            limit: MAX_LIMIT,
            min_reputation: None,
            max_multiplier: None,
            min_quality_score: None,
            cip_capable: false,
            modality: None,
            model: None,
            view: View::Dispatch,
        }
    }

    pub fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let pairs = query_pairs(raw);
        let intent = match query_get(&pairs, "intent") {
            None | Some("") => return Err(invalid("intent", "is required")),
            Some(v) => Intent::parse(v).map_err(|e| ApiError::new(e.code(), e.to_string()))?,
        };
        let qos = match query_get(&pairs, "qos") {
            None | Some("") => None,
            Some(v) => Some(parse_qos(v).ok_or_else(|| {
                invalid("qos", "must be realtime, interactive, batch or best-effort")
            })?),
        };
        let limit = match query_get(&pairs, "limit") {
            None | Some("") => DEFAULT_LIMIT,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n >= 1 => n.min(MAX_LIMIT),
                _ => return Err(invalid("limit", "must be a positive integer")),
            },
        };
        let max_multiplier = match query_get(&pairs, "max_multiplier") {
            None | Some("") => None,
            Some(v) => match v.parse::<f64>() {
                Ok(x) if x > 0.0 && x.is_finite() => Some(x),
                _ => return Err(invalid("max_multiplier", "must be a positive number")),
            },
        };
        let cip_capable = match query_get(&pairs, "cip_capable") {
            None | Some("") | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(_) => return Err(invalid("cip_capable", "must be true, false, 1 or 0")),
        };
        let modality = match query_get(&pairs, "modality") {
            None | Some("") => None,
            Some(m) if MODALITIES.contains(&m) => Some(m.to_owned()),
            Some(_) => return Err(invalid("modality", "must be text, image, audio or video")),
        };
        let view = match query_get(&pairs, "view") {
            None | Some("") | Some("dispatch") => View::Dispatch,
            Some("public") => View::Public,
            Some(_) => return Err(invalid("view", "must be dispatch or public")),
        };
        Ok(Query {
            intent,
            qos,
            region: query_get(&pairs, "region")
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
            limit,
            min_reputation: unit_interval(&pairs, "min_reputation")?,
            max_multiplier,
            min_quality_score: unit_interval(&pairs, "min_quality_score")?,
            cip_capable,
            modality,
            model: query_get(&pairs, "model")
                .filter(|m| !m.is_empty())
                .map(str::to_owned),
            view,
        })
    }
}

/// Refuses prohibited and high-risk intents with a structured 422.
pub fn refuse_risky(intent: &Intent) -> Result<(), ApiError> {
    match RiskTaxonomy::global().refusal(
        intent.as_str(),
        RiskPolicy::default(),
        ErrorCode::ValidationError,
    ) {
        Some(body) => Err(body.into()),
        None => Ok(()),
    }
}

fn allows_remote_inference(node: &Node) -> bool {
    node.reg
        .extra
        .get("policy")
        .and_then(|p| p.get("allow_remote_inference"))
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

/// Eligible nodes for the query with their scores, best first (ties by node id, so the same
/// registry and time give the same order).
pub fn select<'a>(
    nodes: impl Iterator<Item = &'a Node>,
    q: &Query,
    now_ms: u64,
    ttl_ms: u64,
) -> Vec<(f64, &'a Node)> {
    let intent = q.intent.as_str();
    let eligible: Vec<&Node> = nodes
        .filter(|n| is_fresh(n, now_ms, ttl_ms))
        .filter(|n| score::passes_probation(n, q.qos))
        .filter(|n| q.min_reputation.is_none_or(|m| n.live.reputation >= m))
        .filter(|n| !q.cip_capable || allows_remote_inference(n))
        .filter(|n| {
            q.max_multiplier
                .is_none_or(|max| score::price_multiplier(n).is_none_or(|p| p <= max))
        })
        .filter(|n| {
            q.min_quality_score
                .is_none_or(|min| score::health(n, now_ms, ttl_ms).0 >= min)
        })
        .filter(|n| {
            q.modality.as_deref().is_none_or(|m| {
                n.reg
                    .capabilities
                    .iter()
                    .any(|c| c.intent == intent && c.accepts_modality(m))
            })
        })
        .collect();
    let cheapest = q.model.as_ref().and_then(|_| {
        eligible
            .iter()
            .filter_map(|n| score::price_multiplier(n))
            .reduce(f64::min)
    });
    let sq = ScoreQuery {
        region: q.region.as_deref(),
        model: q.model.as_deref(),
    };
    let mut scored: Vec<(f64, &Node)> = eligible
        .into_iter()
        .map(|n| (score::score(n, &sq, now_ms, cheapest), n))
        .filter(|(s, _)| *s >= score::MIN_SCORE)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    scored
}

#[derive(Serialize)]
struct NodeList<'a> {
    nodes: Vec<NodeView<'a>>,
    count: usize,
    query_ms: u64,
    data_class: &'static str,
    route_fields_present: bool,
    view: &'static str,
    relay_available: bool,
    dispatch_ticket_endpoint: &'static str,
    ticketed_dispatch_available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    redaction: Option<serde_json::Value>,
}

pub async fn discover(
    State(s): State<Shared>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let q = Query::parse(raw.as_deref())?;
    let intent = &q.intent;
    refuse_risky(intent)?;
    let now = s.now_ms();
    let ttl = s.ttl_ms();
    let mut response = {
        let registry = s.registry.read();
        let scored = select(registry.serving(intent.as_str()), &q, now, ttl);
        let nodes: Vec<NodeView<'_>> = scored
            .into_iter()
            .take(q.limit)
            .map(|(score, node)| NodeView::new(node, score, q.view, Some(intent), now, ttl))
            .collect();
        let public = q.view == View::Public;
        let body = NodeList {
            count: nodes.len(),
            nodes,
            query_ms: started.elapsed().as_millis() as u64,
            data_class: if public {
                "public_presentation"
            } else {
                "route_dispatch"
            },
            route_fields_present: !public,
            view: q.view.as_str(),
            relay_available: false,
            dispatch_ticket_endpoint: "/api/v1/dispatch/ticket",
            ticketed_dispatch_available: true,
            redaction: public.then(|| {
                serde_json::json!({
                    "node_id": "node_id_prefix",
                    "endpoint": "removed",
                    "transport_endpoint": "removed",
                    "transport_metadata": "removed",
                    "cx_public_key": "key_ready",
                })
            }),
        };
        json(StatusCode::OK, &body)
    };
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    s.metrics
        .discovery_latency
        .observe_us(started.elapsed().as_micros() as u64);
    Ok(response)
}
