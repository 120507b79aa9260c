//! Shared state of a running directory, and the few operations several routes need.

use crate::admission::liveness::Liveness;
use crate::admission::ratelimit::RateLimiter;
use crate::config::DirectoryConfig;
use crate::credentials::{self, TokenCache};
use crate::metrics::{Gauges, Metrics};
use crate::registry::Registry;
use crate::store::Write;
use crate::writer::Writer;
use ed25519_dalek::SigningKey;
use iicp_server::clock::Clock;
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use uuid::Uuid;

pub struct AppState {
    pub config: DirectoryConfig,
    pub clock: Arc<dyn Clock>,
    pub registry: RwLock<Registry>,
    pub tokens: TokenCache,
    pub writer: Writer,
    /// Nodes whose live state changed since the last flush.
    dirty: Mutex<HashSet<Uuid>>,
    pub signing_key: SigningKey,
    pub liveness: Liveness,
    pub register_limiter: RateLimiter,
    pub metrics: Metrics,
    pub started_ms: u64,
    node_locks: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
}

pub type Shared = Arc<AppState>;

impl AppState {
    pub fn new(
        config: DirectoryConfig,
        clock: Arc<dyn Clock>,
        registry: Registry,
        writer: Writer,
        signing_key: SigningKey,
    ) -> AppState {
        let liveness = Liveness::new(config.dev, &config.dev_resolve, config.liveness_timeout);
        let register_limiter = RateLimiter::new(
            config.register_rate_limit,
            config.register_rate_window.as_millis() as u64,
        );
        let started_ms = clock.now_ms();
        AppState {
            config,
            clock,
            registry: RwLock::new(registry),
            tokens: TokenCache::default(),
            writer,
            dirty: Mutex::new(HashSet::new()),
            signing_key,
            liveness,
            register_limiter,
            metrics: Metrics::default(),
            started_ms,
            node_locks: Mutex::new(HashMap::new()),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The issuer named in ACKs, tickets and consumer tokens (set at start).
    pub fn issuer(&self) -> &str {
        self.config.issuer.as_deref().unwrap_or_default()
    }

    pub fn ttl_ms(&self) -> u64 {
        self.config.node_ttl.as_millis() as u64
    }

    /// The caller's address: the TCP peer, or what a trusted proxy says it forwarded.
    pub fn source_ip(&self, headers: &axum::http::HeaderMap, peer: SocketAddr) -> IpAddr {
        if !self.config.trusted_proxies.contains(&peer.ip()) {
            return peer.ip();
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        header("cf-connecting-ip")
            .and_then(|v| v.trim().parse().ok())
            .or_else(|| {
                header("x-forwarded-for")
                    .and_then(|v| v.split(',').next())
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(peer.ip())
    }

    /// Which node a bearer token belongs to. The cache answers in microseconds; without a cache
    /// entry the token is checked with bcrypt against `hint` (the node id the request names).
    pub async fn authenticate(self: &Arc<Self>, token: &str, hint: Option<Uuid>) -> Option<Uuid> {
        let d = credentials::digest(token);
        if let Some((node, generation)) = self.tokens.lookup(&d) {
            let current = self
                .registry
                .read()
                .get(&node)
                .map(|n| n.creds.token_generation);
            if current == Some(generation) && hint.is_none_or(|h| h == node) {
                return Some(node);
            }
            self.tokens.forget(&d);
        }
        let node = hint?;
        let creds = self.registry.read().get(&node)?.creds.clone();
        let token = token.to_owned();
        let this = self.clone();
        tokio::task::spawn_blocking(move || credentials::verify(&this.tokens, node, &creds, &token))
            .await
            .unwrap_or(false)
            .then_some(node)
    }

    /// Serialises registrations that touch the same node id.
    pub async fn lock_node(&self, id: Uuid) -> NodeGuard<'_> {
        let lock = self.node_locks.lock().entry(id).or_default().clone();
        let guard = lock.clone().lock_owned().await;
        NodeGuard {
            state: self,
            id,
            lock,
            _guard: guard,
        }
    }

    pub fn mark_dirty(&self, id: Uuid) {
        self.dirty.lock().insert(id);
    }

    /// Writes buffered live state of changed nodes to the store.
    pub async fn flush(&self) {
        let ids: Vec<Uuid> = std::mem::take(&mut *self.dirty.lock())
            .into_iter()
            .collect();
        if ids.is_empty() {
            return;
        }
        let writes: Vec<Write> = {
            let registry = self.registry.read();
            ids.iter()
                .filter_map(|id| {
                    registry
                        .get(id)
                        .map(|n| Write::Live(*id, Box::new(n.live.clone())))
                })
                .collect()
        };
        if let Err(e) = self.writer.commit(writes).await {
            tracing::error!(error = %e, "flushing heartbeat state failed; will retry");
            self.dirty.lock().extend(ids);
        }
    }

    /// Marks nodes silent past the TTL dormant. Returns how many went dormant.
    pub fn sweep(&self) -> usize {
        let now = self.now_ms();
        let ttl = self.ttl_ms();
        let mut newly_dormant = Vec::new();
        for node in self.registry.write().iter_mut() {
            if node.live.status == crate::model::NodeStatus::Active
                && now.saturating_sub(node.live.last_seen_ms) > ttl
            {
                node.live.status = crate::model::NodeStatus::Dormant;
                node.live.dormant_since_ms = Some(now);
                newly_dormant.push(node.id);
            }
        }
        let n = newly_dormant.len();
        if n > 0 {
            self.metrics
                .heartbeat_misses
                .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            self.dirty.lock().extend(newly_dormant);
        }
        self.register_limiter.prune(now);
        n
    }

    pub fn gauges(&self) -> Gauges {
        let now = self.now_ms();
        let ttl = self.ttl_ms();
        let registry = self.registry.read();
        Gauges {
            nodes_active: registry.iter().filter(|n| is_fresh(n, now, ttl)).count(),
            nodes_registered: registry.len(),
        }
    }
}

/// Heard from within the TTL and available.
pub fn is_fresh(node: &crate::model::Node, now_ms: u64, ttl_ms: u64) -> bool {
    node.live.available && now_ms.saturating_sub(node.live.last_seen_ms) <= ttl_ms
}

/// Held while a registration for one node id is decided and written.
pub struct NodeGuard<'a> {
    state: &'a AppState,
    id: Uuid,
    lock: Arc<tokio::sync::Mutex<()>>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for NodeGuard<'_> {
    fn drop(&mut self) {
        let mut locks = self.state.node_locks.lock();
        // Three references: the map's, ours and our guard's. Nobody else waits, so the entry can go.
        if Arc::strong_count(&self.lock) <= 3 {
            locks.remove(&self.id);
        }
    }
}
