//! The `Clock` port: every rule that depends on time reads it from here, so
//! tests can pin time. Only the server's system clock touches the wall clock.

use std::sync::atomic::{AtomicI64, Ordering};

/// A source of the current time in Unix seconds (UTC).
pub trait Clock: Send + Sync {
    /// Current time as Unix seconds.
    fn now(&self) -> i64;
}

/// A clock that returns a settable instant; for tests and deterministic tools.
#[derive(Debug)]
pub struct FixedClock(AtomicI64);

impl FixedClock {
    /// A clock frozen at `now` (Unix seconds).
    pub fn new(now: i64) -> Self {
        Self(AtomicI64::new(now))
    }

    /// Moves the clock to `now`.
    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }

    /// Moves the clock forward by `secs`.
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
