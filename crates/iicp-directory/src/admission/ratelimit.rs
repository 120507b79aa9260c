//! Rolling-window rate limit per source address (DIR-RL-01: 60 REGISTER per rolling 60 s).

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

pub struct RateLimiter {
    limit: usize,
    window_ms: u64,
    hits: Mutex<HashMap<IpAddr, VecDeque<u64>>>,
}

impl RateLimiter {
    pub fn new(limit: u32, window_ms: u64) -> Self {
        RateLimiter {
            limit: limit as usize,
            window_ms,
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Records a request from `ip` at `now_ms`, or refuses it with the seconds to wait.
    pub fn check(&self, ip: IpAddr, now_ms: u64) -> Result<(), u64> {
        let mut hits = self.hits.lock();
        let log = hits.entry(ip).or_default();
        while log
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) >= self.window_ms)
        {
            log.pop_front();
        }
        if log.len() >= self.limit {
            let oldest = log.front().copied().unwrap_or(now_ms);
            let wait_ms = (oldest + self.window_ms).saturating_sub(now_ms);
            return Err(wait_ms.div_ceil(1000).max(1));
        }
        log.push_back(now_ms);
        Ok(())
    }

    /// Drops addresses with no request inside the window, so idle sources cost no memory.
    pub fn prune(&self, now_ms: u64) {
        self.hits.lock().retain(|_, log| {
            log.back()
                .is_some_and(|t| now_ms.saturating_sub(*t) < self.window_ms)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixty_per_rolling_minute_then_retry_after() {
        let rl = RateLimiter::new(60, 60_000);
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        for i in 0..60 {
            assert!(rl.check(ip, 1_000 + i * 100).is_ok());
        }
        assert_eq!(rl.check(ip, 10_000), Err(51));
        // Another source is unaffected.
        assert!(rl.check("203.0.113.8".parse().unwrap(), 10_000).is_ok());
        // The window rolls: the first hit expires at 61 s.
        assert!(rl.check(ip, 61_000).is_ok());
        assert!(rl.check(ip, 61_001).is_err());
        rl.prune(200_000);
        assert!(rl.hits.lock().is_empty());
    }
}
