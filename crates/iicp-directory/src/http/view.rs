//! How a node is shown: the dispatch view (routes included) and the public view (routes,
//! full ids and raw keys redacted, DIR-DISC public view). Borrowed fields, no copies.

use crate::model::Node;
use crate::score;
use iicp_proto::control::CxPublicKey;
use iicp_proto::node::Capability;
use iicp_proto::Intent;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum View {
    #[default]
    Dispatch,
    Public,
}

impl View {
    pub fn as_str(self) -> &'static str {
        match self {
            View::Dispatch => "dispatch",
            View::Public => "public",
        }
    }
}

#[derive(Serialize)]
pub struct NodeView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transport_endpoint: Option<&'a str>,
    region: &'a str,
    score: f64,
    available: bool,
    status: &'static str,
    load: f64,
    active_jobs: u64,
    max_concurrent: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_estimate_ms: Option<f64>,
    reputation_score: f64,
    reputation_tier: &'static str,
    reputation_model: &'static str,
    completed_tasks_count: u64,
    health_label: &'static str,
    health_score: f64,
    reachability_tier: &'static str,
    relay_capable: bool,
    input_modalities: Vec<&'a str>,
    models: Vec<&'a str>,
    capabilities: &'a [Capability],
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cx_public_key: Option<&'a CxPublicKey>,
    key_ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    cip_conformance_level: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pricing: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sdk_compatibility_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    implementation_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    implementation_version: Option<&'a str>,
    last_seen: String,
}

/// RFC 3339 UTC time of a Unix time in milliseconds.
pub fn iso(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl<'a> NodeView<'a> {
    /// `intent` narrows `input_modalities` to that intent's capabilities.
    pub fn new(
        node: &'a Node,
        score: f64,
        view: View,
        intent: Option<&Intent>,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Self {
        let dispatch = view == View::Dispatch;
        let mut modalities: Vec<&str> = Vec::new();
        for cap in &node.reg.capabilities {
            if intent.is_none_or(|i| *i == cap.intent) {
                for m in cap.modalities() {
                    if !modalities.contains(&m) {
                        modalities.push(m);
                    }
                }
            }
        }
        let (health, label) = score::health(node, now_ms, ttl_ms);
        let id = node.id.simple().to_string();
        NodeView {
            node_id: dispatch.then(|| node.id.to_string()),
            node_id_prefix: (!dispatch).then(|| id[..8].to_owned()),
            endpoint: dispatch.then_some(node.reg.endpoint.as_str()),
            transport_endpoint: if dispatch {
                node.reg.transport_endpoint.as_deref()
            } else {
                None
            },
            region: &node.reg.region,
            score: (score * 10_000.0).round() / 10_000.0,
            available: node.live.available,
            status: node.live.status.as_str(),
            load: node.live.load,
            active_jobs: node.live.active_jobs,
            max_concurrent: node.max_concurrent(),
            latency_estimate_ms: node.live.avg_latency_ms,
            reputation_score: node.live.reputation,
            reputation_tier: score::tier(
                node.live.reputation,
                now_ms.saturating_sub(node.created_ms),
            ),
            reputation_model: "outcome-v2",
            completed_tasks_count: node.live.tasks_success,
            health_label: label,
            health_score: (health * 1000.0).round() / 1000.0,
            reachability_tier: "direct",
            relay_capable: false,
            input_modalities: modalities,
            models: node.models(),
            capabilities: &node.reg.capabilities,
            backend: node.reg.backend.as_deref(),
            cx_public_key: if dispatch {
                node.reg.cx_public_key.as_ref()
            } else {
                None
            },
            key_ready: node.reg.cx_public_key.is_some(),
            cip_conformance_level: node.reg.extra.get("cip_conformance_level"),
            pricing: node.reg.extra.get("pricing"),
            sdk_compatibility_version: node.reg.effective_sdk_compatibility_version(),
            implementation_name: node.reg.implementation_name.as_deref(),
            implementation_version: node.reg.implementation_version.as_deref(),
            last_seen: iso(node.live.last_seen_ms),
        }
    }
}
