//! Token buckets: one per WebSocket connection (`limits.client_msgs_per_sec`) and one per
//! client address for `/api/login` ([`KeyedLimiter`], a bounded map of buckets).

use std::{collections::HashMap, hash::Hash, time::Instant};

use parking_lot::Mutex;

/// `rate` tokens a second, holding at most `capacity`; starts full.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, capacity: f64) -> Self {
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.capacity);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub fn take(&mut self) -> bool {
        self.refill(Instant::now());
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has refilled completely (its key may be forgotten).
    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.capacity
    }
}

/// A token bucket per key, at most `max_keys` of them. When the map is full, buckets that
/// have refilled (idle keys) are forgotten; if every key is busy, new keys share one
/// overflow bucket, so memory stays bounded even when requests come from many addresses.
pub struct KeyedLimiter<K> {
    template: TokenBucket,
    max_keys: usize,
    state: Mutex<(HashMap<K, TokenBucket>, TokenBucket)>,
}

impl<K: Hash + Eq> KeyedLimiter<K> {
    pub fn new(rate: f64, capacity: f64, max_keys: usize) -> Self {
        let template = TokenBucket::new(rate, capacity);
        KeyedLimiter {
            state: Mutex::new((HashMap::new(), template.clone())),
            template,
            max_keys,
        }
    }

    /// Takes one token from `key`'s bucket.
    pub fn take(&self, key: K) -> bool {
        let mut guard = self.state.lock();
        let (buckets, overflow) = &mut *guard;
        if !buckets.contains_key(&key) && buckets.len() >= self.max_keys {
            let now = Instant::now();
            buckets.retain(|_, b| !b.is_full(now));
            if buckets.len() >= self.max_keys {
                return overflow.take();
            }
        }
        let template = &self.template;
        buckets
            .entry(key)
            .or_insert_with(|| TokenBucket {
                last: Instant::now(),
                ..template.clone()
            })
            .take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_capacity_then_refuses() {
        let mut b = TokenBucket::new(0.001, 3.0);
        assert!(b.take() && b.take() && b.take());
        assert!(!b.take());
    }

    #[test]
    fn keys_have_their_own_buckets_and_the_map_stays_bounded() {
        let l = KeyedLimiter::new(0.001, 1.0, 2);
        assert!(l.take("a"));
        assert!(!l.take("a"));
        assert!(l.take("b"));
        // The map is full of busy keys: newcomers share the overflow bucket.
        assert!(l.take("c"));
        assert!(!l.take("d"));
        assert_eq!(l.state.lock().0.len(), 2);
    }
}
