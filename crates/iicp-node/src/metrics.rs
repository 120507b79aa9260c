//! The node's Prometheus metrics (digest §3.3): tasks by status/intent/qos, latency histogram
//! with the spec's buckets, tokens used, heartbeat failures, peers.

use iicp_server::prometheus::Histogram;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

/// The spec's buckets (METRICS-04 requires the 5000 one).
const TASK_BUCKETS_MS: &[f64] = &[
    10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 30000.0,
];

type Labels = (String, &'static str);

#[derive(Default)]
pub struct NodeMetrics {
    tasks: Mutex<BTreeMap<(&'static str, String, &'static str), u64>>,
    latency: Mutex<BTreeMap<Labels, Arc<Histogram>>>,
    tokens: Mutex<BTreeMap<String, u64>>,
    heartbeat_failures: Mutex<BTreeMap<&'static str, u64>>,
}

impl NodeMetrics {
    pub fn task(
        &self,
        status: &'static str,
        intent: &str,
        qos: &'static str,
        latency_us: u64,
        tokens: u64,
    ) {
        *self
            .tasks
            .lock()
            .entry((status, intent.to_owned(), qos))
            .or_default() += 1;
        let h = self
            .latency
            .lock()
            .entry((intent.to_owned(), qos))
            .or_insert_with(|| Arc::new(Histogram::new(TASK_BUCKETS_MS)))
            .clone();
        h.observe_us(latency_us);
        if tokens > 0 {
            *self.tokens.lock().entry(intent.to_owned()).or_default() += tokens;
        }
    }

    pub fn heartbeat_failure(&self, reason: &'static str) {
        *self.heartbeat_failures.lock().entry(reason).or_default() += 1;
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP iicp_tasks_total Tasks by outcome.\n# TYPE iicp_tasks_total counter"
        );
        for ((status, intent, qos), n) in self.tasks.lock().iter() {
            let _ = writeln!(
                out,
                "iicp_tasks_total{{status=\"{status}\",intent=\"{intent}\",qos=\"{qos}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP iicp_task_latency_ms Task latency from receipt to response.\n# TYPE iicp_task_latency_ms histogram"
        );
        for ((intent, qos), h) in self.latency.lock().iter() {
            h.render(
                "iicp_task_latency_ms",
                "",
                &format!("intent=\"{intent}\",qos=\"{qos}\""),
                &mut out,
            );
        }
        let _ = writeln!(
            out,
            "# HELP iicp_tokens_used_total Tokens used.\n# TYPE iicp_tokens_used_total counter"
        );
        for (intent, n) in self.tokens.lock().iter() {
            let _ = writeln!(out, "iicp_tokens_used_total{{intent=\"{intent}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP iicp_heartbeat_failures_total Heartbeats that failed, by reason.\n# TYPE iicp_heartbeat_failures_total counter"
        );
        for (reason, n) in self.heartbeat_failures.lock().iter() {
            let _ = writeln!(
                out,
                "iicp_heartbeat_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP iicp_peers_active Peers known from gossip.\n# TYPE iicp_peers_active gauge\niicp_peers_active 0"
        );
        out
    }
}
