//! Brute-force protection for sign-ins: failed attempts are counted per
//! subject (a user, or a confidential client) and per subject and source
//! address; past a threshold inside a window, further attempts are refused
//! without checking the credential until the lock ends. State is in memory on
//! each node.
//!
//! The table is bounded, and filling it must not unlock anyone: expired
//! entries go first, then the oldest entries far from their threshold; a
//! locked or near-threshold entry is never evicted. A source may open only
//! [`MAX_NEW_KEYS_PER_SOURCE`] new subjects per window; past that, its
//! attempts against subjects it has not tried yet are refused as locked, so
//! one address cannot flood the table.
//!
//! [`SourceLimiter`] is the other half: a token bucket per source address (an
//! IPv6 /64 counts as one) in front of every endpoint that checks a
//! credential or hands out a code, so no one source can make the server hash
//! passwords or issue device codes without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Failures from one address against one subject before it is locked.
pub const PER_SOURCE_THRESHOLD: usize = 10;
/// Failures against one subject from all addresses before it is locked.
pub const PER_PRINCIPAL_THRESHOLD: usize = 50;
/// The window in which failures count, and the lock's length.
pub const WINDOW_SECS: i64 = 300;
/// New subjects one source may fail against in a window.
pub const MAX_NEW_KEYS_PER_SOURCE: usize = 64;
/// Most entries kept.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Default)]
struct Entry {
    /// Failure times inside the window, oldest first (at most the threshold).
    times: Vec<i64>,
}

impl Entry {
    fn live(&mut self, now: i64) -> usize {
        self.times.retain(|t| now - *t < WINDOW_SECS);
        self.times.len()
    }

    fn last(&self) -> i64 {
        self.times.last().copied().unwrap_or(i64::MIN)
    }
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Per source prefix: when its window began, and the subjects it opened.
    opened: HashMap<String, (i64, usize)>,
}

/// Counts failed sign-ins.
#[derive(Debug, Default)]
pub struct Lockout {
    state: Mutex<State>,
    max_keys: usize,
}

impl Lockout {
    /// An empty counter.
    pub fn new() -> Self {
        Self::with_capacity(MAX_KEYS)
    }

    /// An empty counter that keeps at most `max_keys` entries.
    pub fn with_capacity(max_keys: usize) -> Self {
        Self {
            state: Mutex::default(),
            max_keys: max_keys.max(16),
        }
    }

    /// True if `subject` may not try now from `source`. A `credential`
    /// attempt (a password or secret to check) is also refused for a subject
    /// the source has not tried when the source has used its quota of new
    /// subjects, or when the table is full of entries it must keep.
    pub fn is_locked(
        &self,
        subject: &str,
        source: Option<IpAddr>,
        now: i64,
        credential: bool,
    ) -> bool {
        let Ok(mut st) = self.state.lock() else {
            return true;
        };
        let (pk, sk) = (principal_key(subject), source_key(subject, source));
        let mut count = |key: &str| st.entries.get_mut(key).map(|e| e.live(now));
        let (p, s) = (count(&pk), count(&sk));
        if p.unwrap_or(0) >= PER_PRINCIPAL_THRESHOLD || s.unwrap_or(0) >= PER_SOURCE_THRESHOLD {
            return true;
        }
        // A source past its quota of new subjects may go on only where it
        // is already counted; and a subject that could not be counted is
        // not tried (fail closed).
        credential
            && s.is_none()
            && (source_exhausted(&mut st, source, now) || !make_room(&mut st, self.max_keys, now))
    }

