//! Global RPM limits: each instance leases blocks of permits from the shared store, so that all
//! instances together admit at most the limit per minute and at most a sixth of it
//! ([`crate::store::ten_second_budget`], at least 1) per 10 s — Azure's own granularity — without a store round
//! trip per request.
//!
//! 1. A request takes a permit from the instance's current lease if one is left and the lease is
//!    still valid: for [`LEASE_VALID_MS`] (1 s) from the moment this instance asked for it, by the
//!    instance's own clock. Only a duration is measured here, so only the clock's rate matters,
//!    not its offset from the others'; a clock that steps back ends the lease.
//! 2. Otherwise one lease attempt per endpoint is in flight at a time: the first request to find
//!    the block spent starts it (its own task, bounded by [`LEASE_TIMEOUT`]) after queueing the
//!    previous lease's leftovers to be given back; every request that finds an attempt in flight
//!    waits for that one. No request waits for more than one attempt's bound (plus a little
//!    scheduling slack): it gives up at its own deadline and uses the local view.
//! 3. The store leases in one atomic step on its own clock (one statement on PostgreSQL, the
//!    function `aigw_lease`): serialised per endpoint, it counts each lease granted at `g`
//!    against the minute until `g + 1 s + 60 s` and against the 10 s window until
//!    `g + 1 s + 10 s`, and grants `min(want, limit − minute count, limit/6 − 10 s count)`.
//! 4. Why all instances together never overshoot either window `W` with its budget `B` (60 s
//!    and the limit; 10 s and a sixth of it):
//!    1. A lease granted at `g` was asked for at some `a < g` and answered at some `r > g`; its
//!       permits are used in `[r, a + 1 s)`, inside `[g, g + 1 s)`. So a permit used at `u`
//!       belongs to a lease granted in `(u − 1 s, u]`. All moments are on one clock, the store's:
//!       the instance only measured 1 s from `a` (step 1).
//!    2. So the permits used in a window `[s, s + W)` belong to leases granted in
//!       `(s − 1 s, s + W)`.
//!    3. Take the last of those grants, at `g*`. Every other one was granted before it (grants
//!       are serialised) and is still counted at `g*`: counting lasts until `g + 1 s + W`, which
//!       is after `s + W`, which is after `g*`.
//!    4. At `g*` the store granted only what kept the count within `B`; so those leases, and the
//!       permits used in the window, sum to at most `B`. Giving back only lowers the count of
//!       permits that were never used.
//!    5. The price: a permit counts 1 s longer than its window. At a steady full load the 10 s
//!       window binds: `B` per 11 s, about 91 % of the limit (the minute alone: 98 %).
//! 5. When the store grants nothing, the endpoint is skipped and the store's answer (when every
//!    full window frees a permit) is the wait; that "no" is trusted for at most 250 ms before the
//!    store is asked again, since other instances give permits back.
//! 6. When the attempt fails or exceeds [`LEASE_TIMEOUT`], every request waiting on it — and
//!    every request until the next attempt is due, [`LEASE_RETRY_MS`] later — is admitted at once
//!    by the instance's local limiter instead (a GCRA, limit per instance, see
//!    [`super::RpmLimiter`]); the failure is reported to the store's health once
//!    ([`Shared::report_failure`]), and while the store is known to be down no attempt is made.
//!
//! Block size: `ceil(limit / 30)`, at most 500 — two seconds of traffic at the full rate, a fifth
//! of the 10 s share — so a busy endpoint leases about once a second per instance, and small
//! limits lease one at a time.
//!
//! The state machine ([`Pool`]) takes "now" as an input; the waiting around it runs on tokio's
//! clock, so tests drive both with virtual time.

use crate::store::{EndpointKey, LEASE_VALID_MS, Lease, StoreError};
use crate::throttle::sync::Shared;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The longest a lease attempt may take; a slower store counts as unreachable.
pub const LEASE_TIMEOUT: Duration = Duration::from_millis(150);
/// After a failed attempt, how long an endpoint runs on the local view before the next one.
pub const LEASE_RETRY_MS: u64 = 1_000;
/// How long a "no permits" answer is trusted before the store is asked again.
const NO_CACHE_MS: u64 = 250;
/// How much longer than [`LEASE_TIMEOUT`] a request waits for an attempt to settle.
const WAIT_SLACK: Duration = Duration::from_millis(25);

