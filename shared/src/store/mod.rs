//! State shared by every gateway instance: open circuits, RPM permit leases and metrics windows.
//!
//! [`SharedStore`] has two implementations with the same behaviour: [`MemoryStore`] (the embedded
//! default: one process, or several gateways in one process sharing it) and [`PostgresStore`]
//! (many instances on one database). One test suite runs against both.
//!
//! The request path never waits on a store except to lease a block of RPM permits, which is
//! bounded by a short timeout; everything else happens in background tasks
//! ([`crate::throttle::sync`], [`crate::metrics`]).

mod counters;
mod memory;
mod memory_metrics;
mod pg_metrics;
mod postgres;

pub use counters::{
    BUCKET_BOUNDS_MS, BUCKETS, Counters, GATEWAY_ENDPOINT, Histogram, MetricsRow, bucket_quantile,
};
pub(crate) use counters::{sum_per_endpoint, sum_per_window};
pub use memory::MemoryStore;
pub use postgres::PostgresStore;

use std::fmt;
use std::sync::Arc;

/// How long a leased block of permits may be used, from the moment the instance asked for it.
/// Leases are counted against each window for this long plus the window, from the moment the
/// store granted them on its own clock (see [`crate::throttle::PermitPool`]).
pub const LEASE_VALID_MS: u64 = 1_000;
/// The RPM window: at most the limit in it.
pub const WINDOW_MS: u64 = 60_000;
/// The short window, Azure's evaluation granularity: at most [`ten_second_budget`] in it.
pub const BURST_WINDOW_MS: u64 = 10_000;

/// The share of an RPM `limit` allowed in [`BURST_WINDOW_MS`]: a sixth, at least 1. Both the
/// global leases and the local limiter's burst use it.
pub fn ten_second_budget(limit: u32) -> u32 {
    (limit / 6).max(1)
}
/// How long a recorded metrics batch id outlives the history window: a flush is retried within
/// seconds, so an hour more is plenty.
pub const BATCH_IDS_KEPT_MS: u64 = 3_600_000;

/// One endpoint of one application.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointKey {
    pub app: Arc<str>,
    pub endpoint: Arc<str>,
}

impl EndpointKey {
    pub fn new(app: &str, endpoint: &str) -> Self {
        Self {
            app: app.into(),
            endpoint: endpoint.into(),
        }
    }
}

impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.endpoint)
    }
}

/// A block of permits granted to one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Identifies the lease for [`SharedStore::give_back`] (0 when nothing was granted).
    pub id: i64,
    pub granted: u32,
    /// When nothing was granted: how long until permits free up.
    pub retry_after_ms: u64,
}

/// Why a store operation failed. Callers degrade (local view) rather than fail requests.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the shared store did not answer in time")]
    Timeout,
    #[error(
        "the pgvector extension cannot be created ({0}); the features that need it (semantic cache, conversation memory) are off. On Azure Database for PostgreSQL add VECTOR to the server parameter azure.extensions; elsewhere install pgvector or have an administrator run CREATE EXTENSION vector"
    )]
    VectorUnavailable(String),
}