    /// Records a failed attempt.
    pub fn record_failure(&self, subject: &str, source: Option<IpAddr>, now: i64) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let keys = [principal_key(subject), source_key(subject, source)];
        if !st.entries.contains_key(&keys[1]) {
            let prefix = source_prefix(source);
            let slot = st.opened.entry(prefix).or_insert((now, 0));
            if now - slot.0 >= WINDOW_SECS {
                *slot = (now, 0);
            }
            slot.1 += 1;
        }
        for (key, threshold) in keys
            .into_iter()
            .zip([PER_PRINCIPAL_THRESHOLD, PER_SOURCE_THRESHOLD])
        {
            if !st.entries.contains_key(&key) && !make_room(&mut st, self.max_keys, now) {
                // Full of locked and near-threshold entries: nothing may be
                // forgotten, so the new one is not tracked (and its source's
                // quota above still bounds it).
                continue;
            }
            let e = st.entries.entry(key).or_default();
            e.live(now);
            e.times.push(now);
            if e.times.len() > threshold {
                e.times.remove(0);
            }
        }
        if st.opened.len() > self.max_keys {
            st.opened.retain(|_, (start, _)| now - *start < WINDOW_SECS);
        }
    }

    /// Forgets the failures from `source` after a successful sign-in.
    pub fn record_success(&self, subject: &str, source: Option<IpAddr>) {
        if let Ok(mut st) = self.state.lock() {
            st.entries.remove(&source_key(subject, source));
        }
    }

    /// Entries held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.state.lock().map(|s| s.entries.len()).unwrap_or(0)
    }

    /// True if no failure is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn source_exhausted(st: &mut State, source: Option<IpAddr>, now: i64) -> bool {
    st.opened
        .get(&source_prefix(source))
        .is_some_and(|(start, n)| now - *start < WINDOW_SECS && *n >= MAX_NEW_KEYS_PER_SOURCE)
}

/// Makes room for one entry; false if every entry must be kept.
fn make_room(st: &mut State, max: usize, now: i64) -> bool {
    if st.entries.len() < max {
        return true;
    }
    st.entries.retain(|_, e| e.live(now) > 0);
    if st.entries.len() < max {
        return true;
    }
    // Oldest first among entries under half their threshold; a locked or
    // near-threshold entry stays. A tenth goes at once, so a full table
    // costs one pass per many inserts, not per insert.
    let mut evictable: Vec<(i64, String)> = st
        .entries
        .iter()
        .filter(|(k, e)| e.times.len() < threshold_of(k) / 2)
        .map(|(k, e)| (e.last(), k.clone()))
        .collect();
    evictable.sort_unstable();
    for (_, k) in evictable.into_iter().take((max / 10).max(1)) {
        st.entries.remove(&k);
    }
    st.entries.len() < max
}

fn threshold_of(key: &str) -> usize {
    if key.starts_with("p|") {
        PER_PRINCIPAL_THRESHOLD
    } else {
        PER_SOURCE_THRESHOLD
    }
}

// Unicode lower case, as the stores compare user names, so that other
// spellings of one name (a KELVIN SIGN for a K) share its count.
fn principal_key(principal: &str) -> String {
    format!("p|{}", principal.to_lowercase())
}

fn source_key(principal: &str, source: Option<IpAddr>) -> String {
    format!("s|{}|{}", principal.to_lowercase(), source_prefix(source))
}

/// The unit a source is counted in: an IPv4 address, or an IPv6 /64 (one
/// host usually holds a whole /64). IPv4-mapped IPv6 counts as IPv4.
pub fn source_prefix(source: Option<IpAddr>) -> String {
    match source.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        None => "-".into(),
    }
}

/// A token bucket per source prefix: `burst` requests at once, refilled at
/// `per_sec`. Bounded: past `max_sources`, full buckets (the same as absent)
/// are dropped first, then the oldest.
#[derive(Debug)]
pub struct SourceLimiter {
    buckets: Mutex<HashMap<String, (f64, i64)>>,
    burst: f64,
    per_sec: f64,
    max_sources: usize,
}

impl SourceLimiter {
    /// A limiter allowing `burst` at once and `per_sec` sustained per source.
    pub fn new(burst: u32, per_sec: u32) -> Self {
        Self {
            buckets: Mutex::default(),
            burst: f64::from(burst.max(1)),
            per_sec: f64::from(per_sec),
            max_sources: MAX_KEYS,
        }
    }

