//! The metric counters the stores keep: per endpoint and collection window (window rows), and
//! per endpoint since it entered the configuration (totals, which only grow). Both hold the same
//! [`Counters`]; the gateway's own answers to an application's clients are kept in rows of the
//! reserved endpoint id [`GATEWAY_ENDPOINT`].

use super::EndpointKey;

/// The endpoint id of the rows that count the gateway's own answers to an application (429 when
/// every endpoint is busy, 502/504 when none answered, other 4xx). Endpoint ids are letters,
/// digits, `-`, `_` and `.`, so it names no endpoint.
pub const GATEWAY_ENDPOINT: &str = "*";

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
            *a = a.saturating_add(b);
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
/// [`super::SharedStore::metrics`] returns, from per-instance rows.
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

/// Counters summed per endpoint, ordered by endpoint: what [`super::SharedStore::metric_totals`]
/// returns, from per-instance rows.
pub(crate) fn sum_per_endpoint(
    rows: impl IntoIterator<Item = (EndpointKey, Counters)>,
) -> Vec<(EndpointKey, Counters)> {
    let mut summed: std::collections::BTreeMap<EndpointKey, Counters> = Default::default();
    for (key, counters) in rows {
        summed.entry(key).or_default().add(&counters);
    }
    summed.into_iter().collect()
}

/// Metric counters of one endpoint over one collection window (or, in the totals, since the
/// endpoint entered the configuration).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub calls: u64,
    pub failed: u64,
    pub throttled: u64,
    pub filtered: u64,
    /// Answers whose client went away before their end (not the endpoint's failure).
    pub cancelled: u64,
    /// Tokens the backend reported (`usage`).
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Tokens the gateway counted itself, for streams that ended without a usage chunk.
    pub estimated_prompt_tokens: u64,
    pub estimated_completion_tokens: u64,
    pub latency_ms_sum: u64,
    pub latency_count: u64,
    pub latency: Histogram,
    /// Time to first token of streamed answers.
    pub ttft_ms_sum: u64,
    pub ttft_count: u64,
    pub ttft: Histogram,
    /// The gateway's own answers (rows of [`GATEWAY_ENDPOINT`] only): 429, 502, 504, other 4xx.
    pub gateway_429: u64,
    pub gateway_502: u64,
    pub gateway_504: u64,
    pub gateway_4xx: u64,
}

impl Counters {
    pub fn add(&mut self, other: &Counters) {
        self.calls = self.calls.saturating_add(other.calls);
        self.failed = self.failed.saturating_add(other.failed);
        self.throttled = self.throttled.saturating_add(other.throttled);
        self.filtered = self.filtered.saturating_add(other.filtered);
        self.cancelled = self.cancelled.saturating_add(other.cancelled);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
        self.estimated_prompt_tokens = self
            .estimated_prompt_tokens
            .saturating_add(other.estimated_prompt_tokens);
        self.estimated_completion_tokens = self
            .estimated_completion_tokens
            .saturating_add(other.estimated_completion_tokens);
        self.latency_ms_sum = self.latency_ms_sum.saturating_add(other.latency_ms_sum);
        self.latency_count = self.latency_count.saturating_add(other.latency_count);
        self.latency.add(&other.latency);
        self.ttft_ms_sum = self.ttft_ms_sum.saturating_add(other.ttft_ms_sum);
        self.ttft_count = self.ttft_count.saturating_add(other.ttft_count);
        self.ttft.add(&other.ttft);
        self.gateway_429 = self.gateway_429.saturating_add(other.gateway_429);
        self.gateway_502 = self.gateway_502.saturating_add(other.gateway_502);
        self.gateway_504 = self.gateway_504.saturating_add(other.gateway_504);
        self.gateway_4xx = self.gateway_4xx.saturating_add(other.gateway_4xx);
    }

    pub fn is_empty(&self) -> bool {
        *self == Counters::default()
    }

    /// Calls that ended as a relayed success (not failed, throttled, filtered or cancelled).
    pub fn succeeded(&self) -> u64 {
        self.calls
            .saturating_sub(self.failed + self.throttled + self.filtered + self.cancelled)
    }

    /// Tokens reported and estimated, together.
    pub fn all_tokens(&self) -> u64 {
        self.total_tokens + self.estimated_prompt_tokens + self.estimated_completion_tokens
    }
}

/// Counters for one endpoint and window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsRow {
    pub key: EndpointKey,
    pub window_start_ms: u64,
    pub counters: Counters,
}