/// What the pool says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// The global budget is spent; permits free up in this many milliseconds.
    No(u64),
    /// The store cannot be asked: use the local view.
    Unavailable,
}

/// One endpoint's share of its global budget on this instance.
#[derive(Debug, Default)]
pub struct PermitPool {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    pool: Mutex<Pool>,
    /// Woken when an attempt settles.
    settled: Notify,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The lease state machine of one endpoint. Every method takes the moment it acts at.
#[derive(Debug, Default)]
struct Pool {
    lease_id: i64,
    remaining: u32,
    /// When this instance asked for the current lease: it is used in `[asked, asked + VALID)`.
    asked_ms: u64,
    /// Until when a "no" from the store is trusted without asking again.
    no_until_ms: u64,
    /// When the store said permits free up.
    frees_at_ms: u64,
    /// No attempt before this moment: set by a failed one.
    retry_at_ms: u64,
    /// An attempt is in flight.
    leasing: bool,
    /// A failed attempt not yet reported to the store's health.
    unreported: Option<StoreError>,
}

/// What a request does next.
#[derive(Debug, PartialEq)]
enum Next {
    Admit(Admit),
    /// Wait for the attempt in flight.
    Wait,
    /// Start an attempt, after giving back the previous lease's leftovers (id, unused).
    Lead(Option<(i64, u32)>),
}

impl Pool {
    /// Take a permit of a valid lease, or repeat a recent "no".
    fn take(&mut self, now_ms: u64) -> Option<Admit> {
        if self.remaining > 0
            && self.asked_ms <= now_ms
            && now_ms < self.asked_ms.saturating_add(LEASE_VALID_MS)
        {
            self.remaining -= 1;
            return Some(Admit::Yes);
        }
        if now_ms < self.no_until_ms {
            return Some(Admit::No(self.frees_at_ms.saturating_sub(now_ms).max(1)));
        }
        None
    }

    /// Decide a request at `now_ms`; `store_up` is asked only when no permit is at hand.
    fn next(&mut self, now_ms: u64, store_up: impl FnOnce() -> bool) -> Next {
        if let Some(answer) = self.take(now_ms) {
            return Next::Admit(answer);
        }
        if now_ms < self.retry_at_ms || !store_up() {
            return Next::Admit(Admit::Unavailable);
        }
        if self.leasing {
            return Next::Wait;
        }
        self.leasing = true;
        let leftover = (self.lease_id, self.remaining);
        self.lease_id = 0;
        self.remaining = 0;
        Next::Lead((leftover.0 != 0 && leftover.1 > 0).then_some(leftover))
    }

    /// The attempt asked for at `asked_ms` ended at `now_ms` with `outcome`.
    fn settle(&mut self, outcome: Result<Lease, StoreError>, asked_ms: u64, now_ms: u64) {
        self.leasing = false;
        match outcome {
            Ok(lease) if lease.granted > 0 => {
                self.lease_id = lease.id;
                self.remaining = lease.granted;
                self.asked_ms = asked_ms;
                self.no_until_ms = 0;
            }
            Ok(lease) => {
                self.frees_at_ms = asked_ms.saturating_add(lease.retry_after_ms);
                self.no_until_ms = asked_ms.saturating_add(lease.retry_after_ms.min(NO_CACHE_MS));
            }
            Err(error) => {
                self.retry_at_ms = now_ms.saturating_add(LEASE_RETRY_MS);
                self.unreported = Some(error);
            }
        }
    }
}

/// How many permits one lease asks for.
fn block_size(limit: u32) -> u32 {
    limit.div_ceil(30).clamp(1, 500)
}

impl PermitPool {
    /// Admit one request at `now_ms` against the global `limit` of `key`.
    pub async fn acquire(
        &self,
        key: &EndpointKey,
        limit: u32,
        shared: &Shared,
        now_ms: u64,
    ) -> Admit {
        let first = self.inner.lock().next(now_ms, || shared.is_up());
        match first {
            Next::Admit(answer) => answer,
            first => {
                let (store, key, want) = (shared.store.clone(), key.clone(), block_size(limit));
                let lease = move || {
                    let (store, key) = (store.clone(), key.clone());
                    async move { store.lease(&key, limit, want, None).await }
                };
                Box::pin(self.wait_for_lease(first, shared, now_ms, lease)).await
            }
        }
    }

