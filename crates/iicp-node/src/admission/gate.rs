//! The concurrency gate: `capacity` slots, released by RAII on every path.
//!
//! Callers that may wait (realtime, interactive) queue for a short bound; waiters are served by
//! `constraints.priority`, then first come first served. Callers that may not wait (batch,
//! best-effort) are refused at once when every slot is busy. The queue itself is bounded, so
//! overload produces refusals, never queue growth. Slots are handed from the releasing task
//! straight to the next waiter, so a late arrival cannot overtake the queue.

use iicp_proto::task::Priority;
use parking_lot::Mutex;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

struct Waiter {
    priority: Priority,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    /// Max-heap order: higher priority first, then the earlier arrival.
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

struct State {
    in_use: usize,
    capacity: usize,
    waiters: BinaryHeap<Waiter>,
    next_seq: u64,
}

pub struct Gate {
    state: Mutex<State>,
    max_waiters: usize,
}

/// A held slot; dropping it releases the slot (or hands it to the next waiter).
pub struct Permit {
    gate: Arc<Gate>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.release();
    }
}

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot busy and the caller may not wait, or the wait queue is full.
    Busy,
    /// Waited the whole bound without a slot.
    WaitedOut,
}

impl Gate {
    pub fn new(capacity: usize, max_waiters: usize) -> Arc<Gate> {
        Arc::new(Gate {
            state: Mutex::new(State {
                in_use: 0,
                capacity,
                waiters: BinaryHeap::new(),
                next_seq: 0,
            }),
            max_waiters,
        })
    }

    pub fn in_use(&self) -> usize {
        self.state.lock().in_use
    }

    pub fn capacity(&self) -> usize {
        self.state.lock().capacity
    }

    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.state.lock().waiters.len()
    }

    /// Changes the number of slots (availability windows). Running tasks are never preempted.
    pub fn set_capacity(self: &Arc<Self>, capacity: usize) {
        let grew = {
            let mut s = self.state.lock();
            let grew = capacity > s.capacity;
            s.capacity = capacity;
            grew
        };
        if grew {
            // Hand newly free slots to waiters.
            while self.try_hand_over() {}
        }
    }

    /// Takes a free slot at once, or waits up to `wait` when given.
    pub async fn acquire(
        self: &Arc<Self>,
        priority: Priority,
        wait: Option<Duration>,
    ) -> Result<Permit, Refusal> {
        let rx = {
            let mut s = self.state.lock();
            if s.in_use < s.capacity && s.waiters.is_empty() {
                s.in_use += 1;
                return Ok(Permit { gate: self.clone() });
            }
            let Some(_) = wait else {
                return Err(Refusal::Busy);
            };
            if s.waiters.len() >= self.max_waiters {
                s.waiters.retain(|w| !w.wake.is_closed());
                if s.waiters.len() >= self.max_waiters {
                    return Err(Refusal::Busy);
                }
            }
            let (wake, rx) = oneshot::channel();
            let seq = s.next_seq;
            s.next_seq += 1;
            s.waiters.push(Waiter {
                priority,
                seq,
                wake,
            });
            rx
        };
        let mut guard = WaitGuard {
            gate: self.clone(),
            rx: Some(rx),
        };
        let rx = guard.rx.as_mut().expect("set above");
        let woken = tokio::time::timeout(wait.unwrap_or_default(), rx).await;
        // On a timeout the guard (dropped on return) returns a slot that arrived meanwhile.
        match woken {
            Ok(Ok(())) => Ok(Permit { gate: self.clone() }),
            _ => Err(Refusal::WaitedOut),
        }
    }

    /// Gives one slot to the best live waiter; false when none could take it.
    fn try_hand_over(&self) -> bool {
        let mut s = self.state.lock();
        if s.in_use >= s.capacity {
            return false;
        }
        while let Some(w) = s.waiters.pop() {
            if w.wake.send(()).is_ok() {
                s.in_use += 1;
                return true;
            }
        }
        false
    }

    fn release(&self) {
        let mut s = self.state.lock();
        if s.in_use <= s.capacity {
            while let Some(w) = s.waiters.pop() {
                if w.wake.send(()).is_ok() {
                    return; // the slot moves to the waiter
                }
            }
        }
        s.in_use -= 1;
    }
}

/// Makes waiting cancellation-safe: if the waiting future is dropped (the client went away)
/// after a slot was already handed over, the slot is released instead of leaking.
struct WaitGuard {
    gate: Arc<Gate>,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.gate.release();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Option<Duration> = Some(Duration::from_secs(10));

    #[tokio::test]
    async fn no_wait_callers_are_refused_when_full() {
        let g = Gate::new(1, 8);
        let p = g.acquire(Priority::Normal, None).await.unwrap();
        assert_eq!(
            g.acquire(Priority::Normal, None).await.err(),
            Some(Refusal::Busy)
        );
        drop(p);
        assert!(g.acquire(Priority::Normal, None).await.is_ok());
        assert_eq!(g.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_by_priority_then_arrival() {
        let g = Gate::new(1, 8);
        let held = g.acquire(Priority::Normal, None).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, prio) in [
            ("low", Priority::Low),
            ("n1", Priority::Normal),
            ("n2", Priority::Normal),
            ("crit", Priority::Critical),
        ] {
            let (g, order) = (g.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let p = g.acquire(prio, WAIT).await.unwrap();
                order.lock().push(name);
                tokio::time::sleep(Duration::from_millis(1)).await;
                drop(p);
            }));
            tokio::task::yield_now().await;
        }
        assert_eq!(g.waiting(), 4);
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock(), vec!["crit", "n1", "n2", "low"]);
        assert_eq!(g.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_is_bounded_in_time_and_in_length() {
        let g = Gate::new(1, 2);
        let _held = g.acquire(Priority::Normal, None).await.unwrap();
        let a = tokio::spawn({
            let g = g.clone();
            async move {
                g.acquire(Priority::Normal, Some(Duration::from_millis(50)))
                    .await
                    .err()
            }
        });
        let b = tokio::spawn({
            let g = g.clone();
            async move {
                g.acquire(Priority::Normal, Some(Duration::from_millis(50)))
                    .await
                    .err()
            }
        });
        tokio::task::yield_now().await;
        assert_eq!(
            g.acquire(Priority::Normal, WAIT).await.err(),
            Some(Refusal::Busy)
        );
        assert_eq!(a.await.unwrap(), Some(Refusal::WaitedOut));
        assert_eq!(b.await.unwrap(), Some(Refusal::WaitedOut));
        assert_eq!(g.in_use(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_waiter_never_leaks_a_slot() {
        let g = Gate::new(1, 8);
        let held = g.acquire(Priority::Normal, None).await.unwrap();
        let waiter = tokio::spawn({
            let g = g.clone();
            async move { g.acquire(Priority::Normal, WAIT).await.map(drop) }
        });
        tokio::task::yield_now().await;
        waiter.abort(); // the client disconnected while queued
        let _ = waiter.await;
        drop(held);
        assert_eq!(g.in_use(), 0);
        assert!(g.acquire(Priority::Normal, None).await.is_ok());
    }

    #[tokio::test]
    async fn capacity_follows_availability() {
        let g = Gate::new(2, 8);
        let a = g.acquire(Priority::Normal, None).await.unwrap();
        let _b = g.acquire(Priority::Normal, None).await.unwrap();
        g.set_capacity(1);
        drop(a);
        assert_eq!(g.in_use(), 1);
        assert!(g.acquire(Priority::Normal, None).await.is_err());
        g.set_capacity(0);
        assert!(g.acquire(Priority::Critical, None).await.is_err());
    }
}
