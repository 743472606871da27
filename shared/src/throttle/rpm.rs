//! Requests-per-minute limit for one endpoint: a sliding log of admissions.
//!
//! 1. Each admission records its time.
//! 2. Before admitting, times older than 60 s are dropped from the front of the log.
//! 3. If fewer than `limit` remain, the request is admitted and its time appended; otherwise the
//!    endpoint is skipped, and the wait is the time until the oldest admission leaves the window.
//!
//! Admission happens before the request is sent, under one short lock per endpoint, so concurrent
//! requests cannot overshoot the limit: at most `limit` admissions fall in any 60 s window. The
//! log holds at most `limit` entries.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

const WINDOW_MS: u64 = 60_000;

/// The sliding-window limiter.
#[derive(Debug)]
pub struct RpmLimiter {
    limit: AtomicU32,
    log: Mutex<VecDeque<u64>>,
}

impl RpmLimiter {
    pub fn new(limit: u32) -> Self {
        Self {
            limit: AtomicU32::new(limit),
            // Grown on demand: most endpoints never see `limit` requests in a minute, and a
            // configuration can name thousands of them.
            log: Mutex::new(VecDeque::new()),
        }
    }

    /// Change the limit (a reload); admissions already counted stay counted.
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Admit one request at `now_ms`, or say how many milliseconds until one can be admitted.
    pub fn try_acquire(&self, now_ms: u64) -> Result<(), u64> {
        let limit = self.limit() as usize;
        let mut log = self
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while log.front().is_some_and(|t| t + WINDOW_MS <= now_ms) {
            log.pop_front();
        }
        if log.len() < limit {
            log.push_back(now_ms);
            return Ok(());
        }
        // Full: the wait is until enough of the oldest admissions leave the window.
        let oldest_blocking = log.get(log.len() - limit).copied().unwrap_or(now_ms);
        Err((oldest_blocking + WINDOW_MS).saturating_sub(now_ms).max(1))
    }

    /// Count an admission decided elsewhere (a globally leased permit), so that the local view
    /// stays right if it has to take over. The log never grows past the limit.
    pub fn record(&self, now_ms: u64) {
        let limit = self.limit() as usize;
        let mut log = self
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while log.front().is_some_and(|t| t + WINDOW_MS <= now_ms) || log.len() >= limit.max(1) {
            log.pop_front();
        }
        log.push_back(now_ms);
    }

    /// Admissions left in the current window.
    pub fn remaining(&self, now_ms: u64) -> u32 {
        let log = self
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let used = log.iter().filter(|t| *t + WINDOW_MS > now_ms).count();
        (self.limit() as usize).saturating_sub(used) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn admits_up_to_the_limit_then_reports_the_wait() {
        let l = RpmLimiter::new(3);
        assert_eq!(l.try_acquire(1_000), Ok(()));
        assert_eq!(l.try_acquire(2_000), Ok(()));
        assert_eq!(l.try_acquire(3_000), Ok(()));
        assert_eq!(l.remaining(3_000), 0);
        assert_eq!(l.try_acquire(4_000), Err(57_000));
        // The first admission leaves the window at 61 000.
        assert_eq!(l.try_acquire(61_000), Ok(()));
        assert_eq!(l.try_acquire(61_500), Err(500));
    }

    #[test]
    fn lowering_the_limit_counts_existing_admissions() {
        let l = RpmLimiter::new(5);
        for t in 0..4 {
            l.try_acquire(t).unwrap();
        }
        l.set_limit(2);
        // Two of the four must leave before one more fits: the third oldest leaves at 60 002.
        assert_eq!(l.try_acquire(10), Err(59_992));
        assert_eq!(l.remaining(10), 0);
    }

    #[test]
    fn concurrent_admissions_never_overshoot() {
        let l = Arc::new(RpmLimiter::new(100));
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let l = l.clone();
                    s.spawn(move || (0..50).filter(|_| l.try_acquire(5).is_ok()).count())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(admitted, 100);
    }
}