    /// The slow path: lead or join the endpoint's one attempt, until this request's deadline.
    async fn wait_for_lease<F, Fut>(
        &self,
        first: Next,
        shared: &Shared,
        now_ms: u64,
        lease: F,
    ) -> Admit
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Lease, StoreError>> + Send + 'static,
    {
        let began = Instant::now();
        let deadline = began + LEASE_TIMEOUT + WAIT_SLACK;
        let mut first = Some(first);
        loop {
            // Created before the state is read, so a settlement in between is not missed.
            let settled = self.inner.settled.notified();
            let next = match first.take() {
                Some(lead @ Next::Lead(_)) => lead,
                _ => {
                    let now = now_ms.saturating_add(elapsed_ms(began));
                    let (next, failure) = {
                        let mut pool = self.inner.lock();
                        (pool.next(now, || shared.is_up()), pool.unreported.take())
                    };
                    if let Some(error) = failure {
                        shared.report_failure(&error);
                    }
                    next
                }
            };
            match next {
                Next::Admit(answer) => return answer,
                Next::Wait => {}
                Next::Lead(leftover) => {
                    if let Some((id, unused)) = leftover {
                        shared.give_back(id, unused);
                    }
                    let asked_ms = now_ms.saturating_add(elapsed_ms(began));
                    self.start_attempt(lease(), asked_ms);
                }
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return Admit::Unavailable;
            }
        }
    }

    /// Run one attempt in a task of its own, so that it settles (within [`LEASE_TIMEOUT`])
    /// whichever requests are still waiting for it.
    fn start_attempt<Fut>(&self, lease: Fut, asked_ms: u64)
    where
        Fut: Future<Output = Result<Lease, StoreError>> + Send + 'static,
    {
        let attempt = Attempt {
            inner: Some(self.inner.clone()),
            asked_ms,
            started: Instant::now(),
        };
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(LEASE_TIMEOUT, lease)
                .await
                .unwrap_or(Err(StoreError::Timeout));
            attempt.settle(outcome);
        });
    }
}

/// An attempt in flight; dropped unsettled (its task cancelled), it settles as timed out.
struct Attempt {
    inner: Option<Arc<Inner>>,
    asked_ms: u64,
    started: Instant,
}

