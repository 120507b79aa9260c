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

    /// A call to `key` starts; `None` when the breaker refuses it (the caller picks another).
    /// An open breaker whose time is up lets exactly one probe through (half-open). The call's
    /// outcome is reported through the returned guard; a guard dropped without one (the call
    /// was cancelled) frees its slot and, if it was the probe, lets another probe go.
    pub fn begin(&self, key: &str) -> Option<InFlight<'_>> {
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
            BreakerState::Open { .. } | BreakerState::HalfOpen { probing: true } => return None,
            BreakerState::HalfOpen { probing: false } => {
                h.breaker = BreakerState::HalfOpen { probing: true };
            }
        }
        h.in_flight += 1;
        Some(InFlight {
            health: self,
            key: key.to_owned(),
            finished: false,
        })
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

/// A call in flight to one node; report how it ended with exactly one of its methods.
#[must_use = "report the call's outcome"]
pub struct InFlight<'a> {
    health: &'a Health,
    key: String,
    finished: bool,
}

impl InFlight<'_> {
    /// The call succeeded after `latency`: the breaker closes.
    pub fn success(mut self, latency: Duration) {
        self.finished = true;
        self.health.finish(&self.key, |h, now| {
            h.failures = 0;
            h.breaker = BreakerState::Closed;
            observe(h, now, latency.as_secs_f64() * 1000.0);
        });
    }

    /// Says nothing about the node's health (it was busy, or refused the request itself): not
    /// a failure and no latency sample. A half-open breaker waits for the next probe.
    pub fn neutral(mut self) {
        self.finished = true;
        self.health.finish(&self.key, release_probe);
    }

    /// The call failed (unreachable, timeout, server error). The fifth consecutive failure, or
    /// a failed probe, opens the breaker for 30 s ± 10 %.
    pub fn failure(mut self, rng: &mut Rng) {
        self.finished = true;
        let open_for = rng.jitter(OPEN_FOR, 0.1);
        self.health.finish(&self.key, |h, now| {
            h.failures += 1;
            let reopen = matches!(h.breaker, BreakerState::HalfOpen { .. });
            if reopen || h.failures >= FAILURE_THRESHOLD {
                h.breaker = BreakerState::Open {
                    until: now + open_for,
                };
            }
        });
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.health.finish(&self.key, release_probe);
        }
    }
}

