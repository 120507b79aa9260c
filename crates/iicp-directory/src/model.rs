//! What the directory knows about a node: its advertisement (as registered), its credentials
//! (hashes only, plus the HMAC key the directory must recompute with), and its live state.

use iicp_proto::control::RegisterRequest;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use uuid::Uuid;

/// Credentials as stored. The node token itself is never kept.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCredentials {
    /// bcrypt hash of the node token.
    pub token_hash: String,
    /// Bumped on every rotation; cached verifications of older tokens are void.
    pub token_generation: u64,
    /// Per-node HMAC key (hex). Kept recoverable: the directory recomputes challenge HMACs.
    pub hmac_key: String,
    /// SHA-256 (hex) of the proxy token: 320 random bits need no slow hash.
    pub proxy_token_hash: String,
}

impl std::fmt::Debug for StoredCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredentials")
            .field("token_generation", &self.token_generation)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    Active,
    Dormant,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Active => "active",
            NodeStatus::Dormant => "dormant",
        }
    }
}

/// State that heartbeats change. Written to the store in batches; losing the last second of
/// it in a crash loses no registration and no credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveState {
    pub last_seen_ms: u64,
    pub status: NodeStatus,
    pub dormant_since_ms: Option<u64>,
    pub available: bool,
    pub load: f64,
    pub active_jobs: u64,
    pub avg_latency_ms: Option<f64>,
    pub sla_p95_ms: Option<f64>,
    pub reputation: f64,
    pub tasks_success: u64,
    pub tasks_failed: u64,
    pub tasks_timeout: u64,
    pub last_batch_id: Option<String>,
    pub verified_liveness_ms: Option<u64>,
    pub observed_source_ip: String,
}

impl LiveState {
    pub fn fresh(now_ms: u64, observed_source_ip: String) -> Self {
        LiveState {
            last_seen_ms: now_ms,
            status: NodeStatus::Active,
            dormant_since_ms: None,
            available: true,
            load: 0.0,
            active_jobs: 0,
            avg_latency_ms: None,
            sla_p95_ms: None,
            reputation: crate::score::INITIAL_REPUTATION,
            tasks_success: 0,
            tasks_failed: 0,
            tasks_timeout: 0,
            last_batch_id: None,
            verified_liveness_ms: None,
            observed_source_ip,
        }
    }
}

/// A registered node.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: Uuid,
    /// The advertisement as accepted (`current_node_token` removed).
    pub reg: RegisterRequest,
    pub creds: StoredCredentials,
    /// First registration of this identity; reputation tiers look at identity age.
    pub created_ms: u64,
    /// Last (re-)registration.
    pub registered_ms: u64,
    pub live: LiveState,
    /// Runtime only: the challenge sent in the last PONG, consumed by the next heartbeat.
    pub challenge: Option<String>,
    /// Runtime only: positive reputation gains in the last hour (time, gain).
    pub gains: VecDeque<(u64, f64)>,
}

impl Node {
    /// True when the node holds a key whose change needs ownership proof on every refresh.
    pub fn is_secured(&self) -> bool {
        self.reg.cx_public_key.is_some() || self.reg.extra.contains_key("operator_delegation")
    }

    /// The intents this node serves, deduplicated.
    pub fn intents(&self) -> impl Iterator<Item = &iicp_proto::Intent> {
        let caps = &self.reg.capabilities;
        caps.iter()
            .enumerate()
            .filter(move |(i, c)| !caps[..*i].iter().any(|e| e.intent == c.intent))
            .map(|(_, c)| &c.intent)
    }

    /// Models across capabilities, deduplicated, in advertisement order.
    pub fn models(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for m in self.reg.capabilities.iter().flat_map(|c| c.models.iter()) {
            if !out.contains(&m.as_str()) {
                out.push(m);
            }
        }
        out
    }

    pub fn max_concurrent(&self) -> u32 {
        self.reg.limits.max_concurrent
    }
}
