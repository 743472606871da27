//! Global RPM limits: each instance leases blocks of permits from the shared store, so that all
//! instances together admit at most the limit, without a database round trip per request.
//!
//! 1. A request takes a permit from the instance's current lease if it has one left and the lease
//!    is still valid (leases are valid for `LEASE_VALID_MS`, 1 s).
//! 2. Otherwise one request at a time per endpoint leases a new block from the store: the store,
//!    serialised per endpoint, sums the permits still counted, grants `min(want, limit − used)`,
//!    and records the lease. Leftovers of the previous lease are given back first.
//! 3. A lease is counted against the limit from the moment it is granted until 60 s after it
//!    expires. Any permit used at time `u` comes from a lease granted in `[u − 1 s, u]`, so all
//!    permits used in any 60 s window belong to leases counted at the window's last instant;
//!    their sum is at most the limit. There is no overshoot; the price is that a permit blocks
//!    up to 61 s instead of 60 s (≤ 1.7 % fewer admissions at full load).
//! 4. When the store grants nothing, the endpoint is skipped and the store's answer (when the
//!    earliest counted lease stops counting) is the wait; that "no" is remembered locally for at
//!    most 250 ms before the store is asked again, since other instances give permits back.
//! 5. When the store is unreachable or slower than `LEASE_TIMEOUT`, the request is admitted by the
//!    instance's local sliding window instead (limit per instance) and the outage is reported
//!    once; leasing resumes when the background sync sees the store again.
//!
//! Block size: `ceil(limit / 30)`, at most 500 — two seconds of traffic at the full rate, so a
//! busy endpoint leases about once a second per instance, and small limits lease one at a time.

use crate::store::{EndpointKey, LEASE_VALID_MS};
use crate::throttle::sync::Shared;
use std::sync::Mutex;
use std::time::Duration;

/// The longest a request waits for the store to lease permits.
pub const LEASE_TIMEOUT: Duration = Duration::from_millis(150);
/// How long a "no permits" answer is trusted before the store is asked again.
const NO_CACHE_MS: u64 = 250;

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
    state: Mutex<Pool>,
    leasing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Pool {
    lease_id: i64,
    remaining: u32,
    expires_ms: u64,
    /// Until when a "no" from the store is trusted without asking again.
    no_until_ms: u64,
    /// When the store said permits free up.
    frees_at_ms: u64,
}

impl PermitPool {
    fn take(&self, now_ms: u64) -> Option<Admit> {
        let mut pool = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if pool.remaining > 0 && now_ms < pool.expires_ms {
            pool.remaining -= 1;
            return Some(Admit::Yes);
        }
        if now_ms < pool.no_until_ms {
            return Some(Admit::No(pool.frees_at_ms.saturating_sub(now_ms).max(1)));
        }
        None
    }

    /// Admit one request against the global `limit` of `key`.
    pub async fn acquire(
        &self,
        key: &EndpointKey,
        limit: u32,
        shared: &Shared,
        now_ms: u64,
    ) -> Admit {
        if let Some(answer) = self.take(now_ms) {
            return answer;
        }
        if !shared.is_up() {
            return Admit::Unavailable;
        }
        let _one_at_a_time = self.leasing.lock().await;
        let now_ms = crate::throttle::now_ms().max(now_ms);
        if let Some(answer) = self.take(now_ms) {
            return answer;
        }
        let (old_id, old_left) = {
            let mut pool = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let old = (pool.lease_id, pool.remaining);
            pool.lease_id = 0;
            pool.remaining = 0;
            old
        };
        if old_id != 0 && old_left > 0 {
            shared.give_back(old_id, old_left);
        }
        let want = limit.div_ceil(30).clamp(1, 500);
        let lease =
            match tokio::time::timeout(LEASE_TIMEOUT, shared.store.lease(key, limit, want, now_ms))
                .await
            {
                Ok(Ok(lease)) => lease,
                Ok(Err(e)) => {
                    shared.report_failure(&e);
                    return Admit::Unavailable;
                }
                Err(_) => {
                    shared.report_failure(&crate::store::StoreError::Timeout);
                    return Admit::Unavailable;
                }
            };
        let mut pool = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if lease.granted == 0 {
            pool.frees_at_ms = now_ms + lease.retry_after_ms;
            pool.no_until_ms = now_ms + lease.retry_after_ms.min(NO_CACHE_MS);
            return Admit::No(lease.retry_after_ms.max(1));
        }
        pool.lease_id = lease.id;
        pool.remaining = lease.granted - 1;
        pool.expires_ms = now_ms + LEASE_VALID_MS;
        Admit::Yes
    }
}
