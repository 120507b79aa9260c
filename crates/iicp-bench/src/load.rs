//! Closed-loop load: `C` workers, each on its own keep-alive connection, each sending its next
//! request as soon as the previous response is read. Latencies are kept per worker in
//! microseconds and merged at the end (exact percentiles, no bucketing).

use crate::client::{Conn, Target};
use crate::cpu::{self, Watched};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a benchmark sends and how it judges the answers.
pub trait Job: Send + Sync + 'static {
    /// The index of the next request, or `None` when the job is done.
    fn next_index(&self) -> Option<usize>;
    /// Writes request `index` (wire bytes) into `out`, which is empty.
    fn request(&self, index: usize, out: &mut Vec<u8>);
    /// Judges the response to request `index`; `Err` counts as an error.
    fn check(&self, index: usize, status: u16, body: &[u8]) -> Result<(), String>;
}

/// How long to run: until the job has no next request, or for `warmup + duration`, recording
/// only what starts after the warmup.
#[derive(Debug, Clone)]
pub struct Plan {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Option<Duration>,
    /// At most this many requests in all (warm-up included).
    pub requests: Option<u64>,
    /// Processes whose CPU time over the measured window is reported (the generator itself, as
    /// `gen`, and the whole machine's busy time, as `machine`, always are).
    pub watch: Vec<Watched>,
    /// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`).
    pub clk_tck: u32,
}

#[derive(Default)]
struct Recorder {
    latencies_us: Vec<u32>,
    errors: u64,
}

/// Error messages printed so far (only the first few are shown).
static SHOWN: AtomicU32 = AtomicU32::new(0);
const SHOW_AT_MOST: u32 = 5;
/// A worker that cannot connect this many times in a row (about 2 s) gives up.
const MAX_FAILED_CONNECTS: u32 = 40;

fn report(msg: &str) {
    let n = SHOWN.fetch_add(1, Ordering::Relaxed);
    if n < SHOW_AT_MOST {
        eprintln!("error: {msg}");
    } else if n == SHOW_AT_MOST {
        eprintln!("error: (further errors not shown)");
    }
}

/// The result of one benchmark.
#[derive(Debug, Clone)]
pub struct Summary {
    pub name: String,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// CPU seconds each watched process used over the measured window, by label (`None` when
    /// it could not be read).
    pub cpu: Vec<(String, Option<f64>)>,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Summary {
    pub fn rps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The one-line JSON summary. Each watched process adds `cpu_<label>_s` (CPU seconds over
    /// the measured window), `cpu_<label>_pct` (of one core) and `cpu_<label>_us_per_req`.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round3(self.seconds),
            "rps": (self.rps() * 10.0).round() / 10.0,
            "p50_ms": round3(self.p50_ms),
            "p90_ms": round3(self.p90_ms),
            "p99_ms": round3(self.p99_ms),
            "max_ms": round3(self.max_ms),
        });
        if let Some(obj) = v.as_object_mut() {
            self.cpu_fields(obj);
        }
        v
    }

    fn cpu_fields(&self, obj: &mut Map<String, Value>) {
        for (label, secs) in &self.cpu {
            let Some(secs) = *secs else {
                obj.insert(format!("cpu_{label}_s"), Value::Null);
                continue;
            };
            obj.insert(format!("cpu_{label}_s"), json!(round3(secs)));
            let pct = if self.seconds > 0.0 {
                (secs / self.seconds * 1000.0).round() / 10.0
            } else {
                0.0
            };
            obj.insert(format!("cpu_{label}_pct"), json!(pct));
            if self.requests > 0 {
                let us = secs * 1e6 / self.requests as f64;
                obj.insert(
                    format!("cpu_{label}_us_per_req"),
                    json!((us * 10.0).round() / 10.0),
                );
            }
        }
    }
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    f64::from(sorted_us[rank - 1]) / 1000.0
}

