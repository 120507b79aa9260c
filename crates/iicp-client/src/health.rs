//! What the client learns about nodes from its own calls: a circuit breaker and a peak-EWMA
//! latency per node, plus calls in flight. Time is tokio's, so tests run with paused time.

use crate::rng::Rng;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// Consecutive failures that open a breaker.
pub const FAILURE_THRESHOLD: u32 = 5;
/// How long an open breaker stays open (jittered ±10 %).
pub const OPEN_FOR: Duration = Duration::from_secs(30);
/// Latency memory: an observation's weight halves in about 7 s.
const DECAY: Duration = Duration::from_secs(10);
/// Assumed latency before any observation.
const DEFAULT_LATENCY_MS: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq)]
enum BreakerState {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe may go through; its outcome closes or reopens the breaker.
    HalfOpen {
        probing: bool,
    },
}

#[derive(Debug, Clone)]
struct NodeHealth {
    failures: u32,
    breaker: BreakerState,
    ewma_ms: f64,
    updated: Instant,
    in_flight: u32,
}

impl NodeHealth {
    fn new(now: Instant, prior_ms: Option<f64>) -> Self {
        NodeHealth {
            failures: 0,
            breaker: BreakerState::Closed,
            ewma_ms: prior_ms.unwrap_or(DEFAULT_LATENCY_MS),
            updated: now,
            in_flight: 0,
        }
    }
}

/// Health of every node this client has called.
#[derive(Default)]
pub struct Health {
    nodes: Mutex<HashMap<String, NodeHealth>>,
}

/// One node's standing at selection time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    /// False while the breaker is open (or its half-open probe is out).
    pub callable: bool,
    /// Peak-EWMA latency × (calls in flight + 1), in milliseconds.
    pub load_cost: f64,
}

impl Health {
    /// Standing of `key` now; `prior_ms` seeds the latency of a node never called.
    pub fn standing(&self, key: &str, prior_ms: Option<f64>) -> Standing {
        let now = Instant::now();
        let mut nodes = self.nodes.lock();
        let h = nodes
            .entry(key.to_owned())
            .or_insert_with(|| NodeHealth::new(now, prior_ms));
        let callable = match h.breaker {
            BreakerState::Closed => true,
            BreakerState::Open { until } => now >= until,
            BreakerState::HalfOpen { probing } => !probing,
        };
        Standing {
            callable,
            load_cost: h.ewma_ms.max(0.1) * f64::from(h.in_flight + 1),
        }
    }

    /// A call to `key` starts; false when the breaker refuses it (the caller picks another).
    pub fn begin(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut nodes = self.nodes.lock();
        let h = nodes
            .entry(key.to_owned())
            .or_insert_with(|| NodeHealth::new(now, None));
        match h.breaker {
            BreakerState::Closed => {}
            BreakerState::Open { until } if now >= until => {
                h.breaker = BreakerState::HalfOpen { probing: true };
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { probing: true } => return false,
            BreakerState::HalfOpen { probing: false } => {
                h.breaker = BreakerState::HalfOpen { probing: true };
            }
        }
        h.in_flight += 1;
        true
    }

    /// The call succeeded after `latency`.
    pub fn success(&self, key: &str, latency: Duration) {
        self.finish(key, |h, now| {
            h.failures = 0;
            h.breaker = BreakerState::Closed;
            observe(h, now, latency.as_secs_f64() * 1000.0);
        });
    }

    /// The node answered but was busy (429): not a failure, and no latency sample.
    pub fn busy(&self, key: &str) {
        self.finish(key, |h, _| {
            if let BreakerState::HalfOpen { .. } = h.breaker {
                h.breaker = BreakerState::HalfOpen { probing: false };
            }
        });
    }

    /// The call failed (unreachable, timeout, server error).
    pub fn failure(&self, key: &str, rng: &mut Rng) {
        let open_for = rng.jitter(OPEN_FOR, 0.1);
        self.finish(key, |h, now| {
            h.failures += 1;
            let reopen = matches!(h.breaker, BreakerState::HalfOpen { .. });
            if reopen || h.failures >= FAILURE_THRESHOLD {
                h.breaker = BreakerState::Open {
                    until: now + open_for,
                };
            }
        });
    }

    fn finish(&self, key: &str, f: impl FnOnce(&mut NodeHealth, Instant)) {
        let now = Instant::now();
        let mut nodes = self.nodes.lock();
        if let Some(h) = nodes.get_mut(key) {
            h.in_flight = h.in_flight.saturating_sub(1);
            f(h, now);
        }
    }
}

/// Peak EWMA: a slower sample takes over at once; faster ones pull the average down with a
/// weight that grows with the time since the last sample.
fn observe(h: &mut NodeHealth, now: Instant, rtt_ms: f64) {
    if rtt_ms > h.ewma_ms {
        h.ewma_ms = rtt_ms;
    } else {
        let elapsed = now.saturating_duration_since(h.updated).as_secs_f64();
        let w = (-elapsed / DECAY.as_secs_f64()).exp();
        h.ewma_ms = h.ewma_ms * w + rtt_ms * (1.0 - w);
    }
    h.updated = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_five_failures_and_half_opens_after_its_time() {
        let h = Health::default();
        let mut rng = Rng::seeded(7);
        for _ in 0..4 {
            assert!(h.begin("n"));
            h.failure("n", &mut rng);
        }
        assert!(
            h.standing("n", None).callable,
            "four failures keep it closed"
        );
        assert!(h.begin("n"));
        h.failure("n", &mut rng);
        assert!(!h.standing("n", None).callable);
        assert!(!h.begin("n"));

        tokio::time::advance(Duration::from_secs(26)).await;
        assert!(!h.begin("n"), "still open inside 30 s − 10 %");
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(h.begin("n"), "half-open: one probe");
        assert!(!h.begin("n"), "only one probe at a time");
        h.failure("n", &mut rng);
        assert!(!h.standing("n", None).callable, "a failed probe reopens");

        tokio::time::advance(Duration::from_secs(34)).await;
        assert!(h.begin("n"));
        h.success("n", Duration::from_millis(10));
        assert!(h.standing("n", None).callable);
        assert!(h.begin("n") && h.begin("n"), "closed again");
    }

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_jumps_up_and_decays_down_and_counts_in_flight() {
        let h = Health::default();
        assert!(h.begin("n"));
        h.success("n", Duration::from_millis(500));
        assert_eq!(h.standing("n", None).load_cost, 500.0);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(h.begin("n"));
        h.success("n", Duration::from_millis(10));
        let cost = h.standing("n", None).load_cost;
        assert!(cost < 200.0 && cost > 10.0, "{cost}");
        assert!(h.begin("n"));
        assert!((h.standing("n", None).load_cost - 2.0 * cost).abs() < 1e-9);
    }
}
