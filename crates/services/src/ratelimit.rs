//! One rate-limiting mechanism for every route and every kind of key (per IP, per key,
//! per user).
//!
//! Fixed windows: a key may make `limit` calls per `window`; the window starts at its first
//! call. That is easy to explain in `X-RateLimit-*` headers and in `Retry-After`, and cheap:
//! one map entry per active key. The counts live in this process's memory; several
//! processes behind one load balancer each count their own (a shared store is a later
//! step, recorded in docs/decisions.md).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many calls per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateRule {
    pub limit: u32,
    pub window: Duration,
}

impl RateRule {
    pub const fn per_hour(limit: u32) -> RateRule {
        RateRule {
            limit,
            window: Duration::from_secs(3600),
        }
    }

    pub const fn per_minute(limit: u32) -> RateRule {
        RateRule {
            limit,
            window: Duration::from_secs(60),
        }
    }
}

/// The answer for one call: whether it may proceed, and what to put in the headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window resets (for `Retry-After`), at least 1.
    pub reset_after_secs: u64,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    count: u32,
}

/// Counts calls per key. Keys name the rule and the caller (`"inbox-create:ip:1.2.3.4"`).
/// The map is split in shards, each behind its own lock, so that concurrent requests of
/// different callers rarely wait for each other.
#[derive(Debug, Default)]
pub struct RateLimiter {
    shards: [Mutex<HashMap<String, Window>>; SHARDS],
}

const SHARDS: usize = 16;

fn shard_of(key: &str) -> usize {
    // FNV-1a: cheap, and only spreads keys over the shards.
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h as usize % SHARDS
}

/// From this many tracked keys on (over all shards), expired windows are swept.
const SWEEP_THRESHOLD: usize = 8_192;
/// At most this many keys per shard (about 260,000 in all, tens of MiB): callers from a
/// vast address space (an IPv6 /32 holds 2^32 /64s) cannot grow the map without bound.
/// A shard still full after the sweep starts over: its counters reset, which only a
/// caller with that many addresses can bring about, and password guessing stays bounded
/// by the hashing pool.
const MAX_KEYS_PER_SHARD: usize = 16_384;

impl RateLimiter {
    pub fn new() -> RateLimiter {
        RateLimiter::default()
    }

    /// How long until `key`, which has used up its window under `rule`, may be counted
    /// again; `None` when it has not used it up.
    pub fn exhausted_for(&self, key: &str, rule: RateRule) -> Option<Duration> {
        let now = Instant::now();
        let windows = self.shards[shard_of(key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let w = windows.get(key)?;
        let elapsed = now.duration_since(w.started);
        (elapsed < rule.window && w.count >= rule.limit).then(|| {
            rule.window
                .saturating_sub(elapsed)
                .max(Duration::from_secs(1))
        })
    }

    /// Forgets `key`'s window (a correct password after a few wrong ones).
    pub fn forget(&self, key: &str) {
        self.shards[shard_of(key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Counts one call of `key` under `rule` and says whether it may proceed. A refused call
    /// is not counted.
    pub fn check(&self, key: &str, rule: RateRule) -> RateDecision {
        self.check_at(key, rule, Instant::now())
    }

    fn check_at(&self, key: &str, rule: RateRule, now: Instant) -> RateDecision {
        // A poisoned lock only means another thread panicked mid-update of a counter;
        // the counters are still usable.
        let mut windows = self.shards[shard_of(key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Swept when a new key would make the shard cross a power of two (from the
        // threshold on): a sweep visits every key, so it must not run on every call of a
        // big shard; doubling keeps its cost per call constant.
        let len = windows.len();
        if len >= SWEEP_THRESHOLD / SHARDS && len.is_power_of_two() && !windows.contains_key(key) {
            windows.retain(|_, w| {
                now.duration_since(w.started) < rule.window.max(Duration::from_secs(3600))
            });
            if windows.len() >= MAX_KEYS_PER_SHARD {
                tracing::warn!(
                    keys = windows.len(),
                    "rate limiter shard full; its counters start over"
                );
                windows.clear();
            }
        }
        // The common case (a known caller) allocates nothing.
        if !windows.contains_key(key) {
            windows.insert(
                key.to_owned(),
                Window {
                    started: now,
                    count: 0,
                },
            );
        }
        let Some(window) = windows.get_mut(key) else {
            return RateDecision {
                allowed: true,
                limit: rule.limit,
                remaining: rule.limit,
                reset_after_secs: rule.window.as_secs().max(1),
            };
        };
        if now.duration_since(window.started) >= rule.window {
            *window = Window {
                started: now,
                count: 0,
            };
        }
        let elapsed = now.duration_since(window.started);
        let reset_after_secs = rule.window.saturating_sub(elapsed).as_secs().max(1);
        if window.count >= rule.limit {
            return RateDecision {
                allowed: false,
                limit: rule.limit,
                remaining: 0,
                reset_after_secs,
            };
        }
        window.count += 1;
        RateDecision {
            allowed: true,
            limit: rule.limit,
            remaining: rule.limit - window.count,
            reset_after_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_stays_bounded_whatever_the_callers() {
        let rl = RateLimiter::new();
        let rule = RateRule::per_hour(5);
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS_PER_SHARD * SHARDS + 50_000) {
            rl.check_at(&format!("login-fail:addr:2001:db8:{i:x}::/64"), rule, t0);
        }
        let total: usize = rl
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum();
        assert!(total <= MAX_KEYS_PER_SHARD * SHARDS, "{total} keys");
        // Still counting after a reset.
        assert!(rl.check_at("k", rule, t0).allowed);
    }

    #[test]
    fn counts_refuses_and_resets() {
        let rl = RateLimiter::new();
        let rule = RateRule {
            limit: 2,
            window: Duration::from_secs(10),
        };
        let t0 = Instant::now();
        let a = rl.check_at("k", rule, t0);
        assert!(a.allowed);
        assert_eq!(a.remaining, 1);
        assert!(rl.check_at("k", rule, t0).allowed);
        let refused = rl.check_at("k", rule, t0 + Duration::from_secs(3));
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.reset_after_secs, 7);
        // Other keys are independent.
        assert!(rl.check_at("other", rule, t0).allowed);
        // After the window, the key starts over.
        let later = rl.check_at("k", rule, t0 + Duration::from_secs(10));
        assert!(later.allowed);
        assert_eq!(later.remaining, 1);
    }
}