fn release_probe(h: &mut NodeHealth, _: Instant) {
    if let BreakerState::HalfOpen { .. } = h.breaker {
        h.breaker = BreakerState::HalfOpen { probing: false };
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

    fn fail(h: &Health, key: &str, rng: &mut Rng) {
        h.begin(key)
            .expect("the breaker lets the call through")
            .failure(rng);
    }

    /// Opens `key`'s breaker with five failures.
    fn open(h: &Health, key: &str, rng: &mut Rng) {
        for _ in 0..FAILURE_THRESHOLD {
            fail(h, key, rng);
        }
        assert!(h.begin(key).is_none());
    }

    /// Advances paused time in 100 ms steps until `key` is callable again; returns how long
    /// that took.
    async fn time_until_callable(h: &Health, key: &str) -> Duration {
        let from = Instant::now();
        while !h.standing(key, None).callable {
            tokio::time::advance(Duration::from_millis(100)).await;
            assert!(
                from.elapsed() < Duration::from_secs(60),
                "never half-opened"
            );
        }
        from.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn four_failures_keep_the_breaker_closed_and_the_fifth_opens_it() {
        let h = Health::default();
        let mut rng = Rng::seeded(7);
        for n in 1..FAILURE_THRESHOLD {
            fail(&h, "n", &mut rng);
            assert!(
                h.standing("n", None).callable,
                "{n} failures keep it closed"
            );
        }
        fail(&h, "n", &mut rng);
        assert!(!h.standing("n", None).callable, "the fifth opens it");
        assert!(h.begin("n").is_none());
        // Other nodes are not affected.
        assert!(h.begin("other").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count_of_consecutive_failures() {
        let h = Health::default();
        let mut rng = Rng::seeded(7);
        for _ in 0..4 {
            fail(&h, "n", &mut rng);
        }
        h.begin("n").unwrap().success(Duration::from_millis(5));
        for _ in 0..4 {
            fail(&h, "n", &mut rng);
        }
        assert!(
            h.standing("n", None).callable,
            "4 + success + 4 is not 5 in a row"
        );
        fail(&h, "n", &mut rng);
        assert!(!h.standing("n", None).callable);
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_stays_open_30_s_give_or_take_10_percent() {
        let mut seen = Vec::new();
        for seed in 0..16 {
            let h = Health::default();
            let mut rng = Rng::seeded(seed);
            open(&h, "n", &mut rng);
            tokio::time::advance(Duration::from_millis(26_900)).await;
            assert!(
                !h.standing("n", None).callable,
                "seed {seed}: open at 26.9 s"
            );
            assert!(h.begin("n").is_none());
            let open_for = Duration::from_millis(26_900) + time_until_callable(&h, "n").await;
            assert!(
                open_for >= Duration::from_secs(27) && open_for <= Duration::from_millis(33_100),
                "seed {seed}: open for {open_for:?}"
            );
            seen.push(open_for);
        }
        seen.sort();
        seen.dedup();
        assert!(seen.len() > 4, "the open time is jittered: {seen:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_exactly_one_probe_through_and_its_success_closes_the_breaker() {
        let h = Health::default();
        let mut rng = Rng::seeded(3);
        open(&h, "n", &mut rng);
        tokio::time::advance(Duration::from_millis(33_100)).await;
        assert!(h.standing("n", None).callable);
        let probe = h.begin("n").expect("one probe");
        assert!(h.begin("n").is_none(), "only one probe at a time");
        assert!(
            !h.standing("n", None).callable,
            "not callable while the probe is out"
        );
        probe.success(Duration::from_millis(10));
        let (a, b) = (h.begin("n"), h.begin("n"));
        assert!(
            a.is_some() && b.is_some(),
            "closed: calls go through freely"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_the_breaker_for_another_30_s() {
        let h = Health::default();
        let mut rng = Rng::seeded(4);
        open(&h, "n", &mut rng);
        tokio::time::advance(Duration::from_millis(33_100)).await;
        h.begin("n").expect("probe").failure(&mut rng);
        assert!(h.begin("n").is_none(), "a failed probe reopens at once");
        tokio::time::advance(Duration::from_millis(26_900)).await;
        assert!(h.begin("n").is_none(), "open again for the full period");
        let rest = time_until_callable(&h, "n").await;
        assert!(rest <= Duration::from_millis(6_200), "{rest:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_or_cancelled_probe_lets_the_next_probe_go() {
        let h = Health::default();
        let mut rng = Rng::seeded(5);
        open(&h, "n", &mut rng);
        tokio::time::advance(Duration::from_millis(33_100)).await;
        h.begin("n").expect("probe").neutral();
        let probe = h.begin("n").expect("a 429 proves nothing: probe again");
        drop(probe); // the caller went away mid-call
        let probe = h
            .begin("n")
            .expect("a cancelled probe does not wedge the breaker");
        assert!(h.begin("n").is_none());
        probe.success(Duration::from_millis(1));
        assert!(h.standing("n", None).callable);
    }

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_jumps_up_and_decays_down_and_counts_in_flight() {
        let h = Health::default();
        h.begin("n").unwrap().success(Duration::from_millis(500));
        assert_eq!(h.standing("n", None).load_cost, 500.0);
        tokio::time::advance(Duration::from_secs(10)).await;
        h.begin("n").unwrap().success(Duration::from_millis(10));
        let cost = h.standing("n", None).load_cost;
        assert!(cost < 200.0 && cost > 10.0, "{cost}");
        let call = h.begin("n").unwrap();
        assert!((h.standing("n", None).load_cost - 2.0 * cost).abs() < 1e-9);
        drop(call);
        assert!(
            (h.standing("n", None).load_cost - cost).abs() < 1e-9,
            "released"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_never_called_node_starts_from_the_directory_estimate() {
        let h = Health::default();
        assert_eq!(h.standing("a", Some(40.0)).load_cost, 40.0);
        assert_eq!(h.standing("b", None).load_cost, DEFAULT_LATENCY_MS);
    }
}