/// The operations instances share. See the module doc.
#[async_trait::async_trait]
pub trait SharedStore: Send + Sync + fmt::Debug + 'static {
    /// `memory` or `postgres`, for logs and health reports.
    fn kind(&self) -> &'static str;

    /// Cheap liveness check (and, for PostgreSQL, the schema migrations once).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Keep `key` off until `until_ms` (a later moment already stored wins), for a 429 seen at
    /// `opened_at_ms`. An opening seen before the endpoint's last closure is ignored.
    async fn open_circuit(
        &self,
        key: &EndpointKey,
        until_ms: u64,
        opened_at_ms: u64,
        instance: &str,
    ) -> Result<(), StoreError>;

    /// Every circuit still open at `now_ms`.
    async fn open_circuits(&self, now_ms: u64) -> Result<Vec<(EndpointKey, u64)>, StoreError>;

    /// Close `key`'s circuit as of `closed_at_ms` (an operator's decision): it is no longer
    /// open, and openings seen before that moment cannot reopen it.
    async fn close_circuit(
        &self,
        key: &EndpointKey,
        closed_at_ms: u64,
        instance: &str,
    ) -> Result<(), StoreError>;

    /// Circuits closed after `since_ms`, with the moment of their closure.
    async fn closed_circuits(&self, since_ms: u64) -> Result<Vec<(EndpointKey, u64)>, StoreError>;

    /// Lease up to `want` permits of `key`'s budget: `limit` per [`WINDOW_MS`] and
    /// [`ten_second_budget`]`(limit)` per [`BURST_WINDOW_MS`], by [`grant`]'s rule, in one
    /// atomic step (one statement for PostgreSQL). The lease is counted from the moment it is
    /// granted on the store's own clock — the database's for PostgreSQL, the process's for the
    /// memory store, the same for every instance — so no instance's clock matters. `at_ms`
    /// replaces that clock with a given moment (tests); the gateway passes `None`.
    async fn lease(
        &self,
        key: &EndpointKey,
        limit: u32,
        want: u32,
        at_ms: Option<u64>,
    ) -> Result<Lease, StoreError>;

    /// Return `unused` permits of lease `id` (one statement).
    async fn give_back(&self, id: i64, unused: u32) -> Result<(), StoreError>;

    /// Add one instance's counter deltas (window rows and totals), unconditionally.
    async fn add_metrics(&self, instance: &str, rows: &[MetricsRow]) -> Result<(), StoreError> {
        self.record_metrics(instance, None, rows).await.map(|_| ())
    }

    /// Add one flush of an instance in one transaction: its window rows and, per endpoint, the
    /// same deltas to its totals. With a batch id, a batch this instance already recorded is
    /// skipped, so a flush retried after a commit whose answer was lost counts once; returns
    /// whether the rows were added.
    async fn record_metrics(
        &self,
        instance: &str,
        batch: Option<u64>,
        rows: &[MetricsRow],
    ) -> Result<bool, StoreError>;

    /// Counters of windows starting at or after `since_ms`, summed over instances, ordered by
    /// endpoint and window.
    async fn metrics(&self, since_ms: u64) -> Result<Vec<MetricsRow>, StoreError>;

    /// Every endpoint's totals (they only grow), summed over instances, ordered by endpoint.
    async fn metric_totals(&self) -> Result<Vec<(EndpointKey, Counters)>, StoreError>;

    /// Forget the totals of every endpoint not in `live` (it left the configuration, which is
    /// the whole fleet's), whichever instance counted them.
    async fn retain_metric_totals(&self, live: &[EndpointKey]) -> Result<(), StoreError>;

    /// Forget metric windows that started before `before_ms`, and batch ids recorded more than
    /// [`BATCH_IDS_KEPT_MS`] before that.
    async fn prune_metrics(&self, before_ms: u64) -> Result<(), StoreError>;

    /// Record an accepted configuration; returns its version (increasing).
    async fn save_config(
        &self,
        body: &serde_json::Value,
        instance: &str,
    ) -> Result<i64, StoreError>;

    /// The newest configuration version, if any was saved.
    async fn latest_config(&self) -> Result<Option<(i64, serde_json::Value)>, StoreError>;

    /// The newest configuration version number (cheap; polled by every instance).
    async fn latest_config_version(&self) -> Result<Option<i64>, StoreError>;
}

/// What still counts against an endpoint's two windows at one moment: the permits of the leases
/// whose validity plus the window has not passed, and when the earliest of them (with permits)
/// stops counting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counted {
    pub minute: u64,
    pub minute_frees_at: Option<u64>,
    pub ten_s: u64,
    pub ten_s_frees_at: Option<u64>,
}