async fn connect(target: &Target) -> Result<Conn, String> {
    Conn::connect(target.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", target.addr))
}

/// Requests left to send, when the run is bounded by a count.
struct Budget(Option<AtomicU64>);

impl Budget {
    fn take(&self) -> bool {
        match &self.0 {
            None => true,
            Some(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

async fn worker<J: Job>(
    target: Arc<Target>,
    job: Arc<J>,
    measure_from: Instant,
    until: Option<Instant>,
    budget: Arc<Budget>,
) -> Recorder {
    let mut rec = Recorder::default();
    let mut buf = Vec::with_capacity(1024);
    let mut conn: Option<Conn> = None;
    let mut failed_connects = 0u32;
    loop {
        if until.is_some_and(|end| Instant::now() >= end) {
            break;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(&target).await {
                Ok(c) => {
                    failed_connects = 0;
                    conn.insert(c)
                }
                Err(e) => {
                    if Instant::now() >= measure_from {
                        rec.errors += 1;
                    }
                    report(&e);
                    failed_connects += 1;
                    if failed_connects >= MAX_FAILED_CONNECTS {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !budget.take() {
            break;
        }
        let Some(index) = job.next_index() else {
            break;
        };
        buf.clear();
        job.request(index, &mut buf);
        let started = Instant::now();
        let outcome = match c.send(&buf).await {
            Ok(response) => {
                let verdict = job.check(index, response.status, response.body);
                Ok(verdict)
            }
            Err(e) => Err(e),
        };
        let elapsed = started.elapsed();
        let recording = started >= measure_from;
        match outcome {
            Ok(verdict) => {
                if recording {
                    let us = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX);
                    rec.latencies_us.push(us);
                    if let Err(e) = verdict {
                        rec.errors += 1;
                        report(&e);
                    }
                }
                if c.is_closing() {
                    conn = None;
                }
            }
            Err(e) => {
                if recording {
                    rec.errors += 1;
                    // A request that got no answer still counts as sent.
                    rec.latencies_us
                        .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
                }
                report(&format!("request: {e}"));
                conn = None;
            }
        }
    }
    rec
}

/// Runs `job` with `plan` against `target` and summarises it as `name`.
pub async fn run<J: Job>(name: &str, target: Target, job: Arc<J>, plan: Plan) -> Summary {
    let target = Arc::new(target);
    let mut watched = vec![Watched::this_process(), Watched::machine()];
    watched.extend(plan.watch.iter().cloned());
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let until = plan.duration.map(|d| measure_from + d);
    let budget = Arc::new(Budget(plan.requests.map(AtomicU64::new)));
    let workers: Vec<_> = (0..plan.concurrency.max(1))
        .map(|_| {
            let w = worker(
                target.clone(),
                job.clone(),
                measure_from,
                until,
                budget.clone(),
            );
            tokio::spawn(w)
        })
        .collect();
    // The window opens when the warmup ends (workers run meanwhile: this task only sleeps).
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = cpu::sample(&watched);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in workers {
        match w.await {
            Ok(rec) => {
                latencies.extend_from_slice(&rec.latencies_us);
                errors += rec.errors;
            }
            Err(e) => {
                report(&format!("worker failed: {e}"));
                errors += 1;
            }
        }
    }
    let seconds = Instant::now()
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    let cpu_after = cpu::sample(&watched);
    let hz = f64::from(plan.clk_tck.max(1));
    let cpu = watched
        .iter()
        .zip(cpu_before.iter().zip(&cpu_after))
        .map(|(w, (b, a))| {
            let secs = match (b, a) {
                (Some(b), Some(a)) => Some(a.saturating_sub(*b) as f64 / hz),
                _ => None,
            };
            (w.label.clone(), secs)
        })
        .collect();
    latencies.sort_unstable();
    Summary {
        name: name.to_owned(),
        requests: latencies.len() as u64,
        errors,
        seconds,
        p50_ms: percentile_ms(&latencies, 0.50),
        p90_ms: percentile_ms(&latencies, 0.90),
        p99_ms: percentile_ms(&latencies, 0.99),
        max_ms: latencies.last().map_or(0.0, |&us| f64::from(us) / 1000.0),
        cpu,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.50), 50.0);
        assert_eq!(percentile_ms(&v, 0.99), 99.0);
        assert_eq!(percentile_ms(&v, 1.0), 100.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
        assert_eq!(percentile_ms(&[7000], 0.01), 7.0);
    }
}
