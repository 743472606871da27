//! Measuring what the gateway relays: per-endpoint counters (calls, failures, 429s, content
//! filters, cancellations, tokens, latency) and per-application counts of the gateway's own
//! answers, accumulated in atomics on each instance and written to the shared store in batches:
//! one row per instance, endpoint and collection window, and one row of totals per instance and
//! endpoint that only grows.
//!
//! 1. The request path only adds to atomics ([`EndpointMetrics`]); tokens come from the `usage`
//!    object at the end of a relayed body ([`usage`]), read from a small tail buffer. A stream
//!    that ends without one has its tokens counted by the gateway ([`estimate`]), off the
//!    request path.
//! 2. Every flush interval (5 s) and at each window boundary, the flusher takes (swaps to zero)
//!    every counter into a batch and adds it, in one transaction, to the current window's rows
//!    and to the totals ([`registry`]).
//! 3. If the store fails, the batch is written again, with its id, before anything new: nothing
//!    is lost, only late, and a batch whose commit did happen is not added twice.
//! 4. Windows older than the history (`API_GATEWAY_METRICS_CHISTORY` windows of
//!    `API_GATEWAY_METRICS_CINTERVAL` minutes) are pruned; the totals of an endpoint go when it
//!    leaves the configuration.
//! 5. At shutdown, the last flush waits (briefly) for the bodies still being relayed to be
//!    counted: those the server cut off at the end of its grace period count as cancelled.

mod endpoint;
pub mod estimate;
pub mod overhead;
pub mod prometheus;
mod recorder;
pub mod registry;
pub mod report;
pub mod usage;

pub use endpoint::{Answered, AppMetrics, Ending, EndpointMetrics, Outcome};
pub use recorder::Recorder;
pub use registry::MetricsRegistry;

use crate::throttle::sync::stopped;
use crate::throttle::{Shared, now_ms};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long the last flush waits for bodies still being relayed to be counted.
const LAST_COUNT_WAIT: Duration = Duration::from_secs(3);

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

/// The flusher task: steps 2–4 until `stop`, then step 5 and one last flush.
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
            registry.forget_removed(&shared).await;
            let keep_from = window
                .saturating_sub(windows.interval.as_millis() as u64 * u64::from(windows.history));
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                shared.store.prune_metrics(keep_from),
            )
            .await;
        }
    }
    let deadline = tokio::time::Instant::now() + LAST_COUNT_WAIT;
    while registry.open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    registry.flush(&shared, windows.start_of(now_ms())).await;
}