impl Counted {
    /// Sum leases given as (expires at, granted) at `now_ms`.
    pub fn of(leases: impl IntoIterator<Item = (u64, u32)>, now_ms: u64) -> Self {
        let mut c = Counted::default();
        let earliest =
            |slot: &mut Option<u64>, at: u64| *slot = Some(slot.map_or(at, |s| s.min(at)));
        for (expires_at, granted) in leases {
            let (minute_end, ten_s_end) = (expires_at + WINDOW_MS, expires_at + BURST_WINDOW_MS);
            if minute_end > now_ms {
                c.minute += u64::from(granted);
                if granted > 0 {
                    earliest(&mut c.minute_frees_at, minute_end);
                }
            }
            if ten_s_end > now_ms {
                c.ten_s += u64::from(granted);
                if granted > 0 {
                    earliest(&mut c.ten_s_frees_at, ten_s_end);
                }
            }
        }
        c
    }
}

/// The grant rule both stores apply (the PostgreSQL function `aigw_lease` spells the same rule
/// in SQL; the store suite holds them to the same answers): grant `want`, but no more than is
/// left in either window. When nothing is left, the answer is how long until every full window
/// frees a permit (returned as `(granted, retry_after_ms)`).
pub(crate) fn grant(limit: u32, counted: &Counted, want: u32, now_ms: u64) -> (u32, u64) {
    let minute_left = u64::from(limit).saturating_sub(counted.minute);
    let ten_s_left = u64::from(ten_second_budget(limit)).saturating_sub(counted.ten_s);
    let granted = u64::from(want).min(minute_left).min(ten_s_left) as u32;
    if granted > 0 {
        return (granted, 0);
    }
    let wait = |left: u64, frees_at: Option<u64>| {
        if left > 0 {
            0
        } else {
            frees_at.map_or(1, |at| at.saturating_sub(now_ms))
        }
    };
    let retry = wait(minute_left, counted.minute_frees_at)
        .max(wait(ten_s_left, counted.ten_s_frees_at))
        .max(1);
    (0, retry)
}

#[cfg(test)]
mod grant_tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;

    #[test]
    fn counted_sums_each_window_and_finds_when_it_frees() {
        let leases = [(T0, 3), (T0 + 5_000, 2), (T0 - 20_000, 4), (T0 - 2_000, 0)];
        let c = Counted::of(leases, T0 + 1_000);
        assert_eq!(
            c,
            Counted {
                minute: 9,
                minute_frees_at: Some(T0 - 20_000 + WINDOW_MS),
                ten_s: 5,
                ten_s_frees_at: Some(T0 + BURST_WINDOW_MS),
            }
        );
        // A window's end no longer counts.
        assert_eq!(Counted::of([(T0, 1)], T0 + BURST_WINDOW_MS).ten_s, 0);
        assert_eq!(Counted::of([(T0, 1)], T0 + WINDOW_MS).minute, 0);
    }

    #[test]
    fn grants_what_fits_in_both_windows() {
        let c = |minute, ten_s| Counted {
            minute,
            minute_frees_at: Some(T0 + 30_000),
            ten_s,
            ten_s_frees_at: Some(T0 + 4_000),
        };
        // 600 rpm: 100 per 10 s.
        assert_eq!(grant(600, &c(0, 0), 20, T0), (20, 0));
        assert_eq!(grant(600, &c(0, 90), 20, T0), (10, 0));
        assert_eq!(grant(600, &c(595, 0), 20, T0), (5, 0));
        // The 10 s share spent: wait until it frees.
        assert_eq!(grant(600, &c(100, 100), 20, T0), (0, 4_000));
        // The minute spent: wait until it frees, even when the 10 s share has room.
        assert_eq!(grant(600, &c(600, 10), 20, T0), (0, 30_000));
        // Both spent: the later of the two.
        assert_eq!(grant(600, &c(600, 100), 20, T0), (0, 30_000));
        // Small limits: at least one per 10 s.
        assert_eq!(grant(2, &c(0, 0), 5, T0), (1, 0));
        assert_eq!(grant(2, &c(1, 1), 5, T0), (0, 4_000));
        // A limit lowered below what is counted waits at least a millisecond.
        let none = Counted::default();
        assert_eq!(grant(1, &Counted { minute: 3, ..none }, 1, T0), (0, 1));
    }
}
