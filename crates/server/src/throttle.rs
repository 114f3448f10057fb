//! Service limits: per vault and operation class, a token bucket refilled
//! continuously at the class's limit per 10 seconds (Azure states its Key
//! Vault limits per 10 s). A request over the limit gets 429 `Throttled` with
//! `Retry-After`, as Azure answers, and the SDKs' retry policy waits and
//! retries. The buckets are node-local (coordinating them through the
//! database is part of the scale-out issue).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Operation classes with their own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Secrets, certificates and other vault transactions.
    Secrets,
    /// Key operations.
    Keys,
}

/// Limits per 10 seconds per vault (0 = unlimited).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Secrets and vault transactions (Azure: 4,000 per 10 s).
    pub secrets: u32,
    /// Key transactions (Azure: 4,000 per 10 s for RSA-2048 and EC software
    /// keys' non-create operations).
    pub keys: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            secrets: 4000,
            keys: 4000,
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of one node.
pub struct Throttle {
    limits: Limits,
    buckets: Mutex<HashMap<(String, Class), Bucket>>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("limits", &self.limits)
            .finish()
    }
}

/// Buckets kept before idle ones are dropped.
const MAX_BUCKETS: usize = 100_000;

impl Throttle {
    /// Buckets with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `vault` in `class`; `Err(seconds)` to wait when
    /// the bucket is empty.
    pub fn admit(&self, vault: &str, class: Class) -> Result<(), u64> {
        let limit = match class {
            Class::Secrets => self.limits.secrets,
            Class::Keys => self.limits.keys,
        };
        if limit == 0 {
            return Ok(());
        }
        let capacity = f64::from(limit);
        let rate = capacity / 10.0;
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, b| now.duration_since(b.at).as_secs() < 10);
        }
        let b = buckets.entry((vault.to_owned(), class)).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - b.tokens) / rate).ceil();
            Err(if wait.is_finite() && wait >= 1.0 {
                wait as u64
            } else {
                1
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_beyond_the_limit_is_refused_with_a_wait() {
        let t = Throttle::new(Limits {
            secrets: 20,
            keys: 0,
        });
        let admitted = (0..50)
            .filter(|_| t.admit("v", Class::Secrets).is_ok())
            .count();
        assert_eq!(admitted, 20, "the bucket holds one 10-second allowance");
        assert_eq!(t.admit("v", Class::Secrets), Err(1));
        assert!(
            t.admit("other", Class::Secrets).is_ok(),
            "buckets are per vault"
        );
        assert!(
            (0..1000).all(|_| t.admit("v", Class::Keys).is_ok()),
            "0 = unlimited"
        );
    }
}
