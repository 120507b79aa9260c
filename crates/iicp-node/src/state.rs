//! Shared state of a running node.

use crate::admission::auth::Credentials;
use crate::admission::gate::Gate;
use crate::admission::replay::SeenSet;
use crate::backend::Backend;
use crate::catalog::Catalog;
use crate::config::NodeConfig;
use crate::metrics::NodeMetrics;
use iicp_server::clock::Clock;
use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use uuid::Uuid;

/// Duplicate `task_id`s and nonces are refused for this long (digest §5.5).
pub const REPLAY_WINDOW_MS: u64 = 5 * 60 * 1000;
const REPLAY_CAPACITY: usize = 1 << 20;

/// Task outcomes not yet reported to the directory.
#[derive(Default)]
pub struct Outcomes {
    pub success: AtomicU64,
    pub failed: AtomicU64,
    pub timeout: AtomicU64,
    pub latency_ms_sum: AtomicU64,
}

impl Outcomes {
    /// Takes the counts accumulated so far, leaving zeros.
    pub fn take(&self) -> (u64, u64, u64, u64) {
        (
            self.success.swap(0, Ordering::Relaxed),
            self.failed.swap(0, Ordering::Relaxed),
            self.timeout.swap(0, Ordering::Relaxed),
            self.latency_ms_sum.swap(0, Ordering::Relaxed),
        )
    }
}

pub struct NodeState {
    pub config: NodeConfig,
    pub public_url: String,
    pub backend: Backend,
    pub catalog: RwLock<Arc<Catalog>>,
    pub gate: Arc<Gate>,
    pub seen_tasks: SeenSet<Uuid>,
    pub seen_nonces: SeenSet<String>,
    pub creds: Credentials,
    pub metrics: NodeMetrics,
    pub clock: Arc<dyn Clock>,
    pub outcomes: Outcomes,
    /// Smoothed task duration (f64 bits), for `retry_after_ms`.
    latency_ewma_ms: AtomicU64,
    /// False while the backend cannot be reached.
    pub backend_up: AtomicBool,
    pub cx: Option<RwLock<crate::keys::CxKeys>>,
    /// Where the node stands with its directory, for whoever started it.
    pub registration: tokio::sync::watch::Sender<crate::lifecycle::Registration>,
}

impl NodeState {
    pub fn new(
        config: NodeConfig,
        public_url: String,
        backend: Backend,
        catalog: Catalog,
        clock: Arc<dyn Clock>,
        cx: Option<crate::keys::CxKeys>,
    ) -> NodeState {
        let slots = config.max_concurrent as usize;
        let creds = Credentials::default();
        *creds.node_token.write() = config.local_token.clone();
        NodeState {
            gate: Gate::new(slots, slots.max(1) * 2),
            seen_tasks: SeenSet::new(REPLAY_WINDOW_MS, REPLAY_CAPACITY),
            seen_nonces: SeenSet::new(REPLAY_WINDOW_MS, REPLAY_CAPACITY),
            config,
            public_url,
            backend,
            catalog: RwLock::new(Arc::new(catalog)),
            creds,
            metrics: NodeMetrics::default(),
            clock,
            outcomes: Outcomes::default(),
            latency_ewma_ms: AtomicU64::new(1000f64.to_bits()),
            backend_up: AtomicBool::new(true),
            cx: cx.map(RwLock::new),
            registration: tokio::sync::watch::Sender::new(crate::lifecycle::Registration::Pending),
        }
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().clone()
    }

    pub fn node_id(&self) -> Option<String> {
        self.creds.node_id.read().clone()
    }

    pub fn record_latency(&self, ms: f64) {
        let old = f64::from_bits(self.latency_ewma_ms.load(Ordering::Relaxed));
        let new = 0.8 * old + 0.2 * ms;
        self.latency_ewma_ms.store(new.to_bits(), Ordering::Relaxed);
    }

    /// A hint for refused callers: about one task's duration, within [100 ms, 30 s].
    pub fn retry_after_ms(&self) -> u64 {
        (f64::from_bits(self.latency_ewma_ms.load(Ordering::Relaxed)) as u64).clamp(100, 30_000)
    }

    /// Slots offered now under the availability windows.
    pub fn offered_capacity(&self) -> usize {
        let now = self.clock.now_ms();
        let minutes = ((now / 60_000) % (24 * 60)) as u16;
        let share = iicp_proto::node::TimeOfDay::from_minutes(minutes)
            .map(|t| iicp_proto::node::availability_share(&self.config.availability, t))
            .unwrap_or(1.0);
        (f64::from(self.config.max_concurrent) * share).ceil() as usize
    }

    pub fn load(&self) -> f64 {
        let max = self.config.max_concurrent.max(1) as f64;
        (self.gate.in_use() as f64 / max).min(1.0)
    }

    pub fn available(&self) -> bool {
        self.backend_up.load(Ordering::Relaxed) && self.gate.capacity() > 0
    }
    /// Rotates the CX key when due; true when the advertisement changed.
    pub fn rotate_cx(&self) -> bool {
        let Some(keys) = &self.cx else {
            return false;
        };
        let now = self.clock.now_s();
        match keys.write().rotate_if_due(&self.config.state_dir, now) {
            Ok(rotated) => rotated,
            Err(e) => {
                tracing::error!(error = %e, "could not store the rotated CX key");
                false
            }
        }
    }

    /// Re-reads the backend's models; true when the advertised capabilities changed.
    pub async fn refresh_models(&self) -> bool {
        match self.backend.models().await {
            Ok(models) => {
                self.backend_up
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                let fresh = crate::catalog::build(&models, &self.config.models);
                let changed = *self.catalog() != fresh;
                if changed {
                    tracing::info!(
                        models = fresh.all_models().len(),
                        "backend model set changed"
                    );
                    *self.catalog.write() = Arc::new(fresh);
                }
                changed
            }
            Err(e) => {
                tracing::warn!(error = %e, "backend unreachable");
                self.backend_up
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                false
            }
        }
    }
}
