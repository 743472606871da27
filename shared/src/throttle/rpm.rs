//! Requests-per-minute limit for one endpoint, as this instance sees it: a GCRA (generic cell
//! rate algorithm, [`governor`]) with the shape of Azure's own limit.
//!
//! Azure OpenAI evaluates an RPM limit over short sub-windows (1–10 s), not over a sliding
//! minute: a minute's budget sent in one second is answered with 429. So the local limiter
//! admits at the limit's rate with a burst of a tenth of a minute's worth:
//!
//! 1. The quota is `limit` per 60 s — one permit every `60 s / limit` — with a burst of
//!    `max(1, limit / 6)` ([`crate::store::ten_second_budget`]): a full bucket admits at most
//!    the 10 s share at once, then one request per `60 s / limit`. Over any span `d` it admits at
//!    most `burst + limit × d / 60 s`.
//! 2. The state is one number, the theoretical arrival time (TAT): a request at `now` is
//!    admitted when `now ≥ TAT − (burst − 1) × 60 s / limit`, and the TAT becomes
//!    `max(TAT, now) + 60 s / limit`. Otherwise the endpoint is skipped, and the wait is the time
//!    until that inequality holds (governor's `NotUntil::wait_time_from`).
//! 3. The decision is one compare-and-swap on the TAT, so concurrent requests cannot overshoot.
//! 4. Time is the throttle's clock (Unix milliseconds, passed in by the caller): governor reads it
//!    through [`Moment`], which keeps the latest moment it was given, so tests drive the limiter
//!    with plain numbers and the limiter never sees time go backwards.
//! 5. Admissions decided by the global lease are counted too ([`RpmLimiter::record`]), so that
//!    the local view is current if it has to take over; counting never pushes the TAT past one
//!    full bucket.
//! 6. A changed limit (a reload) swaps in a limiter with the new quota over the same TAT: time
//!    already owed stays owed.

use crate::store::ten_second_budget;
use arc_swap::ArcSwap;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{NotKeyed, StateStore};
use governor::{Quota, RateLimiter};
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const NANOS_PER_MS: u64 = 1_000_000;

/// The limiter of one endpoint.
#[derive(Debug)]
pub struct RpmLimiter {
    gcra: ArcSwap<Gcra>,
    /// The TAT in nanoseconds on the throttle's clock (0: no request yet), shared by every quota
    /// this limiter has had.
    tat: Arc<AtomicU64>,
}

/// One quota over the shared TAT.
#[derive(Debug)]
struct Gcra {
    limit: u32,
    /// Nanoseconds per permit (`60 s / limit`).
    t: u64,
    /// The tolerance: `(burst − 1) × t`.
    tau: u64,
    limiter: RateLimiter<NotKeyed, Tat, Moment, NoOpMiddleware<Nanos>>,
}

impl Gcra {
    fn new(limit: u32, tat: Arc<AtomicU64>) -> Self {
        let per_minute = NonZeroU32::new(limit).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(ten_second_budget(limit)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        let t = u64::try_from(quota.replenish_interval().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        // The clock reads 0 while the limiter is built, so governor's start is the clock's zero
        // and the TAT means the same to every quota.
        let limiter = RateLimiter::new(quota, Tat(tat), Moment::default());
        Self {
            limit: per_minute.get(),
            t,
            tau: t.saturating_mul(u64::from(burst.get() - 1)),
            limiter,
        }
    }

    /// governor's decision at `now_ms`: `Err` carries the milliseconds to wait.
    fn check(&self, now_ms: u64) -> Result<(), u64> {
        let clock = self.limiter.clock();
        clock.advance_to(now_ms);
        self.limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(clock.now());
            u64::try_from(wait.as_nanos().div_ceil(u128::from(NANOS_PER_MS)))
                .unwrap_or(u64::MAX)
                .max(1)
        })
    }
}

impl RpmLimiter {
    pub fn new(limit: u32) -> Self {
        let tat = Arc::new(AtomicU64::new(0));
        Self {
            gcra: ArcSwap::from_pointee(Gcra::new(limit, tat.clone())),
            tat,
        }
    }

    /// Change the limit (a reload); time already owed stays owed.
    pub fn set_limit(&self, limit: u32) {
        if self.limit() != limit {
            self.gcra
                .store(Arc::new(Gcra::new(limit, self.tat.clone())));
        }
    }

    pub fn limit(&self) -> u32 {
        self.gcra.load().limit
    }

    /// Admit one request at `now_ms`, or say how many milliseconds until one can be admitted.
    pub fn try_acquire(&self, now_ms: u64) -> Result<(), u64> {
        self.gcra.load().check(now_ms)
    }

    /// Count an admission decided elsewhere (a globally leased permit), so that the local view
    /// stays right if it has to take over. An empty bucket stays empty: the TAT only advances
    /// when the request would have been admitted, i.e. never past one full burst.
    pub fn record(&self, now_ms: u64) {
        let _ = self.gcra.load().check(now_ms);
    }

    /// Requests that would be admitted at `now_ms` (at most the burst).
    pub fn remaining(&self, now_ms: u64) -> u32 {
        let gcra = self.gcra.load();
        let tat = self.tat.load(Ordering::Acquire);
        let now = now_ms.saturating_mul(NANOS_PER_MS);
        let capacity = now
            .saturating_add(gcra.tau)
            .saturating_add(gcra.t)
            .saturating_sub(tat)
            / gcra.t;
        let burst = gcra.tau / gcra.t + 1;
        u32::try_from(capacity.min(burst)).unwrap_or(u32::MAX)
    }
}

