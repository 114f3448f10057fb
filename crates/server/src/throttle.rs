//! Service limits: per vault and operation class, a token bucket refilled
//! continuously at the class's limit per 10 seconds (Azure states its Key
//! Vault limits per 10 s). A request over the limit gets 429 `Throttled` with
//! `Retry-After`, as Azure answers, and the SDKs' retry policy waits and
//! retries.
//!
//! Several nodes on one PostgreSQL database share each limit: every node
//! also counts its admissions per 10-second window (wall clock, so all nodes
//! agree on the window) and, four times a second, reports them to the
//! database and learns the other nodes' counts (`Store::share_usage`). A
//! request is refused once this node's and the others' admissions in the
//! window reach the limit, so a client spreading its load over the nodes
//! gets one vault's limit, not one per node (give or take a quarter second
//! of lag). With one node (SQLite) nothing is shared and only the bucket
//! applies.

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

/// Admissions in the current 10-second window: this node's, and the other
/// nodes' as last reported.
#[derive(Default)]
struct Window {
    id: i64,
    own: HashMap<(String, Class), i64>,
    others: HashMap<(String, Class), i64>,
}

impl Window {
    /// The window `id`, starting from nothing if it is a new one.
    fn at(&mut self, id: i64) -> &mut Self {
        if self.id != id {
            *self = Window {
                id,
                ..Window::default()
            };
        }
        self
    }
}

/// The buckets and the shared window, under one lock.
#[derive(Default)]
struct State {
    buckets: HashMap<(String, Class), Bucket>,
    window: Window,
}

/// The buckets of one node.
pub struct Throttle {
    limits: Limits,
    state: Mutex<State>,
}

impl Class {
    /// Stable name (stored with shared usage).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secrets => "secrets",
            Self::Keys => "keys",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "secrets" => Some(Self::Secrets),
            "keys" => Some(Self::Keys),
            _ => None,
        }
    }
}

/// Seconds in a shared window.
const WINDOW_SECS: i64 = 10;

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
            state: Mutex::new(State::default()),
        }
    }

    /// This node's admissions in the current window (`now` in Unix
    /// seconds), to report: `(window, [(vault, class, count)])`.
    pub fn usage(&self, now: i64) -> (i64, Vec<(String, String, i64)>) {
        let id = now.div_euclid(WINDOW_SECS);
        let Ok(mut state) = self.state.lock() else {
            return (id, Vec::new());
        };
        let counts = state
            .window
            .at(id)
            .own
            .iter()
            .map(|((v, c), n)| (v.clone(), c.as_str().to_owned(), *n))
            .collect();
        (id, counts)
    }

    /// Every node's totals for `window` as the database summed them, given
    /// what this node reported (`reported`): the rest is the others'.
    pub fn learn(
        &self,
        window: i64,
        reported: &[(String, String, i64)],
        totals: Vec<(String, String, i64)>,
    ) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let w = &mut state.window;
        if w.id != window {
            return;
        }
        let mine: HashMap<(&str, &str), i64> = reported
            .iter()
            .map(|(v, c, n)| ((v.as_str(), c.as_str()), *n))
            .collect();
        let mut others = HashMap::new();
        for (v, c, total) in totals {
            let own = mine.get(&(v.as_str(), c.as_str())).copied().unwrap_or(0);
            if let Some(class) = Class::parse(&c) {
                if total > own {
                    others.insert((v, class), total - own);
                }
            }
        }
        w.others = others;
    }

    /// Takes one token for `vault` in `class` (`now` in Unix seconds);
    /// `Err(seconds)` to wait when the bucket is empty or the nodes together
    /// have used the window's allowance.
    pub fn admit(&self, vault: &str, class: Class, now: i64) -> Result<(), u64> {
        let limit = match class {
            Class::Secrets => self.limits.secrets,
            Class::Keys => self.limits.keys,
        };
        if limit == 0 {
            return Ok(());
        }
        let id = now.div_euclid(WINDOW_SECS);
        let key = (vault.to_owned(), class);
        let Ok(mut state) = self.state.lock() else {
            return Ok(());
        };
        let state = &mut *state;
        let w = state.window.at(id);
        let others = w.others.get(&key).copied().unwrap_or(0);
        let own = w.own.get(&key).copied().unwrap_or(0);
        if others > 0 && own + others >= i64::from(limit) {
            return Err(u64::try_from((id + 1) * WINDOW_SECS - now)
                .unwrap_or(1)
                .max(1));
        }
        take(&mut state.buckets, &key, limit)?;
        *state.window.own.entry(key).or_insert(0) += 1;
        Ok(())
    }
}

/// Takes a token from the key's bucket, refilled continuously at `limit`
/// per 10 seconds; `Err(seconds)` to wait when it is empty.
fn take(
    buckets: &mut HashMap<(String, Class), Bucket>,
    key: &(String, Class),
    limit: u32,
) -> Result<(), u64> {
    let capacity = f64::from(limit);
    let rate = capacity / 10.0;
    let now = Instant::now();
    if buckets.len() >= MAX_BUCKETS {
        buckets.retain(|_, b| now.duration_since(b.at).as_secs() < 10);
    }
    let b = buckets.entry(key.clone()).or_insert(Bucket {
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
            .filter(|_| t.admit("v", Class::Secrets, 100).is_ok())
            .count();
        assert_eq!(admitted, 20, "the bucket holds one 10-second allowance");
        assert_eq!(t.admit("v", Class::Secrets, 100), Err(1));
        assert!(
            t.admit("other", Class::Secrets, 100).is_ok(),
            "buckets are per vault"
        );
        assert!(
            (0..1000).all(|_| t.admit("v", Class::Keys, 100).is_ok()),
            "0 = unlimited"
        );
    }

    #[test]
    fn other_nodes_usage_counts_against_the_same_limit() {
        let t = Throttle::new(Limits {
            secrets: 20,
            keys: 20,
        });
        // 1003 s is in window 100, which ends at 1010.
        for _ in 0..5 {
            assert!(t.admit("v", Class::Secrets, 1003).is_ok());
        }
        let (window, reported) = t.usage(1003);
        assert_eq!(window, 100);
        assert_eq!(reported, vec![("v".to_owned(), "secrets".to_owned(), 5)]);
        // The database says 17 in all: 12 came through other nodes.
        t.learn(
            window,
            &reported,
            vec![("v".to_owned(), "secrets".to_owned(), 17)],
        );
        let admitted = (0..10)
            .filter(|_| t.admit("v", Class::Secrets, 1004).is_ok())
            .count();
        assert_eq!(admitted, 3, "20 - 5 own - 12 others");
        assert_eq!(
            t.admit("v", Class::Secrets, 1004),
            Err(6),
            "wait for the next window"
        );
        assert!(t.admit("v", Class::Keys, 1004).is_ok(), "per class");
        // A new window starts from nothing shared (the bucket still applies).
        assert!(t.admit("v", Class::Secrets, 1011).is_ok());
        // Totals for an old window are ignored.
        t.learn(100, &[], vec![("v".to_owned(), "secrets".to_owned(), 99)]);
        assert!(t.admit("v", Class::Secrets, 1012).is_ok());
    }
}
