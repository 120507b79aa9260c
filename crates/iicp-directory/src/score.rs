//! Scoring, reputation and health: pure functions of a node and the time (digest §5.2, §5.6).
//!
//! The spec names the score's terms but does not define them; our readings:
//! - `availability_factor`: 1.0 with no declared windows or inside one, 0.5 outside (the one
//!   number the spec gives).
//! - `normalized_load`: the heartbeat's `load` (0–1).
//! - `capacity_ratio`: free slots, `1 − active_jobs / max_concurrent`.
//! - `region_match`: 1 when the node's region equals the requested one, 0 when it differs, and 1
//!   when no region is requested (no preference excludes nobody).
//! - `price_score` (model queries): 1.0 for the cheapest `credit_cost_multiplier` among the
//!   candidates, scaled inversely for the rest; 1.0 when nobody declares a price.

use crate::model::Node;
use iicp_proto::node::{AvailabilityWindow, TimeOfDay};
use iicp_proto::task::Qos;
use std::collections::VecDeque;

pub const INITIAL_REPUTATION: f64 = 0.5;
/// Nodes scoring below this are not returned (DIS-4).
pub const MIN_SCORE: f64 = 0.1;
const HOUR_MS: u64 = 3_600_000;

/// What a discover request asks that changes the score.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScoreQuery<'a> {
    pub region: Option<&'a str>,
    pub model: Option<&'a str>,
}

/// UTC time of day of a Unix time in milliseconds.
pub fn time_of_day(now_ms: u64) -> TimeOfDay {
    let minutes = ((now_ms / 60_000) % (24 * 60)) as u16;
    TimeOfDay::from_minutes(minutes).unwrap_or(TimeOfDay::from_minutes(0).expect("0 is valid"))
}

pub fn availability_factor(windows: &[AvailabilityWindow], now: TimeOfDay) -> f64 {
    if windows.is_empty() || windows.iter().any(|w| w.contains(now)) {
        1.0
    } else {
        0.5
    }
}

/// The node's `credit_cost_multiplier`, when it declares pricing.
pub fn price_multiplier(node: &Node) -> Option<f64> {
    node.reg
        .extra
        .get("pricing")?
        .get("credit_cost_multiplier")?
        .as_f64()
        .filter(|m| *m > 0.0)
}

/// The canonical directory score. `cheapest` is the lowest price multiplier among the
/// candidates (model queries only).
pub fn score(node: &Node, q: &ScoreQuery<'_>, now_ms: u64, cheapest: Option<f64>) -> f64 {
    let avail = availability_factor(&node.reg.availability, time_of_day(now_ms));
    let load = node.live.load.clamp(0.0, 1.0);
    let max = f64::from(node.max_concurrent().max(1));
    let capacity = (1.0 - node.live.active_jobs as f64 / max).clamp(0.0, 1.0);
    let region = match q.region {
        Some(r) if r != node.reg.region => 0.0,
        _ => 1.0,
    };
    let rep = node.live.reputation.clamp(0.0, 1.0);
    let s = match q.model {
        None => 0.35 * avail + 0.28 * (1.0 - load) + 0.18 * capacity + 0.09 * region + 0.10 * rep,
        Some(model) => {
            let model_match = if node.models().contains(&model) {
                1.0
            } else {
                0.0
            };
            let price = match (cheapest, price_multiplier(node)) {
                (Some(min), Some(own)) => (min / own).clamp(0.0, 1.0),
                _ => 1.0,
            };
            0.25 * avail
                + 0.20 * (1.0 - load)
                + 0.15 * capacity
                + 0.10 * region
                + 0.10 * rep
                + 0.10 * model_match
                + 0.10 * price
        }
    };
    s.clamp(0.0, 1.0)
}

/// Probation (digest §2.5): interactive needs 100 completed tasks, realtime 1000 and reputation
/// 0.8. Counts are the directory's own tally of heartbeat outcomes, not self-reports.
pub fn passes_probation(node: &Node, qos: Option<Qos>) -> bool {
    match qos {
        Some(Qos::Interactive) => node.live.tasks_success >= 100,
        Some(Qos::Realtime) => node.live.tasks_success >= 1000 && node.live.reputation >= 0.8,
        _ => true,
    }
}

/// Task outcomes reported in one heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcomes {
    pub success: u64,
    pub failed: u64,
    pub timeout: u64,
}

/// Applies one heartbeat's outcomes (outcome-v2): +0.01 per success, −0.05 per failure, −0.10
/// per timeout; the positive part capped at +0.10 per heartbeat and +0.20 per rolling hour;
/// negatives uncapped; the result clamped to [0, 1]. Time alone never changes the score.
pub fn apply_outcomes(
    reputation: f64,
    gains: &mut VecDeque<(u64, f64)>,
    o: Outcomes,
    now_ms: u64,
) -> f64 {
    while gains
        .front()
        .is_some_and(|(t, _)| now_ms.saturating_sub(*t) >= HOUR_MS)
    {
        gains.pop_front();
    }
    let gained: f64 = gains.iter().map(|(_, g)| g).sum();
    let positive = (o.success as f64 * 0.01)
        .min(0.10)
        .min((0.20 - gained).max(0.0));
    if positive > 0.0 {
        gains.push_back((now_ms, positive));
    }
    let negative = o.failed as f64 * 0.05 + o.timeout as f64 * 0.10;
    (reputation + positive - negative).clamp(0.0, 1.0)
}

