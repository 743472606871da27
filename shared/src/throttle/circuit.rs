//! An endpoint's circuit: open (skipped) until a moment in time, closed after it.
//!
//! A 429 opens the circuit for the backend's wait. There is no separate half-open state: once
//! the wait is over the next request tries the endpoint, and another 429 opens it again. The
//! moment is one atomic, so reading it on the request path never locks.

use std::sync::atomic::{AtomicU64, Ordering};

/// When the endpoint may be used again, in Unix milliseconds (0 = closed).
#[derive(Debug, Default)]
pub struct Circuit {
    open_until_ms: AtomicU64,
}

impl Circuit {
    /// Keep the endpoint off until `until_ms`; a later moment already set wins.
    pub fn open_until(&self, until_ms: u64) {
        self.open_until_ms.fetch_max(until_ms, Ordering::AcqRel);
    }

    /// The moment the circuit closes (0 or a past moment when it is closed).
    pub fn until_ms(&self) -> u64 {
        self.open_until_ms.load(Ordering::Acquire)
    }

    /// Milliseconds left before the endpoint may be used, or `None` when it may be used now.
    pub fn wait_ms(&self, now_ms: u64) -> Option<u64> {
        let until = self.until_ms();
        (until > now_ms).then(|| until - now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_and_closes_with_time() {
        let c = Circuit::default();
        assert_eq!(c.wait_ms(1_000), None);
        c.open_until(5_000);
        assert_eq!(c.wait_ms(1_000), Some(4_000));
        c.open_until(3_000); // an earlier moment never shortens the wait
        assert_eq!(c.wait_ms(1_000), Some(4_000));
        assert_eq!(c.wait_ms(5_000), None);
    }
}
