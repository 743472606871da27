//! The gateway's own cost per request: time spent handling a request outside the backend call
//! (reading and checking the body, routing, admission, building the response), in microseconds.
//! Kept per instance, for the benchmark harness and operators to compare with wire-to-wire
//! measurements.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (µs) of the buckets; the last bucket is unbounded.
pub const BOUNDS_US: [u64; 13] = [
    5, 10, 20, 35, 50, 75, 100, 150, 250, 500, 1_000, 2_500, 10_000,
];

/// A lock-free histogram of overhead per request.
#[derive(Debug, Default)]
pub struct Overhead {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

/// A copy of the histogram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverheadSnapshot {
    pub buckets: Vec<u64>,
    pub sum_us: u64,
}

impl Overhead {
    pub fn observe(&self, spent: Duration) {
        let us = spent.as_micros() as u64;
        let i = BOUNDS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> OverheadSnapshot {
        OverheadSnapshot {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

impl OverheadSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The `q`-quantile in µs (see [`crate::store::bucket_quantile`]).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        crate::store::bucket_quantile(&BOUNDS_US, &self.buckets, q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_fall_in_the_right_buckets() {
        let o = Overhead::default();
        for us in [3, 8, 8, 40, 40, 40, 40, 40, 40, 900] {
            o.observe(Duration::from_micros(us));
        }
        let s = o.snapshot();
        assert_eq!(s.count(), 10);
        assert_eq!(s.sum_us, 3 + 16 + 240 + 900);
        let p50 = s.quantile(0.5).unwrap();
        assert!((35.0..=50.0).contains(&p50), "{p50}");
        let p99 = s.quantile(0.99).unwrap();
        assert!((500.0..=1000.0).contains(&p99), "{p99}");
        assert_eq!(
            OverheadSnapshot {
                buckets: vec![0; 14],
                sum_us: 0
            }
            .quantile(0.5),
            None
        );
    }
}
