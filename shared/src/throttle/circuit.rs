//! An endpoint's circuit: open (skipped) until a moment in time, closed after it.
//!
//! A 429 opens the circuit for the backend's wait. There is no separate half-open state: once
//! the wait is over the next request tries the endpoint, and another 429 opens it again. The
//! moment is one atomic, so reading it on the request path never locks.
//!
//! An operator can close a circuit early ([`Circuit::close`]); a closure learned from another
//! instance ([`Circuit::close_if_opened_by`]) closes it only when no newer 429 has opened it here
//! since, so a fresh throttle seen after the closure still keeps the endpoint off.

use std::sync::atomic::{AtomicU64, Ordering};

/// When the endpoint may be used again, in Unix milliseconds (0 = closed).
#[derive(Debug, Default)]
pub struct Circuit {
    open_until_ms: AtomicU64,
    /// When the circuit was last opened or extended here (Unix ms).
    opened_at_ms: AtomicU64,
}

impl Circuit {
    /// Keep the endpoint off until `until_ms`; a later moment already set wins.
    pub fn open_until(&self, until_ms: u64) {
        self.open_at(until_ms, 0);
    }

    /// [`Circuit::open_until`] for a 429 seen at `seen_ms`, remembered against later closures.
    pub fn open_at(&self, until_ms: u64, seen_ms: u64) {
        if self.open_until_ms.fetch_max(until_ms, Ordering::AcqRel) < until_ms {
            self.opened_at_ms.fetch_max(seen_ms, Ordering::AcqRel);
        }
    }

    /// When the circuit was last opened or extended here (0: never, or by a peer's publication).
    pub fn opened_at_ms(&self) -> u64 {
        self.opened_at_ms.load(Ordering::Acquire)
    }

    /// Close the circuit now: the endpoint may be used by the next request.
    pub fn close(&self) {
        self.open_until_ms.store(0, Ordering::Release);
    }

    /// Close the circuit for a closure made at `closed_at_ms`, unless it was opened after that.
    pub fn close_if_opened_by(&self, closed_at_ms: u64) {
        if self.opened_at_ms.load(Ordering::Acquire) <= closed_at_ms {
            self.close();
        }
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

    #[test]
    fn a_closure_does_not_undo_a_newer_opening() {
        let c = Circuit::default();
        c.open_at(10_000, 1_000);
        c.close_if_opened_by(2_000);
        assert_eq!(c.wait_ms(2_000), None, "closed");
        c.open_at(20_000, 3_000);
        c.close_if_opened_by(2_500);
        assert_eq!(
            c.wait_ms(3_000),
            Some(17_000),
            "opened after the closure: stays open"
        );
        c.close();
        assert_eq!(c.wait_ms(3_000), None);
    }
}