/// The throttle's clock as governor reads it: the latest moment a caller passed, in
/// nanoseconds (0 until the first one).
#[derive(Debug, Default)]
struct Moment(AtomicU64);

impl Moment {
    fn advance_to(&self, now_ms: u64) {
        self.0
            .fetch_max(now_ms.saturating_mul(NANOS_PER_MS), Ordering::AcqRel);
    }
}

impl Clock for Moment {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::new(self.0.load(Ordering::Acquire))
    }
}

/// The TAT as governor's state store: one atomic, 0 meaning "no request yet" (as governor's own
/// in-memory state), replaced by compare-and-swap.
#[derive(Debug)]
struct Tat(Arc<AtomicU64>);

impl StateStore for Tat {
    type Key = NotKeyed;

    fn measure_and_replace<T, F, E>(&self, _key: &NotKeyed, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut prev = self.0.load(Ordering::Acquire);
        loop {
            let (result, next) = f(NonZeroU64::new(prev).map(|n| Nanos::new(n.get())))?;
            match self.0.compare_exchange_weak(
                prev,
                next.as_u64(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(result),
                Err(current) => prev = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;

    #[test]
    fn admits_a_tenth_of_a_minute_at_once_then_at_the_rate() {
        // 60 rpm: a burst of 10, then one a second.
        let l = RpmLimiter::new(60);
        assert_eq!(l.remaining(T0), 10);
        for _ in 0..10 {
            assert_eq!(l.try_acquire(T0), Ok(()));
        }
        assert_eq!(l.remaining(T0), 0);
        assert_eq!(l.try_acquire(T0), Err(1_000));
        assert_eq!(l.try_acquire(T0 + 400), Err(600));
        assert_eq!(l.try_acquire(T0 + 1_000), Ok(()));
        assert_eq!(l.try_acquire(T0 + 1_000), Err(1_000));
        // A quiet spell refills the bucket, never past the burst.
        assert_eq!(l.remaining(T0 + 600_000), 10);
    }

    #[test]
    fn no_ten_seconds_admit_more_than_a_burst_and_the_rate() {
        let l = RpmLimiter::new(600);
        // A request every millisecond for 30 s: any 10 s admits at most 100 + 100.
        let admitted: Vec<u64> = (0..30_000)
            .map(|i| T0 + i)
            .filter(|t| l.try_acquire(*t).is_ok())
            .collect();
        for (i, start) in admitted.iter().enumerate() {
            let within = admitted[i..]
                .iter()
                .take_while(|t| **t < start + 10_000)
                .count();
            assert!(within <= 200, "{within} admitted in 10 s from {start}");
        }
        // The first second is the burst (100) plus what the rate (10 a second) refilled.
        assert_eq!(admitted.iter().filter(|t| **t < T0 + 1_000).count(), 109);
        // Over 30 s, the burst plus 30 s of the rate (±1 at the edge).
        assert!((399..=401).contains(&admitted.len()), "{}", admitted.len());
    }

    #[test]
    fn small_limits_admit_one_at_a_time() {
        let l = RpmLimiter::new(2);
        assert_eq!(l.remaining(T0), 1);
        assert_eq!(l.try_acquire(T0), Ok(()));
        assert_eq!(l.try_acquire(T0 + 1), Err(29_999));
        assert_eq!(l.try_acquire(T0 + 30_000), Ok(()));
    }

    #[test]
    fn recorded_admissions_count_but_never_past_one_burst() {
        let l = RpmLimiter::new(60);
        for _ in 0..25 {
            l.record(T0);
        }
        assert_eq!(l.remaining(T0), 0);
        // 25 recorded, but the bucket only owed 10: one frees up a second later.
        assert_eq!(l.try_acquire(T0 + 1_000), Ok(()));
    }

    #[test]
    fn a_changed_limit_keeps_the_time_owed() {
        let l = RpmLimiter::new(60);
        for _ in 0..10 {
            l.try_acquire(T0).unwrap();
        }
        // 10 s owed; at 6 rpm (burst 1) the next one fits once they have passed.
        l.set_limit(6);
        assert_eq!(l.limit(), 6);
        assert_eq!(l.remaining(T0), 0);
        assert_eq!(l.try_acquire(T0 + 1), Err(9_999));
        assert_eq!(l.try_acquire(T0 + 10_000), Ok(()));
        l.set_limit(600);
        assert_eq!(l.limit(), 600);
        // 10 s owed again (one 6 rpm permit, until T0 + 20 s): at 600 rpm, half of the burst
        // is back 5 s before that, all of it once it has passed.
        assert_eq!(l.remaining(T0 + 15_000), 50);
        assert_eq!(l.remaining(T0 + 20_000), 100);
    }

    #[test]
    fn concurrent_admissions_never_overshoot() {
        let l = Arc::new(RpmLimiter::new(600));
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let l = l.clone();
                    s.spawn(move || (0..50).filter(|_| l.try_acquire(T0).is_ok()).count())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(admitted, 100);
    }
}
