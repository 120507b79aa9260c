//! Prometheus text format 0.0.4: a lock-free histogram with fixed buckets.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A histogram of millisecond values with fixed upper bounds; observations are microseconds so
/// the sum keeps sub-millisecond precision.
pub struct Histogram {
    bounds_ms: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn new(bounds_ms: &'static [f64]) -> Self {
        Histogram {
            bounds_ms,
            buckets: bounds_ms.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe_us(&self, us: u64) {
        let ms = us as f64 / 1000.0;
        // Cumulative buckets: one increment per bound the value fits under.
        for (bound, bucket) in self.bounds_ms.iter().zip(&self.buckets) {
            if ms <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes HELP/TYPE (when `help` is not empty) and the series; `labels` is either empty or
    /// `key="value",…` without braces.
    pub fn render(&self, name: &str, help: &str, labels: &str, out: &mut String) {
        if !help.is_empty() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        }
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, bucket) in self.bounds_ms.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum_ms = self.sum_us.load(Ordering::Relaxed) as f64 / 1000.0;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {sum_ms}\n{name}_count{braces} {count}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_labelled() {
        let h = Histogram::new(&[1.0, 10.0]);
        h.observe_us(500);
        h.observe_us(5_000);
        h.observe_us(50_000);
        let mut out = String::new();
        h.render("x_ms", "help", "intent=\"a\"", &mut out);
        assert!(
            out.contains("x_ms_bucket{intent=\"a\",le=\"1\"} 1"),
            "{out}"
        );
        assert!(out.contains("x_ms_bucket{intent=\"a\",le=\"10\"} 2"));
        assert!(out.contains("x_ms_bucket{intent=\"a\",le=\"+Inf\"} 3"));
        assert!(out.contains("x_ms_sum{intent=\"a\"} 55.5"));
        assert!(out.contains("x_ms_count{intent=\"a\"} 3"));
    }
}