    /// Takes one request's token; `Err(seconds to wait)` if the source has none.
    pub fn admit(&self, source: Option<IpAddr>, now: i64) -> Result<(), i64> {
        let Ok(mut map) = self.buckets.lock() else {
            return Err(1);
        };
        let key = source_prefix(source);
        if !map.contains_key(&key) && map.len() >= self.max_sources {
            let (burst, rate) = (self.burst, self.per_sec);
            map.retain(|_, (tokens, at)| *tokens + (now - *at) as f64 * rate < burst);
            if map.len() >= self.max_sources {
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
        }
        let (tokens, at) = map.entry(key).or_insert((self.burst, now));
        *tokens = (*tokens + (now - *at).max(0) as f64 * self.per_sec).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else if self.per_sec > 0.0 {
            Err(((1.0 - *tokens) / self.per_sec).ceil().max(1.0) as i64)
        } else {
            Err(WINDOW_SECS)
        }
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
            assert!(!l.is_locked("Alice@x", ip, 100, true));
            l.record_failure("alice@x", ip, 100 + i as i64);
        }
        assert!(l.is_locked("alice@x", ip, 120, true));
        assert!(
            !l.is_locked("alice@x", other, 120, true),
            "another address is not locked yet"
        );
        assert!(!l.is_locked("bob@x", ip, 120, true));
        assert!(!l.is_locked(
            "alice@x",
            ip,
            100 + WINDOW_SECS + PER_SOURCE_THRESHOLD as i64,
            true
        ));
    }

    #[test]
    fn many_sources_lock_the_principal_everywhere() {
        let l = Lockout::new();
        for i in 0..PER_PRINCIPAL_THRESHOLD {
            let ip: Option<IpAddr> = format!("203.0.113.{}", i % 250).parse().ok();
            l.record_failure("app", ip, 10);
        }
        assert!(l.is_locked("app", "192.0.2.9".parse().ok(), 11, true));
    }

    #[test]
    fn success_clears_the_source_count() {
        let l = Lockout::new();
        for _ in 0..PER_SOURCE_THRESHOLD - 1 {
            l.record_failure("app", None, 1);
        }
        l.record_success("app", None);
        l.record_failure("app", None, 2);
        assert!(!l.is_locked("app", None, 3, true));
    }

    /// Finding 5: 52,000 secret-less requests filled the map, and at 100,000
    /// entries it cleared every counter, locks included.
    #[test]
    fn flooding_the_table_never_unlocks_a_locked_subject() {
        let l = Lockout::with_capacity(1_000);
        let victim_ip: Option<IpAddr> = "192.0.2.1".parse().ok();
        for i in 0..PER_SOURCE_THRESHOLD {
            l.record_failure("victim", victim_ip, 10 + i as i64);
        }
        assert!(l.is_locked("victim", victim_ip, 30, true));
        // Many sources, each opening subjects up to its quota.
        for s in 0..200u32 {
            let ip: Option<IpAddr> = format!("10.{}.{}.1", s / 250, s % 250).parse().ok();
            for n in 0..MAX_NEW_KEYS_PER_SOURCE {
                l.record_failure(&format!("junk-{s}-{n}"), ip, 40);
            }
        }
        assert!(l.len() <= 1_000);
        assert!(
            l.is_locked("victim", victim_ip, 41, true),
            "the lock survives the flood"
        );
    }

    #[test]
    fn one_source_cannot_open_unbounded_subjects() {
        let l = Lockout::new();
        let ip: Option<IpAddr> = "2001:db8::1".parse().ok();
        let same_64: Option<IpAddr> = "2001:db8::ffff:2".parse().ok();
        for n in 0..MAX_NEW_KEYS_PER_SOURCE {
            assert!(!l.is_locked(&format!("c{n}"), ip, 5, true));
            l.record_failure(&format!("c{n}"), ip, 5);
        }
        assert!(
            l.is_locked("fresh", same_64, 6, true),
            "the /64 has used its quota"
        );
        assert!(
            !l.is_locked("c1", ip, 6, true),
            "known subjects go on counting"
        );
        assert!(!l.is_locked("fresh", "198.51.100.4".parse().ok(), 6, true));
        assert!(
            !l.is_locked("fresh", same_64, 6, false),
            "grants without a credential to guess are not held to the quota"
        );
        assert!(!l.is_locked("fresh", same_64, 5 + WINDOW_SECS, true));
    }

    #[test]
    fn the_source_limiter_refills_and_bounds_bursts() {
        let lim = SourceLimiter::new(3, 1);
        let ip: Option<IpAddr> = "192.0.2.7".parse().ok();
        for _ in 0..3 {
            assert!(lim.admit(ip, 100).is_ok());
        }
        assert_eq!(lim.admit(ip, 100), Err(1));
        assert!(lim.admit("192.0.2.8".parse().ok(), 100).is_ok());
        assert!(lim.admit(ip, 101).is_ok());
        assert!(lim.admit(ip, 101).is_err());
    }
}
