//! Failed-login rate limiting, per account and per client address.
//!
//! In memory and per process: a tenant runs one runtime replica by default, and with several
//! replicas each enforces the limit on its own share (the limit is then at most `replicas ×`
//! the setting, still a hard cap on guessing). Only failures count; a successful login clears
//! the account's failures.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sliding-window counters of failed logins.
#[derive(Debug)]
pub(crate) struct FailureLimiter {
    window: Duration,
    per_account: u32,
    per_ip: u32,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl FailureLimiter {
    /// A limiter allowing `per_account` and `per_ip` failures per `window`.
    pub(crate) fn new(window: Duration, per_account: u32, per_ip: u32) -> Self {
        Self {
            window,
            per_account,
            per_ip,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(account: &str, ip: &str) -> [String; 2] {
        [
            format!("account:{}", account.to_lowercase()),
            format!("ip:{ip}"),
        ]
    }

    /// `Some(seconds to wait)` when the account or the address has used up its failures.
    pub(crate) fn blocked(&self, account: &str, ip: &str, now: Instant) -> Option<u64> {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let [a, i] = Self::keys(account, ip);
        [(a, self.per_account), (i, self.per_ip)]
            .into_iter()
            .filter_map(|(key, max)| {
                let q = map.get_mut(&key)?;
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    q.pop_front();
                }
                if q.len() >= max as usize {
                    let oldest = *q.front()?;
                    let wait = self.window.saturating_sub(now.duration_since(oldest));
                    Some(wait.as_secs().max(1))
                } else {
                    None
                }
            })
            .max()
    }

    /// Records a failed login.
    pub(crate) fn fail(&self, account: &str, ip: &str, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        // Bound memory under a spray of distinct keys: forget entries whose window is over.
        if map.len() > 50_000 {
            map.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.duration_since(*t) < self.window)
            });
        }
        for key in Self::keys(account, ip) {
            let q = map.entry(key).or_default();
            q.push_back(now);
            if q.len() > 1000 {
                q.pop_front();
            }
        }
    }

    /// Clears an account's failures after a successful login.
    pub(crate) fn succeed(&self, account: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&format!("account:{}", account.to_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_limit_and_recovers() {
        let l = FailureLimiter::new(Duration::from_secs(60), 3, 5);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.blocked("A@x", "1.1.1.1", t0), None);
            l.fail("a@x", "1.1.1.1", t0);
        }
        let wait = l.blocked("a@X", "2.2.2.2", t0).expect("account blocked");
        assert!((59..=60).contains(&wait), "{wait}");
        assert_eq!(l.blocked("b@x", "1.1.1.1", t0), None, "ip has 2 left");
        l.fail("b@x", "1.1.1.1", t0);
        l.fail("c@x", "1.1.1.1", t0);
        assert!(l.blocked("d@x", "1.1.1.1", t0).is_some(), "ip blocked");
        assert_eq!(
            l.blocked("a@x", "3.3.3.3", t0 + Duration::from_secs(61)),
            None
        );
        l.succeed("b@x");
        assert_eq!(l.blocked("b@x", "9.9.9.9", t0), None);
    }
}
