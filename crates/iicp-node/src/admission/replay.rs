//! Replay guards: a `task_id` or `nonce` seen within the window is refused (409 `conflict`).
//! Memory is bounded: past `capacity` entries the oldest are forgotten first.

use parking_lot::Mutex;
use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

/// The keys, and the same keys in arrival order with their arrival times.
type Seen<K> = (HashSet<K>, VecDeque<(u64, K)>);

pub struct SeenSet<K> {
    window_ms: u64,
    capacity: usize,
    inner: Mutex<Seen<K>>,
}

impl<K: Hash + Eq + Clone> SeenSet<K> {
    pub fn new(window_ms: u64, capacity: usize) -> Self {
        SeenSet {
            window_ms,
            capacity,
            inner: Mutex::new((HashSet::new(), VecDeque::new())),
        }
    }

    /// Forgets what left the window (and the oldest entries past `capacity`).
    fn prune(&self, set: &mut HashSet<K>, order: &mut VecDeque<(u64, K)>, now_ms: u64) {
        while let Some((t, k)) = order.front() {
            if now_ms.saturating_sub(*t) < self.window_ms && set.len() < self.capacity {
                break;
            }
            set.remove(k);
            order.pop_front();
        }
    }

    /// True when `key` was recorded inside the window; records nothing.
    pub fn seen(&self, key: &K, now_ms: u64) -> bool {
        let mut guard = self.inner.lock();
        let (set, order) = &mut *guard;
        self.prune(set, order, now_ms);
        set.contains(key)
    }

    /// Records `key`; false when it was already seen inside the window.
    pub fn first_sighting(&self, key: K, now_ms: u64) -> bool {
        let mut guard = self.inner.lock();
        let (set, order) = &mut *guard;
        self.prune(set, order, now_ms);
        if !set.insert(key.clone()) {
            return false;
        }
        order.push_back((now_ms, key));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_inside_the_window_are_caught() {
        let s = SeenSet::new(300_000, 1000);
        assert!(s.first_sighting("a", 0));
        assert!(!s.first_sighting("a", 299_999));
        assert!(s.first_sighting("b", 1));
        assert!(s.first_sighting("a", 300_001), "the window expired");
    }

    #[test]
    fn looking_records_nothing() {
        let s = SeenSet::new(300_000, 1000);
        assert!(!s.seen(&"a", 0));
        assert!(s.first_sighting("a", 1));
        assert!(s.seen(&"a", 2));
        assert!(!s.seen(&"a", 300_002), "the window expired");
    }

    #[test]
    fn memory_is_bounded() {
        let s = SeenSet::new(u64::MAX, 3);
        for i in 0..10 {
            assert!(s.first_sighting(i, 0));
        }
        assert!(s.inner.lock().0.len() <= 3);
    }
}
