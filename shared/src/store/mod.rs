//! State shared by every gateway instance: open circuits, RPM permit leases and metrics windows.
//!
//! [`SharedStore`] has two implementations with the same behaviour: [`MemoryStore`] (the embedded
//! default: one process, or several gateways in one process sharing it) and [`PostgresStore`]
//! (many instances on one database). One test suite runs against both.
//!
//! The request path never waits on a store except to lease a block of RPM permits, which is
//! bounded by a short timeout; everything else happens in background tasks
//! ([`crate::throttle::sync`], [`crate::metrics`]).

mod memory;
mod postgres;

pub use memory::MemoryStore;
pub use postgres::PostgresStore;

use std::fmt;
use std::sync::Arc;

/// How long a leased block of permits may be used. Leases are counted against the limit for
/// this long plus the 60 s window (see [`crate::throttle::PermitPool`]).
pub const LEASE_VALID_MS: u64 = 1_000;
/// The RPM window.
pub const WINDOW_MS: u64 = 60_000;

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

/// Upper bounds (milliseconds) of the latency histogram buckets; the last bucket is unbounded.
pub const BUCKET_BOUNDS_MS: [u64; BUCKETS - 1] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
];
/// Number of histogram buckets.
pub const BUCKETS: usize = 16;

/// A latency histogram: counts per [`BUCKET_BOUNDS_MS`] bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Histogram(pub [u64; BUCKETS]);

impl Histogram {
    /// The bucket a duration falls in.
    pub fn bucket_of(ms: u64) -> usize {
        BUCKET_BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BUCKETS - 1)
    }

    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }

    pub fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The `q`-quantile (0–1) in milliseconds (see [`bucket_quantile`]).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        bucket_quantile(&BUCKET_BOUNDS_MS, &self.0, q)
    }

    /// As stored: a plain array.
    pub fn to_vec(&self) -> Vec<i64> {
        self.0
            .iter()
            .map(|v| i64::try_from(*v).unwrap_or(i64::MAX))
            .collect()
    }

    /// From a stored array (missing buckets count 0; extra ones are ignored).
    pub fn from_slice(v: &[i64]) -> Self {
        let mut h = Histogram::default();
        for (slot, n) in h.0.iter_mut().zip(v) {
            *slot = u64::try_from(*n).unwrap_or(0);
        }
        h
    }
}

/// The `q`-quantile (0–1) of a histogram with buckets bounded above by `bounds` (one more
/// bucket, unbounded, follows): linear within the bucket it falls in; the open last bucket
/// reports its lower bound. `None` without observations.
pub fn bucket_quantile(bounds: &[u64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
    let mut seen = 0.0;
    for (i, n) in counts.iter().enumerate() {
        let n = *n as f64;
        if n > 0.0 && seen + n >= rank {
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] as f64 };
            let Some(upper) = bounds.get(i) else {
                return Some(lower);
            };
            return Some(lower + (*upper as f64 - lower) * ((rank - seen) / n));
        }
        seen += n;
    }
    None
}

/// Counters summed per (endpoint, window), ordered by endpoint and window: what
/// [`SharedStore::metrics`] returns, from per-instance rows.
pub(crate) fn sum_per_window(
    rows: impl IntoIterator<Item = (EndpointKey, u64, Counters)>,
) -> Vec<MetricsRow> {
    let mut summed: std::collections::BTreeMap<(EndpointKey, u64), Counters> = Default::default();
    for (key, window, counters) in rows {
        summed.entry((key, window)).or_default().add(&counters);
    }
    summed
        .into_iter()
        .map(|((key, window_start_ms), counters)| MetricsRow {
            key,
            window_start_ms,
            counters,
        })
        .collect()
}

/// Metric counters of one endpoint over one collection window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub calls: u64,
    pub failed: u64,
    pub throttled: u64,
    pub filtered: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub latency_ms_sum: u64,
    pub latency_count: u64,
    pub latency: Histogram,
    /// Time to first token of streamed answers.
    pub ttft_ms_sum: u64,
    pub ttft_count: u64,
    pub ttft: Histogram,
}

impl Counters {
    pub fn add(&mut self, other: &Counters) {
        self.calls += other.calls;
        self.failed += other.failed;
        self.throttled += other.throttled;
        self.filtered += other.filtered;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
        self.latency_ms_sum += other.latency_ms_sum;
        self.latency_count += other.latency_count;
        self.latency.add(&other.latency);
        self.ttft_ms_sum += other.ttft_ms_sum;
        self.ttft_count += other.ttft_count;
        self.ttft.add(&other.ttft);
    }

    pub fn is_empty(&self) -> bool {
        *self == Counters::default()
    }
}

/// Counters for one endpoint and window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsRow {
    pub key: EndpointKey,
    pub window_start_ms: u64,
    pub counters: Counters,
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
}

/// The operations instances share. See the module doc.
#[async_trait::async_trait]
pub trait SharedStore: Send + Sync + fmt::Debug + 'static {
    /// `memory` or `postgres`, for logs and health reports.
    fn kind(&self) -> &'static str;

    /// Cheap liveness check (and, for PostgreSQL, the schema migrations once).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Keep `key` off until `until_ms` (a later moment already stored wins).
    async fn open_circuit(
        &self,
        key: &EndpointKey,
        until_ms: u64,
        instance: &str,
    ) -> Result<(), StoreError>;

    /// Every circuit still open at `now_ms`.
    async fn open_circuits(&self, now_ms: u64) -> Result<Vec<(EndpointKey, u64)>, StoreError>;

    /// Lease up to `want` permits of `key`'s budget of `limit` per window, valid until
    /// `now_ms + LEASE_VALID_MS`.
    async fn lease(
        &self,
        key: &EndpointKey,
        limit: u32,
        want: u32,
        now_ms: u64,
    ) -> Result<Lease, StoreError>;

    /// Return `unused` permits of lease `id`.
    async fn give_back(&self, id: i64, unused: u32) -> Result<(), StoreError>;

    /// Add one instance's counter deltas.
    async fn add_metrics(&self, instance: &str, rows: &[MetricsRow]) -> Result<(), StoreError>;

    /// Counters of windows starting at or after `since_ms`, summed over instances, ordered by
    /// endpoint and window.
    async fn metrics(&self, since_ms: u64) -> Result<Vec<MetricsRow>, StoreError>;

    /// Forget metric windows that started before `before_ms`.
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

/// The grant rule both stores apply, given the permits still counted against the window and
/// the earliest moment one of them stops counting.
pub(crate) fn grant(
    limit: u32,
    used: u64,
    want: u32,
    now_ms: u64,
    frees_at_ms: Option<u64>,
) -> (u32, u64) {
    let left = u64::from(limit).saturating_sub(used);
    let granted = u64::from(want).min(left) as u32;
    let retry = if granted == 0 {
        frees_at_ms.map_or(1, |at| at.saturating_sub(now_ms).max(1))
    } else {
        0
    };
    (granted, retry)
}
