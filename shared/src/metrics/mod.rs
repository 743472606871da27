//! Measuring what the gateway relays: per-endpoint counters (calls, failures, 429s, content
//! filters, tokens, latency) accumulated in atomics on each instance and written to the shared
//! store in batches, one row per instance, endpoint and collection window.
//!
//! 1. The request path only adds to atomics ([`EndpointMetrics`]); tokens come from the `usage`
//!    object at the end of a relayed body ([`usage`]), read from a small tail buffer.
//! 2. Every flush interval (5 s) and at each window boundary, the flusher takes (swaps to zero)
//!    every endpoint's counters and adds them to the current window's row in the store.
//! 3. If the store fails, the taken counters are put back and sent with the next flush: nothing
//!    is lost, only late.
//! 4. Windows older than the history (`API_GATEWAY_METRICS_CHISTORY` windows of
//!    `API_GATEWAY_METRICS_CINTERVAL` minutes) are pruned.

pub mod overhead;
mod recorder;
pub mod report;
pub mod usage;

pub use recorder::Recorder;

use crate::store::{BUCKETS, Counters, EndpointKey, Histogram, MetricsRow};
use crate::throttle::sync::stopped;
use crate::throttle::{Shared, now_ms};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// One endpoint's counters on this instance since the last flush.
#[derive(Debug, Default)]
pub struct EndpointMetrics {
    calls: AtomicU64,
    failed: AtomicU64,
    throttled: AtomicU64,
    filtered: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    total_tokens: AtomicU64,
    latency_ms_sum: AtomicU64,
    latency_count: AtomicU64,
    latency: AtomicHistogram,
    ttft_ms_sum: AtomicU64,
    ttft_count: AtomicU64,
    ttft: AtomicHistogram,
}

/// A histogram the request path can add to without locks.
#[derive(Debug, Default)]
struct AtomicHistogram([AtomicU64; BUCKETS]);

impl AtomicHistogram {
    fn observe(&self, ms: u64) {
        self.0[Histogram::bucket_of(ms)].fetch_add(1, Ordering::Relaxed);
    }

    fn take(&self) -> Histogram {
        let mut h = Histogram::default();
        for (slot, a) in h.0.iter_mut().zip(&self.0) {
            *slot = a.swap(0, Ordering::AcqRel);
        }
        h
    }

    fn restore(&self, h: &Histogram) {
        for (a, v) in self.0.iter().zip(h.0) {
            a.fetch_add(v, Ordering::AcqRel);
        }
    }
}

/// How one attempt on an endpoint ended, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Throttled,
    Failed,
    /// A content-filter (400) answer relayed to the client.
    Filtered,
}

