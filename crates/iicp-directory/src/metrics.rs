//! Prometheus metrics of the directory, rendered in text format 0.0.4.

use iicp_server::prometheus::Histogram;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bucket bounds of the discovery latency histogram, in milliseconds.
const DISCOVERY_BUCKETS_MS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0];

pub struct Metrics {
    pub discovery_latency: Histogram,
    pub heartbeat_misses: AtomicU64,
    pub heartbeats: AtomicU64,
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    registrations: Mutex<BTreeMap<&'static str, u64>>,
    challenges: Mutex<BTreeMap<&'static str, u64>>,
}

/// Gauges computed at scrape time.
pub struct Gauges {
    pub nodes_active: usize,
    pub nodes_registered: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            discovery_latency: Histogram::new(DISCOVERY_BUCKETS_MS),
            heartbeat_misses: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            requests: Mutex::default(),
            registrations: Mutex::default(),
            challenges: Mutex::default(),
        }
    }
}

impl Metrics {
    pub fn request(&self, route: &'static str, status: u16) {
        *self.requests.lock().entry((route, status)).or_default() += 1;
    }

    pub fn registration(&self, outcome: &'static str) {
        *self.registrations.lock().entry(outcome).or_default() += 1;
    }

    pub fn challenge(&self, result: &'static str) {
        *self.challenges.lock().entry(result).or_default() += 1;
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP iicp_nodes_active Nodes available and heard from within the TTL.\n\
             # TYPE iicp_nodes_active gauge\niicp_nodes_active {}",
            gauges.nodes_active
        );
        let _ = writeln!(
            out,
            "# HELP iicp_nodes_registered Nodes registered, active or dormant.\n\
             # TYPE iicp_nodes_registered gauge\niicp_nodes_registered {}",
            gauges.nodes_registered
        );
        self.discovery_latency.render(
            "iicp_discovery_latency_ms",
            "Time to answer GET /discover.",
            "",
            &mut out,
        );
        let _ = writeln!(
            out,
            "# HELP iicp_heartbeat_misses_total Nodes that went silent past the TTL.\n\
             # TYPE iicp_heartbeat_misses_total counter\niicp_heartbeat_misses_total {}",
            self.heartbeat_misses.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP iicp_heartbeats_total Heartbeats accepted.\n\
             # TYPE iicp_heartbeats_total counter\niicp_heartbeats_total {}",
            self.heartbeats.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP iicp_http_requests_total HTTP requests by route and status.\n\
             # TYPE iicp_http_requests_total counter"
        );
        for ((route, status), n) in self.requests.lock().iter() {
            let _ = writeln!(
                out,
                "iicp_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP iicp_registrations_total REGISTER outcomes.\n\
             # TYPE iicp_registrations_total counter"
        );
        for (outcome, n) in self.registrations.lock().iter() {
            let _ = writeln!(out, "iicp_registrations_total{{outcome=\"{outcome}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP iicp_liveness_challenges_total Heartbeat challenge responses by result.\n\
             # TYPE iicp_liveness_challenges_total counter"
        );
        for (result, n) in self.challenges.lock().iter() {
            let _ = writeln!(
                out,
                "iicp_liveness_challenges_total{{result=\"{result}\"}} {n}"
            );
        }
        out
    }
}
