//! Brute-force protection for sign-ins: failed attempts are counted per
//! principal and source address; past a threshold inside a window, further
//! attempts are refused without checking the credential until the lock ends.
//! State is in memory on each node (shared state comes with scale-out).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Failures from one address against one principal before it is locked.
pub const PER_SOURCE_THRESHOLD: usize = 10;
/// Failures against one principal from all addresses before it is locked.
pub const PER_PRINCIPAL_THRESHOLD: usize = 50;
/// The window in which failures count, and the lock's length.
pub const WINDOW_SECS: i64 = 300;
/// Most keys remembered; the oldest entries are dropped past this.
const MAX_KEYS: usize = 100_000;

/// Counts failed sign-ins.
#[derive(Debug, Default)]
pub struct Lockout {
    failures: Mutex<HashMap<String, Vec<i64>>>,
}

impl Lockout {
    /// An empty counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// True if `principal` (a client id or user name) may not try now from `source`.
    pub fn is_locked(&self, principal: &str, source: Option<IpAddr>, now: i64) -> bool {
        let Ok(mut map) = self.failures.lock() else {
            return false;
        };
        let mut count = |key: &str| {
            map.get_mut(key).map_or(0, |v| {
                v.retain(|t| now - *t < WINDOW_SECS);
                v.len()
            })
        };
        count(&principal_key(principal)) >= PER_PRINCIPAL_THRESHOLD
            || count(&source_key(principal, source)) >= PER_SOURCE_THRESHOLD
    }

    /// Records a failed attempt.
    pub fn record_failure(&self, principal: &str, source: Option<IpAddr>, now: i64) {
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        if map.len() >= MAX_KEYS {
            map.retain(|_, v| v.last().is_some_and(|t| now - *t < WINDOW_SECS));
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        for key in [principal_key(principal), source_key(principal, source)] {
            map.entry(key).or_default().push(now);
        }
    }

    /// Forgets the failures from `source` after a successful sign-in.
    pub fn record_success(&self, principal: &str, source: Option<IpAddr>) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&source_key(principal, source));
        }
    }
}

fn principal_key(principal: &str) -> String {
    format!("p|{}", principal.to_ascii_lowercase())
}

fn source_key(principal: &str, source: Option<IpAddr>) -> String {
    match source {
        Some(ip) => format!("s|{}|{ip}", principal.to_ascii_lowercase()),
        None => format!("s|{}|-", principal.to_ascii_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_lock_the_source_for_the_window() {
        let l = Lockout::new();
        let ip: Option<IpAddr> = "192.0.2.1".parse().ok();
        let other: Option<IpAddr> = "198.51.100.1".parse().ok();
        for i in 0..PER_SOURCE_THRESHOLD {
            assert!(!l.is_locked("Alice@x", ip, 100));
            l.record_failure("alice@x", ip, 100 + i as i64);
        }
        assert!(l.is_locked("alice@x", ip, 120));
        assert!(
            !l.is_locked("alice@x", other, 120),
            "another address is not locked yet"
        );
        assert!(!l.is_locked("bob@x", ip, 120));
        assert!(!l.is_locked(
            "alice@x",
            ip,
            100 + WINDOW_SECS + PER_SOURCE_THRESHOLD as i64
        ));
    }

    #[test]
    fn many_sources_lock_the_principal_everywhere() {
        let l = Lockout::new();
        for i in 0..PER_PRINCIPAL_THRESHOLD {
            let ip: Option<IpAddr> = format!("203.0.113.{}", i % 250).parse().ok();
            l.record_failure("app", ip, 10);
        }
        assert!(l.is_locked("app", "192.0.2.9".parse().ok(), 11));
    }

    #[test]
    fn success_clears_the_source_count() {
        let l = Lockout::new();
        for _ in 0..PER_SOURCE_THRESHOLD - 1 {
            l.record_failure("app", None, 1);
        }
        l.record_success("app", None);
        l.record_failure("app", None, 2);
        assert!(!l.is_locked("app", None, 3));
    }
}