/// `reputation_tier`: platinum needs 720 h of identity age, else it is gold.
pub fn tier(reputation: f64, identity_age_ms: u64) -> &'static str {
    if reputation >= 0.85 && identity_age_ms >= 720 * HOUR_MS {
        "platinum"
    } else if reputation >= 0.65 {
        "gold"
    } else if reputation >= 0.40 {
        "silver"
    } else {
        "bronze"
    }
}

/// Liveness-only health in [0, 1]: reachability 0.70 + latency 0.30, latency scored 1 at
/// ≤50 ms falling linearly to 0 at ≥500 ms (unknown latency scores 0.5).
pub fn health(node: &Node, now_ms: u64, ttl_ms: u64) -> (f64, &'static str) {
    let fresh = now_ms.saturating_sub(node.live.last_seen_ms) <= ttl_ms;
    if !fresh {
        return (0.0, "offline");
    }
    let latency = match node.live.avg_latency_ms {
        Some(ms) => (1.0 - (ms - 50.0) / 450.0).clamp(0.0, 1.0),
        None => 0.5,
    };
    let h = 0.70 + 0.30 * latency;
    let label = if h >= 0.85 {
        "healthy"
    } else if h >= 0.65 {
        "degraded"
    } else if h >= 0.40 {
        "impaired"
    } else {
        "critical"
    };
    (h, label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_v2_deltas_and_caps() {
        let mut gains = VecDeque::new();
        let t0 = 10 * HOUR_MS;
        let r = apply_outcomes(
            0.5,
            &mut gains,
            Outcomes {
                success: 3,
                ..Default::default()
            },
            t0,
        );
        assert!((r - 0.53).abs() < 1e-9);
        // one heartbeat's positive part caps at +0.10
        let r = apply_outcomes(
            r,
            &mut gains,
            Outcomes {
                success: 50,
                ..Default::default()
            },
            t0,
        );
        assert!((r - 0.63).abs() < 1e-9);
        // the hour caps total gain at +0.20
        let r = apply_outcomes(
            r,
            &mut gains,
            Outcomes {
                success: 50,
                ..Default::default()
            },
            t0 + 1,
        );
        assert!((r - 0.70).abs() < 1e-9);
        let r2 = apply_outcomes(
            r,
            &mut gains,
            Outcomes {
                success: 5,
                ..Default::default()
            },
            t0 + 2,
        );
        assert!((r2 - 0.70).abs() < 1e-9);
        // an hour later gains are allowed again
        let r3 = apply_outcomes(
            r2,
            &mut gains,
            Outcomes {
                success: 5,
                ..Default::default()
            },
            t0 + HOUR_MS,
        );
        assert!((r3 - 0.75).abs() < 1e-9);
        // negatives are not capped; clamped at 0
        let r4 = apply_outcomes(
            r3,
            &mut gains,
            Outcomes {
                failed: 2,
                timeout: 1,
                ..Default::default()
            },
            t0 + HOUR_MS,
        );
        assert!((r4 - 0.55).abs() < 1e-9);
        assert_eq!(
            apply_outcomes(
                0.1,
                &mut gains,
                Outcomes {
                    timeout: 5,
                    ..Default::default()
                },
                t0
            ),
            0.0
        );
    }

    #[test]
    fn tiers_follow_thresholds_and_identity_age() {
        assert_eq!(tier(0.2, 0), "bronze");
        assert_eq!(tier(0.4, 0), "silver");
        assert_eq!(tier(0.65, 0), "gold");
        assert_eq!(tier(0.9, 0), "gold");
        assert_eq!(tier(0.9, 720 * HOUR_MS), "platinum");
    }

    #[test]
    fn availability_is_half_outside_declared_windows() {
        let w = AvailabilityWindow {
            start: TimeOfDay::parse("08:00").unwrap(),
            end: TimeOfDay::parse("10:00").unwrap(),
            share: 1.0,
        };
        assert_eq!(
            availability_factor(&[], TimeOfDay::parse("03:00").unwrap()),
            1.0
        );
        assert_eq!(
            availability_factor(&[w], TimeOfDay::parse("09:00").unwrap()),
            1.0
        );
        assert_eq!(
            availability_factor(&[w], TimeOfDay::parse("11:00").unwrap()),
            0.5
        );
        assert_eq!(time_of_day(9 * 3_600_000 + 60_000).to_string(), "09:01");
    }
}
