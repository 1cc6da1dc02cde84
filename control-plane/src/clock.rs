//! The control plane's idea of "now" for the key lifetime policy: when a
//! default expiry starts, how far the maximum reaches, and when a key has
//! gone unused long enough to be turned off. Production runs on the
//! system clock; tests put a [`ManualClock`] in
//! [`Config::clock`](crate::config::Config::clock) and move it, so a month of
//! disuse takes no time. No flag or environment variable sets the clock: a
//! production binary always runs on the system clock.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A source of the current time, in unix seconds.
pub trait Clock: Debug + Send + Sync {
    fn now(&self) -> i64;
}

/// The clock every handler and the sweep share (through `AppState`).
pub type SharedClock = Arc<dyn Clock>;

/// The system clock (what production uses).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        crate::domain::now_unix()
    }
}

/// The default: [`SystemClock`].
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that stands still until told to move: for tests, handed to the
/// app through [`Config::clock`](crate::config::Config::clock), and shared by
/// "replicas" so they agree on the time.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `now` (unix seconds).
    pub fn new(now: i64) -> Self {
        Self(AtomicI64::new(now))
    }

    /// A clock showing the system's time now (then standing still).
    pub fn starting_now() -> Self {
        Self::new(crate::domain::now_unix())
    }

    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }

    /// Moves the clock by `seconds` (negative: back).
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(100);
        assert_eq!(c.now(), 100);
        c.advance(86_400);
        assert_eq!(c.now(), 86_500);
        c.set(5);
        assert_eq!(c.now(), 5);
    }
}