impl EndpointMetrics {
    /// Count an attempt that ended without a relayed success.
    pub fn count(&self, outcome: Outcome) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let counter = match outcome {
            Outcome::Throttled => &self.throttled,
            Outcome::Failed => &self.failed,
            Outcome::Filtered => &self.filtered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a relayed answer: its latency, its time to first token (streams) and, when the body
    /// said, its tokens.
    pub fn answered(
        &self,
        latency: Duration,
        ttft: Option<Duration>,
        usage: Option<usage::Usage>,
        complete: bool,
    ) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !complete {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let ms = latency.as_millis() as u64;
        self.latency_ms_sum.fetch_add(ms, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency.observe(ms);
        if let Some(ttft) = ttft {
            let ms = ttft.as_millis() as u64;
            self.ttft_ms_sum.fetch_add(ms, Ordering::Relaxed);
            self.ttft_count.fetch_add(1, Ordering::Relaxed);
            self.ttft.observe(ms);
        }
        if let Some(u) = usage {
            self.prompt_tokens.fetch_add(u.prompt, Ordering::Relaxed);
            self.completion_tokens
                .fetch_add(u.completion, Ordering::Relaxed);
            self.total_tokens.fetch_add(u.total, Ordering::Relaxed);
        }
    }

    /// Take the counters, leaving zeros.
    fn take(&self) -> Counters {
        let t = |a: &AtomicU64| a.swap(0, Ordering::AcqRel);
        Counters {
            calls: t(&self.calls),
            failed: t(&self.failed),
            throttled: t(&self.throttled),
            filtered: t(&self.filtered),
            prompt_tokens: t(&self.prompt_tokens),
            completion_tokens: t(&self.completion_tokens),
            total_tokens: t(&self.total_tokens),
            latency_ms_sum: t(&self.latency_ms_sum),
            latency_count: t(&self.latency_count),
            latency: self.latency.take(),
            ttft_ms_sum: t(&self.ttft_ms_sum),
            ttft_count: t(&self.ttft_count),
            ttft: self.ttft.take(),
        }
    }

    /// Put counters back (a failed flush).
    fn restore(&self, c: &Counters) {
        let a = |atomic: &AtomicU64, v: u64| atomic.fetch_add(v, Ordering::AcqRel);
        a(&self.calls, c.calls);
        a(&self.failed, c.failed);
        a(&self.throttled, c.throttled);
        a(&self.filtered, c.filtered);
        a(&self.prompt_tokens, c.prompt_tokens);
        a(&self.completion_tokens, c.completion_tokens);
        a(&self.total_tokens, c.total_tokens);
        a(&self.latency_ms_sum, c.latency_ms_sum);
        a(&self.latency_count, c.latency_count);
        self.latency.restore(&c.latency);
        a(&self.ttft_ms_sum, c.ttft_ms_sum);
        a(&self.ttft_count, c.ttft_count);
        self.ttft.restore(&c.ttft);
    }
}

/// Every endpoint's counters on this instance, kept across reloads like throttle state.
#[derive(Debug, Default)]
pub struct MetricsRegistry {
    endpoints: Mutex<HashMap<EndpointKey, Arc<EndpointMetrics>>>,
}

impl MetricsRegistry {
    pub fn resolve(&self, key: &EndpointKey) -> Arc<EndpointMetrics> {
        let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.clone()).or_default().clone()
    }

    fn all(&self) -> Vec<(EndpointKey, Arc<EndpointMetrics>)> {
        let map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, m)| (k.clone(), m.clone())).collect()
    }

    /// Step 2 and 3: take every endpoint's counters and add them to `window_start_ms`'s rows.
    pub async fn flush(&self, shared: &Shared, window_start_ms: u64) -> bool {
        let taken: Vec<(Arc<EndpointMetrics>, MetricsRow)> = self
            .all()
            .into_iter()
            // Every event counts a call first, so an endpoint with no calls since the last flush
            // has nothing to take: with thousands of idle endpoints, skipping them is most of the
            // flush's work saved. (Figures recorded just after a flush's take wait for the next
            // call's flush; nothing is lost.)
            .filter(|(_, m)| m.calls.load(Ordering::Relaxed) != 0)
            .filter_map(|(key, m)| {
                let counters = m.take();
                (!counters.is_empty()).then_some((
                    m,
                    MetricsRow {
                        key,
                        window_start_ms,
                        counters,
                    },
                ))
            })
            .collect();
        if taken.is_empty() {
            return true;
        }
        let rows: Vec<MetricsRow> = taken.iter().map(|(_, r)| r.clone()).collect();
        let write = shared.store.add_metrics(&shared.instance, &rows);
        match tokio::time::timeout(Duration::from_secs(5), write).await {
            Ok(Ok(())) => true,
            failed => {
                for (m, row) in &taken {
                    m.restore(&row.counters);
                }
                if let Ok(Err(e)) = failed {
                    shared.report_failure(&e);
                } else {
                    shared.report_failure(&crate::store::StoreError::Timeout);
                }
                false
            }
        }
    }
}

/// Collection windows: `interval` long, `history` of them kept.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    pub interval: Duration,
    pub history: u32,
}

impl Windows {
    /// The start of the window holding `now_ms`.
    pub fn start_of(&self, now_ms: u64) -> u64 {
        let len = (self.interval.as_millis() as u64).max(1);
        now_ms - now_ms % len
    }
}

/// The flusher task: steps 2–4 until `stop`, then one last flush.
pub async fn run(
    registry: Arc<MetricsRegistry>,
    shared: Arc<Shared>,
    windows: Windows,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let now = now_ms();
        let next_boundary = windows.start_of(now) + windows.interval.as_millis() as u64;
        let wait = every.min(Duration::from_millis(
            next_boundary.saturating_sub(now).max(1),
        ));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            () = stopped(&mut stop) => break,
        }
        // Counters gathered up to a boundary belong to the window that just ended.
        let window = windows.start_of(now_ms().saturating_sub(1));
        if registry.flush(&shared, window).await {
            let keep_from = window
                .saturating_sub(windows.interval.as_millis() as u64 * u64::from(windows.history));
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                shared.store.prune_metrics(keep_from),
            )
            .await;
        }
    }
    registry.flush(&shared, windows.start_of(now_ms())).await;
}