impl Attempt {
    fn settle(mut self, outcome: Result<Lease, StoreError>) {
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: Result<Lease, StoreError>) {
        if let Some(inner) = self.inner.take() {
            let now_ms = self.asked_ms.saturating_add(elapsed_ms(self.started));
            inner.lock().settle(outcome, self.asked_ms, now_ms);
            inner.settled.notify_waiters();
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.finish(Err(StoreError::Timeout));
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use std::sync::atomic::{AtomicU32, Ordering};

    const T0: u64 = 1_800_000_000_000;

    fn lease(id: i64, granted: u32, retry_after_ms: u64) -> Lease {
        Lease {
            id,
            granted,
            retry_after_ms,
        }
    }

    #[test]
    fn a_lease_is_used_within_its_validity_from_when_it_was_asked() {
        let mut pool = Pool::default();
        assert_eq!(pool.next(T0, || true), Next::Lead(None));
        assert_eq!(pool.next(T0, || true), Next::Wait);
        pool.settle(Ok(lease(7, 2, 0)), T0, T0 + 100);
        assert_eq!(pool.next(T0 + 100, || true), Next::Admit(Admit::Yes));
        // Valid for 1 s from the asking, not from the answer.
        assert_eq!(pool.take(T0 + LEASE_VALID_MS), None);
        // A clock that stepped back does not stretch it either.
        assert_eq!(pool.take(T0 - 1), None);
        assert_eq!(pool.take(T0 + 999), Some(Admit::Yes));
        assert_eq!(pool.take(T0 + 999), None);
    }

    #[test]
    fn leftovers_of_an_expired_lease_are_given_back_by_the_next_attempt() {
        let mut pool = Pool::default();
        pool.next(T0, || true);
        pool.settle(Ok(lease(7, 5, 0)), T0, T0);
        assert_eq!(pool.take(T0), Some(Admit::Yes));
        assert_eq!(
            pool.next(T0 + LEASE_VALID_MS, || true),
            Next::Lead(Some((7, 4)))
        );
    }

    #[test]
    fn a_no_is_trusted_briefly_and_a_failure_until_the_retry() {
        let mut pool = Pool::default();
        pool.next(T0, || true);
        pool.settle(Ok(lease(0, 0, 40_000)), T0, T0 + 5);
        assert_eq!(pool.next(T0 + 100, || true), Next::Admit(Admit::No(39_900)));
        assert_eq!(pool.next(T0 + NO_CACHE_MS, || true), Next::Lead(None));
        pool.settle(Err(StoreError::Timeout), T0 + NO_CACHE_MS, T0 + 400);
        assert!(pool.unreported.take().is_some());
        let retry = T0 + 400 + LEASE_RETRY_MS;
        assert_eq!(
            pool.next(retry - 1, || true),
            Next::Admit(Admit::Unavailable)
        );
        // A store known to be down is not asked either.
        assert_eq!(pool.next(retry, || false), Next::Admit(Admit::Unavailable));
        assert_eq!(pool.next(retry, || true), Next::Lead(None));
    }

    fn shared() -> Shared {
        Shared::new(Arc::new(MemoryStore::new()), "t", Duration::from_secs(60))
    }

    /// `n` requests at once against a pool whose store answers `answer` after `delay`; returns
    /// the answers and how many attempts were made.
    async fn burst(
        pool: &PermitPool,
        shared: &Shared,
        calls: &Arc<AtomicU32>,
        n: usize,
        delay: Duration,
        answer: Result<Lease, ()>,
    ) -> Vec<Admit> {
        let requests = (0..n).map(|_| {
            let calls = calls.clone();
            let lease = move || {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(delay).await;
                    answer.map_err(|()| StoreError::Timeout)
                }
            };
            let first = pool.inner.lock().next(T0, || shared.is_up());
            async move {
                match first {
                    Next::Admit(a) => a,
                    first => pool.wait_for_lease(first, shared, T0, lease).await,
                }
            }
        });
        futures_util::future::join_all(requests).await
    }

    #[tokio::test(start_paused = true)]
    async fn one_slow_attempt_is_shared_and_its_failure_sends_everyone_local_at_once() {
        let (pool, shared, calls) = (PermitPool::default(), shared(), Arc::default());
        let began = Instant::now();
        let answers = burst(
            &pool,
            &shared,
            &calls,
            50,
            Duration::from_millis(500),
            Ok(lease(1, 10, 0)),
        )
        .await;
        assert!(answers.iter().all(|a| *a == Admit::Unavailable));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one attempt for all 50");
        assert!(began.elapsed() <= LEASE_TIMEOUT + WAIT_SLACK);
        assert!(!shared.is_up(), "the failure was reported");
        // Until the next attempt is due, no one waits.
        let before = Instant::now();
        let at = T0 + LEASE_TIMEOUT.as_millis() as u64 + 10;
        let key = EndpointKey::new("a", "e");
        assert_eq!(
            pool.acquire(&key, 60, &shared, at).await,
            Admit::Unavailable
        );
        assert_eq!(before.elapsed(), Duration::ZERO);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_share_one_granted_block_and_lease_again_only_when_it_is_spent() {
        let (pool, shared, calls) = (PermitPool::default(), shared(), Arc::default());
        let grant = Ok(lease(1, 10, 0));
        let delay = Duration::from_millis(20);
        let answers = burst(&pool, &shared, &calls, 10, delay, grant).await;
        assert!(answers.iter().all(|a| *a == Admit::Yes), "{answers:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // 15 more: one attempt for them all, then one more for the 5 the block could not serve.
        let answers = burst(&pool, &shared, &calls, 15, delay, Ok(lease(2, 10, 0))).await;
        assert!(answers.iter().all(|a| *a == Admit::Yes), "{answers:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn leases_through_the_store_are_valid_for_a_second() {
        let (pool, shared) = (PermitPool::default(), shared());
        let key = EndpointKey::new("a", "e");
        // 60 rpm: blocks of 2, 10 per 10 s.
        assert_eq!(pool.acquire(&key, 60, &shared, T0).await, Admit::Yes);
        assert_eq!(pool.acquire(&key, 60, &shared, T0 + 1).await, Admit::Yes);
        assert_eq!(pool.acquire(&key, 60, &shared, T0 + 2).await, Admit::Yes);
        assert_eq!(block_size(60), 2);
        assert_eq!(block_size(1), 1);
        assert_eq!(block_size(1_000_000), 500);
    }
}
